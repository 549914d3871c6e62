"""Box-to-crop presets: how a detector box becomes the affine map of a crop.

* AlphaPose (``SimpleTransform.test_transform``): fix the box to the input's
  aspect ratio by extending its shorter side, enlarge it 1.25 times, map it
  isotropically (the width fills the input width), box centre to input pixel
  (w / 2, h / 2); float32 arithmetic as AlphaPose's numpy code.
* The paper (RMPE section 4.1): extend the box by 30% in height and in width,
  then stretch it to the input.

Both return the pixel theta (crop pixel -> image pixel) that the crop kernels take. AlphaPose's
back-projection of heatmaps into the image for its crop boxes, :func:`crop_box_heatmap_theta`, lives
beside the other maps in :mod:`rmpe_ext.ops.affine` (``heatmap_decode`` uses it) and is re-exported here.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from .ops.affine import boxes_to_theta, crop_box_heatmap_theta

__all__ = ["alphapose_crop_boxes", "alphapose_affine", "cv2_inverse_map", "alphapose_crop_theta", "paper_crop_theta",
           "crop_box_heatmap_theta"]


def _as_boxes(boxes) -> Tensor:
    b = torch.as_tensor(boxes, dtype=torch.float32)
    if b.dim() == 1 and b.numel() == 4:
        b = b.unsqueeze(0)
    if b.dim() != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must have shape [N, 4] (x1, y1, x2, y2), got {tuple(b.shape)}")
    if not torch.isfinite(b).all():
        raise ValueError("boxes contains NaN or infinite values")
    return b


def alphapose_crop_boxes(boxes, input_size: Sequence[int] = (256, 192)) -> Tuple[Tensor, Tensor, Tensor]:
    """AlphaPose's ``_box_to_center_scale`` then ``_center_scale_to_box`` in float32:
    returns (centre [N, 2], scale [N, 2] (w, h after the aspect fix and x1.25),
    crop box [N, 4] x1, y1, x2, y2)."""
    b = _as_boxes(boxes)
    inp_h, inp_w = int(input_size[0]), int(input_size[1])
    aspect = inp_w / inp_h
    x, y = b[:, 0], b[:, 1]
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    center = torch.stack([x + w * 0.5, y + h * 0.5], 1)
    wider, taller = w > aspect * h, w < aspect * h
    h2 = torch.where(wider, w / aspect, h)
    w2 = torch.where(taller & ~wider, h * aspect, w)
    scale = torch.stack([w2, h2], 1) * 1.25
    xmin = center[:, 0] - scale[:, 0] * 0.5
    ymin = center[:, 1] - scale[:, 1] * 0.5
    crop = torch.stack([xmin, ymin, xmin + scale[:, 0], ymin + scale[:, 1]], 1)
    return center, scale, crop


def alphapose_affine(center: Tensor, scale: Tensor, input_size: Sequence[int] = (256, 192)) -> np.ndarray:
    """AlphaPose's ``get_affine_transform(center, scale, 0, [w, h])`` for every box: the
    image -> crop matrix [N, 2, 3] (float64), from the same float32 points and the same
    ``cv2.getAffineTransform``, hence the same bits (it is not exactly isotropic)."""
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - opencv is a test dependency
        raise ImportError("the AlphaPose-exact presets need OpenCV: pip install opencv-python-headless") from e
    inp_h, inp_w = int(input_size[0]), int(input_size[1])
    c = np.asarray(center, dtype=np.float32).reshape(-1, 2)
    sw = np.asarray(scale, dtype=np.float32).reshape(-1, 2)[:, 0]
    src = np.zeros((len(c), 3, 2), np.float32)
    src[:, 0] = c
    src[:, 1, 0] = c[:, 0]
    src[:, 1, 1] = c[:, 1] + sw * np.float32(-0.5)
    direct = src[:, 0] - src[:, 1]
    src[:, 2, 0] = src[:, 1, 0] - direct[:, 1]
    src[:, 2, 1] = src[:, 1, 1] + direct[:, 0]
    dst = np.array([[inp_w * 0.5, inp_h * 0.5], [inp_w * 0.5, inp_h * 0.5 - inp_w * 0.5], [0.0, 0.0]], np.float32)
    dst[2] = dst[1] + np.array([-(dst[0] - dst[1])[1], (dst[0] - dst[1])[0]], np.float32)
    return np.stack([cv2.getAffineTransform(p, dst) for p in src]) if len(src) else np.zeros((0, 2, 3))


def cv2_inverse_map(M) -> np.ndarray:
    """The inverse of image -> crop matrices [N, 2, 3] computed as ``cv2.warpAffine``
    computes it internally (double, its own formula): the crop -> image map that
    ``affine_crop(..., interpolation="cv2")`` takes to reproduce warpAffine exactly."""
    M = np.array(M, dtype=np.float64).reshape(-1, 2, 3)
    a, b, c, d, e, f = (M[:, 0, 0], M[:, 0, 1], M[:, 0, 2], M[:, 1, 0], M[:, 1, 1], M[:, 1, 2])
    D = a * e - b * d
    D = np.where(D != 0, 1.0 / np.where(D != 0, D, 1.0), 0.0)
    i00, i11, i01, i10 = e * D, a * D, b * -D, d * -D
    i02 = -i00 * c - i01 * f
    i12 = -i10 * c - i11 * f
    return np.stack([np.stack([i00, i01, i02], 1), np.stack([i10, i11, i12], 1)], 1)


def alphapose_crop_theta(boxes, input_size: Sequence[int] = (256, 192)) -> Tuple[Tensor, Tensor]:
    """(pixel theta [N, 2, 3] float64, crop boxes [N, 4] float32) as AlphaPose crops
    each box: the crop -> image map warpAffine uses for AlphaPose's matrix."""
    center, scale, crop = alphapose_crop_boxes(boxes, input_size)
    trans = alphapose_affine(center.numpy(), scale.numpy(), input_size)
    return torch.from_numpy(cv2_inverse_map(trans)), crop


def paper_crop_theta(boxes, input_size: Sequence[int], extend: float = 0.3) -> Tensor:
    """Pixel theta [N, 2, 3] of the paper's crops: each box extended by ``extend``
    (30%) in width and height, stretched to ``input_size = (h, w)``."""
    return boxes_to_theta(_as_boxes(boxes), input_size, scale=1.0 + extend, keep_aspect=False)
