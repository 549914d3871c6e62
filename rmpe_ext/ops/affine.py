"""Affine operators: the fused STN sampler, uint8 crops, the SDTN inverse, heatmap decode.

Coordinate conventions:

* **Pixel** (OpenCV): pixel (i, j) has its centre at (x = j, y = i). A pixel
  theta ``theta_px [N, 2, 3]`` maps an output (crop) pixel to an input (image)
  pixel: ``(x, y) = theta_px @ (j, i, 1)``, as ``cv2.warpAffine(...,
  WARP_INVERSE_MAP)``. The kernels work in this convention.
* **Normalized** (torch): ``theta [N, 2, 3]`` maps normalized output
  coordinates to normalized input coordinates, as ``F.affine_grid``; with
  ``align_corners=False`` ``x_n = (2 x + 1) / W - 1``, with ``True``
  ``x_n = 2 x / (W - 1) - 1``. :func:`normalized_to_pixel_theta` converts.

The sampler (:func:`affine_grid_sample`) gives the numbers of
``F.grid_sample(input[batch_index], F.affine_grid(theta, ...), "bilinear")``
to float rounding without building the grid or expanding the input, and is
differentiable in the input and in theta (gradients reduced inside the kernel).
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from ._registry import non_differentiable

__all__ = [
    "affine_grid_sample",
    "affine_sample_px",
    "affine_crop",
    "affine_inverse",
    "normalized_to_pixel_theta",
    "pixel_to_normalized_theta",
    "boxes_to_theta",
    "heatmap_theta",
    "crop_box_heatmap_theta",
    "heatmap_decode",
    "soft_argmax",
]

_PADDING = {"zeros": 0, "border": 1, "constant": 2}
_INTERP = {"bilinear": 0, "bilinear-u8": 1, "opencv4": 2}


def _padding(mode: str) -> int:
    if mode not in _PADDING:
        raise ValueError(f"padding_mode must be one of {sorted(_PADDING)}, got {mode!r}")
    return _PADDING[mode]


def _size2(size, name="size") -> Tuple[int, int]:
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"{name} must be (h, w) with h, w > 0, got {size}")
    return size


# The crop kernels compute the sample points of the float modes in float32: a map whose points
# could reach this magnitude (|t0| (w - 1) + |t1| (h - 1) + |t2|) is refused by the checks, far
# from float32's overflow at 3.4e38; such points lie far outside any frame anyway.
_MAX_CROP_POINT = 1e30


def _check_crop_theta(theta_px: Tensor, size: Tuple[int, int]) -> None:
    """check=True of affine_crop: every map finite and its points representable in float32.
    One reduction (and on CUDA one device-to-host copy); the row is found only on failure."""
    if theta_px.numel() == 0 or torch.compiler.is_compiling() or theta_px.dim() != 3 or \
            tuple(theta_px.shape[1:]) != (2, 3) or not theta_px.is_floating_point():
        return  # shape and dtype errors are the kernel's to report
    h, w = size
    if float(theta_px.abs().amax()) * (h + w) < _MAX_CROP_POINT:  # False for NaN too
        return
    t = theta_px.detach().to("cpu", torch.float64)
    finite = torch.isfinite(t).flatten(1).all(1)
    if not bool(finite.all()):
        rows = torch.nonzero(~finite).flatten()[:5].tolist()
        raise ValueError(f"theta_px must be finite: not finite at row {', row '.join(map(str, rows))}")
    reach = t[:, :, 0].abs() * (w - 1) + t[:, :, 1].abs() * (h - 1) + t[:, :, 2].abs()
    big = (reach >= _MAX_CROP_POINT).any(1)
    if bool(big.any()):
        rows = torch.nonzero(big).flatten()[:5].tolist()
        raise ValueError(f"theta_px is too large at rows {rows}: its sample points reach "
                         f"{float(reach.max()):.3g} pixels (at most {_MAX_CROP_POINT:g})")


def _check_batch_index(batch_index: Optional[Tensor], num_images: int, check: bool) -> None:
    """Out-of-range indices: an error here (a host sync on CUDA), NaN crops in the kernels."""
    if batch_index is None or not check or batch_index.numel() == 0 or torch.compiler.is_compiling():
        return
    lo, hi = torch.stack(torch.aminmax(batch_index)).tolist()  # one device-to-host copy
    if lo < 0 or hi >= num_images:
        raise IndexError(f"batch_index must lie in [0, {num_images}) (the number of input images), "
                         f"got values in [{lo}, {hi}]")


# ------------------------------------------------------------------ coordinates


def _float_theta(theta: Tensor, name: str) -> Tensor:
    """theta as float32 or float64: integer maps are refused (as F.affine_grid does: an int theta
    would build the half-pixel centre offsets in integers), float16/bfloat16 ones computed in float32."""
    if not isinstance(theta, Tensor) or not theta.is_floating_point():
        raise TypeError(f"{name} must be floating point, got "
                        f"{theta.dtype if isinstance(theta, Tensor) else type(theta).__name__}")
    return theta if theta.dtype in (torch.float32, torch.float64) else theta.float()


def _axis(size: int, align_corners: bool):
    """(a, b): normalized = a * pixel + b along an axis of `size` pixels (torch's convention)."""
    if align_corners:
        return (2.0 / (size - 1), -1.0) if size > 1 else (0.0, 0.0)
    return 2.0 / size, 1.0 / size - 1.0


def normalized_to_pixel_theta(theta: Tensor, in_size: Sequence[int], out_size: Sequence[int],
                              align_corners: bool = False) -> Tensor:
    """Normalized theta [N, 2, 3] (F.affine_grid) -> pixel theta [N, 2, 3] for an input of
    ``in_size = (H, W)`` and an output of ``out_size = (h, w)``. Differentiable. float32/64 in,
    the same out; float16/bfloat16 are converted in float32 (and returned as float32)."""
    theta = _float_theta(theta, "theta")
    (H, W), (h, w) = _size2(in_size, "in_size"), _size2(out_size, "out_size")
    ax, bx = _axis(w, align_corners)
    ay, by = _axis(h, align_corners)
    # input pixel = U * normalized + c, with U = W / 2 (or (W - 1) / 2 with align_corners), c = (W - 1) / 2
    ux, uy = (W - 1) / 2 if align_corners else W / 2, (H - 1) / 2 if align_corners else H / 2
    cx, cy = (W - 1) / 2, (H - 1) / 2
    t = theta
    row0 = torch.stack([t[:, 0, 0] * ax, t[:, 0, 1] * ay, t[:, 0, 0] * bx + t[:, 0, 1] * by + t[:, 0, 2]], 1) * ux
    row1 = torch.stack([t[:, 1, 0] * ax, t[:, 1, 1] * ay, t[:, 1, 0] * bx + t[:, 1, 1] * by + t[:, 1, 2]], 1) * uy
    return torch.stack([row0 + torch.tensor([0.0, 0.0, cx], dtype=t.dtype, device=t.device),
                        row1 + torch.tensor([0.0, 0.0, cy], dtype=t.dtype, device=t.device)], 1)


def pixel_to_normalized_theta(theta_px: Tensor, in_size: Sequence[int], out_size: Sequence[int],
                              align_corners: bool = False) -> Tensor:
    """The inverse of :func:`normalized_to_pixel_theta`."""
    theta_px = _float_theta(theta_px, "theta_px")
    (H, W), (h, w) = _size2(in_size, "in_size"), _size2(out_size, "out_size")
    ax, bx = _axis(w, align_corners)
    ay, by = _axis(h, align_corners)
    if ax == 0 or ay == 0:
        raise ValueError("a 1-pixel output with align_corners=True has no normalized theta that maps back")
    ux, uy = (W - 1) / 2 if align_corners else W / 2, (H - 1) / 2 if align_corners else H / 2
    if ux == 0 or uy == 0:
        raise ValueError("a 1-pixel input with align_corners=True has no normalized theta that maps back")
    cx, cy = (W - 1) / 2, (H - 1) / 2
    t = theta_px
    # normalized_src = (pixel_src - c) / U ; pixel_out = (normalized_out - b) / a
    r0 = torch.stack([t[:, 0, 0] / ax, t[:, 0, 1] / ay, t[:, 0, 2] - cx - t[:, 0, 0] * bx / ax - t[:, 0, 1] * by / ay],
                     1) / ux
    r1 = torch.stack([t[:, 1, 0] / ax, t[:, 1, 1] / ay, t[:, 1, 2] - cy - t[:, 1, 0] * bx / ax - t[:, 1, 1] * by / ay],
                     1) / uy
    return torch.stack([r0, r1], 1)


def boxes_to_theta(boxes: Tensor, out_size: Sequence[int], scale: float = 1.0, keep_aspect: bool = True) -> Tensor:
    """Detector boxes [N, 4] (x1, y1, x2, y2 pixels) -> pixel theta [N, 2, 3] of crops of
    ``out_size = (h, w)``.

    The box is enlarged ``scale`` times about its centre. With ``keep_aspect``
    (AlphaPose) the shorter side is first extended to the crop's aspect ratio
    and the map is isotropic (the box width fills the crop width); otherwise
    the box is stretched to the crop (the paper extends boxes by 30%:
    ``scale=1.3, keep_aspect=False``). The box centre maps to crop pixel
    (w / 2, h / 2), as AlphaPose and cv2.getAffineTransform place it.
    """
    h, w = _size2(out_size, "out_size")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape [N, 4], got {tuple(boxes.shape)}")
    b = boxes if boxes.dtype in (torch.float32, torch.float64) else boxes.to(torch.float32)
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    cx, cy = b[:, 0] + bw * 0.5, b[:, 1] + bh * 0.5
    if keep_aspect:
        aspect = w / h
        bw = torch.where(bw < aspect * bh, bh * aspect, bw)
        sx = sy = bw * scale / w
    else:
        sx, sy = bw * scale / w, bh * scale / h
    zero = torch.zeros_like(sx)
    return torch.stack([torch.stack([sx, zero, cx - sx * (w / 2)], 1),
                        torch.stack([zero, sy, cy - sy * (h / 2)], 1)], 1)


def heatmap_theta(theta_px: Tensor, crop_size: Sequence[int], heatmap_size: Sequence[int]) -> Tensor:
    """The map from heatmap pixels to image pixels for crops taken with ``theta_px``:
    a heatmap of ``(hh, hw)`` pixels covers the ``(h, w)`` crop, heatmap pixel (u, v)
    standing for crop pixel (u * w / hw, v * h / hh) (AlphaPose's convention). float32/64
    (float16/bfloat16 computed and returned in float32)."""
    theta_px = _float_theta(theta_px, "theta_px")
    h, w = _size2(crop_size, "crop_size")
    hh, hw = _size2(heatmap_size, "heatmap_size")
    s = torch.tensor([w / hw, h / hh, 1.0], dtype=theta_px.dtype, device=theta_px.device)
    return theta_px * s


def crop_box_heatmap_theta(crop_boxes, heatmap_size: Sequence[int]) -> Tensor:
    """AlphaPose's back-projection of heatmap pixels into the image for crop boxes
    [N, 4] (the boxes ``crop_persons`` returns): isotropic, scaled by the box width,
    ``x = cx + (u - hw / 2) * bw / hw``, ``y = cy + (v - hh / 2) * bw / hw``.
    Returns the float64 map [N, 2, 3] (on the boxes' device)."""
    b = torch.as_tensor(crop_boxes, dtype=torch.float64)
    if b.dim() == 1:
        b = b.unsqueeze(0)
    # the map is linear in (x1, y1, x2, y2): one product builds all of them
    return (b @ _box_map_matrix(int(heatmap_size[0]), int(heatmap_size[1]), b.device)).view(-1, 2, 3)


@functools.lru_cache(maxsize=64)
def _box_map_matrix(hh: int, hw: int, device: torch.device) -> Tensor:
    """[4, 6]: (x1, y1, x2, y2) -> the row-major 2x3 map of crop_box_heatmap_theta."""
    return torch.tensor([[-1 / hw, 0, 1, 0, -1 / hw, 0.5 * hh / hw],
                         [0, 0, 0, 0, 0, 0.5],
                         [1 / hw, 0, 0, 0, 1 / hw, -0.5 * hh / hw],
                         [0, 0, 0, 0, 0, 0.5]], dtype=torch.float64, device=device)


# ------------------------------------------------------------------ sampler


def affine_sample_px(input: Tensor, theta_px: Tensor, size: Sequence[int], batch_index: Optional[Tensor] = None,
                     padding_mode: str = "zeros", value: float = 0.0, check: bool = True) -> Tensor:
    """Bilinear crops ``[N, C, h, w]`` of ``input [B, C, H, W]`` through pixel thetas.

    Crop n reads image ``batch_index[n]`` (default: n, then N must equal B),
    so many crops of one image need no copy of it. ``padding_mode``: ``zeros``,
    ``border`` (clamp) or ``constant`` (``value``). float32/64, float16 and
    bfloat16 (computed in float32). A non-finite theta gives NaN crops. An
    out-of-range ``batch_index`` raises (``check=True``, which costs a host sync
    on CUDA) or gives NaN crops (``check=False``); nothing is ever read out of bounds.
    Differentiable in ``input`` and ``theta_px``.
    """
    h, w = _size2(size)
    _check_batch_index(batch_index, input.shape[0] if input.dim() == 4 else 0, check)
    return torch.ops.rmpe_ext.affine_sample(input, theta_px, [h, w], batch_index, _padding(padding_mode), float(value))


def affine_grid_sample(input: Tensor, theta: Tensor, size: Sequence[int], batch_index: Optional[Tensor] = None,
                       align_corners: bool = False, padding_mode: str = "zeros", value: float = 0.0,
                       check: bool = True) -> Tensor:
    """``F.grid_sample(input[batch_index], F.affine_grid(theta, (N, C, h, w), align_corners),
    "bilinear", padding_mode, align_corners)`` in one pass, without the grid or the
    expanded input: input ``[B, C, H, W]``, normalized theta ``[N, 2, 3]`` (torch's
    convention), ``size = (h, w)`` -> ``[N, C, h, w]``. ``padding_mode`` adds
    ``constant`` (``value``) to torch's ``zeros`` and ``border``. See :func:`affine_sample_px`.
    """
    if input.dim() != 4:
        raise ValueError(f"input must have shape [B, C, H, W], got {tuple(input.shape)}")
    if theta.dim() != 3 or tuple(theta.shape[1:]) != (2, 3):
        raise ValueError(f"theta must have shape [N, 2, 3], got {tuple(theta.shape)}")
    theta_px = normalized_to_pixel_theta(theta, input.shape[2:], size, align_corners)
    return affine_sample_px(input, theta_px, size, batch_index, padding_mode, value, check)


def affine_crop(frames: Tensor, theta_px: Tensor, size: Sequence[int], batch_index: Optional[Tensor] = None,
                mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0),
                reverse_channels: bool = False, value: float = 0.0, dtype: torch.dtype = torch.float32,
                interpolation: str = "bilinear", check: bool = True, out: Optional[Tensor] = None) -> Tensor:
    """Network input crops in one pass: uint8 frames ``[B, H, W, C]`` (or one ``[H, W, C]``
    frame, as OpenCV reads them) -> ``[N, C, h, w]`` in ``dtype`` (float32, float16,
    bfloat16) with ``out[c] = (sample(frame[..., c']) / 255 - mean[c]) / std[c]``,
    ``c' = C - 1 - c`` when ``reverse_channels`` (BGR <-> RGB), else c. Outside the
    frame the sample reads ``value`` (in pixel units, 0..255). ``theta_px`` maps crop
    pixels to frame pixels (see :func:`boxes_to_theta`). Not differentiable.

    A map that is not finite gives a NaN crop; with ``check=True`` (default; on CUDA a
    device-to-host copy) it raises instead, as does a map whose sample points exceed 1e30
    pixels (they are computed in float32). ``value`` must be finite for the uint8 modes.

    ``interpolation``: ``"bilinear"`` samples exactly (in float); ``"bilinear-u8"``
    rounds that sample to uint8 first, as ``cv2.warpAffine(INTER_LINEAR)`` does from
    OpenCV 5 on (equal to it on all but about 1e-4 of the values, by one step (9.2e-5 with OpenCV 5.1.0 on
    data/coco4's 118 crops), where
    OpenCV's float32 arithmetic lands on the other side of a .5); ``"opencv4"``
    reproduces OpenCV 4's fixed-point ``warpAffine(INTER_LINEAR)`` bit for bit
    (points rounded to 1/32 pixel, 15-bit weights). For the OpenCV modes pass
    ``theta_px`` = the inverse of ``M`` as warpAffine computes it
    (:func:`rmpe_ext.presets.cv2_inverse_map`).

    ``out``: a contiguous ``[N, C, h, w]`` tensor to write into (its dtype is used,
    ``dtype`` ignored): a pipeline that reuses its input batch avoids the cost of
    fresh memory (the operating system zeroes every new page: about as long as
    the crops themselves for large batches).
    """
    h, w = _size2(size)
    if interpolation not in _INTERP:
        raise ValueError(f"interpolation must be one of {sorted(_INTERP)}, got {interpolation!r}")
    if frames.dim() == 3:
        frames = frames.unsqueeze(0)
    _check_batch_index(batch_index, frames.shape[0] if frames.dim() == 4 else 0, check)
    if check:
        _check_crop_theta(theta_px, (h, w))
    mean, std = [float(m) for m in mean], [float(s) for s in std]
    if out is not None:
        if tuple(out.shape[2:]) != (h, w):
            raise ValueError(f"out must have spatial size {(h, w)} (size), got {tuple(out.shape)}")
        torch.ops.rmpe_ext.affine_crop_into(frames, theta_px, batch_index, mean, std, bool(reverse_channels),
                                            float(value), _INTERP[interpolation], out)
        return out
    return torch.ops.rmpe_ext.affine_crop(frames, theta_px, [h, w], batch_index, mean, std, bool(reverse_channels),
                                          float(value), _INTERP[interpolation], dtype)


