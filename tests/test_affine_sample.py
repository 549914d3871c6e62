"""The fused affine sampler against F.affine_grid + F.grid_sample: values and both gradients."""
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICES

from rmpe_ext import ops


def random_theta(n, generator, dtype=torch.float64, outside=True):
    """Normalized thetas: scale, rotation, shear, and shifts that put crops partly outside."""
    ang = torch.rand(n, generator=generator, dtype=dtype) * 1.2 - 0.6
    sc = torch.rand(n, 2, generator=generator, dtype=dtype) * 0.9 + 0.2
    shift = (torch.rand(n, 2, generator=generator, dtype=dtype) * 2 - 1) * (1.2 if outside else 0.3)
    c, s = torch.cos(ang), torch.sin(ang)
    A = torch.stack([torch.stack([c * sc[:, 0], -s * sc[:, 1]], 1), torch.stack([s * sc[:, 0], c * sc[:, 1]], 1)], 1)
    A = A + 0.1 * torch.randn(n, 2, 2, generator=generator, dtype=dtype)
    return torch.cat([A, shift.unsqueeze(-1)], 2)


def reference(x, theta, size, bidx, align_corners, padding_mode, value=0.0):
    """torch's route: expand the images per crop, build the grid, sample."""
    xs = x[bidx] if bidx is not None else x
    grid = F.affine_grid(theta, (theta.shape[0], x.shape[1], *size), align_corners=align_corners)
    if padding_mode == "constant":
        return F.grid_sample(xs - value, grid, "bilinear", "zeros", align_corners) + value
    return F.grid_sample(xs, grid, "bilinear", padding_mode, align_corners)


CASES = [(ac, pm) for ac in (False, True) for pm in ("zeros", "border", "constant")]


@pytest.mark.parametrize("align_corners,padding_mode", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_values_and_gradients_match_torch(align_corners, padding_mode, dtype, device):
    g = torch.Generator().manual_seed(100 + CASES.index((align_corners, padding_mode)))  # fixed per case
    x = torch.randn(3, 4, 23, 31, generator=g, dtype=dtype).to(device)
    theta = random_theta(7, g, dtype).to(device)
    bidx = torch.tensor([0, 2, 2, 1, 0, 2, 1], device=device)
    size, value = (9, 13), (0.7 if padding_mode == "constant" else 0.0)

    x1, t1 = x.clone().requires_grad_(), theta.clone().requires_grad_()
    out = ops.affine_grid_sample(x1, t1, size, bidx, align_corners, padding_mode, value)
    x2, t2 = x.clone().requires_grad_(), theta.clone().requires_grad_()
    ref = reference(x2, t2, size, bidx, align_corners, padding_mode, value)
    tol = dict(rtol=1e-4, atol=2e-5) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out, ref, **tol)
    upstream = torch.randn(out.shape, generator=g, dtype=dtype).to(device)
    out.backward(upstream)
    ref.backward(upstream)
    torch.testing.assert_close(x1.grad, x2.grad, **tol)
    gtol = dict(rtol=1e-3, atol=1e-3) if dtype == torch.float32 else dict(rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(t1.grad, t2.grad, **gtol)


@pytest.mark.parametrize("padding_mode", ["zeros", "border", "constant"])
def test_gradcheck(padding_mode):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    theta = random_theta(3, g).requires_grad_()
    bidx = torch.tensor([1, 0, 1])
    f = lambda x, t: ops.affine_grid_sample(x, t, (4, 5), bidx, False, padding_mode, 0.3)
    assert torch.autograd.gradcheck(f, (x, theta))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_float(dtype, device):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 16, 20, generator=g)
    theta = random_theta(4, g, torch.float32)
    out = ops.affine_grid_sample(x.to(device, dtype), theta.to(device), (8, 6), torch.tensor([0, 1, 1, 0], device=device))
    ref = ops.affine_grid_sample(x.to(dtype).float().to(device), theta.to(device), (8, 6),
                                 torch.tensor([0, 1, 1, 0], device=device))
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, rtol=0, atol=2e-2 if dtype == torch.bfloat16 else 4e-3)
    x1 = x.to(device, dtype).requires_grad_()
    ops.affine_grid_sample(x1, theta.to(device), (8, 6), torch.tensor([0, 1, 1, 0], device=device)).sum().backward()
    assert x1.grad.dtype == dtype and torch.isfinite(x1.grad.float()).all()


