"""Pose NMS: AlphaPose's pose_nms (the baseline) against rmpe_ext, same inputs, same run.

Run: pytest benchmarks/test_bench_pose_nms.py   (ratios printed at the end and
written to benchmarks/last_run.md; RMPE_BENCH_THREADS sets the CPU threads, default 1).
Every rmpe_ext benchmark (drop-in, op, batch; CUDA too) asserts that its kept
indices equal AlphaPose's pose_nms on the same frame, in AlphaPose's order.
"""
import pytest
import torch
from conftest import HAS_CUDA, alphapose_args, composite_frame

from rmpe_ext import alphapose, ops

pPose_nms = pytest.importorskip("alphapose.utils.pPose_nms", reason="pip install --no-deps alphapose==1.1")

SIZES = [5, 50, 90, 500]


def _alphapose_keep(poses, scores, boxes, box_scores):
    """AlphaPose's kept indices (in its pick order) for one frame; it writes into its inputs, so copies."""
    return [int(i) for i in pPose_nms.pose_nms(*[a.clone() for a in alphapose_args(poses, scores, boxes,
                                                                                     box_scores)])[5]]


def _slow_rounds(n):
    return {5: 50, 50: 20, 90: 10, 500: 5}[n]


@pytest.mark.parametrize("n", SIZES)
def test_baseline_alphapose(benchmark, dev_images, n):
    benchmark.group = f"pose_nms n={n}"
    args = alphapose_args(*composite_frame(dev_images, n))
    benchmark.pedantic(pPose_nms.pose_nms, args, rounds=_slow_rounds(n), iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("n", SIZES)
def test_rmpe_dropin(benchmark, dev_images, n):
    benchmark.group = f"pose_nms n={n}"
    args = alphapose_args(*composite_frame(dev_images, n))
    out = benchmark(alphapose.pose_nms, *args)
    assert [int(i) for i in out[5]] == _alphapose_keep(*composite_frame(dev_images, n))


@pytest.mark.parametrize("n", SIZES)
def test_rmpe_op(benchmark, dev_images, n):
    benchmark.group = f"pose_nms n={n}"
    poses, scores, boxes, box_scores = composite_frame(dev_images, n)
    res = benchmark(ops.pose_nms, poses, scores, boxes)
    assert 0 < len(res.keep) < n or n == 5
    assert res.keep.tolist() == _alphapose_keep(poses, scores, boxes, box_scores)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("n", SIZES)
def test_rmpe_op_cuda(benchmark, dev_images, n):
    benchmark.group = f"pose_nms n={n}"
    frame = composite_frame(dev_images, n)
    poses, scores, boxes, _ = (t.cuda() for t in frame)
    ops.pose_nms(poses, scores, boxes)  # the op synchronizes (its output size is data-dependent)
    res = benchmark(ops.pose_nms, poses, scores, boxes)
    assert res.keep.tolist() == _alphapose_keep(*frame)


def _batch(dev_images, frames=64, n=50):
    parts = [composite_frame(dev_images, n, start=f) for f in range(frames)]
    img = torch.repeat_interleave(torch.arange(frames), n)
    return parts, [torch.cat([p[i] for p in parts]) for i in range(4)] + [img]


def _alphapose_batch_keep(parts, n=50):
    """AlphaPose's kept indices frame by frame, as indices into the concatenated batch."""
    return [f * n + i for f, p in enumerate(parts) for i in _alphapose_keep(*p)]


def test_baseline_alphapose_batch64(benchmark, dev_images):
    benchmark.group = "pose_nms 64 frames x 50"
    parts, _ = _batch(dev_images)
    args = [alphapose_args(*p) for p in parts]
    benchmark.pedantic(lambda: [pPose_nms.pose_nms(*a) for a in args], rounds=3, iterations=1, warmup_rounds=1)


def test_rmpe_op_batch64(benchmark, dev_images):
    benchmark.group = "pose_nms 64 frames x 50"
    parts, (poses, scores, boxes, _, img) = _batch(dev_images)
    res = benchmark(ops.pose_nms, poses, scores, boxes, None, img)
    assert len(torch.unique(img[res.keep])) == 64
    assert res.keep.tolist() == _alphapose_batch_keep(parts)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_rmpe_op_batch64_cuda(benchmark, dev_images):
    benchmark.group = "pose_nms 64 frames x 50"
    parts, (poses, scores, boxes, _, img) = _batch(dev_images)
    poses, scores, boxes, img = poses.cuda(), scores.cuda(), boxes.cuda(), img.cuda()
    ops.pose_nms(poses, scores, boxes, None, img)
    res = benchmark(ops.pose_nms, poses, scores, boxes, None, img)
    assert res.keep.tolist() == _alphapose_batch_keep(parts)


def _more_joints(frame, K):
    """A real 17-joint frame extended to K joints (Halpe-26, Halpe-136): the extra joints near the body's,
    with their scores (timings only: AlphaPose master's whole-body code is not installed here)."""
    poses, scores, boxes, box_scores = frame
    g = torch.Generator().manual_seed(K)
    idx = torch.arange(K - 17) % 17
    extra = poses[:, idx] + torch.randn(len(poses), K - 17, 2, generator=g) * 3
    return torch.cat([poses, extra], 1), torch.cat([scores, scores[:, idx]], 1), boxes, box_scores


@pytest.mark.parametrize("method,K", [("alphapose", 26), ("wholebody", 136)])
def test_rmpe_op_more_joints(benchmark, dev_images, method, K):
    """The op on 50 proposals of Halpe-26 (AlphaPose's criterion) and Halpe-136 (its whole-body one):
    timings only."""
    benchmark.group = f"pose_nms n=50, K={K}"
    poses, scores, boxes, _ = _more_joints(composite_frame(dev_images, 50), K)
    res = benchmark(ops.pose_nms, poses, scores, boxes, None, None, method)
    assert 0 < len(res.keep) <= 50
