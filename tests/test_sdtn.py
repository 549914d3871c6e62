"""The SDTN inverse (paper Eqs. 3-6) and the nn modules."""
import math

import pytest
import torch
from conftest import DEVICES

from rmpe_ext import ops
from rmpe_ext.nn import SDTN, AffineSampler


def thetas(n, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, 2, 2, generator=g, dtype=dtype) + 2 * torch.eye(2, dtype=dtype)
    return torch.cat([A, torch.randn(n, 2, 1, generator=g, dtype=dtype)], 2)


def test_inverse_values(device):
    th = thetas(16).to(device)
    gamma = ops.affine_inverse(th)
    A, t = th[:, :, :2], th[:, :, 2:]
    G = torch.linalg.inv(A)
    torch.testing.assert_close(gamma, torch.cat([G, -G @ t], 2))
    # theta o gamma = identity
    ident = torch.cat([A @ gamma[:, :, :2], A @ gamma[:, :, 2:] + t], 2)
    torch.testing.assert_close(ident, torch.eye(2, 3, dtype=th.dtype, device=device).expand_as(ident))


def test_inverse_gradient_is_eqs_5_6():
    th = thetas(5).requires_grad_()
    assert torch.autograd.gradcheck(ops.affine_inverse, (th,))
    # and equals autograd through torch.linalg.inv
    up = torch.randn(5, 2, 3, dtype=torch.float64)
    (g1,) = torch.autograd.grad((ops.affine_inverse(th) * up).sum(), th)
    A, t = th[:, :, :2], th[:, :, 2:]
    G = torch.linalg.inv(A)
    (g2,) = torch.autograd.grad((torch.cat([G, -G @ t], 2) * up).sum(), th)
    torch.testing.assert_close(g1, g2)


def test_half_and_float():
    th = thetas(4, torch.float32)
    for dt in (torch.float16, torch.bfloat16, torch.float32):
        torch.testing.assert_close(ops.affine_inverse(th.to(dt)).float(), ops.affine_inverse(th.double()).float(),
                                   rtol=2e-2, atol=2e-2)


def test_singular_theta():
    th = thetas(3)
    th[1, :, :2] = torch.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=th.dtype)  # rank 1
    with pytest.raises(ValueError, match=r"theta is singular \(or not finite\) at rows \[1\]"):
        ops.affine_inverse(th)
    gamma = ops.affine_inverse(th, check=False)
    assert torch.isnan(gamma[1]).all() and torch.isfinite(gamma[[0, 2]]).all()
    near = torch.tensor([[[1.0, 1.0, 0.0], [1.0, 1.0 + 1e-9, 0.0]]], dtype=torch.float32)
    with pytest.raises(ValueError, match="singular"):
        ops.affine_inverse(near)
    th[2, 0, 2] = math.inf
    with pytest.raises(ValueError, match=r"rows \[1, 2\]"):
        ops.affine_inverse(th)
    with pytest.raises(RuntimeError, match=r"theta must have shape \[N, 2, 3\]"):
        ops.affine_inverse(th[:, :, :2])
    assert ops.affine_inverse(th[:0]).shape == (0, 2, 3)


def test_sdtn_undoes_the_stn():
    # crop with theta, de-transform with gamma: where the crop saw the image, the
    # round trip returns the image (bilinear twice: smooth images only)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 48), torch.linspace(-1, 1, 40), indexing="ij")
    img = torch.stack([torch.sin(2 * xs + ys), torch.cos(3 * ys) * xs])[None].repeat(3, 1, 1, 1)
    th = torch.tensor([[[0.6, 0.1, 0.1], [-0.05, 0.7, 0.0]]]).repeat(3, 1, 1)
    th[1, 0, 2] = -0.2
    stn, sdtn = AffineSampler((48, 40)), SDTN()
    back = sdtn(stn(img, th), th)
    inside = back.abs().sum(1, keepdim=True) > 0
    # the region the crop covered: a parallelogram in the middle of the frame
    centre = (slice(None), slice(None), slice(18, 30), slice(15, 25))
    assert inside[centre].all()
    torch.testing.assert_close(back[centre], img[centre], rtol=0, atol=2e-2)


def test_sdtn_gradient_reaches_theta():
    img = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    th = thetas(2) * 0.3
    th[:, :, :2] += torch.eye(2, dtype=th.dtype) * 0.5
    th.requires_grad_()
    f = lambda t: SDTN()(AffineSampler((8, 8))(img, t), t)
    assert torch.autograd.gradcheck(f, (th,))


@pytest.mark.skipif(len(DEVICES) < 2, reason="needs a CUDA device")
def test_cuda_inverse_matches_cpu():
    th = thetas(64, torch.float32)
    gamma = ops.affine_inverse(th.cuda())
    torch.testing.assert_close(gamma.cpu(), ops.affine_inverse(th))
    up = torch.randn(64, 2, 3)
    a = th.clone().requires_grad_()
    b = th.cuda().requires_grad_()
    (ops.affine_inverse(a) * up).sum().backward()
    (ops.affine_inverse(b) * up.cuda()).sum().backward()
    torch.testing.assert_close(b.grad.cpu(), a.grad)