# ------------------------------------------------------------------ SDTN


def affine_inverse(theta: Tensor, check: bool = True) -> Tensor:
    """The SDTN's gamma = theta^-1 (paper Eqs. 3-4) for ``theta [N, 2, 3]``:
    ``[A | t] -> [A^-1 | -A^-1 t]``, in either convention (pixel thetas invert to pixel
    thetas). Differentiable (Eqs. 5-6). A singular or nearly singular ``A`` (|det|
    within 64 eps of |a d| + |b c|) raises with ``check=True`` (a host sync on CUDA),
    else gives a NaN gamma."""
    gamma = torch.ops.rmpe_ext.affine_inverse(theta)
    if check and gamma.numel() and not torch.compiler.is_compiling():
        bad = ~torch.isfinite(gamma).flatten(1).all(1)
        if bool(bad.any()):
            idx = torch.nonzero(bad).flatten()[:5].tolist()
            raise ValueError(f"affine_inverse: theta is singular (or not finite) at rows {idx}")
    return gamma


# ------------------------------------------------------------------ decode


def heatmap_decode(heatmaps: Tensor, hm_to_img: Tensor, refine: str = "quarter") -> Tuple[Tensor, Tensor]:
    """Batched heatmap decode: ``heatmaps [N, K, h, w]`` and the map from heatmap pixels
    to image pixels ``hm_to_img [N, 2, 3]`` (see :func:`heatmap_theta`), or the crop
    boxes ``[N, 4]`` (x1, y1, x2, y2) to back-project into as AlphaPose does (isotropic,
    by the box width: ``x = x1 + u bw / w``, ``y = (y1 + y2) / 2 + (v - h / 2) bw / w``) -> keypoints
    ``[N, K, 2]`` in image pixels (float32, float64 for float64 heatmaps) and scores
    ``[N, K]`` (the maximum).

    ``refine``: ``"quarter"`` (AlphaPose: a 0.25 px step towards the larger
    neighbour when ``1 < x < w - 1`` and ``1 < y < h - 1``), ``"none"`` (the
    argmax), or ``"dark"`` (DARK: a Taylor step on the log of the Gaussian-smoothed
    heatmap, as mmpose; for non-negative heatmaps). A joint whose maximum is not > 0 sits at heatmap pixel (0, 0), as in
    AlphaPose; a NaN heatmap gives score NaN.
    """
    if refine not in ("quarter", "none", "dark"):
        raise ValueError(f"refine must be 'quarter', 'none' or 'dark', got {refine!r}")
    if refine != "dark":
        return torch.ops.rmpe_ext.heatmap_decode(heatmaps, hm_to_img, refine == "quarter")
    # the op's own checks of both arguments (an empty joint slice decodes nothing)
    torch.ops.rmpe_ext.heatmap_decode(heatmaps[:, :0] if heatmaps.dim() == 4 else heatmaps, hm_to_img, False)
    eye = torch.eye(2, 3, dtype=torch.float64, device=hm_to_img.device).expand(hm_to_img.shape[0], 2, 3)
    peaks, scores = torch.ops.rmpe_ext.heatmap_decode(heatmaps, eye, False)
    refined = _dark(heatmaps, peaks)
    if hm_to_img.dim() == 2:  # crop boxes: their maps
        hm_to_img = crop_box_heatmap_theta(hm_to_img, heatmaps.shape[2:])
    return _apply(hm_to_img.to(refined.dtype), refined), scores


