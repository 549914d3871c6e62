"""Reproducers of the crashes and silent wrong answers that fuzzing the public ops found (each
crashed, returned a wrong answer or gave an unclear error before its fix): every one is now a
clear error naming the argument, or a documented answer (NaN where the sample point is not a
number), never a crash."""
import math

import numpy as np
import pytest
import torch

import rmpe_ext
from rmpe_ext import ops

NAN, INF = float("nan"), float("inf")
INTERPOLATIONS = ("bilinear", "bilinear-u8", "opencv4")


def _frames(device, B=1, H=20, W=30):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (B, H, W, 3), generator=g, dtype=torch.uint8).to(device)


def _theta(rows, device, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype, device=device)


# ------------------------------------------------------------------ crops


@pytest.mark.parametrize("interp", INTERPOLATIONS)
@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_crop_non_finite_theta_is_nan_in_the_op_and_an_error_in_the_wrapper(device, interp, bad):
    """bilinear-u8 indexed a lookup table with int(NaN) (segfault); opencv4 cast NaN to int (UB,
    zeros). Now: the op gives NaN crops for that crop (every mode, as the float sampler), the other
    crops are untouched; the wrapper (check=True) says which row of theta_px is bad."""
    frames = _frames(device)
    theta = _theta([[[bad, 0, 0], [0, 1, 0]], [[1, 0, 2], [0, 1, 3]]], device)
    bidx = torch.zeros(2, dtype=torch.long, device=device)
    out = torch.ops.rmpe_ext.affine_crop(frames, theta, [8, 6], bidx, [0.0] * 3, [1.0] * 3, False, 0.0,
                                         ops.affine._INTERP[interp], torch.float32)
    assert torch.isnan(out[0]).all()
    good = ops.affine_crop(frames, theta[1:], (8, 6), bidx[1:], interpolation=interp)
    torch.testing.assert_close(out[1:], good, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"theta_px must be finite.*row 0"):
        ops.affine_crop(frames, theta, (8, 6), bidx, interpolation=interp)
    nan_out = ops.affine_crop(frames, theta, (8, 6), bidx, interpolation=interp, check=False)
    assert torch.isnan(nan_out[0]).all()


@pytest.mark.parametrize("interp", INTERPOLATIONS)
def test_crop_theta_too_large_for_float32(device, interp):
    """A finite float64 theta whose float32 products overflow (1e38 * j) crashed bilinear-u8. The op
    now gives, per pixel, the padding value (a point far outside) or NaN (a point that is not a
    number in float32), never a crash; the wrapper refuses such a theta, naming it."""
    frames = _frames(device)
    theta = _theta([[[1e38, 0, 0], [0, 1, 0]]], device)
    out = torch.ops.rmpe_ext.affine_crop(frames, theta, [8, 6], None, [0.0] * 3, [1.0] * 3, False, 7.0,
                                         ops.affine._INTERP[interp], torch.float32)
    pad = 7.0 / 255
    assert torch.isfinite(out[..., 0]).all()  # column 0: x = 0, inside the frame
    rest = out[..., 1:]
    assert (torch.isnan(rest) | ((rest - pad).abs() < 1e-6)).all(), out
    with pytest.raises(ValueError, match="theta_px is too large"):
        ops.affine_crop(frames, theta, (8, 6), interpolation=interp)


@pytest.mark.parametrize("interp", ["bilinear-u8", "opencv4"])
def test_crop_nan_value_in_a_uint8_mode_is_refused(device, interp):
    """value=nan with a pixel outside the frame: bilinear-u8 indexed a table with int(NaN), opencv4
    with crop_cval(NaN) = INT_MIN (segfaults). A uint8 border value must be a number."""
    frames = _frames(device)
    theta = _theta([[[1, 0, -50], [0, 1, 0]]], device)
    with pytest.raises(RuntimeError, match=r"value must be a finite uint8 border value .* got nan"):
        ops.affine_crop(frames, theta, (8, 16), interpolation=interp, value=NAN)


def test_crop_nan_value_in_float_mode_marks_outside_pixels(device):
    """In the float mode a NaN padding value is meaningful: the pixels outside the frame are NaN,
    the others are not."""
    frames = _frames(device)
    theta = _theta([[[1, 0, -4], [0, 1, 0]]], device)  # columns j < 4 read outside (x < 0)
    out = ops.affine_crop(frames, theta, (8, 16), value=NAN)
    assert torch.isnan(out[..., :3]).all() and not torch.isnan(out[..., 5:]).any()