def test_pixel_theta_is_opencv_convention():
    # theta_px maps crop pixel (j, i) to image pixel (x, y): an integer shift copies pixels
    x = torch.arange(5 * 6, dtype=torch.float32).reshape(1, 1, 5, 6)
    theta_px = torch.tensor([[[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]]])
    out = ops.affine_sample_px(x, theta_px, (3, 3))
    assert torch.equal(out[0, 0], x[0, 0, 1:4, 2:5])
    # and converts to and from the normalized convention
    for ac in (False, True):
        th = ops.pixel_to_normalized_theta(theta_px, (5, 6), (3, 3), ac)
        torch.testing.assert_close(ops.normalized_to_pixel_theta(th, (5, 6), (3, 3), ac), theta_px)
        torch.testing.assert_close(ops.affine_grid_sample(x, th, (3, 3), align_corners=ac), out)


def test_bad_input_and_documented_results():
    x = torch.randn(2, 3, 10, 10)
    theta = torch.eye(2, 3).expand(3, 2, 3).clone()
    theta[1, 0, 0] = math.nan
    out = ops.affine_grid_sample(x, theta, (4, 4), torch.tensor([0, 1, 1]))
    assert torch.isnan(out[1]).all() and torch.isfinite(out[[0, 2]]).all()  # NaN theta -> NaN crop
    with pytest.raises(IndexError, match=r"batch_index must lie in \[0, 2\)"):
        ops.affine_grid_sample(x, theta, (4, 4), torch.tensor([0, 2, 1]))
    out = ops.affine_grid_sample(x, theta, (4, 4), torch.tensor([0, 5, -1]), check=False)
    assert torch.isnan(out[1:]).all()  # unchecked out-of-range index: NaN crops, nothing read
    with pytest.raises(RuntimeError, match="without batch_index, theta needs one matrix per input image"):
        ops.affine_grid_sample(x, theta, (4, 4))
    with pytest.raises(RuntimeError, match=r"batch_index must have shape \[N\] = \[3\]"):
        ops.affine_grid_sample(x, theta, (4, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"theta must have shape \[N, 2, 3\]"):
        ops.affine_grid_sample(x, theta[:, :, :2], (4, 4), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match=r"size must be \(h, w\) with h, w > 0"):
        ops.affine_grid_sample(x, theta, (0, 4), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        ops.affine_grid_sample(x, theta, (4, 4), torch.tensor([0, 1, 1]), padding_mode="reflection")
    with pytest.raises(RuntimeError, match="input must be floating point"):
        ops.affine_sample_px(x.long(), theta, (4, 4), torch.tensor([0, 1, 1]))
    empty = ops.affine_grid_sample(x, theta[:0], (4, 4), torch.zeros(0, dtype=torch.long))
    assert empty.shape == (0, 3, 4, 4)


def test_inputs_not_modified_and_deterministic():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 3, 12, 12, generator=g, requires_grad=True)
    theta = random_theta(5, g, torch.float32).requires_grad_()
    bidx = torch.zeros(5, dtype=torch.long)
    before = (x.detach().clone(), theta.detach().clone())
    grads = []
    for _ in range(2):
        x.grad = theta.grad = None
        ops.affine_grid_sample(x, theta, (6, 6), bidx).pow(2).sum().backward()
        grads.append((x.grad.clone(), theta.grad.clone()))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
    assert torch.equal(before[0], x.detach()) and torch.equal(before[1], theta.detach())


@pytest.mark.skipif(len(DEVICES) < 2, reason="needs a CUDA device")
@pytest.mark.parametrize("padding_mode", ["zeros", "constant"])
def test_cuda_deterministic_backward_matches_atomics(padding_mode):
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 3, 40, 50, generator=g).cuda()
    theta = random_theta(16, g, torch.float32).cuda()
    bidx = torch.randint(0, 2, (16,), generator=g).cuda()

    def grads():
        x1 = x.clone().requires_grad_()
        ops.affine_grid_sample(x1, theta, (24, 20), bidx, padding_mode=padding_mode, value=0.5).sum().backward()
        return x1.grad

    fast = grads()
    torch.use_deterministic_algorithms(True)
    try:
        det = grads()
        assert torch.equal(det, grads())
    finally:
        torch.use_deterministic_algorithms(False)
    torch.testing.assert_close(det, fast, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(len(DEVICES) < 2, reason="needs a CUDA device")
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 64, 48, generator=g)
    theta = random_theta(9, g, torch.float32)
    bidx = torch.randint(0, 2, (9,), generator=g)
    cpu = ops.affine_grid_sample(x, theta, (32, 24), bidx, padding_mode="border")
    gpu = ops.affine_grid_sample(x.cuda(), theta.cuda(), (32, 24), bidx.cuda(), padding_mode="border")
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)