def _apply(m: Tensor, pts: Tensor) -> Tensor:
    """Affine maps m [N, 2, 3] applied to points [N, K, 2]."""
    x = m[:, None, 0, 0] * pts[..., 0] + m[:, None, 0, 1] * pts[..., 1] + m[:, None, 0, 2]
    y = m[:, None, 1, 0] * pts[..., 0] + m[:, None, 1, 1] * pts[..., 1] + m[:, None, 1, 2]
    return torch.stack([x, y], -1)


def _gaussian_blur(x: Tensor, kernel: int) -> Tensor:
    """cv2.GaussianBlur(x, (kernel, kernel), 0) of every map padded with zeros (mmpose's _gaussian_blur)."""
    sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8
    r = torch.arange(kernel, dtype=x.dtype, device=x.device) - (kernel - 1) / 2
    g = torch.exp(-r * r / (2 * sigma * sigma))
    g = g / g.sum()
    n, k, h, w = x.shape
    y = torch.nn.functional.pad(x.reshape(n * k, 1, h, w), [kernel // 2] * 4)
    y = torch.nn.functional.conv2d(y, g.view(1, 1, 1, -1))
    y = torch.nn.functional.conv2d(y, g.view(1, 1, -1, 1))
    return y.reshape(n, k, h, w)


def _dark(heatmaps: Tensor, peaks: Tensor, kernel: int = 11) -> Tensor:
    """DARK (Zhang et al., CVPR 2020) from the integer maxima ``peaks [N, K, 2]`` (heatmap
    pixels), as mmpose's "unbiased" post-processing: blur each map (rescaled to its own
    maximum), log of max(., 1e-10), one Newton step from central differences where the
    2-pixel neighbourhood fits. Meant for non-negative (Gaussian-target) heatmaps: on
    logits apply a sigmoid first."""
    hm = heatmaps.float() if heatmaps.dtype in (torch.float16, torch.bfloat16) else heatmaps
    n, k, h, w = hm.shape
    if h < 5 or w < 5:  # no 2-pixel neighbourhood fits anywhere: the argmax stays
        return peaks
    blurred = _gaussian_blur(hm, kernel)
    peak = hm.flatten(2).amax(2)[..., None, None]
    bmax = blurred.flatten(2).amax(2)[..., None, None]
    blurred = blurred * (peak / torch.where(bmax == 0, torch.ones_like(bmax), bmax))
    flat = torch.log(blurred.clamp_min(1e-10)).flatten(2)
    px, py = peaks[..., 0].to(hm.dtype), peaks[..., 1].to(hm.dtype)
    ok = (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2)
    xi, yi = px.clamp(2, w - 3).long(), py.clamp(2, h - 3).long()

    def at(dy, dx):
        return flat.gather(2, ((yi + dy) * w + xi + dx).unsqueeze(-1)).squeeze(-1)

    c = at(0, 0)
    dx, dy = 0.5 * (at(0, 1) - at(0, -1)), 0.5 * (at(1, 0) - at(-1, 0))
    dxx, dyy = 0.25 * (at(0, 2) - 2 * c + at(0, -2)), 0.25 * (at(2, 0) - 2 * c + at(-2, 0))
    dxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    det = dxx * dyy - dxy * dxy
    ok = ok & (det != 0)
    safe = torch.where(ok, det, torch.ones_like(det))
    rx = torch.where(ok, px - (dyy * dx - dxy * dy) / safe, px)
    ry = torch.where(ok, py - (dxx * dy - dxy * dx) / safe, py)
    return torch.stack([rx, ry], -1).to(peaks.dtype)


def soft_argmax(heatmaps: Tensor, hm_to_img: Optional[Tensor] = None, beta: float = 1.0) -> Tuple[Tensor, Tensor]:
    """Differentiable integral decode: ``softmax(beta * heatmap)`` over each map's pixels,
    the expected pixel position, mapped to the image by ``hm_to_img [N, 2, 3]`` when
    given. Returns ``(coords [N, K, 2], the softmax's peak probability [N, K])``."""
    if heatmaps.dim() != 4:
        raise ValueError(f"heatmaps must have shape [N, K, h, w], got {tuple(heatmaps.shape)}")
    n, k, h, w = heatmaps.shape
    if hm_to_img is not None and tuple(hm_to_img.shape) != (n, 2, 3):
        raise ValueError(f"hm_to_img must have shape [N, 2, 3] = [{n}, 2, 3], got {tuple(hm_to_img.shape)}")
    x = heatmaps if heatmaps.dtype in (torch.float32, torch.float64) else heatmaps.float()
    p = torch.softmax(beta * x.flatten(2), dim=2).view(n, k, h, w)
    xs = torch.arange(w, dtype=p.dtype, device=p.device)
    ys = torch.arange(h, dtype=p.dtype, device=p.device)
    x = (p.sum(2) * xs).sum(2)
    y = (p.sum(3) * ys).sum(2)
    coords = torch.stack([x, y], -1)
    if hm_to_img is not None:
        coords = _apply(hm_to_img.to(p.dtype), coords)
    return coords, p.flatten(2).amax(2)


# ------------------------------------------------------------------ autograd and fake kernels


def _sample_setup(ctx, inputs, output):
    input, theta, size, batch_index, padding, value = inputs
    ctx.save_for_backward(input, theta, batch_index)
    ctx.padding, ctx.value = padding, value


def _sample_backward(ctx, grad):
    input, theta, batch_index = ctx.saved_tensors
    need_input, need_theta = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    gi, gt = torch.ops.rmpe_ext._affine_sample_backward(
        grad, input, theta, batch_index, ctx.padding, ctx.value, need_input, need_theta,
        torch.are_deterministic_algorithms_enabled())
    return (gi if need_input else None), (gt if need_theta else None), None, None, None, None


torch.library.register_autograd("rmpe_ext::affine_sample", _sample_backward, setup_context=_sample_setup)


def _inverse_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], output)


