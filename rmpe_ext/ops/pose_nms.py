"""Pose NMS operators: all-pairs pose similarity, greedy parametric pose NMS with
pose merging (the paper's and AlphaPose's formulations), OKS-NMS, soft-OKS-NMS.

Conventions (all ops):

* ``poses``: ``[N, K, 2]`` float32 or float64, joint (x, y) in image pixels.
* ``joint_scores``: ``[N, K]``, same dtype, joint confidences.
* ``boxes``: ``[N, 4]``, same dtype, the detector box of each pose as
  ``(x1, y1, x2, y2)`` pixels (``x2 >= x1``, ``y2 >= y1``).
* ``scores``: ``[N]``, same dtype, the ranking score (default: torch's mean of
  the joint scores, zeros read as 1e-5 for ``alphapose``: exactly AlphaPose's
  human score). The most confident remaining pose is taken first; ties go to
  the lowest index.
* ``image_index``: ``[N]`` int64 >= 0, the image each pose belongs to; poses of
  different images never interact, so one call handles a whole batch. Results
  come image by image (ascending image index), pick order inside an image.
* Every tensor on one device (CPU or CUDA). Inputs are never modified.
* NaN/inf anywhere, boxes with ``x2 < x1``, negative image indices, K = 0 or
  mismatched shapes raise ``RuntimeError`` naming the argument. N = 0 gives
  empty results.
* Outputs carry no gradient (NMS decisions are discrete).

The per-pair formulas (docs/design.md section 2) are written once in C++
(``csrc/common/pose_nms_common.h``) and compiled for both backends.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ._registry import non_differentiable as _non_differentiable

__all__ = [
    "AlphaPoseNMSParams",
    "WholeBodyNMSParams",
    "PaperNMSParams",
    "OKSNMSParams",
    "COCO_SIGMAS",
    "PoseNMSResult",
    "pose_similarity",
    "pose_nms",
    "oks_nms",
    "soft_oks_nms",
]

# COCO-17 keypoint sigmas (pycocotools), the OKS default.
COCO_SIGMAS = (0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
               0.107, 0.107, 0.087, 0.087, 0.089, 0.089)

class _Layout(NamedTuple):
    """The params list the ops take, as the binary defines it (kParamSpecs in
    csrc/common/pose_nms_host.h): its size, the method ids, and the slot of each field."""

    count: int
    methods: Dict[str, int]
    fields: Dict[str, Tuple[Tuple[str, int], ...]]  # method -> its own fields, then the shared ones


def _read_layout() -> _Layout:
    count, methods, own = 0, {}, {}
    for part in torch.ops.rmpe_ext._nms_params_layout().split(";"):
        key, value = part.split("=", 1)
        if key == "count":
            count = int(value)
            continue
        mid, fields = value.split(":", 1)
        if key != "shared":
            methods[key] = int(mid)
        own[key] = tuple((f, int(slot)) for f, slot in (x.split("@") for x in fields.split(",") if x))
    return _Layout(count, methods, {m: own[m] + own["shared"] for m in methods})


_LAYOUT = _read_layout()  # read once at import: a constant to torch.compile


@dataclasses.dataclass(frozen=True, kw_only=True)
class _NMSParams:
    """What every formulation shares: merging (radius ``min(alpha max(w, h), merge_cap)``
    around the reference's joints) and the tests a pick must pass to be kept (its max
    joint score and its merged max score reach ``score_thresh``, and ``2.25 *`` the
    area of the merged pose's extent reaches ``area_thresh``). Off by default, but
    for AlphaPose."""

    alpha: float = 0.1
    merge: bool = False
    merge_cap: float = 15.0
    score_thresh: float = -math.inf
    area_thresh: float = -math.inf

    method = ""

    def to_list(self) -> list:
        """The ``params`` list of the ops: each field at the slot the binary's layout gives it
        (``torch.ops.rmpe_ext._nms_params_layout()``); None (OKS ``vis_thresh``) is -inf."""
        values = [0.0] * _LAYOUT.count
        for name, slot in _LAYOUT.fields[self.method]:
            v = getattr(self, name)
            values[slot] = -math.inf if v is None else float(v)
        return values


@dataclasses.dataclass(frozen=True, kw_only=True)
class AlphaPoseNMSParams(_NMSParams):
    """AlphaPose's parametric pose NMS (docs/design.md 2.2); defaults are AlphaPose's constants.

    Pose j is removed by the reference i when ``simi > gamma`` or
    ``nmatch >= match_thresh`` where, with ``d_n`` the pixel distance of joint n,
    ``simi = sum_n [d_n <= 1] tanh(s_i/delta1) tanh(s_j/delta1) + mu sum_n exp(-d_n/delta2)``
    and ``nmatch = sum_n [d_n <= min(alpha max(w_i, h_i), pck_cap)]``. Groups are
    merged with radius ``min(alpha max(w_i, h_i), merge_cap)``; a pick is kept when
    its max joint score and its merged max score reach ``score_thresh`` and
    ``2.25 * (merged pose extent area) >= area_thresh``.
    """

    delta1: float = 1.0
    mu: float = 1.7
    delta2: float = 2.65
    gamma: float = 22.48
    match_thresh: float = 5
    pck_cap: float = 7.0
    merge: bool = True
    score_thresh: float = 0.3
    area_thresh: float = 0.0

    method = "alphapose"


@dataclasses.dataclass(frozen=True, kw_only=True)
class WholeBodyNMSParams(_NMSParams):
    """AlphaPose's whole-body pose NMS (docs/design.md 2.4): the criterion AlphaPose master uses for
    COCO-WholeBody (133 keypoints) and Halpe-136, with K > 110 joints whose last 110 are the face (68)
    and the hands (42). Defaults: AlphaPose's constants with ``use_heatmap_loss=True``;
    :meth:`alphapose` gives either set.

    Pose j is removed by the reference i when ``simi > gamma`` or ``match >= match_thresh``, where,
    with ``low_n = [s_j^n < score_thresh]``, ``simi`` is the mean over each part of the score terms
    ``[d_n <= 1 and low_n] tanh(s_i^n/delta1) tanh(s_j^n/delta1)`` (weights 1, ``face_weight_score``,
    ``hand_weight_score``) plus ``mu`` times the means of ``[not low_n] exp(-d_n / (delta2 f))``
    (``f`` 1, ``face_factor``, ``hand_factor``; weights 1, ``face_weight_dist``, ``hand_weight_dist``),
    and ``match = count K / (4 n_rem c_i)``: ``count`` the joints 0-25 within ``r = min(alpha max(w_i,
    h_i), pck_cap)``, 26-93 within ``face_factor r``, 94 on within ``hand_factor r``; ``n_rem`` the poses
    still in play when i is picked; ``c_i`` i's joints scoring above ``score_thresh / 2`` (0 when none).
    ``score_thresh`` also drops picks, as for :class:`AlphaPoseNMSParams`.
    """

    delta1: float = 1.0
    mu: float = 1.7
    delta2: float = 2.65
    gamma: float = 22.48
    match_thresh: float = 5
    pck_cap: float = 7.0
    face_factor: float = 1.9
    hand_factor: float = 0.55
    face_weight_score: float = 1.0
    hand_weight_score: float = 0.1
    face_weight_dist: float = 1.0
    hand_weight_dist: float = 1.5
    merge: bool = True
    score_thresh: float = 0.3
    area_thresh: float = 0.0

    method = "wholebody"

    @classmethod
    def alphapose(cls, use_heatmap_loss: bool = True, **changes) -> "WholeBodyNMSParams":
        """AlphaPose master's constants for whole-body models: its defaults when
        ``use_heatmap_loss`` (MSE-loss models), else (``delta1=1, mu=1.65, delta2=8, gamma=3.6,
        score_thresh=0.01, match_thresh=3, alpha=0.15``), then ``changes``."""
        base = {} if use_heatmap_loss else dict(delta1=1.0, mu=1.65, delta2=8.0, gamma=3.6, score_thresh=0.01,
                                                match_thresh=3.0, alpha=0.15)
        return cls(**{**base, **changes})


@dataclasses.dataclass(frozen=True, kw_only=True)
class PaperNMSParams(_NMSParams):
    """The paper's parametric pose NMS (Eqs. 7-10, docs/design.md 2.1).

    ``d(P_i, P_j) = KSim(sigma1) + lam * HSim(sigma2)``; pose j is removed by the
    reference i when ``d > eta``. KSim counts joint n when ``k_j^n`` lies in the
    box centred on ``k_i^n`` whose sides are ``box_frac`` times those of ``B_i``;
    ``HSim = sum_n exp(-||k_i^n - k_j^n||^2 / sigma2)`` (pixels squared).
    The paper learns {sigma1, sigma2, lam, eta} from data and does not print
    them; these defaults are a starting point, not the paper's values.
    """

    sigma1: float = 1.0
    sigma2: float = 50.0
    lam: float = 1.0
    eta: float = 12.0
    box_frac: float = 0.1

    method = "paper"



@dataclasses.dataclass(frozen=True, kw_only=True)
class OKSNMSParams(_NMSParams):
    """OKS-NMS (mmpose/HRNet): pose j is removed by the reference i when OKS > thresh.

    ``OKS = mean_n exp(-d_n^2 / (2 sigma_n)^2 / ((a_i + a_j)/2 + eps) / 2)`` with
    ``a`` the box area; with ``vis_thresh`` only joints whose two scores exceed
    it count (none counted: OKS = 0). ``sigmas`` default to COCO-17's.
    """

    thresh: float = 0.9
    vis_thresh: Optional[float] = None
    sigmas: Optional[Tuple[float, ...]] = None

    method = "oks"



Params = Union[AlphaPoseNMSParams, WholeBodyNMSParams, PaperNMSParams, OKSNMSParams]
_DEFAULTS = {cls.method: cls for cls in (AlphaPoseNMSParams, WholeBodyNMSParams, PaperNMSParams, OKSNMSParams)}


class PoseNMSResult(NamedTuple):
    """Result of :func:`pose_nms`.

    keep:   ``[M]`` int64, indices of the kept poses (image by image, pick order).
    poses:  ``[M, K, 2]`` merged joints of each kept pose (its own joints when
            merging is off).
    scores: ``[M, K]`` merged joint scores (likewise).
    group:  ``[N]`` int64, for every input pose the position in ``keep`` of the
            kept pose whose group removed it (a kept pose is in its own group),
            or -1 when that group was dropped by the score/area tests.
    """

    keep: Tensor
    poses: Tensor
    scores: Tensor
    group: Tensor


def _resolve(method: str, params) -> Tuple[int, list, Params]:
    methods = _LAYOUT.methods
    if method not in methods or method not in _DEFAULTS:
        raise ValueError(f"method must be one of {sorted(_DEFAULTS)}, got {method!r}")
    if params is None:
        params = _DEFAULTS[method]()
    elif isinstance(params, dict):
        params = _DEFAULTS[method](**params)
    if getattr(params, "method", None) != method:
        raise TypeError(f"params must be a {_DEFAULTS[method].__name__} (or a dict of its fields) for "
                        f"method={method!r}, got {type(params).__name__}")
    return methods[method], params.to_list(), params


def _sigmas(params: Params, poses: Tensor) -> Optional[Tensor]:
    if not isinstance(params, OKSNMSParams) or poses.dim() != 3:
        return None  # a wrongly shaped poses: the op names it
    K = poses.shape[1]
    sig = params.sigmas
    if sig is None:
        if K != 17:
            raise ValueError(f"OKS needs per-joint sigmas for K = {K} joints (the default COCO sigmas are for K = 17)")
        sig = COCO_SIGMAS
    if not all(math.isfinite(s) and s > 0 for s in sig):
        raise ValueError(f"sigmas must be positive and finite, got {tuple(sig)}")
    return torch.tensor(sig, dtype=poses.dtype, device=poses.device)


def pose_similarity(poses: Tensor, joint_scores: Tensor, boxes: Tensor, method: str = "alphapose",
                    params: Optional[Params] = None) -> Tuple[Tensor, Tensor]:
    """All-pairs pose similarity, row = reference pose.

    Returns ``(sim [N, N], match [N, N] int32)``: for ``alphapose`` the
    parametric distance ``simi`` and the PCK match count; for ``paper``
    ``d = KSim + lam HSim`` and the number of joints inside the KSim window; for
    ``oks`` the OKS and the number of joints counted; for ``wholebody`` its ``simi`` and
    its raw match count (the decision normalizes it by the poses still in play: see
    :class:`WholeBodyNMSParams`). ``sim[i, j] > threshold`` (or ``match >= match_thresh``
    for alphapose) is what lets i remove j. For ``alphapose`` and ``wholebody`` a joint
    score of exactly 0 is read as 1e-5, as AlphaPose does.
    """
    m, values, p = _resolve(method, params)
    return torch.ops.rmpe_ext.pose_similarity(poses, joint_scores, boxes, m, values, _sigmas(p, poses))


def pose_nms(poses: Tensor, joint_scores: Tensor, boxes: Tensor, scores: Optional[Tensor] = None,
             image_index: Optional[Tensor] = None, method: str = "alphapose",
             params: Optional[Params] = None) -> PoseNMSResult:
    """Greedy parametric pose NMS with score-weighted merging, batched over images.

    Repeatedly takes the most confident remaining pose of an image as reference,
    removes every remaining pose its criterion marks (``method``: ``alphapose``, ``wholebody``,
    ``paper`` or ``oks``, parameters in ``params``), and merges the removed group
    into the reference (AlphaPose's ``p_merge_fast``) when ``params.merge``: per
    joint, the members within ``min(alpha max(w, h), merge_cap)`` pixels of the
    reference's joint, weighted by their joint scores. A joint with no weight
    (no member in range, or scores summing to 0) is NaN for ``alphapose`` and
    ``wholebody``, as in AlphaPose, and keeps the reference's joint for the other methods.
    With ``method="alphapose"`` (and ``"wholebody"``) this follows AlphaPose's ``pose_nms``
    exactly, including its quirks: joint scores of exactly 0 count as 1e-5, and a
    reference that does not match itself (possible with K < 5 joints, and with the
    whole-body criterion) stays, is taken again at once (removing what it matches then:
    the whole-body criterion depends on how many poses remain), and is removed alone
    when it matches nothing.

    Returns a :class:`PoseNMSResult` ``(keep, poses, scores, group)``.
    """
    m, values, p = _resolve(method, params)
    return PoseNMSResult(*torch.ops.rmpe_ext.pose_nms(poses, joint_scores, boxes, scores, image_index, m, values,
                                                      _sigmas(p, poses)))


def oks_nms(poses: Tensor, joint_scores: Tensor, boxes: Tensor, scores: Optional[Tensor] = None,
            image_index: Optional[Tensor] = None, thresh: float = 0.9,
            sigmas: Optional[Sequence[float]] = None, vis_thresh: Optional[float] = None) -> Tensor:
    """OKS-NMS (greedy, hard suppression at OKS > thresh); returns the kept indices ``[M]`` int64.

    Same result as mmpose's ``oks_nms`` with the box areas as areas, batched over
    images. See :class:`OKSNMSParams`.
    """
    params = OKSNMSParams(thresh=thresh, vis_thresh=vis_thresh, sigmas=None if sigmas is None else tuple(sigmas))
    return pose_nms(poses, joint_scores, boxes, scores, image_index, "oks", params).keep


def soft_oks_nms(poses: Tensor, joint_scores: Tensor, boxes: Tensor, scores: Tensor,
                 image_index: Optional[Tensor] = None, thresh: float = 0.9,
                 sigmas: Optional[Sequence[float]] = None, vis_thresh: Optional[float] = None,
                 max_dets: int = 20, linear: bool = False) -> Tuple[Tensor, Tensor]:
    """Soft-OKS-NMS (mmpose ``soft_oks_nms``), batched over images.

    Takes the highest (rescored) pose of an image, then rescales every remaining
    score by ``exp(-oks^2 / thresh)`` (or by ``1 - oks`` where ``oks >= thresh``
    with ``linear=True``); at most ``max_dets`` poses per image (-1: no limit).
    Returns ``(keep [M] int64, rescored score of each kept pose [M])``.
    """
    params = OKSNMSParams(thresh=thresh, vis_thresh=vis_thresh, sigmas=None if sigmas is None else tuple(sigmas))
    sig = _sigmas(params, poses)
    return torch.ops.rmpe_ext.soft_oks_nms(poses, joint_scores, boxes, scores, image_index, params.to_list(),
                                           poses.new_empty(0) if sig is None else sig, int(max_dets), bool(linear))


# ---------------------------------------------------------------------------
# Fake (meta) kernels: shapes only, so the ops trace under torch.compile.


def _check_fake(poses, joint_scores, boxes):
    torch._check(poses.dim() == 3 and poses.shape[2] == 2, lambda: "poses must have shape [N, K, 2]")
    torch._check(joint_scores.shape == poses.shape[:2], lambda: "joint_scores must have shape [N, K]")
    torch._check(boxes.dim() == 2 and boxes.shape[0] == poses.shape[0] and boxes.shape[1] == 4,
                 lambda: "boxes must have shape [N, 4]")


@torch.library.register_fake("rmpe_ext::pose_similarity")
def _pose_similarity_fake(poses, joint_scores, boxes, method, params, sigmas):
    _check_fake(poses, joint_scores, boxes)
    n = poses.shape[0]
    return poses.new_empty((n, n)), poses.new_empty((n, n), dtype=torch.int32)


@torch.library.register_fake("rmpe_ext::pose_nms")
def _pose_nms_fake(poses, joint_scores, boxes, scores, image_index, method, params, sigmas):
    _check_fake(poses, joint_scores, boxes)
    n, k = poses.shape[0], poses.shape[1]
    m = torch.library.get_ctx().new_dynamic_size()
    return (poses.new_empty((m,), dtype=torch.int64), poses.new_empty((m, k, 2)), poses.new_empty((m, k)),
            poses.new_empty((n,), dtype=torch.int64))


@torch.library.register_fake("rmpe_ext::soft_oks_nms")
def _soft_oks_nms_fake(poses, joint_scores, boxes, scores, image_index, params, sigmas, max_dets, linear):
    _check_fake(poses, joint_scores, boxes)
    m = torch.library.get_ctx().new_dynamic_size()
    return poses.new_empty((m,), dtype=torch.int64), poses.new_empty((m,))


_non_differentiable("pose_similarity", 6)
_non_differentiable("pose_nms", 8)
_non_differentiable("soft_oks_nms", 9)
