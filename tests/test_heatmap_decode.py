"""Batched heatmap decode against AlphaPose's heatmap_to_coord_simple (real BlazePose
heatmaps), DARK and soft-argmax on synthetic Gaussians with known sub-pixel centres."""
import math

import numpy as np
import pytest
import torch
from conftest import DEVICES

from rmpe_ext import ops
from rmpe_ext.alphapose import heatmap_to_coord_simple, heatmaps_to_coords
from rmpe_ext.presets import crop_box_heatmap_theta


@pytest.fixture(scope="module")
def transforms():
    """AlphaPose's transforms module (the oracle); the fixed-number tests need no AlphaPose."""
    return pytest.importorskip("alphapose.utils.transforms", reason="pip install --no-deps alphapose==1.1")


def gaussians(centres, size=(64, 48), sigma=2.0):
    """Heatmaps [N, K, h, w] of Gaussian blobs at sub-pixel centres [N, K, 2] (x, y)."""
    h, w = size
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    d2 = (xs - centres[..., 0, None, None]) ** 2 + (ys - centres[..., 1, None, None]) ** 2
    return torch.exp(-d2 / (2 * sigma * sigma))


def real_heatmaps(shared_data):
    z = np.load(shared_data / "generated" / "blazepose_full_heatmaps_sample.npz")
    names = sorted(k for k in z.files if not k.endswith("_affine"))
    hms = torch.from_numpy(np.stack([z[n] for n in names])).float().permute(0, 3, 1, 2).contiguous()  # [N, 39, 64, 64]
    boxes = []
    for n in names:  # the image square each 256x256 crop covers
        A = z[n + "_affine"].astype(np.float64)
        s = 256 / A[0, 0]
        cx, cy = (128 - A[0, 2]) / A[0, 0], (128 - A[1, 2]) / A[1, 1]
        boxes.append([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2])
    return hms, torch.tensor(boxes)


def test_matches_alphapose_on_real_heatmaps(shared_data, device, transforms):
    hms, boxes = real_heatmaps(shared_data)
    assert (hms.flatten(2).amax(2) <= 0).any()  # raw logits: some joints take the max <= 0 path
    coords, scores = heatmaps_to_coords(hms.to(device), boxes.to(device))
    for n in range(len(hms)):
        ref, ref_scores = transforms.heatmap_to_coord_simple(hms[n].numpy(), boxes[n].tolist())
        np.testing.assert_allclose(coords[n].cpu().numpy(), ref, rtol=0, atol=2e-3)
        np.testing.assert_array_equal(scores[n].cpu().numpy(), ref_scores)
        mine, mine_scores = heatmap_to_coord_simple(hms[n].numpy(), boxes[n].tolist())
        assert mine.dtype == ref.dtype == np.float32 and mine.shape == ref.shape
        np.testing.assert_allclose(mine, ref, rtol=0, atol=2e-3)
        np.testing.assert_array_equal(mine_scores, ref_scores)


# (peak x, peak y, neighbours set to 0.5 as (dx, dy) offsets) -> the decoded heatmap coordinates, on a
# 10 x 8 (h x w) map whose peak is 1: a quarter step towards the larger neighbour, along each axis on its
# own, only when 1 < x < w - 1 and 1 < y < h - 1 (AlphaPose's heatmap_to_coord_simple)
QUARTER_CASES = [
    ((4, 5, [(1, 0), (0, 1)]), (4.25, 5.25)),      # dx > 0, dy > 0
    ((4, 5, [(-1, 0), (0, -1)]), (3.75, 4.75)),    # dx < 0, dy < 0
    ((4, 5, [(1, 0), (0, -1)]), (4.25, 4.75)),     # dx > 0, dy < 0
    ((4, 5, [(-1, 0), (0, 1)]), (3.75, 5.25)),     # dx < 0, dy > 0
    ((4, 5, [(-1, 0), (1, 0), (0, -1), (0, 1)]), (4.0, 5.0)),  # dx == 0, dy == 0 (equal neighbours)
    ((4, 5, []), (4.0, 5.0)),                      # dx == 0, dy == 0 (flat)
    ((4, 5, [(-1, 0)]), (3.75, 5.0)),              # dx < 0, dy == 0
    ((4, 5, [(0, 1)]), (4.0, 5.25)),               # dx == 0, dy > 0
    ((4, 5, [(0, -1), (1, 0), (-1, 0)]), (4.0, 4.75)),  # dx == 0, dy < 0
    ((1, 5, [(1, 0), (0, 1)]), (1.0, 5.0)),        # x = 1: no step on either axis
    ((2, 5, [(-1, 0), (0, 1)]), (1.75, 5.25)),     # x = 2: steps
    ((6, 5, [(1, 0), (0, -1)]), (6.25, 4.75)),     # x = w - 2: steps
    ((7, 5, [(-1, 0), (0, 1)]), (7.0, 5.0)),       # x = w - 1: no step
    ((4, 1, [(0, 1), (1, 0)]), (4.0, 1.0)),        # y = 1: no step on either axis
    ((4, 2, [(0, -1), (-1, 0)]), (3.75, 1.75)),    # y = 2: steps
    ((4, 8, [(0, 1), (-1, 0)]), (3.75, 8.25)),     # y = h - 2: steps
    ((4, 9, [(0, -1), (1, 0)]), (4.0, 9.0)),       # y = h - 1: no step
    ((0, 0, [(1, 0), (0, 1)]), (0.0, 0.0)),        # a corner
]


