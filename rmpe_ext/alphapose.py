"""Drop-in replacements for AlphaPose functions, backed by rmpe_ext kernels.

Swap one import line::

    # from alphapose.utils.pPose_nms import pose_nms
    from rmpe_ext.alphapose import pose_nms
"""
from __future__ import annotations

import functools
import re
from typing import Optional

import torch
from torch import Tensor

import numpy as np

from .ops.affine import affine_crop
from .ops.pose_nms import AlphaPoseNMSParams, WholeBodyNMSParams
from .ops.pose_nms import pose_nms as _pose_nms
from .presets import alphapose_crop_theta

__all__ = ["pose_nms", "crop_persons", "heatmap_to_coord_simple", "heatmaps_to_coords", "ALPHAPOSE_MEAN"]

# per-channel means AlphaPose subtracts from its RGB crops (after /255)
ALPHAPOSE_MEAN = (0.406, 0.457, 0.480)

# AlphaPose master routes 133 and 136 keypoints (COCO-WholeBody, Halpe-136) to its whole-body criterion
WHOLEBODY_K = (133, 136)


@functools.lru_cache(maxsize=64)
def _params(k: int, area_thresh: float, use_heatmap_loss: bool):
    """The NMS formulation and constants AlphaPose master uses for k keypoints: each call its own (master
    overwrites its module constants in a whole-body call with use_heatmap_loss=False and never restores
    them, so every later call of the process uses them; that leak is not reproduced)."""
    if k in WHOLEBODY_K:
        return "wholebody", WholeBodyNMSParams.alphapose(use_heatmap_loss, area_thresh=area_thresh)
    return "alphapose", AlphaPoseNMSParams(area_thresh=area_thresh)


# the kernel's argument names -> the drop-in's, for the kernel's value errors (NaN, box order)
_OWN_NAMES = [(re.compile(r"^rmpe_ext::pose_nms: "), "pose_nms: "), (re.compile(r"\bposes\b"), "pose_preds"),
              (re.compile(r"\bjoint_scores\b"), "pose_scores"), (re.compile(r"\bboxes\b"), "bboxes")]


def _in_own_names(e: RuntimeError) -> ValueError:
    msg = str(e).splitlines()[0]
    for pattern, name in _OWN_NAMES:
        msg = pattern.sub(name, msg)
    return ValueError(msg)


def _as_nk(t: Tensor, name: str, n: int, k: int) -> Tensor:
    if t.shape == (n, k, 1) or t.shape == (n, k):
        return t.view(n, k) if t.is_contiguous() else t.reshape(n, k)
    raise ValueError(f"pose_nms: {name} must have shape (n, kp_num, 1) = ({n}, {k}, 1) to match pose_preds, "
                     f"got {tuple(t.shape)}")


