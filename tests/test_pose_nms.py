"""rmpe_ext.ops.pose_nms (greedy NMS + merging, batched) against the NumPy reference."""
import math

import numpy as np
import pytest
import torch
from conftest import DEVICES, cluster_poses
from hypothesis import given, settings
from hypothesis import strategies as st

from rmpe_ext import ops, reference

PARAMS = {
    "alphapose": ops.AlphaPoseNMSParams(),
    "alphapose-nomerge": ops.AlphaPoseNMSParams(merge=False, score_thresh=0.2, area_thresh=500.0),
    "paper": ops.PaperNMSParams(),
    "paper-merge": ops.PaperNMSParams(sigma1=0.5, sigma2=30.0, lam=1.0, eta=9.0, merge=True, score_thresh=0.3),
    "oks": ops.OKSNMSParams(thresh=0.5),
    "oks-vis": ops.OKSNMSParams(thresh=0.5, vis_thresh=0.3),
}


def batch(seed, images=3, persons=4, per_person=5, K=17, spread=2.0, dtype=torch.float32):
    """Poses of several images, interleaved, with their image index."""
    rng = np.random.default_rng(seed)
    parts = [cluster_poses(rng, persons, per_person, K=K, spread=spread) for _ in range(images)]
    poses = torch.cat([p[0] for p in parts]).to(dtype)
    scores = torch.cat([p[1] for p in parts]).to(dtype)
    boxes = torch.cat([p[2] for p in parts]).to(dtype)
    img = torch.cat([torch.full((len(p[0]),), 7 * b + 2, dtype=torch.long) for b, p in enumerate(parts)])
    perm = torch.from_numpy(rng.permutation(len(img)))
    return poses[perm], scores[perm], boxes[perm], img[perm]


def assert_matches_reference(res, ref, dtype):
    keep, poses, scores, group = ref
    assert res.keep.tolist() == keep.tolist()
    assert res.group.tolist() == group.tolist()
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-9)
    np.testing.assert_allclose(res.poses.cpu().numpy(), poses, **tol)
    np.testing.assert_allclose(res.scores.cpu().numpy(), scores, **tol)


