"""Affine kernels against their baselines, same inputs, same run.

* crop N persons (256x192) from a 1080p uint8 frame: rmpe_ext.ops.affine_crop
  vs a cv2.warpAffine loop (AlphaPose's way, plus the conversion to a normalized
  float batch) vs torch's F.affine_grid + F.grid_sample (the frame converted to
  float and expanded per crop, as a user would);
* the differentiable sampler forward + backward vs torch autograd;
* heatmap decode of N persons (17 x 64 x 48) vs AlphaPose's per-person loop.

Threads: RMPE_BENCH_THREADS (default 1; the crop targets are stated for 2).
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import HAS_CUDA, ROOT

from rmpe_ext import ops
from rmpe_ext.alphapose import ALPHAPOSE_MEAN, heatmaps_to_coords
from rmpe_ext.presets import alphapose_crop_theta

cv2 = pytest.importorskip("cv2")
CROPS = [1, 8, 32, 128]
SIZE = (256, 192)


@pytest.fixture(scope="module")
def frame():
    """A real COCO image resized to 1080p, RGB uint8 [1080, 1920, 3] (synthetic
    noise where the shared data is absent)."""
    path = ROOT.parent / "shared" / "data" / "mmpose_tests" / "coco" / "000000000785.jpg"
    if path.exists():
        return np.ascontiguousarray(cv2.resize(cv2.imread(str(path)), (1920, 1080))[:, :, ::-1])
    return np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)


def person_boxes(n, seed=0):
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0, 1700, n), rng.uniform(0, 700, n)
    w, h = rng.uniform(80, 300, n), rng.uniform(200, 500, n)
    return torch.tensor(np.stack([x, y, x + w, y + h], 1), dtype=torch.float32)


@pytest.mark.parametrize("n", CROPS)
def test_baseline_crop_cv2_loop(benchmark, frame, n):
    benchmark.group = f"crop {n} persons 256x192 from 1080p"
    theta, _ = alphapose_crop_theta(person_boxes(n))
    mats = [cv2.invertAffineTransform(t) for t in theta.numpy()]
    mean = torch.tensor(ALPHAPOSE_MEAN).view(3, 1, 1)

    def run():
        out = torch.empty(n, 3, *SIZE)
        for k in range(n):
            crop = cv2.warpAffine(frame, mats[k], SIZE[::-1], flags=cv2.INTER_LINEAR)
            out[k] = torch.from_numpy(crop).permute(2, 0, 1).float().div_(255).sub_(mean)
        return out

    benchmark(run)


@pytest.mark.parametrize("n", CROPS)
def test_baseline_crop_torch(benchmark, frame, n):
    benchmark.group = f"crop {n} persons 256x192 from 1080p"
    theta, _ = alphapose_crop_theta(person_boxes(n))
    theta_n = ops.pixel_to_normalized_theta(theta.float(), frame.shape[:2], SIZE)
    ft = torch.from_numpy(frame)
    mean = torch.tensor(ALPHAPOSE_MEAN).view(1, 3, 1, 1)

    def run():
        img = ft.permute(2, 0, 1).float().div(255).unsqueeze(0).expand(n, -1, -1, -1)
        grid = F.affine_grid(theta_n, (n, 3, *SIZE), align_corners=False)
        return F.grid_sample(img, grid, "bilinear", "zeros", False) - mean

    benchmark(run)


@pytest.mark.parametrize("interpolation", ["bilinear", "opencv4"])
@pytest.mark.parametrize("n", CROPS)
def test_rmpe_crop(benchmark, frame, n, interpolation):
    benchmark.group = f"crop {n} persons 256x192 from 1080p"
    theta, _ = alphapose_crop_theta(person_boxes(n))
    ft, bidx = torch.from_numpy(frame), torch.zeros(n, dtype=torch.long)
    out = benchmark(ops.affine_crop, ft, theta, SIZE, bidx, ALPHAPOSE_MEAN, interpolation=interpolation, check=False)
    assert out.shape == (n, 3, *SIZE)


@pytest.mark.parametrize("n", CROPS)
def test_rmpe_crop_float16(benchmark, frame, n):
    """The same crops in float16 (half the bytes; the float32 values rounded)."""
    benchmark.group = f"crop {n} persons 256x192 from 1080p"
    theta, _ = alphapose_crop_theta(person_boxes(n))
    ft, bidx = torch.from_numpy(frame), torch.zeros(n, dtype=torch.long)
    out = benchmark(ops.affine_crop, ft, theta, SIZE, bidx, ALPHAPOSE_MEAN, dtype=torch.float16, check=False)
    assert out.dtype == torch.float16


@pytest.mark.parametrize("n", CROPS)
def test_rmpe_crop_into_reused_batch(benchmark, frame, n):
    """The same crops written into a batch the caller reuses (out=): no fresh memory."""
    benchmark.group = f"crop {n} persons 256x192 from 1080p"
    theta, _ = alphapose_crop_theta(person_boxes(n))
    ft, bidx = torch.from_numpy(frame), torch.zeros(n, dtype=torch.long)
    out = torch.empty(n, 3, *SIZE)
    benchmark(ops.affine_crop, ft, theta, SIZE, bidx, ALPHAPOSE_MEAN, check=False, out=out)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("n", CROPS + [256])
def test_rmpe_crop_cuda(benchmark, frame, n):
    benchmark.group = f"crop {n} persons 256x192 from 1080p (CUDA)"
    theta, _ = alphapose_crop_theta(person_boxes(n))
    ft, bidx = torch.from_numpy(frame).cuda(), torch.zeros(n, dtype=torch.long, device="cuda")
    theta = theta.cuda()

    def run():
        out = ops.affine_crop(ft, theta, SIZE, bidx, ALPHAPOSE_MEAN, check=False)
        torch.cuda.synchronize()
        return out

    benchmark(run)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("n", CROPS + [256])
def test_baseline_crop_torch_cuda(benchmark, frame, n):
    benchmark.group = f"crop {n} persons 256x192 from 1080p (CUDA)"
    theta, _ = alphapose_crop_theta(person_boxes(n))
    theta_n = ops.pixel_to_normalized_theta(theta.float(), frame.shape[:2], SIZE).cuda()
    ft = torch.from_numpy(frame).cuda()
    mean = torch.tensor(ALPHAPOSE_MEAN, device="cuda").view(1, 3, 1, 1)

    def run():
        img = ft.permute(2, 0, 1).float().div(255).unsqueeze(0).expand(n, -1, -1, -1)
        grid = F.affine_grid(theta_n, (n, 3, *SIZE), align_corners=False)
        out = F.grid_sample(img, grid, "bilinear", "zeros", False) - mean
        torch.cuda.synchronize()
        return out

    benchmark(run)


# ---------------------------------------------------------------- backward


def _sampler_inputs(frame, n, device="cpu"):
    theta, _ = alphapose_crop_theta(person_boxes(n, seed=1))
    theta_n = ops.pixel_to_normalized_theta(theta.float(), frame.shape[:2], SIZE).to(device)
    img = torch.from_numpy(frame).permute(2, 0, 1).float().div(255).unsqueeze(0).contiguous().to(device)
    up = torch.randn(n, 3, *SIZE, generator=torch.Generator().manual_seed(0)).to(device)
    return img, theta_n, up


@pytest.mark.parametrize("n", [8])
def test_baseline_sampler_fwd_bwd_torch(benchmark, frame, n):
    benchmark.group = f"sampler forward+backward, {n} crops 256x192 from 1080p"
    img, theta, up = _sampler_inputs(frame, n)

    def run():
        x, t = img.clone().requires_grad_(), theta.clone().requires_grad_()
        grid = F.affine_grid(t, (n, 3, *SIZE), align_corners=False)
        F.grid_sample(x.expand(n, -1, -1, -1), grid, "bilinear", "zeros", False).backward(up)
        return x.grad, t.grad

    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("n", [8])
def test_rmpe_sampler_fwd_bwd(benchmark, frame, n):
    benchmark.group = f"sampler forward+backward, {n} crops 256x192 from 1080p"
    img, theta, up = _sampler_inputs(frame, n)
    bidx = torch.zeros(n, dtype=torch.long)

    def run():
        x, t = img.clone().requires_grad_(), theta.clone().requires_grad_()
        ops.affine_grid_sample(x, t, SIZE, bidx, check=False).backward(up)
        return x.grad, t.grad

    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)


def _fwd_bwd_cuda(benchmark, frame, n, use_torch):
    benchmark.group = f"sampler forward+backward, {n} crops 256x192 from 1080p (CUDA)"
    img, theta, up = _sampler_inputs(frame, n, "cuda")
    bidx = torch.zeros(n, dtype=torch.long, device="cuda")

    def run():
        x, t = img.clone().requires_grad_(), theta.clone().requires_grad_()
        if use_torch:
            grid = F.affine_grid(t, (n, 3, *SIZE), align_corners=False)
            out = F.grid_sample(x.expand(n, -1, -1, -1), grid, "bilinear", "zeros", False)
        else:
            out = ops.affine_grid_sample(x, t, SIZE, bidx, check=False)
        out.backward(up)
        torch.cuda.synchronize()

    benchmark(run)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_baseline_sampler_fwd_bwd_torch_cuda(benchmark, frame):
    _fwd_bwd_cuda(benchmark, frame, 32, True)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_rmpe_sampler_fwd_bwd_cuda(benchmark, frame):
    _fwd_bwd_cuda(benchmark, frame, 32, False)


# ---------------------------------------------------------------- decode


def _heatmaps(n):
    g = torch.Generator().manual_seed(n)
    return torch.rand(n, 17, 64, 48, generator=g), person_boxes(n, seed=2)


@pytest.mark.parametrize("n", [8, 64])
def test_baseline_decode_alphapose_loop(benchmark, n):
    transforms = pytest.importorskip("alphapose.utils.transforms")
    benchmark.group = f"decode {n} persons 17x64x48"
    hms, boxes = _heatmaps(n)
    box_lists = boxes.tolist()

    def run():
        return [transforms.heatmap_to_coord_simple(hms[k], box_lists[k]) for k in range(n)]

    benchmark(run)


@pytest.mark.parametrize("n", [8, 64])
def test_rmpe_decode(benchmark, n):
    benchmark.group = f"decode {n} persons 17x64x48"
    hms, boxes = _heatmaps(n)
    coords, scores = benchmark(heatmaps_to_coords, hms, boxes)
    assert coords.shape == (n, 17, 2)
