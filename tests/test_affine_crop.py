"""uint8 crop fast path: OpenCV 4 fixed point (bit-exact), OpenCV 5 style rounding, exact
bilinear; the AlphaPose crop preset against AlphaPose's own transform on real images."""
import json
import math
import pathlib
import sys

import numpy as np
import pytest
import torch
from conftest import DEVICES

from rmpe_ext import ops
from rmpe_ext.alphapose import ALPHAPOSE_MEAN, crop_persons
from rmpe_ext.presets import alphapose_crop_boxes, alphapose_crop_theta, cv2_inverse_map, paper_crop_theta

cv2 = pytest.importorskip("cv2")
FIXTURE = pathlib.Path(__file__).parent / "data" / "opencv4_warpaffine.npz"


def crop_u8(frame, M, size, interpolation, device="cpu"):
    """affine_crop of one HWC uint8 frame with warpAffine's matrix M, back in uint8 HWC."""
    theta = torch.from_numpy(cv2_inverse_map(M)).to(device)
    out = ops.affine_crop(torch.from_numpy(frame).to(device), theta, size, torch.zeros(1, dtype=torch.long,
                                                                                         device=device),
                          interpolation=interpolation)
    return (out[0].permute(1, 2, 0).cpu() * 255).round().to(torch.uint8).numpy()


def test_opencv4_fixed_point_is_bit_exact(device):
    z = np.load(FIXTURE)
    images = [z["noise"], z["smooth"]]
    for M, out, which in zip(z["mats"], z["outs"], z["which"]):
        ours = crop_u8(images[which], M, out.shape[:2], "opencv4", device.type)
        np.testing.assert_array_equal(ours, out)


def test_rounded_bilinear_matches_installed_opencv5():
    if int(cv2.__version__.split(".")[0]) < 5:
        pytest.skip("OpenCV >= 5 rounds an exact bilinear sample; this OpenCV is " + cv2.__version__)
    z = np.load(FIXTURE)
    images, differ, total = [z["noise"], z["smooth"]], 0, 0
    for M, out, which in zip(z["mats"], z["outs"], z["which"]):
        ref = cv2.warpAffine(images[which], M, out.shape[1::-1], flags=cv2.INTER_LINEAR).astype(int)
        ours = crop_u8(images[which], M, out.shape[:2], "bilinear-u8").astype(int)
        assert np.abs(ours - ref).max() <= 1
        differ += (ours != ref).sum()
        total += ref.size
    assert differ <= 1e-3 * total