def _inverse_backward(ctx, grad):
    theta, gamma = ctx.saved_tensors
    return torch.ops.rmpe_ext._affine_inverse_backward(grad, theta, gamma)


torch.library.register_autograd("rmpe_ext::affine_inverse", _inverse_backward, setup_context=_inverse_setup)
non_differentiable("affine_crop", 10)  # uint8 input, rounded samples
# heatmap_decode (an argmax: use soft_argmax for gradients) has its no-gradient
# Autograd kernel in C++ (csrc/ops.cpp): no Python round trip per call


@torch.library.register_fake("rmpe_ext::affine_sample")
def _affine_sample_fake(input, theta, size, batch_index, padding_mode, value):
    torch._check(input.dim() == 4, lambda: "input must have shape [B, C, H, W]")
    torch._check(theta.dim() == 3 and theta.shape[1] == 2 and theta.shape[2] == 3,
                 lambda: "theta must have shape [N, 2, 3]")
    return input.new_empty((theta.shape[0], input.shape[1], size[0], size[1]))


@torch.library.register_fake("rmpe_ext::_affine_sample_backward")
def _affine_sample_backward_fake(grad_out, input, theta, batch_index, padding_mode, value, input_grad, theta_grad,
                                 deterministic):
    gi = input.new_empty(input.shape) if input_grad else input.new_empty((0,))
    gt = theta.new_empty(theta.shape) if theta_grad else theta.new_empty((0,))
    return gi, gt


