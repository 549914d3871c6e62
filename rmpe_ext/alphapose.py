"""Drop-in replacements for AlphaPose functions, backed by rmpe_ext kernels.

Swap one import line::

    # from alphapose.utils.pPose_nms import pose_nms
    from rmpe_ext.alphapose import pose_nms
"""
from __future__ import annotations

import torch
from torch import Tensor

from .ops import AlphaPoseNMSParams

__all__ = ["pose_nms"]

_PARAMS = AlphaPoseNMSParams().to_list()


def _as_nk(t: Tensor, name: str, n: int, k: int) -> Tensor:
    if t.shape == (n, k, 1) or t.shape == (n, k):
        return t.view(n, k) if t.is_contiguous() else t.reshape(n, k)
    raise ValueError(f"pose_nms: {name} must have shape (n, kp_num, 1) = ({n}, {k}, 1) to match pose_preds, "
                     f"got {tuple(t.shape)}")


def pose_nms(bboxes: Tensor, bbox_scores: Tensor, bbox_ids: Tensor, pose_preds: Tensor, pose_scores: Tensor,
             areaThres: float = 0):
    """AlphaPose's parametric pose NMS, ``alphapose.utils.pPose_nms.pose_nms``, as one batched kernel.

    Same signature and the same six outputs, kept poses in the same order:

    * bboxes: ``(n, 4)`` detector boxes ``x1, y1, x2, y2``;
    * bbox_scores: ``(n, 1)``; bbox_ids: ``(n, 1)`` (any leading-``n`` shape);
    * pose_preds: ``(n, kp_num, 2)`` joint pixels; pose_scores: ``(n, kp_num, 1)``;
    * areaThres: minimum ``2.25 * area`` of the merged pose's extent.

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
    params = _PARAMS if areaThres == 0 else AlphaPoseNMSParams(area_thresh=float(areaThres)).to_list()
    keep, merged, merged_scores, group = torch.ops.rmpe_ext.pose_nms(
        pose_preds, scores_nk, bboxes.to(pose_preds.dtype), None, None, 0, params, None)
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

    keep_box = keep if keep.device == bboxes.device else keep.to(bboxes.device)
    res_bboxes = bboxes.index_select(0, keep_box).cpu().tolist()
    keep_score = keep if keep.device == bbox_scores.device else keep.to(bbox_scores.device)
    res_bbox_scores = list(bbox_scores.index_select(0, keep_score).cpu().unbind(0))
    res_pose_preds = list(merged.unbind(0))
    res_pose_scores = list(merged_scores.unsqueeze(-1).unbind(0))
    res_pick_ids = list(keep.cpu().numpy())
    return res_bboxes, res_bbox_scores, res_bbox_ids, res_pose_preds, res_pose_scores, res_pick_ids