def test_bilinear_equals_the_float_sampler(device):
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (2, 30, 40, 3), generator=g, dtype=torch.uint8)
    theta = torch.tensor([[[0.9, 0.2, -3.0], [-0.1, 1.1, 5.0]], [[2.0, 0.0, 20.0], [0.0, 2.0, -10.0]],
                          [[0.5, 0.0, 35.0], [0.0, 0.5, 25.0]]], dtype=torch.float64)
    bidx = torch.tensor([1, 0, 1])
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    out = ops.affine_crop(frames.to(device), theta.to(device), (12, 9), bidx.to(device), mean, std,
                          reverse_channels=True, value=17.0)
    planar = frames.permute(0, 3, 1, 2).flip(1).float()  # RGB <-> BGR
    ref = ops.affine_sample_px(planar, theta.float(), (12, 9), bidx, "constant", 17.0)
    ref = (ref / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_outputs(dtype):
    frame = torch.randint(0, 256, (20, 20, 3), dtype=torch.uint8)
    theta = torch.tensor([[[1.0, 0.0, 2.0], [0.0, 1.0, 3.0]]])
    full = ops.affine_crop(frame, theta, (8, 8), mean=ALPHAPOSE_MEAN)
    half = ops.affine_crop(frame, theta, (8, 8), mean=ALPHAPOSE_MEAN, dtype=dtype)
    assert half.dtype == dtype
    torch.testing.assert_close(half.float(), full, rtol=0, atol=1e-2)


def test_crop_bad_input():
    frame = torch.randint(0, 256, (20, 20, 3), dtype=torch.uint8)
    nan_theta = torch.tensor([[[1.0, 0.0, 2.0], [0.0, math.nan, 3.0]]])
    assert torch.isnan(ops.affine_crop(frame, nan_theta, (4, 4), check=False)).all()
    with pytest.raises(ValueError, match="theta_px must be finite"):
        ops.affine_crop(frame, nan_theta, (4, 4))
    theta = torch.tensor([[[1.0, 0.0, 2.0], [0.0, 1.0, 3.0]]])
    with pytest.raises(RuntimeError, match="frames must be uint8"):
        ops.affine_crop(frame.float(), theta, (4, 4))
    with pytest.raises(RuntimeError, match="mean and std must have one value per channel"):
        ops.affine_crop(frame, theta, (4, 4), mean=(0.0, 0.0))
    with pytest.raises(RuntimeError, match="std must be positive"):
        ops.affine_crop(frame, theta, (4, 4), std=(1.0, 0.0, 1.0))
    with pytest.raises(IndexError, match="batch_index must lie in"):
        ops.affine_crop(frame, theta, (4, 4), torch.tensor([1]))
    with pytest.raises(ValueError, match="interpolation must be one of"):
        ops.affine_crop(frame, theta, (4, 4), interpolation="cubic")
    with pytest.raises(RuntimeError, match="dtype must be float32, float16 or bfloat16"):
        ops.affine_crop(frame, theta, (4, 4), dtype=torch.float64)


def _alphapose_test_transform(src, bbox, input_size=(256, 192)):
    """AlphaPose's SimpleTransform.test_transform rebuilt from its parts (the class
    itself imports a compiled CUDA op)."""
    from alphapose.utils.bbox import _box_to_center_scale, _center_scale_to_box
    from alphapose.utils.transforms import get_affine_transform, im_to_torch

    xmin, ymin, xmax, ymax = bbox
    center, scale = _box_to_center_scale(xmin, ymin, xmax - xmin, ymax - ymin, input_size[1] / input_size[0])
    inp_h, inp_w = input_size
    trans = get_affine_transform(center, scale * 1.0, 0, [inp_w, inp_h])
    img = cv2.warpAffine(src, trans, (int(inp_w), int(inp_h)), flags=cv2.INTER_LINEAR)
    img = im_to_torch(img)
    img[0].add_(-0.406)
    img[1].add_(-0.457)
    img[2].add_(-0.480)
    return img, _center_scale_to_box(center, scale)


def _real_frames(shared_data):
    """(BGR image, AP_H_56 boxes xyxy) of mmpose_tests/coco (4 images, 118 boxes) and coco_mini
    (19 images, 678 boxes)."""
    sets = [(shared_data / "mmpose_tests" / "coco", "test_coco_det_AP_H_56.json"),
            (shared_data / "coco_mini" / "val2017", "../COCO_val2017_detections_AP_H_56_person_cocomini.json")]
    for folder, dets_file in sets:
        dets = json.loads((folder / dets_file).read_text())
        for image_id in sorted({d["image_id"] for d in dets}):
            bgr = cv2.imread(str(folder / f"{image_id:012d}.jpg"))
            boxes = torch.tensor([[d["bbox"][0], d["bbox"][1], d["bbox"][0] + d["bbox"][2],
                                   d["bbox"][1] + d["bbox"][3]] for d in dets if d["image_id"] == image_id],
                                 dtype=torch.float32)
            yield bgr, boxes


def test_crop_persons_matches_alphapose_on_real_images(shared_data, device):
    pytest.importorskip("alphapose")
    differ = total = 0
    for bgr, boxes in _real_frames(shared_data):
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        inps, crop_boxes = crop_persons(torch.from_numpy(bgr).to(device), boxes, bgr=True)
        assert inps.shape == (len(boxes), 3, 256, 192) and inps.device.type == device.type
        for k in range(len(boxes)):
            ref, ref_box = _alphapose_test_transform(rgb, boxes[k])
            d = (inps[k].cpu() - ref).abs()
            assert d.max() <= 1.0001 / 255
            differ += int((d > 0).sum())
            total += d.numel()
            assert crop_boxes[k].tolist() == [float(v) for v in ref_box]
    # OpenCV 4: bit for bit; OpenCV 5: its float32 rounding flips a few values by one step (measured on these
    # 118 crops, tools/crop_parity.py: 3.1e-5 of them with OpenCV 5.0.0, 9.2e-5 with 5.1.0)
    limit = 0 if int(cv2.__version__.split(".")[0]) < 5 else 2e-4 * total
    assert differ <= limit, (differ, total)


def test_crop_boxes_and_paper_preset():
    boxes = torch.tensor([[10.0, 20.0, 110.0, 220.0], [0.0, 0.0, 300.0, 100.0]])
    center, scale, crop = alphapose_crop_boxes(boxes, (256, 192))
    # tall box: width extended to 0.75 * height, both x1.25; wide box: height extended
    torch.testing.assert_close(scale, torch.tensor([[187.5, 250.0], [375.0, 500.0]]))
    torch.testing.assert_close(center, torch.tensor([[60.0, 120.0], [150.0, 50.0]]))
    theta = paper_crop_theta(boxes, (320, 256))
    # the box extended by 30% in width and height is stretched over the crop: crop
    # coordinates (0, 0) and (w, h) (AlphaPose's convention: the centre at (w/2, h/2))
    # land on its corners
    corners = torch.tensor([[0.0, 0.0, 1.0], [256.0, 320.0, 1.0]])
    mapped = torch.einsum("nij,kj->nki", theta, corners)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    lo = torch.stack([boxes[:, 0] - 0.15 * w, boxes[:, 1] - 0.15 * h], 1)
    hi = torch.stack([boxes[:, 2] + 0.15 * w, boxes[:, 3] + 0.15 * h], 1)
    torch.testing.assert_close(mapped, torch.stack([lo, hi], 1))


@pytest.mark.skipif(len(DEVICES) < 2, reason="needs a CUDA device")
@pytest.mark.parametrize("interpolation", ["bilinear", "bilinear-u8", "opencv4"])
def test_cuda_crop_matches_cpu(interpolation):
    g = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (2, 60, 80, 3), generator=g, dtype=torch.uint8)
    theta = torch.tensor([[[0.9, 0.2, -3.0], [-0.1, 1.1, 5.0]], [[2.0, 0.0, 20.0], [0.0, 2.0, -10.0]]],
                         dtype=torch.float64)
    bidx = torch.tensor([1, 0])
    cpu = ops.affine_crop(frames, theta, (32, 24), bidx, ALPHAPOSE_MEAN, interpolation=interpolation)
    gpu = ops.affine_crop(frames.cuda(), theta.cuda(), (32, 24), bidx.cuda(), ALPHAPOSE_MEAN,
                          interpolation=interpolation)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-6 if interpolation != "bilinear" else 1e-4)


