"""Property tests of every public op family (the fuzzing that found the crashes of
test_bad_input.py, kept in the suite). Each example draws valid inputs (shapes, dtypes, layouts,
extreme but meaningful values), then maybe one defect (NaN/inf, a wrong dtype, shape or index, an
absurd parameter). The properties: no crash; a defect gives an error whose message names the
argument; valid input agrees with an independent reference; inputs are never modified.

The number of examples comes from the hypothesis profile: ``ci`` (default, a few hundred in all)
or ``long`` for a long local run: ``pytest tests/test_properties.py --hypothesis-profile=long``
(10,000 per test). Profiles are registered in conftest.py.
"""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICES
from hypothesis import assume, given
from hypothesis import strategies as st

from rmpe_ext import ops, reference

NAN, INF = float("nan"), float("inf")
ERRORS = (RuntimeError, ValueError, TypeError, IndexError)


def _snapshot(*ts):
    return [t.detach().clone() if isinstance(t, torch.Tensor) else None for t in ts]


def _unchanged(before, *ts):
    for b, t in zip(before, ts):
        if b is not None:
            torch.testing.assert_close(t, b, rtol=0, atol=0, equal_nan=True)


def _raises_naming(fn, name):
    """fn() must raise one of ERRORS whose message names `name`."""
    with pytest.raises(ERRORS) as e:
        fn()
    assert name in str(e.value), f"the error does not name {name!r}: {e.value}"


def _layout(t: torch.Tensor, strided: bool) -> torch.Tensor:
    """The same values as a non-contiguous tensor (every other element of a larger one)."""
    if not strided or t.numel() == 0:
        return t
    big = torch.empty((*t.shape[:-1], 2 * t.shape[-1]), dtype=t.dtype, device=t.device)
    big[..., ::2] = t
    return big[..., ::2]


# ------------------------------------------------------------------ pose NMS family

POSE_DEFECTS = ["none", "nan_poses", "inf_scores", "nan_boxes", "box_order", "neg_image", "bad_dtype",
                "bad_shape", "nan_param", "neg_alpha"]


@st.composite
def pose_batch(draw):
    n = draw(st.integers(0, 24))
    k = draw(st.integers(1, 18))
    images = draw(st.integers(1, 4))
    scale = draw(st.sampled_from([1.0, 100.0, 1e6]))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 4, (max(n // 3, 1), 2)) * scale
    who = rng.integers(0, len(centres), n)
    poses = centres[who][:, None] + rng.normal(0, 0.05 * scale, (n, k, 2)) * rng.uniform(0.02, 1, (n, 1, 1))
    scores = rng.uniform(0, 1, (n, k))
    scores[rng.uniform(0, 1, (n, k)) < 0.1] = 0.0  # AlphaPose's zero -> 1e-5 path
    lo, hi = poses.min(1) if n else np.zeros((0, 2)), poses.max(1) if n else np.zeros((0, 2))
    boxes = np.concatenate([lo - 0.1 * scale, hi + 0.1 * scale], 1)
    img = rng.integers(0, images, n)
    return poses, scores, boxes, img


def _nms_params(method, merge, k):
    if method == "alphapose":
        return ops.AlphaPoseNMSParams(merge=merge)
    if method == "paper":
        return ops.PaperNMSParams(merge=merge, sigma2=50.0, eta=3.0)
    return ops.OKSNMSParams(merge=merge, thresh=0.5, sigmas=tuple([0.05] * k))


@pytest.mark.parametrize("dev", DEVICES)
@given(batch=pose_batch(), method=st.sampled_from(["alphapose", "paper", "oks"]), merge=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.float64]), strided=st.booleans(),
       defect=st.sampled_from(POSE_DEFECTS))