def quarter_case_heatmaps(dtype=torch.float32):
    hms = torch.zeros(1, len(QUARTER_CASES), 10, 8, dtype=dtype)
    for k, ((x, y, nbrs), _) in enumerate(QUARTER_CASES):
        hms[0, k, y, x] = 1.0
        for dx, dy in nbrs:
            hms[0, k, y + dy, x + dx] = 0.5
    return hms


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_quarter_step_each_branch_fixed_numbers(dtype, device):
    hms = quarter_case_heatmaps(dtype).to(device)
    expect = torch.tensor([c[1] for c in QUARTER_CASES], dtype=torch.float64)
    eye = torch.eye(2, 3, dtype=torch.float64, device=device)[None]
    coords, scores = ops.heatmap_decode(hms, eye)
    assert coords.dtype == dtype and torch.equal(scores.cpu(), torch.ones(1, len(QUARTER_CASES), dtype=dtype))
    assert coords[0].cpu().double().tolist() == expect.tolist()
    # the same through AlphaPose's back-projection by the crop box (x1 + u bw / w, (y1 + y2) / 2 + (v - h / 2) bw / w)
    coords, _ = ops.heatmap_decode(hms, torch.tensor([[10.0, 20.0, 90.0, 120.0]], dtype=torch.float64, device=device))
    assert coords[0].cpu().double().tolist() == (torch.tensor([10.0, 20.0]) + expect * 10).tolist()
    coords, _ = ops.heatmap_decode(hms, eye, "none")
    assert coords[0].cpu().tolist() == [[float(c[0][0]), float(c[0][1])] for c in QUARTER_CASES]


def test_quarter_step_cases_are_alphapose(transforms):
    """The fixed numbers above are what AlphaPose's heatmap_to_coord_simple gives."""
    box = [10.0, 20.0, 90.0, 120.0]  # x = 10 + 10 u, y = 70 + 10 (v - 5)
    ref, _ = transforms.heatmap_to_coord_simple(quarter_case_heatmaps()[0].numpy(), box)
    expect = np.array([c[1] for c in QUARTER_CASES]) * 10 + [10.0, 20.0]
    np.testing.assert_array_equal(ref, expect)