@torch.library.register_fake("rmpe_ext::affine_crop")
def _affine_crop_fake(frames, theta, size, batch_index, mean, std, reverse_channels, value, interpolation, dtype):
    return frames.new_empty((theta.shape[0], frames.shape[3], size[0], size[1]), dtype=dtype)


@torch.library.register_fake("rmpe_ext::affine_crop_into")
def _affine_crop_into_fake(frames, theta, batch_index, mean, std, reverse_channels, value, interpolation, out):
    return None


@torch.library.register_fake("rmpe_ext::affine_inverse")
def _affine_inverse_fake(theta):
    return torch.empty_like(theta)


@torch.library.register_fake("rmpe_ext::_affine_inverse_backward")
def _affine_inverse_backward_fake(grad_gamma, theta, gamma):
    return torch.empty_like(theta)


@torch.library.register_fake("rmpe_ext::heatmap_decode")
def _heatmap_decode_fake(heatmaps, hm_to_img, quarter):
    n, k = heatmaps.shape[0], heatmaps.shape[1]
    torch._check(hm_to_img.shape[0] == n, lambda: "hm_to_img must have one map or box per heatmap set")
    coord_dtype = torch.float32 if heatmaps.dtype in (torch.float16, torch.bfloat16) else heatmaps.dtype
    return heatmaps.new_empty((n, k, 2), dtype=coord_dtype), heatmaps.new_empty((n, k))
