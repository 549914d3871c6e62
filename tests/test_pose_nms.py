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
    # AlphaPose master's whole-body criterion (K > 110), with either set of its constants
    "wholebody": ops.WholeBodyNMSParams(),
    "wholebody-nonheatmap": ops.WholeBodyNMSParams.alphapose(use_heatmap_loss=False),
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
    poses, scores, boxes, img = batch(1, dtype=dtype, K=136 if method == "wholebody" else 17)
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
    with pytest.raises(RuntimeError, match=r"params must hold 17 numbers"):
        torch.ops.rmpe_ext.pose_nms(poses, scores, boxes, None, None, 0, [1.0, 2.0], None)
    with pytest.raises(RuntimeError, match="method must be 0"):
        torch.ops.rmpe_ext.pose_nms(poses, scores, boxes, None, None, 5, ops.AlphaPoseNMSParams().to_list(), None)
    with pytest.raises(RuntimeError, match="the oks method needs sigmas"):
        torch.ops.rmpe_ext.pose_nms(poses, scores, boxes, None, None, 2, ops.OKSNMSParams().to_list(), None)
    with pytest.raises(RuntimeError, match=r"sigmas must have shape \[K\] = \[17\]"):
        torch.ops.rmpe_ext.pose_nms(poses, scores, boxes, None, None, 2, ops.OKSNMSParams().to_list(), torch.ones(3, device=device))


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


# ---------------------------------------------------------------------------
# Decisions exactly on a threshold. Each case is built so that the float
# arithmetic of the kernels lands exactly on the threshold (dyadic numbers, or
# the threshold taken from pose_similarity for that very pair), then checks the
# op's decision against the formula's comparison (strict ">" for the
# similarities, ">=" for AlphaPose's match count, "<=" for the radii, "<" for
# dropping a pick), and that the decision flips one float step away.


def _step(x, dtype, up):
    """The next value of `dtype` after x (x a value of dtype), up or down."""
    t = np.float32 if dtype == torch.float32 else np.float64
    return float(np.nextafter(t(x), t(np.inf if up else -np.inf)))


def _two(xy_i, xy_j, s_i, s_j, box_i, box_j, dtype, device):
    """Reference pose 0 (ranked first) and pose 1: (poses, joint_scores, boxes, rank)."""
    t = lambda v: torch.tensor(v, dtype=dtype, device=device)
    return t([xy_i, xy_j]), t([s_i, s_j]), t([box_i, box_j]), t([1.0, 0.5])


def _kept(args, method, params):
    return ops.pose_nms(*args, method=method, params=params).keep.tolist()