def test_crop_into_a_preallocated_batch(device):
    frames = torch.randint(0, 256, (2, 30, 40, 3), dtype=torch.uint8, device=device)
    theta = torch.tensor([[[0.9, 0.2, -3.0], [-0.1, 1.1, 5.0]]] * 3, dtype=torch.float64, device=device)
    bidx = torch.tensor([1, 0, 1], device=device)
    ref = ops.affine_crop(frames, theta, (12, 9), bidx, ALPHAPOSE_MEAN, dtype=torch.float16)
    out = torch.full((3, 3, 12, 9), 7.0, dtype=torch.float16, device=device)
    assert ops.affine_crop(frames, theta, (12, 9), bidx, ALPHAPOSE_MEAN, out=out) is out
    assert torch.equal(out, ref)
    with pytest.raises(RuntimeError, match=r"out must have shape \[N, C, h, w\] with N = 3 crops and C = 3"):
        ops.affine_crop(frames, theta, (12, 9), bidx, out=torch.empty(2, 3, 12, 9, device=device))
    with pytest.raises(ValueError, match=r"out must have spatial size \(12, 9\)"):
        ops.affine_crop(frames, theta, (12, 9), bidx, out=torch.empty(3, 3, 12, 8, device=device))
    with pytest.raises(RuntimeError, match="out must be contiguous"):
        ops.affine_crop(frames, theta, (12, 9), bidx, out=torch.empty(3, 3, 9, 12, device=device).transpose(2, 3))


def test_alphapose_affine_is_get_affine_transform():
    transforms = pytest.importorskip("alphapose.utils.transforms")
    from alphapose.utils.bbox import _box_to_center_scale

    from rmpe_ext.presets import alphapose_affine

    rng = np.random.default_rng(0)
    boxes = np.concatenate([rng.uniform(0, 1500, (64, 2)), rng.uniform(20, 600, (64, 2))], 1).astype(np.float32)
    xyxy = torch.from_numpy(np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1))
    center, scale, _ = alphapose_crop_boxes(xyxy, (256, 192))
    mine = alphapose_affine(center.numpy(), scale.numpy(), (256, 192))
    for k, (x1, y1, x2, y2) in enumerate(xyxy):  # as test_transform calls it: a float32 box tensor
        c, s = _box_to_center_scale(x1, y1, x2 - x1, y2 - y1, 0.75)
        np.testing.assert_array_equal(c, center[k].numpy())
        np.testing.assert_array_equal(s, scale[k].numpy())
        np.testing.assert_array_equal(mine[k], transforms.get_affine_transform(c, s, 0, [192, 256]))