def test_crop_out_of_wrong_dtype_names_out(device):
    frames = _frames(device)
    theta = _theta([[[1, 0, 0], [0, 1, 0]]], device)
    out = torch.empty(1, 3, 8, 6, dtype=torch.float64, device=device)
    with pytest.raises(RuntimeError, match=r"out must be float32, float16 or bfloat16, got Double"):
        ops.affine_crop(frames, theta, (8, 6), out=out)


def test_crop_persons_refuses_boxes_whose_crop_overflows():
    """crop_persons(frame, [[0, 0, 3e38, 3e38]]): AlphaPose's float32 box arithmetic overflows
    (scale 1.25 * 3e38), its matrix is NaN, and the OpenCV 5 mode crashed."""
    frame = np.zeros((40, 50, 3), np.uint8)
    with pytest.raises(ValueError, match=r"boxes_xyxy: box 0 .* not finite"):
        rmpe_ext.alphapose.crop_persons(frame, [[0, 0, 3e38, 3e38]])
    inps, boxes = rmpe_ext.alphapose.crop_persons(frame, [[0, 0, 30, 30]])
    assert torch.isfinite(inps).all() and torch.isfinite(boxes).all()


# ------------------------------------------------------------------ sampler coordinates


def test_integer_theta_is_refused_like_affine_grid():
    """An int theta was accepted by affine_grid_sample and cropped half a pixel off (the centre
    offset was built in theta's dtype); F.affine_grid refuses it, and so do we."""
    x = torch.rand(1, 1, 8, 8)
    theta = torch.tensor([[[1, 0, 0], [0, 1, 0]]])
    with pytest.raises(TypeError, match="theta must be floating point, got torch.int64"):
        ops.affine_grid_sample(x, theta, (8, 8))
    with pytest.raises(ValueError, match="Expected theta to have floating point type"):
        torch.nn.functional.affine_grid(theta, (1, 1, 8, 8), align_corners=False)
    with pytest.raises(TypeError, match="theta_px must be floating point"):
        ops.heatmap_theta(theta, (8, 8), (2, 2))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_theta_is_converted_in_float32(dtype):
    """normalized_to_pixel_theta built the conversion in theta's own dtype: for float16/bfloat16 the
    pixel theta lost bits the sampler (computing in float32) would have used."""
    theta = torch.tensor([[[0.7, 0.1, 0.05], [-0.2, 0.9, -0.1]]]).to(dtype)
    px = ops.normalized_to_pixel_theta(theta, (300, 400), (64, 48))
    ref = ops.normalized_to_pixel_theta(theta.float(), (300, 400), (64, 48))
    assert px.dtype == torch.float32
    torch.testing.assert_close(px, ref, rtol=0, atol=0)
    x = torch.rand(1, 3, 300, 400).to(dtype)
    out = ops.affine_grid_sample(x, theta, (64, 48))
    ref_out = ops.affine_grid_sample(x, theta.float(), (64, 48))
    torch.testing.assert_close(out.float(), ref_out.float(), rtol=0, atol=0)
    hm = ops.heatmap_theta(theta, (64, 48), (16, 12))
    assert hm.dtype == torch.float32
    torch.testing.assert_close(hm, ops.heatmap_theta(theta.float(), (64, 48), (16, 12)), rtol=0, atol=0)


def test_affine_inverse_of_a_tiny_but_regular_float32_theta():
    """1e-30 * I in float32: the determinant (1e-60) underflowed to 0 and the matrix was called
    singular. It is perfectly conditioned; its inverse is 1e30 * I."""
    theta = torch.tensor([[[1e-30, 0, 1e-30], [0, 1e-30, 0]]], dtype=torch.float32)
    gamma = ops.affine_inverse(theta)
    torch.testing.assert_close(gamma, torch.tensor([[[1e30, 0, -1], [0, 1e30, 0]]]), rtol=1e-6, atol=0)
    # a truly singular one still raises, an inverse beyond float32's range is refused too
    with pytest.raises(ValueError, match="singular"):
        ops.affine_inverse(torch.tensor([[[1.0, 2, 0], [2, 4, 0]]]))
    with pytest.raises(ValueError, match="singular"):
        ops.affine_inverse(torch.tensor([[[1e-39, 0, 0], [0, 1e-39, 0]]]))