FAR = 500.0  # joints this far apart: no KSim, no PCK match, exp(-d / delta2) negligible
DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES)
def test_paper_similarity_exactly_eta_does_not_suppress(dtype, device):
    # identical poses, joint scores 0: KSim = sum tanh(0)^2 = 0, HSim = K exp(-0) = K, so d = lam K = 3 exactly
    xy = [[10.0, 20.0], [30.0, 25.0], [22.0, 60.0], [40.0, 61.0]]
    args = _two(xy, xy, [0.0] * 4, [0.0] * 4, [0, 0, 50, 70], [0, 0, 50, 70], dtype, device)
    p = dict(lam=0.75, sigma2=30.0)
    sim, _ = ops.pose_similarity(*args[:3], "paper", ops.PaperNMSParams(**p))
    assert sim[0, 1].item() == 3.0
    assert _kept(args, "paper", ops.PaperNMSParams(eta=3.0, **p)) == [0, 1]  # d > eta is false
    assert _kept(args, "paper", ops.PaperNMSParams(eta=_step(3.0, dtype, False), **p)) == [0]
    ref = reference.pose_nms(*args, method="paper", params=ops.PaperNMSParams(eta=3.0, **p))
    assert ref[0].tolist() == [0, 1]

    # a generic pair: eta set to the d the op computes for it
    xy_j = [[11.5, 19.0], [29.0, 27.5], [22.25, 58.0], [47.0, 61.0]]
    args = _two(xy, xy_j, [0.9, 0.7, 0.4, 0.8], [0.6, 0.5, 0.9, 0.3], [0, 0, 50, 70], [2, 1, 49, 72], dtype, device)
    p = dict(sigma1=0.5, sigma2=30.0, lam=1.2)
    sim, match = ops.pose_similarity(*args[:3], "paper", ops.PaperNMSParams(**p))
    d = sim[0, 1].item()
    assert 0 < match[0, 1] < 4 and d > 1  # some joints in the window, some not
    assert _kept(args, "paper", ops.PaperNMSParams(eta=d, **p)) == [0, 1]
    assert _kept(args, "paper", ops.PaperNMSParams(eta=_step(d, dtype, False), **p)) == [0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offset", [(10.0, 0.0), (-10.0, 0.0), (0.0, 10.0), (0.0, -10.0)])
def test_paper_ksim_window_edge_counts(offset, dtype, device):
    # the reference's box is 80 x 80 and box_frac 0.25: half windows of exactly 10 px; lam = 0, eta = 0,
    # so d > eta exactly when the one joint is inside the window (|dx| <= 10 and |dy| <= 10)
    p = ops.PaperNMSParams(lam=0.0, eta=0.0, box_frac=0.25)
    box = [60.0, 60.0, 140.0, 140.0]
    on = [100.0 + offset[0], 100.0 + offset[1]]
    args = _two([[100.0, 100.0]], [on], [0.8], [0.6], box, box, dtype, device)
    _, match = ops.pose_similarity(*args[:3], "paper", p)
    assert match[0, 1] == 1
    assert _kept(args, "paper", p) == [0]
    axis = 0 if offset[0] else 1
    out = list(on)
    out[axis] = _step(on[axis], dtype, offset[axis] > 0)  # one float step further out
    args = _two([[100.0, 100.0]], [out], [0.8], [0.6], box, box, dtype, device)
    _, match = ops.pose_similarity(*args[:3], "paper", p)
    assert match[0, 1] == 0
    assert _kept(args, "paper", p) == [0, 1]


@pytest.mark.parametrize("dtype", DTYPES)
def test_alphapose_simi_exactly_gamma_does_not_suppress(dtype, device):
    # match_thresh = K + 1: the PCK count never decides, simi > gamma alone does
    xy = [[10.0, 20.0], [30.0, 25.0], [22.0, 60.0], [40.0, 61.0]]
    xy_j = [[10.5, 20.0], [31.0, 27.0], [22.0, 60.75], [43.0, 61.0]]
    args = _two(xy, xy_j, [0.9, 0.7, 0.4, 0.8], [0.6, 0.5, 0.9, 0.3], [0, 0, 50, 70], [2, 1, 49, 72], dtype, device)
    p = dict(match_thresh=5, merge=False)
    sim, match = ops.pose_similarity(*args[:3], "alphapose", ops.AlphaPoseNMSParams(**p))
    simi = sim[0, 1].item()
    assert match[0, 1] == 4 and simi < sim[0, 0].item()  # the pick still removes itself
    assert _kept(args, "alphapose", ops.AlphaPoseNMSParams(gamma=simi, **p)) == [0, 1]
    assert _kept(args, "alphapose", ops.AlphaPoseNMSParams(gamma=_step(simi, dtype, False), **p)) == [0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_alphapose_match_count_exactly_match_thresh_suppresses(dtype, device):
    # two joints of j on i's (distance 0), two FAR away: nmatch = 2; gamma out of reach
    xy = [[10.0, 20.0], [30.0, 25.0], [22.0, 60.0], [40.0, 61.0]]
    xy_j = [xy[0], xy[1], [22.0 + FAR, 60.0], [40.0, 61.0 + FAR]]
    args = _two(xy, xy_j, [0.9] * 4, [0.8] * 4, [0, 0, 100, 100], [0, 0, 100, 100], dtype, device)
    p = dict(gamma=1e6, merge=False)
    _, match = ops.pose_similarity(*args[:3], "alphapose", ops.AlphaPoseNMSParams(**p))
    assert match[0, 1] == 2
    assert _kept(args, "alphapose", ops.AlphaPoseNMSParams(match_thresh=2, **p)) == [0]  # 2 >= 2
    assert _kept(args, "alphapose", ops.AlphaPoseNMSParams(match_thresh=3, **p)) == [0, 1]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("radius", ["cap", "box"])
def test_alphapose_joint_exactly_on_the_pck_radius_matches(radius, dtype, device):
    # r = min(alpha max(w, h), pck_cap): 5 from the cap (3-4-5 offset), or 8 from the box (0.125 x 64);
    # one joint of j at exactly r, the others FAR away; match_thresh 1, gamma out of reach
    if radius == "cap":
        p, box, off = dict(pck_cap=5.0), [0.0, 0.0, 100.0, 100.0], (3.0, 4.0)
    else:
        p, box, off = dict(alpha=0.125, pck_cap=100.0), [0.0, 0.0, 64.0, 40.0], (0.0, 8.0)
    p.update(gamma=1e6, match_thresh=1, merge=False)
    xy = [[10.0, 20.0], [30.0, 25.0], [22.0, 60.0]]
    on = [10.0 + off[0], 20.0 + off[1]]
    far = [[30.0 + FAR, 25.0], [22.0, 60.0 + FAR]]
    args = _two(xy, [on] + far, [0.9] * 3, [0.8] * 3, box, box, dtype, device)
    _, match = ops.pose_similarity(*args[:3], "alphapose", ops.AlphaPoseNMSParams(**p))
    assert match[0, 1] == 1
    assert _kept(args, "alphapose", ops.AlphaPoseNMSParams(**p)) == [0]  # d / r = 1 <= 1
    out = [on[0], _step(on[1], dtype, True)]
    args = _two(xy, [out] + far, [0.9] * 3, [0.8] * 3, box, box, dtype, device)
    _, match = ops.pose_similarity(*args[:3], "alphapose", ops.AlphaPoseNMSParams(**p))
    assert match[0, 1] == 0
    assert _kept(args, "alphapose", ops.AlphaPoseNMSParams(**p)) == [0, 1]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offset", [(1.0, 0.0), (0.0, -1.0)])
def test_alphapose_joint_exactly_one_pixel_away_is_in_ksim(offset, dtype, device):
    # one joint, mu = 0 and gamma = 0: simi > gamma exactly when the joint is within 1 px (its tanh term);
    # match_thresh 2 > K: the count never decides
    p = ops.AlphaPoseNMSParams(mu=0.0, gamma=0.0, match_thresh=2, merge=False)
    box = [0.0, 0.0, 100.0, 100.0]
    on = [50.0 + offset[0], 50.0 + offset[1]]
    args = _two([[50.0, 50.0]], [on], [0.8], [0.6], box, box, dtype, device)
    sim, _ = ops.pose_similarity(*args[:3], "alphapose", p)
    assert sim[0, 1].item() > 0
    assert _kept(args, "alphapose", p) == [0]
    axis = 0 if offset[0] else 1
    out = list(on)
    out[axis] = _step(on[axis], dtype, offset[axis] > 0)
    args = _two([[50.0, 50.0]], [out], [0.8], [0.6], box, box, dtype, device)
    sim, _ = ops.pose_similarity(*args[:3], "alphapose", p)
    assert sim[0, 1].item() == 0
    assert _kept(args, "alphapose", p) == [0, 1]


@pytest.mark.parametrize("dtype", DTYPES)
def test_oks_exactly_thresh_does_not_suppress(dtype, device):
    # joint 0 on the reference's (exp(0) = 1), joint 1 thousands of px away (exp(-e) = 0): OKS = 0.5 exactly
    sig = (0.05, 0.05)
    xy = [[100.0, 100.0], [120.0, 100.0]]
    args = _two(xy, [xy[0], [120.0 + 3000.0, 100.0]], [0.9, 0.9], [0.8, 0.8], [90, 90, 130, 130],
                [90, 90, 130, 130], dtype, device)
    sim, _ = ops.pose_similarity(*args[:3], "oks", ops.OKSNMSParams(sigmas=sig))
    assert sim[0, 1].item() == 0.5
    assert _kept(args, "oks", ops.OKSNMSParams(thresh=0.5, sigmas=sig)) == [0, 1]  # OKS > thresh is false
    assert _kept(args, "oks", ops.OKSNMSParams(thresh=_step(0.5, dtype, False), sigmas=sig)) == [0]
    assert ops.oks_nms(*args, thresh=0.5, sigmas=sig).tolist() == [0, 1]
    # identical poses: OKS = 1 exactly
    args = _two(xy, xy, [0.9, 0.9], [0.8, 0.8], [90, 90, 130, 130], [90, 90, 130, 130], dtype, device)
    assert _kept(args, "oks", ops.OKSNMSParams(thresh=1.0, sigmas=sig)) == [0, 1]
    assert _kept(args, "oks", ops.OKSNMSParams(thresh=_step(1.0, dtype, False), sigmas=sig)) == [0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", ["alphapose", "paper", "oks"])
def test_merge_takes_a_joint_exactly_on_the_merge_radius(method, dtype, device):
    # merge radius min(alpha max(w, h), merge_cap) = min(10, 5) = 5; joint 0 of j 5 px away (3-4-5), the
    # rest on i's joints (so j is removed); equal joint scores: the merged joint is the midpoint
    params = {"alphapose": ops.AlphaPoseNMSParams(merge_cap=5.0, match_thresh=2),
              "paper": ops.PaperNMSParams(merge=True, merge_cap=5.0, eta=0.5),
              "oks": ops.OKSNMSParams(merge=True, merge_cap=5.0, thresh=0.5, sigmas=(0.1,) * 4)}[method]
    xy = [[10.0, 20.0], [30.0, 25.0], [22.0, 60.0], [40.0, 61.0]]
    box = [0.0, 0.0, 100.0, 100.0]
    for dy, merged in ((4.0, [11.5, 22.0]), (_step(24.0, dtype, True) - 20.0, [10.0, 20.0])):
        xy_j = [[13.0, 20.0 + dy]] + xy[1:]
        args = _two(xy, xy_j, [0.5] * 4, [0.5] * 4, box, box, dtype, device)
        res = ops.pose_nms(*args, method=method, params=params)
        assert res.keep.tolist() == [0] and res.group.tolist() == [0, 0]
        assert res.poses[0, 0].tolist() == merged, dy  # the midpoint when within the radius, else i's joint
        assert res.poses[0, 1:].tolist() == xy[1:]


@pytest.mark.parametrize("dtype", DTYPES)
def test_score_and_area_thresholds_exactly_met_keep_the_pose(dtype, device):
    t = lambda v: torch.tensor(v, dtype=dtype, device=device)
    # one pose: its max joint score (= its merged max) exactly score_thresh; 2.25 x 4 x 8 = 72 exactly area_thresh
    one = (t([[[0.0, 0.0], [4.0, 8.0]]]), t([[0.5, 0.25]]), t([[0.0, 0.0, 10.0, 10.0]]))
    nms = lambda args, **k: ops.pose_nms(*args, method="alphapose", params=ops.AlphaPoseNMSParams(**k)).keep.tolist()
    assert nms(one, score_thresh=0.5) == [0]
    assert nms(one, score_thresh=_step(0.5, dtype, True)) == []
    assert nms(one, score_thresh=0.0, area_thresh=72.0) == [0]
    assert nms(one, score_thresh=0.0, area_thresh=_step(72.0, dtype, True)) == []
    assert nms(one, score_thresh=0.0, area_thresh=72.0, merge=False) == [0]
    assert nms(one, score_thresh=0.0, area_thresh=_step(72.0, dtype, True), merge=False) == []
    # a pick (scores 0.5) merged with a weaker copy (0.25): its merged max score, (0.5^2 + 0.25^2) / 0.75,
    # lies below its own max; keep it at a score_thresh of exactly that merged max, drop it one step above
    xy = [[0.0, 0.0], [4.0, 8.0]]
    two = _two(xy, xy, [0.5, 0.5], [0.25, 0.25], [0, 0, 10, 10], [0, 0, 10, 10], dtype, device)
    p = dict(match_thresh=2)  # the copy is removed by (and merged into) the pick
    merged = ops.pose_nms(*two, params=ops.AlphaPoseNMSParams(score_thresh=-math.inf, **p)).scores.max().item()
    assert merged == pytest.approx(0.3125 / 0.75) and merged < 0.5
    assert _kept(two, "alphapose", ops.AlphaPoseNMSParams(score_thresh=merged, **p)) == [0]
    assert _kept(two, "alphapose", ops.AlphaPoseNMSParams(score_thresh=_step(merged, dtype, True), **p)) == []


@pytest.mark.parametrize("K", [133, 136, 111])
@pytest.mark.parametrize("use_heatmap_loss", [True, False])
def test_wholebody_matches_reference(K, use_heatmap_loss, device):
    """The whole-body criterion on crowded and sparse images: its match is normalized by the poses
    still in play, so a pick that does not match itself (the usual case in a crowd) stays and is taken
    again with fewer poses left; pose_similarity gives its simi and raw match count."""
    params = ops.WholeBodyNMSParams.alphapose(use_heatmap_loss)
    for seed, persons, per_person in ((3, 3, 8), (4, 1, 3), (5, 6, 4)):
        poses, scores, boxes, img = batch(seed, images=2, persons=persons, per_person=per_person, K=K,
                                          dtype=torch.float64)
        scores[::3, K - 60:] *= 0.02  # low-scoring hands and face: the score mask matters
        args = [t.to(device) for t in (poses, scores, boxes)]
        res = ops.pose_nms(*args, image_index=img.to(device), method="wholebody", params=params)
        ref = reference.pose_nms(poses, scores, boxes, None, img, method="wholebody", params=params)
        assert_matches_reference(res, ref, torch.float64)
        sim, match = ops.pose_similarity(*args, method="wholebody", params=params)
        rsim, rmatch = reference.pose_similarity(poses, scores, boxes, method="wholebody", params=params)
        np.testing.assert_allclose(sim.cpu().numpy(), rsim, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(match.cpu().numpy(), rmatch)
    with pytest.raises(RuntimeError, match="the wholebody method needs K > 110 joints"):
        ops.pose_nms(poses[:, :110], scores[:, :110], boxes, method="wholebody")


@pytest.mark.parametrize("far", [4, 6])
def test_wholebody_match_depends_on_the_poses_in_play(far, device):
    """AlphaPose's whole-body match of a pair is count K / (4 n_rem c): with K = 136 joints all scoring
    0.9 (c = 136) and a pose A' equal to A (count 136), it is 34 / n_rem against match_thresh 5. With 4
    far poses besides A and A' (n_rem = 6: 5.67) A removes A' (and itself); with 6 (n_rem = 8: 4.25) it
    removes nothing, not even itself, and A' is kept too. The far poses never match anything."""
    K = 136
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 80, (K, 2))
    poses = [base, base] + [base + 1000.0 * (f + 1) for f in range(far)]
    poses = torch.tensor(np.array(poses))
    scores = torch.full((len(poses), K), 0.9, dtype=torch.float64)
    rank = torch.tensor([1.0, 0.99] + [0.5 - 0.01 * f for f in range(far)], dtype=torch.float64)
    lo, hi = poses.amin(1), poses.amax(1)
    boxes = torch.cat([lo, hi], 1)
    res = ops.pose_nms(poses.to(device), scores.to(device), boxes.to(device), rank.to(device), method="wholebody")
    if far == 4:
        assert res.keep.tolist() == [0, 2, 3, 4, 5] and res.group.tolist()[:2] == [0, 0]
    else:
        assert res.keep.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    ref = reference.pose_nms(poses, scores, boxes, rank, method="wholebody")
    assert res.keep.tolist() == ref[0].tolist()