@pytest.mark.parametrize("interpolation", ["bilinear", "bilinear-u8", "opencv4"])
def test_float16_crops_are_the_float32_crops_rounded(interpolation):
    """float16 output (half the bytes) holds the float32 result rounded to nearest: AlphaPose's
    crops of random boxes (partly outside) from a 1080p-sized frame, every path of the kernel."""
    g = torch.Generator().manual_seed(3)
    frame = torch.randint(0, 256, (1080, 1920, 3), generator=g, dtype=torch.uint8)
    xy = torch.rand(24, 2, generator=g) * torch.tensor([1900.0, 1000.0]) - 50
    boxes = torch.cat([xy, xy + 40 + torch.rand(24, 2, generator=g) * 400], 1)
    theta, _ = alphapose_crop_theta(boxes)
    theta = torch.cat([theta, torch.tensor([[[0.9, 0.3, 500.0], [-0.2, 1.1, 400.0]]], dtype=theta.dtype)])
    bidx = torch.zeros(len(theta), dtype=torch.long)
    full = ops.affine_crop(frame, theta, (256, 192), bidx, ALPHAPOSE_MEAN, interpolation=interpolation)
    half = ops.affine_crop(frame, theta, (256, 192), bidx, ALPHAPOSE_MEAN, dtype=torch.float16,
                           interpolation=interpolation)
    assert half.dtype == torch.float16
    assert torch.equal(half, full.half())


def test_large_outputs_are_fresh_huge_page_aligned_tensors():
    """Outputs of 2 MiB or more come from 2 MiB-aligned memory (marked for transparent huge pages on
    Linux): ordinary tensors, equal to the same crops written into a batch."""
    frame = torch.randint(0, 256, (300, 400, 3), dtype=torch.uint8)
    theta = torch.tensor([[[1.1, 0.0, 20.0], [0.0, 1.1, 10.0]]] * 16, dtype=torch.float64)
    bidx = torch.zeros(16, dtype=torch.long)
    out = ops.affine_crop(frame, theta, (256, 192), bidx, ALPHAPOSE_MEAN)  # 9 MiB
    if sys.platform.startswith("linux"):
        assert out.data_ptr() % (2 << 20) == 0
    ref = torch.full_like(out, 5.0)
    ops.affine_crop(frame, theta, (256, 192), bidx, ALPHAPOSE_MEAN, out=ref)
    assert torch.equal(out, ref)
    out.add_(1).resize_(32, 3, 256, 192)  # a resizable storage, like any CPU tensor's
    assert torch.equal(out[:16], ref + 1)
    small = ops.affine_crop(frame, theta[:1], (64, 48), bidx[:1], ALPHAPOSE_MEAN)
    torch.testing.assert_close(small, ops.affine_crop(frame, theta[:1], (64, 48), bidx[:1], ALPHAPOSE_MEAN))


def test_fresh_outputs_reuse_a_given_back_block():
    """A fresh output of 2 MiB or more comes from the blocks earlier outputs gave back (no new
    pages to fault in and zero); a live output is never handed out again, and a reused block
    holds exactly the new crops."""
    import os

    if os.environ.get("RMPE_EXT_CROP_CACHE") == "0":
        pytest.skip("RMPE_EXT_CROP_CACHE=0 turns the output cache off")
    g = torch.Generator().manual_seed(0)
    frame = torch.randint(0, 256, (120, 160, 3), generator=g, dtype=torch.uint8)
    boxes = torch.tensor([[10.0 + k, 5.0, 90.0 + k, 110.0] for k in range(16)])
    theta = ops.boxes_to_theta(boxes, (128, 96), 1.25).double()
    bidx = torch.zeros(16, dtype=torch.long)
    first = ops.affine_crop(frame, theta, (128, 96), bidx)
    assert first.numel() * 4 >= 2 << 20
    ptr = first.data_ptr()
    del first
    second = ops.affine_crop(frame, theta.flip(0), (128, 96), bidx, mean=(0.1, 0.2, 0.3))
    assert second.data_ptr() == ptr
    expected = ops.affine_crop(frame, theta.flip(0), (128, 96), bidx, mean=(0.1, 0.2, 0.3),
                               out=torch.empty(16, 3, 128, 96))
    torch.testing.assert_close(second, expected, rtol=0, atol=0)
    third = ops.affine_crop(frame, theta, (128, 96), bidx)
    assert third.data_ptr() != second.data_ptr()