def pose_nms(bboxes: Tensor, bbox_scores: Tensor, bbox_ids: Tensor, pose_preds: Tensor, pose_scores: Tensor,
             areaThres: float = 0, use_heatmap_loss: bool = True):
    """AlphaPose's parametric pose NMS, ``alphapose.utils.pPose_nms.pose_nms``, as one batched kernel.

    Master's signature (``use_heatmap_loss`` positional or keyword; ``alphapose==1.1`` callers omit it)
    and the same six outputs, kept poses in the same order:

    * bboxes: ``(n, 4)`` detector boxes ``x1, y1, x2, y2``;
    * bbox_scores: ``(n, 1)``; bbox_ids: ``(n, 1)`` (any leading-``n`` shape);
    * pose_preds: ``(n, kp_num, 2)`` joint pixels; pose_scores: ``(n, kp_num, 1)``;
    * areaThres: minimum ``2.25 * area`` of the merged pose's extent;
    * use_heatmap_loss: master's flag (``LOSS_TYPE == 'MSELoss'``); it selects the constants of the
      whole-body criterion, used for ``kp_num`` 133 and 136 (COCO-WholeBody, Halpe-136); other
      keypoint counts (17, Halpe-26, ...) take the body criterion, which ignores the flag.

    Each call uses the constants its own arguments select. AlphaPose master instead overwrites its
    module constants in a whole-body call with ``use_heatmap_loss=False`` and never restores them, so
    in AlphaPose every later call of the process (17 keypoints included) uses the whole-body ones:
    that bug is not reproduced.

    Returns lists, one item per kept pose: the pick's box (list of 4 floats),
    its box score (tensor), the ids of its merge group (``.tolist()``), the
    merged pose ``(kp_num, 2)``, the merged scores ``(kp_num, 1)``, and the
    pick's index (``numpy.int64``). Tensors stay on the input device (CPU or
    CUDA). Unlike AlphaPose, the inputs are never modified (AlphaPose writes
    1e-5 over zero joint scores in the caller's tensor).
    """
    if pose_preds.dim() != 3 or pose_preds.shape[2] != 2:
        raise ValueError(f"pose_nms: pose_preds must have shape (n, kp_num, 2), got {tuple(pose_preds.shape)}")
    n, k = pose_preds.shape[0], pose_preds.shape[1]
    scores_nk = _as_nk(pose_scores, "pose_scores", n, k)
    if bboxes.dim() != 2 or tuple(bboxes.shape) != (n, 4):
        raise ValueError(f"pose_nms: bboxes must have shape (n, 4) = ({n}, 4), got {tuple(bboxes.shape)}")
    if bbox_scores.dim() == 0 or bbox_scores.shape[0] != n:
        raise ValueError(f"pose_nms: bbox_scores must have n = {n} rows, got shape {tuple(bbox_scores.shape)}")
    if bbox_ids.dim() == 0 or bbox_ids.shape[0] != n:
        raise ValueError(f"pose_nms: bbox_ids must have n = {n} rows, got shape {tuple(bbox_ids.shape)}")
    if n == 0:
        return [], [], [], [], [], []

    # the op ranks by torch's mean of the joint scores with zeros read as 1e-5:
    # AlphaPose's pose_scores.mean(dim=1), same kernel, same rounding, same order
    method, params = _params(k, float(areaThres), bool(use_heatmap_loss))
    try:
        keep, merged, merged_scores, group = _pose_nms(pose_preds, scores_nk.to(pose_preds.dtype),
                                                       bboxes.to(pose_preds.dtype), method=method, params=params)
    except RuntimeError as e:  # a value error of the inputs, reported in this function's names
        raise _in_own_names(e) from None
    m = keep.shape[0]
    if m == 0:
        return [], [], [], [], [], []

    # merge groups, members by ascending index as AlphaPose lists them (poses
    # of dropped groups have group -1). A one-pose group is indexed by a scalar
    # in AlphaPose (a one-element index tensor acts as an integer), which drops
    # one list level.
    members = [[] for _ in range(m)]
    for pose_ids, g in zip(bbox_ids.tolist(), group.tolist()):
        if g >= 0:
            members[g].append(pose_ids)
    res_bbox_ids = [ids[0] if len(ids) == 1 else ids for ids in members]

    keep_cpu = keep.cpu()  # AlphaPose's box lists and box scores are CPU objects
    res_bboxes = bboxes.cpu().index_select(0, keep_cpu).tolist()
    res_bbox_scores = list(bbox_scores.cpu().index_select(0, keep_cpu).unbind(0))
    res_pose_preds = list(merged.unbind(0))
    res_pose_scores = list(merged_scores.unsqueeze(-1).unbind(0))
    res_pick_ids = list(keep_cpu.numpy())
    return res_bboxes, res_bbox_scores, res_bbox_ids, res_pose_preds, res_pose_scores, res_pick_ids


def _opencv_interpolation(opencv_major: Optional[int]) -> str:
    if opencv_major is None:
        import cv2

        opencv_major = int(cv2.__version__.split(".")[0])
    return "opencv4" if opencv_major < 5 else "bilinear-u8"