@pytest.mark.parametrize("name", list(PARAMS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference(name, dtype, device):
    method, params = name.split("-")[0], PARAMS[name]
    poses, scores, boxes, img = batch(1, dtype=dtype)
    scores[::5, :4] = 0
    rank = scores.mean(1) + torch.linspace(0, 0.01, len(img), dtype=dtype)
    args = [t.to(device) for t in (poses, scores, boxes, rank, img)]
    res = ops.pose_nms(*args, method=method, params=params)
    assert res.keep.device == device and res.poses.dtype == dtype
    ref = reference.pose_nms(poses, scores, boxes, rank, img, method=method, params=params)
    assert 0 < len(ref[0]) < len(img)
    assert_matches_reference(res, ref, dtype)


@pytest.mark.parametrize("method", ["alphapose", "paper", "oks"])
def test_real_proposals_against_reference(dev_proposals, method):
    p = dev_proposals
    res = ops.pose_nms(p.poses, p.joint_scores, p.boxes, p.scores, p.image_index, method)
    ref = reference.pose_nms(p.poses, p.joint_scores, p.boxes, p.scores, p.image_index, method)
    assert_matches_reference(res, ref, torch.float32)
    assert 50 < len(res.keep) < len(p.poses)


def test_batched_equals_one_image_at_a_time(dev_proposals):
    p = dev_proposals
    res = ops.pose_nms(p.poses, p.joint_scores, p.boxes, p.scores, p.image_index)
    keep, merged, offset = [], [], 0
    for b in range(p.num_images):
        sel = torch.nonzero(p.image_index == b).flatten()
        r = ops.pose_nms(p.poses[sel], p.joint_scores[sel], p.boxes[sel], p.scores[sel])
        keep += sel[r.keep].tolist()
        merged.append(r.poses)
        # group positions are relative to this image's kept list
        g = res.group[sel]
        assert torch.equal(torch.where(g >= 0, g - offset, g), r.group)
        offset += len(r.keep)
    assert res.keep.tolist() == keep
    assert torch.equal(res.poses, torch.cat(merged))


def test_group_is_consistent(dev_proposals):
    p = dev_proposals
    res = ops.pose_nms(p.poses, p.joint_scores, p.boxes, p.scores, p.image_index)
    # every kept pose belongs to its own group, groups never cross images
    assert torch.equal(res.group[res.keep], torch.arange(len(res.keep)))
    member = res.group >= 0
    assert torch.equal(p.image_index[member], p.image_index[res.keep[res.group[member]]])


def test_default_rank_is_mean_joint_score():
    poses, scores, boxes, img = batch(3)
    a = ops.pose_nms(poses, scores, boxes, None, img)
    b = ops.pose_nms(poses, scores, boxes, torch.where(scores == 0, 1e-5, scores).mean(1), img)
    assert torch.equal(a.keep, b.keep)


def test_single_joint_and_single_pose():
    poses, scores, boxes, img = batch(4, K=1, spread=0.5)
    for name in ("alphapose", "paper"):
        res = ops.pose_nms(poses, scores, boxes, None, img, name)
        ref = reference.pose_nms(poses, scores, boxes, None, img, name)
        assert_matches_reference(res, ref, torch.float32)
    res = ops.pose_nms(poses[:1], scores[:1], boxes[:1])
    assert res.keep.tolist() == ([0] if scores[0].max() >= 0.3 else [])


def test_empty_input():
    for K in (17, 1):
        res = ops.pose_nms(torch.zeros(0, K, 2), torch.zeros(0, K), torch.zeros(0, 4),
                           image_index=torch.zeros(0, dtype=torch.long))
        assert res.keep.shape == (0,) and res.poses.shape == (0, K, 2) and res.scores.shape == (0, K)
        assert res.group.shape == (0,)


def test_inputs_are_not_modified(device):
    poses, scores, boxes, img = [t.to(device) for t in batch(5)]
    scores[::3, 2] = 0
    before = [t.clone() for t in (poses, scores, boxes, img)]
    for method in ("alphapose", "paper", "oks"):
        ops.pose_nms(poses, scores, boxes, None, img, method)
    for a, b in zip(before, (poses, scores, boxes, img)):
        assert torch.equal(a, b)


def test_bad_input_errors(device):
    poses, scores, boxes, img = [t.to(device) for t in batch(6, images=2, persons=2, per_person=2)]
    nms = lambda *a, **k: ops.pose_nms(*a, **k)

    def with_value(t, idx, v):
        t = t.clone()
        t[idx] = v
        return t

    with pytest.raises(RuntimeError, match="poses contains NaN or infinite"):
        nms(with_value(poses, (0, 3, 1), math.nan), scores, boxes)
    with pytest.raises(RuntimeError, match="boxes contains NaN or infinite"):
        nms(poses, scores, with_value(boxes, (1, 2), math.inf))
    with pytest.raises(RuntimeError, match=r"boxes must be \(x1, y1, x2, y2\) with x2 >= x1"):
        nms(poses, scores, with_value(boxes, (1, 2), boxes[1, 0] - 1))
    with pytest.raises(RuntimeError, match="scores contains NaN or infinite"):
        nms(poses, scores, boxes, with_value(scores.mean(1), 2, math.nan))
    with pytest.raises(RuntimeError, match="image_index contains negative values"):
        nms(poses, scores, boxes, None, with_value(img, 0, -1))
    with pytest.raises(RuntimeError, match=r"image_index must have shape \[N\]"):
        nms(poses, scores, boxes, None, img[1:])
    with pytest.raises(RuntimeError, match="image_index must be int64"):
        nms(poses, scores, boxes, None, img.int())
    with pytest.raises(RuntimeError, match=r"scores must have shape \[N\]"):
        nms(poses, scores, boxes, scores)
    with pytest.raises(RuntimeError, match=r"boxes must have shape \[N, 4\]"):
        nms(poses, scores, boxes[:, :3])
    with pytest.raises(RuntimeError, match=r"params must hold 11 numbers"):
        torch.ops.rmpe_ext.pose_nms(poses, scores, boxes, None, None, 0, [1.0, 2.0], None)
    with pytest.raises(RuntimeError, match="method must be 0"):
        torch.ops.rmpe_ext.pose_nms(poses, scores, boxes, None, None, 5, [0.0] * 11, None)
    with pytest.raises(RuntimeError, match="the oks method needs sigmas"):
        torch.ops.rmpe_ext.pose_nms(poses, scores, boxes, None, None, 2, [0.5] * 11, None)
    with pytest.raises(RuntimeError, match=r"sigmas must have shape \[K\] = \[17\]"):
        torch.ops.rmpe_ext.pose_nms(poses, scores, boxes, None, None, 2, [0.5] * 11, torch.ones(3, device=device))


@pytest.mark.skipif(len(DEVICES) < 2, reason="needs a CUDA device")
def test_device_mismatch_is_named():
    poses, scores, boxes, img = batch(6, images=1, persons=2, per_person=2)
    with pytest.raises(RuntimeError, match="boxes is on cpu but poses is on cuda"):
        ops.pose_nms(poses.cuda(), scores.cuda(), boxes)
    with pytest.raises(RuntimeError, match="image_index is on cpu but poses is on cuda"):
        ops.pose_nms(poses.cuda(), scores.cuda(), boxes.cuda(), None, img)


@pytest.mark.skipif(len(DEVICES) < 2, reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["alphapose", "paper", "oks"])
def test_cuda_matches_cpu_on_a_large_batch(method):
    poses, scores, boxes, img = batch(11, images=64, persons=5, per_person=10)
    cpu = ops.pose_nms(poses, scores, boxes, None, img, method)
    gpu = ops.pose_nms(poses.cuda(), scores.cuda(), boxes.cuda(), None, img.cuda(), method)
    assert torch.equal(cpu.keep, gpu.keep.cpu()) and torch.equal(cpu.group, gpu.group.cpu())
    torch.testing.assert_close(cpu.poses, gpu.poses.cpu(), rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(cpu.scores, gpu.scores.cpu(), rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(len(DEVICES) < 2, reason="needs a CUDA device")
@pytest.mark.parametrize("images,persons,per_person", [(300, 6, 5), (1, 150, 20)])
def test_cuda_matches_cpu_beyond_one_mask_width(images, persons, per_person):
    # 9000 poses in 300 images (mask width from a host-side maximum), or one
    # image of 3000 poses (47 words a row: several per lane in the scan)
    poses, scores, boxes, img = batch(12, images=images, persons=persons, per_person=per_person)
    cpu = ops.pose_nms(poses, scores, boxes, None, img)
    gpu = ops.pose_nms(poses.cuda(), scores.cuda(), boxes.cuda(), None, img.cuda())
    assert torch.equal(cpu.keep, gpu.keep.cpu()) and torch.equal(cpu.group, gpu.group.cpu())


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40),
    K=st.integers(1, 20),
    images=st.integers(1, 4),
    spread=st.floats(0.05, 20.0),
    method=st.sampled_from(["alphapose", "paper", "oks"]),
    merge=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_inputs_match_reference(n, K, images, spread, method, merge, seed):
    rng = np.random.default_rng(seed)
    poses, scores, boxes = cluster_poses(rng, persons=max(1, n // 4), per_person=4, K=K, spread=spread)
    poses, scores, boxes = poses[:n].double(), scores[:n].double(), boxes[:n].double()
    img = torch.from_numpy(rng.integers(0, images, len(poses)))
    if method == "oks":
        params = ops.OKSNMSParams(thresh=rng.uniform(0.3, 0.95), sigmas=tuple(rng.uniform(0.02, 0.1, K)), merge=merge)
    elif method == "paper":
        params = ops.PaperNMSParams(sigma2=rng.uniform(5, 100), eta=rng.uniform(0.5, 1.5) * K * 0.7, merge=merge)
    else:
        params = ops.AlphaPoseNMSParams(gamma=rng.uniform(0.5, 1.5) * K * 1.3, match_thresh=int(rng.integers(1, K + 2)),
                                        merge=merge, area_thresh=float(rng.choice([0.0, 300.0])))
    res = ops.pose_nms(poses, scores, boxes, None, img, method, params)
    ref = reference.pose_nms(poses, scores, boxes, None, img, method, params)
    assert_matches_reference(res, ref, torch.float64)