# ------------------------------------------------------------------ decode


def test_dark_refine_on_small_maps_and_bad_maps(device):
    """refine='dark' on maps smaller than 5 px failed with 'index -3 is out of bounds', and it never
    checked hm_to_img. DARK's step needs the 2-pixel neighbourhood, which such maps never have: the
    result is the plain argmax's."""
    g = torch.Generator().manual_seed(0)
    hms = torch.rand(2, 3, 4, 4, generator=g).to(device)
    maps = torch.eye(2, 3, dtype=torch.float64, device=device).expand(2, 2, 3) * 2
    dark = ops.heatmap_decode(hms, maps, refine="dark")
    plain = ops.heatmap_decode(hms, maps, refine="none")
    torch.testing.assert_close(dark[0].to(plain[0].dtype), plain[0])
    torch.testing.assert_close(dark[1], plain[1])
    with pytest.raises(RuntimeError, match="hm_to_img must have one map or box per heatmap set"):
        ops.heatmap_decode(torch.rand(2, 3, 16, 16, device=device), maps[:1], refine="dark")
    with pytest.raises(RuntimeError, match=r"hm_to_img must be maps \[N, 2, 3\] or crop boxes \[N, 4\]"):
        ops.heatmap_decode(torch.rand(2, 3, 16, 16, device=device), maps[:, 0], refine="dark")


def test_soft_argmax_on_a_3d_input():
    with pytest.raises(ValueError, match=r"heatmaps must have shape \[N, K, h, w\], got \(3, 16, 16\)"):
        ops.soft_argmax(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match=r"hm_to_img must have shape \[N, 2, 3\] = \[2, 2, 3\]"):
        ops.soft_argmax(torch.rand(2, 3, 16, 16), torch.zeros(3, 2, 3))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_heatmap_to_coord_simple_on_half_heatmaps(dtype):
    """heatmap_to_coord_simple on bfloat16 heatmaps failed in .numpy() (NumPy has no bfloat16)."""
    from rmpe_ext.alphapose import heatmap_to_coord_simple

    g = torch.Generator().manual_seed(0)
    hms = torch.rand(17, 64, 48, generator=g)
    preds, maxvals = heatmap_to_coord_simple(hms.to(dtype), [10.0, 20.0, 110.0, 150.0])
    ref_preds, ref_max = heatmap_to_coord_simple(hms.to(dtype).float(), [10.0, 20.0, 110.0, 150.0])
    assert preds.dtype == np.float32 and maxvals.dtype == np.float32
    np.testing.assert_array_equal(preds, ref_preds)
    np.testing.assert_array_equal(maxvals, ref_max)


# ------------------------------------------------------------------ pose NMS parameters


def _two_far_poses(device):
    poses = torch.tensor([[[0.0, 0.0], [10.0, 10.0]], [[700.0, 0.0], [710.0, 10.0]]], device=device)
    scores = torch.tensor([[0.9, 0.9], [0.8, 0.8]], device=device)
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [700.0, 0.0, 710.0, 10.0]], device=device)
    return poses, scores, boxes