def test_pose_nms_family(dev, batch, method, merge, dtype, strided, defect):
    poses_np, scores_np, boxes_np, img_np = batch
    n, k = scores_np.shape
    t = lambda a: _layout(torch.tensor(a, dtype=dtype, device=dev), strided)
    poses, scores, boxes = t(poses_np), t(scores_np), t(boxes_np)
    img = torch.tensor(img_np, dtype=torch.long, device=dev)
    params = _nms_params(method, merge, k)
    name = None
    if defect != "none" and n > 0:
        if defect == "nan_poses":
            poses[n - 1, k - 1, 0], name = NAN, "poses"
        elif defect == "inf_scores":
            scores[0, 0], name = INF, "joint_scores"
        elif defect == "nan_boxes":
            boxes[0, 3], name = NAN, "boxes"
        elif defect == "box_order":
            x1, x2 = float(boxes[0, 0]), float(boxes[0, 2])
            boxes[0, 0], boxes[0, 2], name = x2 + 1, x1, "boxes"
        elif defect == "neg_image":
            img[n - 1], name = -1, "image_index"
        elif defect == "bad_dtype":
            scores, name = scores.half(), "joint_scores"
        elif defect == "bad_shape":
            boxes, name = boxes[:, :3], "boxes"
        elif defect == "nan_param":
            field = {"alphapose": "gamma", "paper": "eta", "oks": "thresh"}[method]
            params, name = dataclasses.replace(params, **{field: NAN}), field
        elif defect == "neg_alpha":
            params, name = dataclasses.replace(params, alpha=-0.5), "alpha"
    before = _snapshot(poses, scores, boxes, img)
    if name is not None:
        _raises_naming(lambda: ops.pose_nms(poses, scores, boxes, None, img, method, params), name)
        if defect not in ("neg_image",):
            _raises_naming(lambda: ops.pose_similarity(poses, scores, boxes, method, params), name)
        _unchanged(before, poses, scores, boxes, img)
        return
    res = ops.pose_nms(poses, scores, boxes, None, img, method, params)
    _unchanged(before, poses, scores, boxes, img)
    if dtype != torch.float64:
        assert res.keep.shape[0] <= n and res.group.shape == (n,)
        return  # decisions near a threshold may round differently in float32: the reference is float64
    ref = reference.pose_nms(poses_np, scores_np, boxes_np, None, img_np, method, params)
    assert res.keep.cpu().tolist() == ref[0].tolist()
    assert res.group.cpu().tolist() == ref[3].tolist()
    np.testing.assert_allclose(res.poses.cpu().numpy(), ref[1], rtol=1e-9, atol=1e-9 * max(1.0, np.abs(poses_np).max(initial=0)))
    np.testing.assert_allclose(res.scores.cpu().numpy(), ref[2], rtol=1e-9, atol=1e-12)
    sim, match = ops.pose_similarity(poses, scores, boxes, method, params)
    rsim, rmatch = reference.pose_similarity(poses_np, scores_np, boxes_np, method, params)
    np.testing.assert_allclose(sim.cpu().numpy(), rsim, rtol=1e-9, atol=1e-12)
    assert (match.cpu().numpy() == rmatch).all()


@pytest.mark.parametrize("dev", DEVICES)
@given(batch=pose_batch(), thresh=st.floats(0.05, 1.0), linear=st.booleans(), max_dets=st.integers(-1, 6),
       defect=st.sampled_from(["none", "nan_scores", "zero_thresh", "bad_max_dets", "bad_sigmas"]))
def test_soft_oks_nms(dev, batch, thresh, linear, max_dets, defect):
    poses_np, js_np, boxes_np, img_np = batch
    n, k = js_np.shape
    rank_np = js_np.mean(1) if n else np.zeros(0)
    t = lambda a: torch.tensor(a, dtype=torch.float64, device=dev)
    poses, js, boxes, rank = t(poses_np), t(js_np), t(boxes_np), t(rank_np)
    img = torch.tensor(img_np, dtype=torch.long, device=dev)
    sigmas = [0.05] * k
    call = lambda: ops.soft_oks_nms(poses, js, boxes, rank, img, thresh, sigmas, None, max_dets, linear)
    before = _snapshot(poses, js, boxes, rank, img)
    name = None
    if defect == "nan_scores" and n > 0:
        rank[0], name = NAN, "scores"
    elif defect == "zero_thresh" and not linear:
        thresh, name = 0.0, "thresh"
    elif defect == "bad_max_dets":
        max_dets, name = -3, "max_dets"
    elif defect == "bad_sigmas":
        sigmas, name = [0.05] * (k - 1) + [INF], "sigmas"
    if name is not None:
        before = _snapshot(poses, js, boxes, rank, img)
        _raises_naming(call, name)
        _unchanged(before, poses, js, boxes, rank, img)
        return
    keep, rescored = call()
    _unchanged(before, poses, js, boxes, rank, img)
    rk, rs = reference.soft_oks_nms(poses_np, js_np, boxes_np, rank_np, img_np, thresh, tuple(sigmas), None, max_dets,
                                    linear)
    assert keep.cpu().tolist() == rk.tolist()
    np.testing.assert_allclose(rescored.cpu().numpy(), rs, rtol=1e-9, atol=1e-300)