def test_quarter_step_rules_match_alphapose(transforms):
    # maxima on the border rows/columns get no step; a flat neighbourhood no step
    h, w = 10, 8
    hms = torch.zeros(6, h, w)
    spots = [(0, 5), (1, 5), (2, 5), (6, 7), (3, 1), (4, 4)]
    for k, (x, y) in enumerate(spots):
        hms[k, y, x] = 1.0
        if 0 < x < w - 1:
            hms[k, y, x + 1] = 0.5
        if 0 < y < h - 1:
            hms[k, y - 1, x] = 0.25
    hms[5] = -1.0  # max <= 0: heatmap pixel (0, 0)
    box = [10.0, 20.0, 90.0, 120.0]
    ref, ref_scores = transforms.heatmap_to_coord_simple(hms.numpy(), box)
    mine, scores = heatmap_to_coord_simple(hms, box)
    np.testing.assert_allclose(mine, ref, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(scores, ref_scores)


@pytest.mark.parametrize("where", [0, 28, 40, 63, 3071])
def test_nan_heatmap_gives_nan_score(where):
    # NaN at the start, inside the first vector block, later, in the tail
    h, w = (8, 8) if where < 64 else (64, 48)
    hms = torch.rand(1, 2, h, w)
    hms.view(1, 2, -1)[0, 1, where] = math.nan
    coords, scores = ops.heatmap_decode(hms, torch.eye(2, 3).unsqueeze(0))
    assert math.isnan(scores[0, 1]) and coords[0, 1].tolist() == [0.0, 0.0] and not math.isnan(scores[0, 0])


def test_first_maximum_wins():
    hms = torch.zeros(1, 3, 64, 48)
    flat = hms.view(3, -1)
    flat[0, [100, 2000]] = 5.0  # a tie: the first index
    flat[1, [3071, 7]] = 2.0
    flat[2] = -1.0  # all equal and <= 0: index 0, heatmap pixel (0, 0)
    coords, scores = ops.heatmap_decode(hms, torch.eye(2, 3).unsqueeze(0), "none")
    assert coords[0].tolist() == [[100 % 48, 100 // 48], [7, 0], [0, 0]]
    assert scores[0].tolist() == [5.0, 2.0, -1.0]


@pytest.mark.parametrize("refine", ["none", "quarter", "dark"])
def test_sub_pixel_accuracy_on_gaussians(refine):
    g = torch.Generator().manual_seed(0)
    centres = torch.rand(32, 17, 2, generator=g, dtype=torch.float64) * torch.tensor([40.0, 56.0]) + 4
    hms = gaussians(centres).float()
    theta = torch.tensor([[[4.0, 0.0, 10.0], [0.0, 4.0, 20.0]]]).repeat(32, 1, 1)  # heatmap -> image, stride 4
    coords, scores = ops.heatmap_decode(hms, theta, refine)
    truth = centres.float() * 4 + torch.tensor([10.0, 20.0])
    err = (coords - truth).norm(dim=-1).mean().item()
    # measured mean errors (image pixels, stride 4): argmax 1.54, quarter 0.77, DARK 0.008
    assert err < {"none": 1.8, "quarter": 1.0, "dark": 0.05}[refine], err
    torch.testing.assert_close(scores, hms.flatten(2).amax(2))


def test_soft_argmax_is_accurate_and_differentiable():
    centres = torch.tensor([[[10.3, 20.7], [30.5, 15.25]]], dtype=torch.float64)
    hms = torch.log(gaussians(centres, sigma=2.0))  # softmax of these logits: a Gaussian of sigma 2
    coords, peak = ops.soft_argmax(hms, beta=1.0)
    torch.testing.assert_close(coords.double(), centres, rtol=0, atol=1e-3)
    x = hms.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: ops.soft_argmax(t, torch.eye(2, 3, dtype=t.dtype)[None])[0], (x,))


def test_decode_outputs_carry_no_gradient():
    hms = torch.rand(2, 3, 8, 8).requires_grad_()
    coords, scores = ops.heatmap_decode(hms, torch.eye(2, 3)[None].expand(2, 2, 3))
    assert not (coords.requires_grad or scores.requires_grad)
    with pytest.raises(RuntimeError, match="does not require grad"):
        scores.sum().backward()
    torch.library.opcheck(torch.ops.rmpe_ext.heatmap_decode.default,
                          (hms, torch.eye(2, 3, dtype=torch.float64)[None].expand(2, 2, 3).contiguous(), True))


def test_decode_errors():
    with pytest.raises(RuntimeError, match=r"heatmaps must have shape \[N, K, h, w\]"):
        ops.heatmap_decode(torch.rand(3, 8, 8), torch.eye(2, 3)[None])
    with pytest.raises(RuntimeError, match="hm_to_img must have one"):
        ops.heatmap_decode(torch.rand(2, 3, 8, 8), torch.eye(2, 3)[None])
    with pytest.raises(ValueError, match="refine must be"):
        ops.heatmap_decode(torch.rand(1, 3, 8, 8), torch.eye(2, 3)[None], "subpixel")
    coords, scores = ops.heatmap_decode(torch.rand(0, 17, 8, 8), torch.zeros(0, 2, 3))
    assert coords.shape == (0, 17, 2) and scores.shape == (0, 17)


def test_heatmap_theta_composes_with_crop_theta():
    boxes = torch.tensor([[100.0, 50.0, 196.0, 178.0]])
    crop_theta = ops.boxes_to_theta(boxes, (256, 192), scale=1.25)
    hm = ops.heatmap_theta(crop_theta, (256, 192), (64, 48))
    # equals AlphaPose's back-projection for the crop box of the same crop
    w = 96 * 1.25
    crop_box = torch.tensor([[148 - w / 2, 114 - w * 256 / 192 / 2, 148 + w / 2, 114 + w * 256 / 192 / 2]])
    torch.testing.assert_close(hm.double(), crop_box_heatmap_theta(crop_box, (64, 48)))


@pytest.mark.skipif(len(DEVICES) < 2, reason="needs a CUDA device")
def test_cuda_decode_matches_cpu():
    g = torch.Generator().manual_seed(2)
    hms = torch.rand(16, 17, 64, 48, generator=g)
    theta = torch.rand(16, 2, 3, generator=g, dtype=torch.float64)
    for quarter in ("quarter", "none"):
        cpu = ops.heatmap_decode(hms, theta, quarter)
        gpu = ops.heatmap_decode(hms.cuda(), theta.cuda(), quarter)
        torch.testing.assert_close(gpu[0].cpu(), cpu[0])
        torch.testing.assert_close(gpu[1].cpu(), cpu[1])


def test_crop_boxes_equal_their_maps(device):
    g = torch.Generator().manual_seed(3)
    hms = torch.rand(5, 17, 64, 48, generator=g).to(device)
    boxes = torch.rand(5, 4, generator=g, dtype=torch.float64) * 200
    boxes[:, 2:] += boxes[:, :2] + 50
    by_box = ops.heatmap_decode(hms, boxes.to(device))
    by_map = ops.heatmap_decode(hms, crop_box_heatmap_theta(boxes, (64, 48)).to(device))
    torch.testing.assert_close(by_box[0], by_map[0], rtol=0, atol=1e-4)
    assert torch.equal(by_box[1], by_map[1])
    dark = ops.heatmap_decode(hms, boxes.to(device), "dark")
    assert dark[0].shape == (5, 17, 2)


def _mmpose_dark(hms, coords, kernel=11):
    """mmpose's "unbiased" decode, written from its description with cv2: zero-padded
    cv2.GaussianBlur rescaled to each map's maximum, log(max(., 1e-10)), one Taylor step."""
    cv2 = pytest.importorskip("cv2")
    border = (kernel - 1) // 2
    out = coords.copy()
    for n in range(hms.shape[0]):
        for k in range(hms.shape[1]):
            hm = hms[n, k]
            dr = np.zeros((hm.shape[0] + 2 * border, hm.shape[1] + 2 * border), np.float32)
            dr[border:-border, border:-border] = hm
            b = cv2.GaussianBlur(dr, (kernel, kernel), 0)[border:-border, border:-border]
            b = np.log(np.maximum(b * (hm.max() / b.max()), 1e-10))
            px, py = int(coords[n, k, 0]), int(coords[n, k, 1])
            if 1 < px < hm.shape[1] - 2 and 1 < py < hm.shape[0] - 2:
                dx = 0.5 * (b[py, px + 1] - b[py, px - 1])
                dy = 0.5 * (b[py + 1, px] - b[py - 1, px])
                dxx = 0.25 * (b[py, px + 2] - 2 * b[py, px] + b[py, px - 2])
                dxy = 0.25 * (b[py + 1, px + 1] - b[py - 1, px + 1] - b[py + 1, px - 1] + b[py - 1, px - 1])
                dyy = 0.25 * (b[py + 2, px] - 2 * b[py, px] + b[py - 2, px])
                hess = np.array([[dxx, dxy], [dxy, dyy]])
                if dxx * dyy - dxy ** 2 != 0:
                    out[n, k] += -np.linalg.inv(hess) @ np.array([dx, dy])
    return out


def test_dark_matches_mmpose_on_real_heatmaps(shared_data):
    hms, _ = real_heatmaps(shared_data)
    probs = torch.sigmoid(hms)  # BlazePose's heatmaps are logits; DARK wants non-negative maps
    eye = torch.eye(2, 3, dtype=torch.float64).expand(len(probs), 2, 3)
    argmax, _ = ops.heatmap_decode(probs, eye, "none")
    dark, _ = ops.heatmap_decode(probs, eye, "dark")
    ref = _mmpose_dark(probs.numpy(), argmax.numpy())
    np.testing.assert_allclose(dark.numpy(), ref, rtol=0, atol=1e-3)
    step = (dark - argmax).norm(dim=-1)
    # it refines every joint, mostly within a pixel (mmpose's step is unbounded: a few
    # flat maps move several pixels, in the reference too)
    assert (step > 0).all() and step.median() < 1