@pytest.mark.parametrize("method,field,value,match", [
    ("alphapose", "gamma", NAN, "gamma must be a number, got nan"),
    ("alphapose", "delta1", 0.0, "delta1 must be > 0"),
    ("alphapose", "delta2", -1.0, "delta2 must be > 0"),
    ("alphapose", "mu", -1.0, "mu must be >= 0"),
    ("alphapose", "match_thresh", NAN, "match_thresh must be a number"),
    ("alphapose", "alpha", -0.1, "alpha must be >= 0"),
    ("alphapose", "pck_cap", -1.0, "pck_cap must be >= 0"),
    ("alphapose", "merge_cap", NAN, "merge_cap must be >= 0"),
    ("alphapose", "score_thresh", NAN, "score_thresh must be a number"),
    ("paper", "eta", NAN, "eta must be a number, got nan"),
    ("paper", "sigma1", 0.0, "sigma1 must be > 0"),
    ("paper", "sigma2", INF, "sigma2 must be > 0 and finite"),
    ("paper", "lam", -1.0, "lam must be >= 0"),
    ("paper", "box_frac", -0.1, "box_frac must be >= 0"),
    ("paper", "area_thresh", NAN, "area_thresh must be a number"),
    ("oks", "thresh", NAN, "thresh must be a number"),
    ("oks", "vis_thresh", NAN, "vis_thresh must be a number or None"),
])
def test_nms_parameters_are_validated(device, method, field, value, match):
    """NMS parameters were never validated: NaN gamma/eta were accepted, and with alpha < 0 or
    pck_cap < 0 pose_nms disagreed with pose_similarity and the reference (the far-pair bound
    assumes a non-negative radius)."""
    cls = {"alphapose": ops.AlphaPoseNMSParams, "paper": ops.PaperNMSParams, "oks": ops.OKSNMSParams}[method]
    poses, scores, boxes = _two_far_poses(device)
    extra = {"sigmas": (0.05, 0.05)} if method == "oks" else {}
    params = cls(**{field: value}, **extra)
    with pytest.raises(RuntimeError, match=match):
        ops.pose_nms(poses, scores, boxes, method=method, params=params)
    with pytest.raises(RuntimeError, match=match):
        ops.pose_similarity(poses, scores, boxes, method=method, params=params)


def test_negative_alpha_no_longer_disagrees_with_the_reference(device):
    """The issue's case: two 2-joint poses 700 px apart with alpha = -0.1, match_thresh = 2 (every
    joint then 'matches': d / r <= 1 for a negative r): the op kept both, the reference one."""
    poses, scores, boxes = _two_far_poses(device)
    with pytest.raises(RuntimeError, match="alpha must be >= 0"):
        ops.pose_nms(poses, scores, boxes, params=ops.AlphaPoseNMSParams(alpha=-0.1, match_thresh=2))
    keep = ops.pose_nms(poses, scores, boxes, params=ops.AlphaPoseNMSParams(alpha=0.1, match_thresh=2)).keep
    assert keep.tolist() == [0, 1]


def test_soft_oks_threshold_must_be_positive(device):
    poses, scores, boxes = _two_far_poses(device)
    sig = (0.05, 0.05)
    with pytest.raises(RuntimeError, match="thresh must be > 0"):
        ops.soft_oks_nms(poses, scores, boxes, scores.mean(1), thresh=0.0, sigmas=sig)
    with pytest.raises(ValueError, match="sigmas must be positive and finite"):
        ops.oks_nms(poses, scores, boxes, sigmas=(0.05, -1.0))


def test_oks_with_wrongly_shaped_poses_names_poses(device):
    """OKS with a wrongly shaped poses reported 'sigmas for K = -1'."""
    poses, scores, boxes = _two_far_poses(device)
    with pytest.raises(RuntimeError, match=r"poses must have shape \[N, K, 2\], got 2-D"):
        ops.oks_nms(poses.flatten(1), scores, boxes)


# ------------------------------------------------------------------ AlphaPose drop-in


def test_dropin_names_its_own_arguments():
    """The drop-in reported the kernel's argument names (joint_scores, poses, boxes) instead of its
    own (pose_scores, pose_preds, bboxes)."""
    from rmpe_ext.alphapose import pose_nms

    g = torch.Generator().manual_seed(0)
    preds = torch.rand(3, 17, 2, generator=g) * 100
    pscores = torch.rand(3, 17, 1, generator=g)
    boxes = torch.tensor([[0.0, 0.0, 100.0, 100.0]] * 3)
    bscores, ids = torch.ones(3, 1), torch.zeros(3, 1)
    bad = pscores.clone()
    bad[1, 2, 0] = NAN
    with pytest.raises(ValueError, match=r"^pose_nms: pose_scores contains NaN or infinite values$"):
        pose_nms(boxes, bscores, ids, preds, bad)
    bad = preds.clone()
    bad[0, 0, 0] = INF
    with pytest.raises(ValueError, match=r"^pose_nms: pose_preds contains NaN or infinite coordinates$"):
        pose_nms(boxes, bscores, ids, bad, pscores)
    with pytest.raises(ValueError, match=r"bboxes must be \(x1, y1, x2, y2\) with x2 >= x1"):
        pose_nms(boxes.flip(1), bscores, ids, preds, pscores)
    # mixed dtypes work, as in AlphaPose
    out = pose_nms(boxes, bscores, ids, preds, pscores.double())
    assert len(out[0]) >= 1