def crop_persons(frame, boxes_xyxy, input_size=(256, 192), bgr: bool = False, opencv: Optional[int] = None):
    """AlphaPose's ``SimpleTransform.test_transform`` for every box at once.

    ``frame``: uint8 ``[H, W, 3]`` (numpy or tensor, CPU or CUDA), RGB as AlphaPose's
    loaders hand it over (``bgr=True`` for a frame straight from ``cv2.imread``);
    ``boxes_xyxy``: ``[N, 4]``. Returns ``(inps [N, 3, h, w] float32, crop_boxes [N, 4]
    float32)`` on the frame's device: the box fixed to the input's aspect ratio and
    enlarged 1.25 times, mapped with AlphaPose's own matrix, sampled as
    ``cv2.warpAffine(INTER_LINEAR)`` samples (zeros outside, rounded to uint8),
    ``/ 255``, minus ``ALPHAPOSE_MEAN``.

    ``opencv``: the OpenCV major version whose warpAffine to reproduce (default:
    the installed one). With OpenCV 4 the crops are AlphaPose's bit for bit (its
    fixed-point interpolation is reproduced); with OpenCV 5, which rounds an
    exact bilinear sample, about 1e-4 of the values differ by one uint8 step (on data/coco4's 118
    crops: 3.1e-5 with OpenCV 5.0.0, 9.2e-5 with 5.1.0; tools/crop_parity.py). One
    more difference: AlphaPose skips the ``/ 255`` for a crop whose brightest value
    is exactly 1; this does not.
    """
    frame = torch.as_tensor(frame)
    if frame.dim() != 3 or frame.shape[2] != 3 or frame.dtype != torch.uint8:
        raise ValueError(f"frame must be a uint8 [H, W, 3] image, got {frame.dtype} {tuple(frame.shape)}")
    theta, crop_boxes = alphapose_crop_theta(boxes_xyxy, input_size)
    # AlphaPose's float32 box arithmetic overflows for absurd boxes (its matrix is then NaN)
    bad = ~(torch.isfinite(theta).flatten(1).all(1) & torch.isfinite(crop_boxes).all(1))
    if bool(bad.any()):
        raise ValueError(f"boxes_xyxy: box {int(torch.nonzero(bad)[0])} gives a crop that is not finite "
                         "(its enlarged size overflows float32)")
    inps = affine_crop(frame, theta.to(frame.device), input_size,
                       torch.zeros(len(theta), dtype=torch.long, device=frame.device), mean=ALPHAPOSE_MEAN,
                       reverse_channels=bgr, interpolation=_opencv_interpolation(opencv), check=False)
    return inps, crop_boxes.to(frame.device)


def heatmaps_to_coords(hms: Tensor, crop_boxes: Tensor):
    """Batched ``heatmap_to_coord_simple``: ``hms [N, K, h, w]`` and the crop boxes
    ``[N, 4]`` that ``crop_persons`` returned -> ``(coords [N, K, 2] image pixels,
    scores [N, K, 1])``: argmax, AlphaPose's quarter-pixel step, back-projection by
    the box centre and width."""
    if hms.dim() != 4:
        raise ValueError(f"hms must have shape [N, K, h, w], got {tuple(hms.shape)}")
    boxes = crop_boxes if isinstance(crop_boxes, Tensor) and crop_boxes.device == hms.device else \
        torch.as_tensor(crop_boxes, device=hms.device)
    if boxes.dim() != 2 or boxes.shape[1] != 4 or boxes.shape[0] != hms.shape[0]:
        raise ValueError(f"crop_boxes must have shape [N, 4] with N = {hms.shape[0]} (one per heatmap set), "
                         f"got {tuple(boxes.shape)}")
    coords, scores = torch.ops.rmpe_ext.heatmap_decode(hms, boxes, True)
    return coords, scores.unsqueeze(-1)


def heatmap_to_coord_simple(hms, bbox, hms_flip=None, **kwargs):
    """AlphaPose's ``heatmap_to_coord_simple`` (one person): ``hms [K, h, w]`` (tensor or
    array), ``bbox`` (xmin, ymin, xmax, ymax) -> ``(preds [K, 2] float32, maxvals [K, 1])``
    numpy arrays, as AlphaPose returns them."""
    if hms_flip is not None:
        hms = (hms + hms_flip) / 2
    t = torch.as_tensor(hms)
    if t.dim() != 3:
        raise ValueError(f"hms must have shape [K, h, w], got {tuple(t.shape)}")
    coords, scores = heatmaps_to_coords(t.unsqueeze(0), torch.as_tensor([list(map(float, bbox))]))
    if scores.dtype in (torch.float16, torch.bfloat16):  # NumPy has no bfloat16: maxvals in float32
        scores = scores.float()
    return coords[0].cpu().numpy().astype(np.float32), scores[0].cpu().numpy()