# ------------------------------------------------------------------ sampler


@pytest.mark.filterwarnings("ignore:Since version 1.3.0, affine_grid behavior has changed")
@pytest.mark.parametrize("dev", DEVICES)
@given(B=st.integers(1, 2), C=st.integers(1, 3), H=st.integers(1, 9), W=st.integers(1, 9), h=st.integers(1, 6),
       w=st.integers(1, 6), crops=st.integers(0, 4), align=st.booleans(),
       padding=st.sampled_from(["zeros", "border"]), dtype=st.sampled_from([torch.float32, torch.float64]),
       scale=st.sampled_from([0.5, 1.0, 3.0, 1e6]), strided=st.booleans(), seed=st.integers(0, 2 ** 31 - 1),
       defect=st.sampled_from(["none", "nan_theta", "int_theta", "bad_index", "int_input", "bad_size", "theta_shape"]))
def test_affine_grid_sample(dev, B, C, H, W, h, w, crops, align, padding, dtype, scale, strided, seed, defect):
    g = torch.Generator().manual_seed(seed)
    x = _layout(torch.randn(B, C, H, W, generator=g, dtype=dtype).to(dev), strided)
    theta = (torch.randn(crops, 2, 3, generator=g, dtype=dtype) * scale).to(dev)
    bidx = torch.randint(0, B, (crops,), generator=g).to(dev)
    size = (h, w)
    name = None
    if defect == "nan_theta" and crops:
        theta[0, 1, 2] = NAN
    elif defect == "int_theta":
        theta, name = theta.long(), "theta"
    elif defect == "bad_index" and crops:
        bidx[0], name = B, "batch_index"
    elif defect == "int_input":
        x, name = x.to(torch.int32), "input"
    elif defect == "bad_size":
        size, name = (h, 0), "size"
    elif defect == "theta_shape":
        theta, name = theta[:, :1], "theta"
    before = _snapshot(x, theta, bidx)
    call = lambda: ops.affine_grid_sample(x, theta, size, bidx, align, padding)
    if name is not None:
        _raises_naming(call, name)
        _unchanged(before, x, theta, bidx)
        return
    out = call()
    _unchanged(before, x, theta, bidx)
    ref_grid = F.affine_grid(theta, (crops, C, h, w), align_corners=align) if crops else None
    if defect == "nan_theta" and crops:
        assert torch.isnan(out[0]).all()
        out, ref_grid, bidx = out[1:], ref_grid[1:], bidx[1:]
    if out.shape[0] == 0:
        return
    ref = F.grid_sample(x[bidx], ref_grid, "bilinear", padding, align_corners=align)
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol * max(1.0, scale))


# ------------------------------------------------------------------ uint8 crops


@pytest.mark.parametrize("dev", DEVICES)
@given(B=st.integers(1, 2), H=st.integers(1, 12), W=st.integers(1, 12), C=st.integers(1, 4), crops=st.integers(0, 3),
       h=st.integers(1, 9), w=st.integers(1, 17), interp=st.sampled_from(["bilinear", "bilinear-u8", "opencv4"]),
       out_dtype=st.sampled_from([torch.float32, torch.float16]), value=st.sampled_from([0.0, 17.0, 300.0, -5.0]),
       magnitude=st.sampled_from([1.0, 30.0, 1e9, 1e25, 1e38]), seed=st.integers(0, 2 ** 31 - 1),
       defect=st.sampled_from(["none", "nan_theta", "inf_theta", "nan_value", "bad_index", "float_frames",
                               "bad_out"]))
def test_affine_crop(dev, B, H, W, C, crops, h, w, interp, out_dtype, value, magnitude, seed, defect):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (B, H, W, C), generator=g, dtype=torch.uint8).to(dev)
    theta = (torch.randn(crops, 2, 3, generator=g, dtype=torch.float64) * magnitude).to(dev)
    bidx = torch.randint(0, B, (crops,), generator=g).to(dev)
    mean, std = [0.1 * c for c in range(C)], [0.5 + c for c in range(C)]
    out = None
    name = None
    too_large = crops and float(theta.abs().max()) * (h + w) >= 1e30
    if defect in ("nan_theta", "inf_theta") and crops:
        theta[crops - 1, 0, 1], name = (NAN if defect == "nan_theta" else INF), "theta_px"
    elif defect == "nan_value" and interp != "bilinear":
        value, name = NAN, "value"
    elif defect == "bad_index" and crops:
        bidx[0], name = -1, "batch_index"
    elif defect == "float_frames":
        frames, name = frames.float(), "frames"
    elif defect == "bad_out":
        out, name = torch.empty(crops, C, h, w, dtype=torch.float64, device=dev), "out"
    # the wrapper checks batch_index, then theta_px, then the op its other arguments
    if too_large and name != "batch_index":
        name = "theta_px"
    before = _snapshot(frames, theta, bidx)
    call = lambda: ops.affine_crop(frames, theta, (h, w), bidx, mean, std, True, value, out_dtype, interp, out=out)
    if name is not None:
        _raises_naming(call, name)
        _unchanged(before, frames, theta, bidx)
        if name == "theta_px" and defect in ("none", "nan_theta", "inf_theta"):
            # the op itself on that theta: NaN or a number per pixel, never a crash
            raw = torch.ops.rmpe_ext.affine_crop(frames, theta, [h, w], bidx, mean, std, True, value,
                                                 ops.affine._INTERP[interp], out_dtype)
            assert raw.shape == (crops, C, h, w)
        return
    res = call()
    _unchanged(before, frames, theta, bidx)
    assert res.shape == (crops, C, h, w) and res.dtype == out_dtype
    assert torch.isfinite(res).all()
    if interp == "bilinear" and out_dtype == torch.float32 and crops:
        # the exact mode equals the float sampler on the float frames, then the normalization
        x = frames.permute(0, 3, 1, 2).flip(1).double()
        ref = ops.affine_sample_px(x, theta, (h, w), bidx, "constant", value)
        ref = (ref / 255 - torch.tensor(mean, dtype=ref.dtype, device=dev)[:, None, None]) / \
            torch.tensor(std, dtype=ref.dtype, device=dev)[:, None, None]
        torch.testing.assert_close(res.double(), ref, rtol=1e-4, atol=1e-4 * (1 + abs(value) / 255))


# ------------------------------------------------------------------ SDTN inverse


@pytest.mark.parametrize("dev", DEVICES)
@given(n=st.integers(0, 5), dtype=st.sampled_from([torch.float32, torch.float64]),
       exponent=st.integers(-30, 30), seed=st.integers(0, 2 ** 31 - 1),
       defect=st.sampled_from(["none", "singular", "nan", "int", "shape"]))
def test_affine_inverse(dev, n, dtype, exponent, seed, defect):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, 2, 2, generator=g, dtype=torch.float64)
    assume(n == 0 or float(torch.linalg.cond(A).max()) < 1e4)
    theta = torch.cat([A * 10.0 ** exponent, torch.randn(n, 2, 1, generator=g, dtype=torch.float64)], 2)
    theta = theta.to(dtype).to(dev)
    name = None
    if defect == "singular" and n:
        theta[0, 1, :2] = theta[0, 0, :2] * 2
        name = "singular"
    elif defect == "nan" and n:
        theta[0, 0, 2], name = NAN, "not finite"
    elif defect == "int":
        theta, name = theta.long(), "theta"
    elif defect == "shape":
        theta, name = theta[:, :, :2], "theta"
    before = _snapshot(theta)
    if name is not None:
        _raises_naming(lambda: ops.affine_inverse(theta), name)
        _unchanged(before, theta)
        return
    gamma = ops.affine_inverse(theta)
    _unchanged(before, theta)
    full = torch.cat([theta.double().cpu(), torch.tensor([0.0, 0, 1]).expand(n, 1, 3)], 1)
    ref = torch.linalg.inv(full)[:, :2]
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    torch.testing.assert_close(gamma.double().cpu(), ref, rtol=tol, atol=tol * scale)


# ------------------------------------------------------------------ heatmap decode


def _decode_reference(hm: np.ndarray, maps: np.ndarray, quarter: bool) -> tuple:
    """AlphaPose's argmax + quarter step in plain loops, then the map (float64)."""
    n, k, h, w = hm.shape
    coords, scores = np.zeros((n, k, 2)), np.zeros((n, k))
    for a in range(n):
        for b in range(k):
            m = hm[a, b]
            flat = m.reshape(-1)
            idx = int(np.argmax(flat))  # first maximum; NaN counts as the maximum
            v = flat[idx]
            px, py = idx % w, idx // w
            fx, fy = float(px), float(py)
            if not v > 0:
                fx = fy = 0.0
            elif quarter and 1 < px < w - 1 and 1 < py < h - 1:
                dx, dy = m[py, px + 1] - m[py, px - 1], m[py + 1, px] - m[py - 1, px]
                fx += 0.25 * np.sign(dx) if dx == dx else 0.0
                fy += 0.25 * np.sign(dy) if dy == dy else 0.0
            M = maps[a]
            coords[a, b] = (M[0, 0] * fx + M[0, 1] * fy + M[0, 2], M[1, 0] * fx + M[1, 1] * fy + M[1, 2])
            scores[a, b] = v
    return coords, scores


@pytest.mark.parametrize("dev", DEVICES)
@given(n=st.integers(0, 3), k=st.integers(1, 4), h=st.integers(1, 9), w=st.integers(1, 9),
       refine=st.sampled_from(["quarter", "none", "dark"]), ties=st.booleans(), seed=st.integers(0, 2 ** 31 - 1),
       defect=st.sampled_from(["none", "nan_map", "bad_maps", "int_maps", "three_d"]))
def test_heatmap_decode(dev, n, k, h, w, refine, ties, seed, defect):
    rng = np.random.default_rng(seed)
    hm_np = rng.uniform(-0.5, 1, (n, k, h, w))
    if ties:
        hm_np = np.round(hm_np * 4) / 4  # many equal values: the first maximum wins
    maps_np = rng.normal(0, 2, (n, 2, 3))
    hm = torch.tensor(hm_np, device=dev)
    maps = torch.tensor(maps_np, device=dev)
    name = None
    if defect == "nan_map" and n:
        hm[0, 0, h // 2, w // 2] = NAN
        hm_np[0, 0, h // 2, w // 2] = NAN
    elif defect == "bad_maps":
        maps, name = maps[:, :1], "hm_to_img"
    elif defect == "int_maps":
        maps, name = maps.long(), "hm_to_img"
    elif defect == "three_d":
        hm, name = hm[0] if n else hm.flatten(0, 1), "heatmaps"
    before = _snapshot(hm, maps)
    call = lambda: ops.heatmap_decode(hm, maps, refine)
    if name is not None:
        _raises_naming(call, name)
        _unchanged(before, hm, maps)
        return
    coords, scores = call()
    _unchanged(before, hm, maps)
    if refine == "dark":
        assert coords.shape == (n, k, 2)
        return
    rc, rs = _decode_reference(hm_np, maps_np, refine == "quarter")
    np.testing.assert_array_equal(scores.cpu().numpy(), rs)
    np.testing.assert_allclose(coords.cpu().numpy(), rc, rtol=1e-12, atol=1e-12)
