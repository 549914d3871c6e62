"""The RMPE pipeline: frames + person boxes -> crops -> SPPE -> decode -> pose NMS -> COCO keypoint results.

    from rmpe.pipeline.models import BlazePoseModel
    from rmpe.pipeline import Pipeline
    pipe = Pipeline(BlazePoseModel(), nms="alphapose", batch_size=64)
    res = pipe(frames, boxes, image_ids)          # frames: uint8 [H, W, 3] BGR (cv2.imread), any sizes
    res.results    # COCO keypoint results after NMS: image_id, category_id=1, keypoints (3 x 17), score,
                   # det_bbox (xywh), det_score
    res.proposals  # every pose before NMS (rmpe_ext.proposals.Proposals), res.pre_nms_results() as dicts
    res.timings    # seconds: crop, sppe, decode, nms, total

Stages (all persons of all the frames of one call are one batch; the SPPE sees them ``batch_size`` at a
time, crossing frame boundaries; the NMS runs once over the whole batch with an ``image_index``):

1. **Boxes**: per frame, from a detector callable or given (see :mod:`rmpe.pipeline.detections`); boxes with a
   score below ``det_thresh`` are dropped.
2. **Crops**: each box becomes a pixel theta (crop pixel -> frame pixel) by a preset: ``"alphapose"``
   (AlphaPose's ``SimpleTransform``: the shorter side extended to the input's aspect ratio, x1.25,
   isotropic) or ``"paper"`` (RMPE section 4.1: +30% in width and height, stretched). One
   ``rmpe_ext.ops.affine_crop`` call per frame writes its crops straight into the (reused) input batch,
   normalized as the model wants (``/ 255``, mean/std, channel order, dtype). ``interpolation``:
   ``"bilinear-u8"`` (default: ``cv2.warpAffine(INTER_LINEAR)`` of OpenCV 5, as most SPPEs were trained
   on), ``"bilinear"`` (exact float) or ``"opencv4"``.
3. **SPPE**: the adapter (:mod:`rmpe.pipeline.models`) maps crops ``[n, 3, h, w]`` to heatmaps ``[n, K, h', w']``.
4. **Decode**: the adapter's COCO-17 joints are picked (``joint_map``); logits (``heatmap_activation``)
   are decoded as they are, the sigmoid applied to the peaks only (for ``"dark"`` and ``"soft-argmax"``,
   which the sigmoid would change, to the whole maps first); then ``rmpe_ext.ops.heatmap_decode``
   (``refine``: ``"quarter"``, AlphaPose's quarter-pixel step; ``"none"``; ``"dark"``) or ``rmpe_ext.ops.soft_argmax``
   (``"soft-argmax"``, with ``soft_argmax_beta``; the score is still the peak) back-projects through the
   crop map: heatmap pixel ``u`` is crop pixel ``(u + heatmap_offset) w / w'``, then ``theta``.
5. **Pose score**: ``det_score * mean(joint scores > kp_thresh)`` (0 when none is; mmpose's and
   AlphaPose's ``oks_pose_nms`` rescoring).
6. **Pose NMS** (``nms``, default :data:`DEFAULT_NMS`, ``"oks"``: chosen by held-out AP, see
   ``examples/choose_default_nms.py``): ``"alphapose" (``rmpe_ext.ops.pose_nms``, AlphaPose's criterion and
   merging, ranked by the mean joint score as AlphaPose; result score is AlphaPose's
   ``mean(merged) + det_score + 1.25 max(merged)``), ``"paper"`` and ``"oks"`` (ranked by the pose
   score), ``"soft-oks"`` (``rmpe_ext.ops.soft_oks_nms``: the rescored pose score), or ``"none"``.
   ``nms_rank`` overrides what orders the NMS: ``"proposal"`` (the pose score; ``"pose"`` is the same),
   ``"joints"`` (the mean joint score), ``"box"`` (the detector score); ``"method"``: the method's own;
   ``nms_score`` what the kept pose's score is (:class:`rmpe.nms.runtime.Scoring`'s outputs). On the
   BlazePose sample this matters: AlphaPose's joint-mean ranking ignores the detector score.
   Parameters: an object of :mod:`rmpe.nms.params`, a dict of its fields, or a parameters file
   (:func:`rmpe.nms.load_params_and_scoring`: its ``method`` sets ``nms``, its ranking/score choice
   the scoring); defaults otherwise.

Everything runs on ``device`` (default: the model's): frames are copied there once per call, thetas,
crops, decode and NMS stay there; only the result records are built on the CPU. On CUDA the per-stage
timings synchronize the device.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from rmpe_ext import ops
from rmpe_ext.proposals import Proposals

from .detections import FrameBoxes, as_frame_boxes
from .models import check_heatmaps, check_model
from ..nms.params import METHODS, make_params
from ..nms.runtime import NMSOutput, Scoring, apply_nms, load_params_and_scoring, to_results

__all__ = ["Pipeline", "PipelineResult", "run_nms", "crop_theta", "heatmap_to_image", "pose_scores",
           "proposals_to_records", "BOX_PRESETS", "REFINES", "NMS_METHODS", "RANKS", "STAGES", "DEFAULT_NMS"]

BOX_PRESETS = {"alphapose": (1.25, True), "paper": (1.3, False)}  # (enlargement, keep the aspect ratio)
REFINES = ("quarter", "none", "dark", "soft-argmax")
NMS_METHODS = tuple(METHODS) + ("none",)
RANKS = ("method", "pose", "proposal", "joints", "box")  # "pose" is "proposal" (the pose score)
DEFAULT_NMS = "oks"  # the best held-out AP (examples/choose_default_nms.py); "alphapose" is AlphaPose exactly
STAGES = ("crop", "sppe", "decode", "nms", "total")


# ------------------------------------------------------------------ the maps


def crop_theta(boxes: Tensor, input_size: Sequence[int], preset: str = "alphapose",
               scale: Optional[float] = None) -> Tensor:
    """Pixel thetas ``[N, 2, 3]`` float64 (crop pixel -> image pixel) of the crops of boxes ``[N, 4]``
    (x1, y1, x2, y2 pixels) at ``input_size = (h, w)``, by the box ``preset`` (``"alphapose"``: the
    aspect fix and x1.25, isotropic; ``"paper"``: +30% each way, stretched); ``scale`` overrides the
    preset's enlargement. On the boxes' device."""
    if preset not in BOX_PRESETS:
        raise ValueError(f"box preset must be one of {sorted(BOX_PRESETS)}, got {preset!r}")
    default_scale, keep_aspect = BOX_PRESETS[preset]
    return ops.boxes_to_theta(boxes.to(torch.float64), input_size, default_scale if scale is None else float(scale),
                              keep_aspect)


def heatmap_to_image(theta: Tensor, input_size: Sequence[int], heatmap_size: Sequence[int],
                     offset: float = 0.0) -> Tensor:
    """Maps ``[N, 2, 3]`` from heatmap pixels to image pixels: heatmap pixel ``(u, v)`` is crop pixel
    ``((u + offset) w / w', (v + offset) h / h')``, which ``theta`` (crop -> image) takes to the image."""
    m = ops.heatmap_theta(theta, input_size, heatmap_size)
    if offset:
        m = m.clone()
        m[:, :, 2] += offset * (m[:, :, 0] + m[:, :, 1])
    return m


def pose_scores(joint_scores: Tensor, det_scores: Tensor, kp_thresh: float = 0.2) -> Tensor:
    """``det_score * mean(joint scores > kp_thresh)`` per pose, 0 where no joint passes: ``[N, K]``, ``[N]``
    -> ``[N]`` (the dtype of ``joint_scores``)."""
    passing = joint_scores > kp_thresh
    cnt = passing.sum(1)
    mean = torch.where(passing, joint_scores, torch.zeros_like(joint_scores)).sum(1) / cnt.clamp_min(1)
    return torch.where(cnt > 0, mean, torch.zeros_like(mean)) * det_scores.to(joint_scores.dtype)


# ------------------------------------------------------------------ NMS


def _resolve_nms(nms: Optional[str], nms_params) -> Tuple[str, Any, Optional[Scoring]]:
    """-> ``(method, params, scoring)``; ``scoring`` is a parameters file's own (``meta["scoring"]``, as
    ``rmpe tune-nms`` writes it), None otherwise (the method's :func:`rmpe.nms.default_scoring`)."""
    if nms_params is None:
        method = DEFAULT_NMS if nms is None else nms
        if method not in NMS_METHODS:
            raise ValueError(f"nms must be one of {list(NMS_METHODS)}, got {method!r}")
        return method, None if method == "none" else make_params(method), None
    if isinstance(nms_params, (str, os.PathLike)):
        method, params, scoring = load_params_and_scoring(nms_params)
        if nms is not None and nms != method:
            raise ValueError(f"nms={nms!r} but the NMS parameters file {os.fspath(nms_params)!r} is for {method!r}")
        return method, params, scoring
    if isinstance(nms_params, dict):
        method = DEFAULT_NMS if nms is None else nms
        if method == "none" or method not in METHODS:
            raise ValueError(f"nms_params given as a dict needs nms to be one of {sorted(METHODS)}, got {method!r}")
        return method, make_params(method, nms_params), None
    method = getattr(nms_params, "method", None)
    if method not in METHODS or not isinstance(nms_params, METHODS[method]):
        raise TypeError(f"nms_params must be a path, a dict or one of {[c.__name__ for c in METHODS.values()]}, "
                        f"got {type(nms_params).__name__}")
    if nms is not None and nms != method:
        raise ValueError(f"nms={nms!r} but nms_params is a {type(nms_params).__name__} (method {method!r})")
    return method, nms_params, None


def run_nms(p: Proposals, method: str = DEFAULT_NMS, params=None, rank: str = "method",
            scoring: Optional[Scoring] = None, score: Optional[str] = None) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pose NMS over all the images of ``p`` at once -> ``(keep [M] int64, keypoints [M, K, 2],
    joint_scores [M, K], scores [M])``, image by image (ascending image index), pick order within an image.

    ``method``/``params`` as :class:`Pipeline` takes them (``params`` None: the method's defaults); the work
    is :func:`rmpe.nms.apply_nms`. ``scoring`` (a :class:`rmpe.nms.Scoring`) says which score
    ranks the poses and which one a kept pose gets; None: the method's own convention
    (:func:`rmpe.nms.default_scoring`): ``alphapose`` ranks by AlphaPose's mean joint score, merges,
    and scores with AlphaPose's ``mean(merged) + det_score + 1.25 max(merged)``; the others rank by and keep
    ``p.scores`` (``soft-oks``: rescored). ``rank``: ``"method"`` (that convention) or one of
    :class:`Scoring`'s ranks (``"pose"`` = ``"proposal"``: ``p.scores``), which then also scores the kept
    poses unless ``score`` (one of :class:`Scoring`'s outputs) says otherwise.
    """
    if rank not in RANKS:
        raise ValueError(f"rank must be one of {list(RANKS)}, got {rank!r}")
    method, resolved, file_scoring = _resolve_nms(method, params)
    n = p.poses.shape[0]
    if method == "none" or n == 0:
        keep = torch.arange(n, device=p.poses.device)
        return keep, p.poses, p.joint_scores, p.scores
    if rank != "method":
        scoring = Scoring("proposal" if rank == "pose" else rank, score or "rank")
    else:
        scoring = scoring or file_scoring
        if score is not None:
            from ..nms.runtime import default_scoring

            scoring = Scoring((scoring or default_scoring(method)).rank, score)
    out = apply_nms(p, method, resolved, scoring)
    return out.keep, out.poses, out.joint_scores, out.scores


# ------------------------------------------------------------------ results


def proposals_to_records(p: Proposals, index: Optional[Tensor] = None, poses: Optional[Tensor] = None,
                         joint_scores: Optional[Tensor] = None, scores: Optional[Tensor] = None) -> List[dict]:
    """COCO keypoint result dicts for the poses ``index`` (default: all) of ``p``, with other keypoints,
    joint scores or scores when given (one row per index): ``image_id``, ``category_id`` 1,
    ``keypoints`` (x, y, score per joint, image pixels), ``score``, ``det_bbox`` (xywh), ``det_score``
    (:func:`rmpe.nms.to_results` with ``extra``)."""
    if index is None:
        index = torch.arange(p.poses.shape[0], device=p.poses.device)
    out = NMSOutput(index, p.poses[index] if poses is None else poses,
                    p.joint_scores[index] if joint_scores is None else joint_scores,
                    p.scores[index] if scores is None else scores)
    return to_results(p, out, extra=True)


@dataclasses.dataclass
class PipelineResult:
    """What one :class:`Pipeline` call gives.

    ``results``: COCO keypoint results after NMS (see :func:`proposals_to_records`), image by image;
    ``proposals``: every pose before NMS as :class:`rmpe_ext.proposals.Proposals` (on the pipeline's
    device; ``records`` empty; ``image_index`` = the frame's position in the call);
    ``keep``: ``[M]`` the proposals the NMS kept (one per result); ``image_ids``: the COCO id of each frame;
    ``timings``: seconds per stage (:data:`STAGES`); ``nms``: the method used.
    """

    results: List[dict]
    proposals: Proposals
    keep: Tensor
    image_ids: List[int]
    timings: Dict[str, float]
    nms: str

    def pre_nms_results(self) -> List[dict]:
        """Every pose before NMS as COCO keypoint results (score: the pose score)."""
        return proposals_to_records(self.proposals)

    @property
    def num_proposals(self) -> int:
        return int(self.proposals.poses.shape[0])

    @staticmethod
    def merge(parts: Sequence["PipelineResult"]) -> "PipelineResult":
        """One result from the results of several calls (frames renumbered in order, timings summed)."""
        if not parts:
            raise ValueError("merge needs at least one PipelineResult")
        offset, idx, keep_off, keeps, fields = 0, [], 0, [], {f: [] for f in ("poses", "joint_scores", "boxes",
                                                                              "box_scores", "scores", "image_ids")}
        for r in parts:
            for f in fields:
                fields[f].append(getattr(r.proposals, f))
            idx.append(r.proposals.image_index + offset)
            keeps.append(r.keep + keep_off)
            offset += len(r.image_ids)
            keep_off += r.num_proposals
        props = Proposals(*(torch.cat(fields[f]) for f in ("poses", "joint_scores", "boxes", "box_scores", "scores",
                                                           "image_ids")), torch.cat(idx), [])
        return PipelineResult([x for r in parts for x in r.results], props, torch.cat(keeps),
                              [i for r in parts for i in r.image_ids],
                              {s: sum(r.timings.get(s, 0.0) for r in parts) for s in STAGES}, parts[0].nms)


# ------------------------------------------------------------------ the pipeline


def _as_frame(frame, n: int, device: torch.device) -> Tensor:
    if isinstance(frame, np.ndarray):
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frames[{n}] must be a uint8 [H, W, 3] image, got {frame.dtype} {frame.shape}")
        t = torch.from_numpy(np.ascontiguousarray(frame))
    elif isinstance(frame, Tensor):
        if frame.dtype != torch.uint8 or frame.dim() != 3 or frame.shape[2] != 3:
            raise ValueError(f"frames[{n}] must be a uint8 [H, W, 3] image, got {frame.dtype} {tuple(frame.shape)}")
        t = frame
    else:
        raise ValueError(f"frames[{n}] must be a numpy array or a tensor, got {type(frame).__name__}")
    if min(t.shape[:2]) == 0:
        raise ValueError(f"frames[{n}] is empty: shape {tuple(t.shape)}")
    return t.to(device).contiguous()


class _Clock:
    """Per-stage wall-clock sums; synchronizes CUDA before each reading so a stage owns its kernels."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.t = dict.fromkeys(STAGES, 0.0)
        self.last = self.now()

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def lap(self, stage: Optional[str]) -> None:
        t = self.now()
        if stage is not None:
            self.t[stage] += t - self.last
        self.last = t


class Pipeline:
    """Top-down multi-person pose estimation with pose NMS (see the module docstring).

    ``model``: an SPPE adapter (:class:`rmpe.pipeline.models.PoseModel`). ``nms``/``nms_params``: see
    :func:`run_nms`. ``box_preset``: default the model's. ``box_scale``: the preset's enlargement
    overridden. ``refine``: one of :data:`REFINES`. ``det_thresh``: boxes below it are dropped.
    ``batch_size``: crops per SPPE call. ``device``: default the model's. ``kp_thresh``: see
    :func:`pose_scores`. ``interpolation``: of the crops (see ``rmpe_ext.ops.affine_crop``).
    ``nms_rank``: ``"method"`` (the method's own ranking: AlphaPose's for ``alphapose``), or
    ``"proposal"``/``"pose"``, ``"joints"``, ``"box"`` for every method; ``nms_score``: the kept poses'
    score (see :func:`run_nms`).
    """

    def __init__(self, model, nms: Optional[str] = None, nms_params=None, box_preset: Optional[str] = None,
                 box_scale: Optional[float] = None, refine: str = "quarter", det_thresh: float = 0.0,
                 batch_size: int = 64, device: Optional[Union[str, torch.device]] = None, kp_thresh: float = 0.2,
                 interpolation: str = "bilinear-u8", soft_argmax_beta: float = 1.0, nms_rank: str = "method",
                 nms_score: Optional[str] = None):
        check_model(model)
        self.model = model
        self.nms, self.nms_params, self.nms_scoring = _resolve_nms(nms, nms_params)
        if nms_rank not in RANKS:
            raise ValueError(f"nms_rank must be one of {list(RANKS)}, got {nms_rank!r}")
        self.nms_rank = nms_rank
        from ..nms.runtime import OUTPUTS

        if nms_score is not None and nms_score not in OUTPUTS:
            raise ValueError(f"nms_score must be one of {list(OUTPUTS)}, got {nms_score!r}")
        if nms_score not in (None, "rank") and self.nms == "soft-oks":
            raise ValueError("soft-oks rescores its ranking score: nms_score must be 'rank'")
        self.nms_score = nms_score
        self.box_preset = model.box_preset if box_preset is None else box_preset
        if self.box_preset not in BOX_PRESETS:
            raise ValueError(f"box_preset must be one of {sorted(BOX_PRESETS)}, got {self.box_preset!r}")
        if box_scale is not None and not float(box_scale) > 0:
            raise ValueError(f"box_scale must be > 0, got {box_scale}")
        self.box_scale = box_scale
        if refine not in REFINES:
            raise ValueError(f"refine must be one of {list(REFINES)}, got {refine!r}")
        self.refine = refine
        if not np.isfinite(det_thresh):
            raise ValueError(f"det_thresh must be a finite number, got {det_thresh}")
        self.det_thresh = float(det_thresh)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.device = torch.device(model.device if device is None else device)
        self.kp_thresh = float(kp_thresh)
        if interpolation not in ("bilinear", "bilinear-u8", "opencv4"):
            raise ValueError(f"interpolation must be 'bilinear', 'bilinear-u8' or 'opencv4', got {interpolation!r}")
        self.interpolation = interpolation
        self.soft_argmax_beta = float(soft_argmax_beta)
        self.input_size = tuple(int(s) for s in model.input_size)
        jm = model.joint_map
        self._joint_map = None if jm is None else torch.tensor(list(jm), dtype=torch.long, device=self.device)

    def __repr__(self) -> str:
        return (f"Pipeline({self.model!r}, nms={self.nms!r}, box_preset={self.box_preset!r}, refine={self.refine!r}, "
                f"batch_size={self.batch_size}, device={self.device})")

    # ---------------------------------------------------------------- stages

    def _crop_buffer(self, rows: int, dtype: torch.dtype) -> Tensor:
        """The crop batch, kept between calls (fresh memory of this size costs more to fault in than the
        crops cost to compute); it grows to ``batch_size`` rows at most. Not shared across threads: one
        Pipeline object serves one caller at a time."""
        buf = getattr(self, "_crops", None)
        if buf is None or buf.shape[0] < rows or buf.dtype != dtype or buf.device != self.device:
            buf = torch.empty((rows, 3) + self.input_size, dtype=dtype, device=self.device)
            self._crops = buf
        return buf

    def _boxes(self, frames_np, detections, n_frames: int) -> List[FrameBoxes]:
        if callable(detections) and not isinstance(detections, (list, tuple, dict)):
            return [as_frame_boxes(detections(f), self.det_thresh, f"detector output for frames[{i}]")
                    for i, f in enumerate(frames_np)]
        if not isinstance(detections, (list, tuple)):
            raise ValueError(f"detections must be a detector callable or a sequence (one per frame), "
                             f"got {type(detections).__name__}")
        if len(detections) != n_frames:
            raise ValueError(f"detections has {len(detections)} entries for {n_frames} frames (one per frame)")
        return [as_frame_boxes(d, self.det_thresh, f"detections[{i}]") for i, d in enumerate(detections)]

    def _decode(self, heatmaps: Tensor, theta: Tensor) -> Tuple[Tensor, Tensor]:
        jm = None if self._joint_map is None else self._joint_map.to(heatmaps.device)
        if heatmaps.permute(0, 2, 3, 1).is_contiguous() and not heatmaps.is_contiguous():
            # channels-last (an NHWC model output viewed as NCHW): pick the joints along the
            # contiguous axis, then one transpose (3x faster than a strided index_select)
            nhwc = heatmaps.permute(0, 2, 3, 1)
            hm = (nhwc if jm is None else nhwc[..., jm]).permute(0, 3, 1, 2).contiguous()
        else:
            hm = (heatmaps if jm is None else heatmaps.index_select(1, jm)).contiguous()
        m = heatmap_to_image(theta.to(hm.device), self.input_size, hm.shape[2:], self.model.heatmap_offset)
        if self.model.heatmap_activation == "sigmoid":
            if self.refine in ("quarter", "none"):
                # logits decoded as they are: the argmax and the quarter step's neighbour comparisons do not
                # change under the (monotone) sigmoid, so only the peaks go through it. AlphaPose's rule (a
                # peak <= 0 puts the joint at heatmap pixel (0, 0)) is for score maps: each map is shifted so
                # that its peak is 1 (finite peaks only; NaN and all -inf maps stay as they are and decode as
                # their sigmoids did). In place when hm is this call's own copy; the model's tensor is not
                # modified. Above a logit of about 16.6 float32's sigmoid rounds to 1 and the former
                # sigmoid-then-argmax could pick the first such pixel; here the argmax is the logits' own.
                peaks = hm.flatten(2).amax(2)
                shift = torch.where(torch.isfinite(peaks), peaks - 1, torch.zeros_like(peaks))[..., None, None]
                hm = hm.sub_(shift) if hm is not heatmaps else hm - shift
                coords, _ = ops.heatmap_decode(hm, m, self.refine)
                return coords.to(torch.float32), torch.sigmoid(peaks).to(torch.float32)
            hm = torch.sigmoid(hm)  # DARK and soft-argmax are not invariant to it: they see probabilities
        if self.refine == "soft-argmax":
            coords, _ = ops.soft_argmax(hm, m, self.soft_argmax_beta)
            scores = hm.flatten(2).amax(2)
            return coords.to(torch.float32), scores.to(torch.float32)
        coords, scores = ops.heatmap_decode(hm, m, self.refine)
        return coords.to(torch.float32), scores.to(torch.float32)

    def __call__(self, frames: Sequence, detections, image_ids: Optional[Sequence[int]] = None) -> PipelineResult:
        """Poses of all the persons in ``frames``.

        ``frames``: a sequence of uint8 ``[H, W, 3]`` BGR images (numpy arrays or tensors; sizes may
        differ), never modified. ``detections``: a detector callable (called on each frame as given) or a
        sequence with one entry per frame, each anything :func:`rmpe.pipeline.detections.as_frame_boxes` takes.
        ``image_ids``: the COCO id of each frame (default 0, 1, ...).
        """
        clock = _Clock(self.device)
        t_start = clock.last
        if isinstance(frames, (np.ndarray, Tensor)) and getattr(frames, "ndim", 0) == 3:
            raise ValueError("frames must be a sequence of images; wrap a single frame in a list")
        frames = list(frames)
        ids = list(range(len(frames))) if image_ids is None else [int(i) for i in image_ids]
        if len(ids) != len(frames):
            raise ValueError(f"image_ids has {len(ids)} entries for {len(frames)} frames")
        per_frame = self._boxes(frames, detections, len(frames))
        dev_frames = [_as_frame(f, i, self.device) for i, f in enumerate(frames)]
        counts = [len(fb) for fb in per_frame]
        n = sum(counts)
        K = 17
        if n:
            boxes = torch.cat([fb.boxes for fb in per_frame]).to(self.device)
            det_scores = torch.cat([fb.scores for fb in per_frame]).to(self.device)
        else:
            boxes, det_scores = torch.zeros(0, 4, device=self.device), torch.zeros(0, device=self.device)
        frame_of = torch.repeat_interleave(torch.arange(len(frames)), torch.tensor(counts, dtype=torch.long)) \
            if frames else torch.zeros(0, dtype=torch.long)
        theta = crop_theta(boxes, self.input_size, self.box_preset, self.box_scale)
        poses = torch.zeros(n, K, 2, device=self.device)
        joint = torch.zeros(n, K, device=self.device)
        clock.lap(None)

        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # frame f owns [starts[f], starts[f+1])
        frame_of_np = frame_of.numpy()
        m = self.model
        buf = self._crop_buffer(min(self.batch_size, n), m.dtype) if n else None
        for s in range(0, n, self.batch_size):
            e = min(s + self.batch_size, n)
            out = buf[:e - s]
            for f in range(int(frame_of_np[s]), int(frame_of_np[e - 1]) + 1):
                a, b = max(s, int(starts[f])), min(e, int(starts[f + 1]))
                if a >= b:
                    continue
                ops.affine_crop(dev_frames[f], theta[a:b], self.input_size,
                                torch.zeros(b - a, dtype=torch.long, device=self.device), mean=m.mean, std=m.std,
                                reverse_channels=m.channel_order == "RGB", interpolation=self.interpolation,
                                check=False, out=out[a - s:b - s])
            clock.lap("crop")
            heatmaps = check_heatmaps(m(out), e - s, m.num_joints, f"model {type(m).__name__}")
            clock.lap("sppe")
            poses[s:e], joint[s:e] = self._decode(heatmaps, theta[s:e])
            clock.lap("decode")

        if n and not bool(torch.isfinite(poses).all() & torch.isfinite(joint).all()):  # one check (a sync on CUDA)
            bad = (~torch.isfinite(poses).all(2) | ~torch.isfinite(joint)).any(1).nonzero().flatten()[:5].tolist()
            raise ValueError(f"model {type(m).__name__} gave NaN or infinite heatmaps (persons {bad}, counted "
                             "over the frames of this call)")
        scores = pose_scores(joint, det_scores, self.kp_thresh)
        props = Proposals(poses, joint, boxes.to(torch.float32), det_scores, scores,
                          torch.tensor(ids, dtype=torch.long)[frame_of].to(self.device), frame_of.to(self.device), [])
        clock.lap(None)
        keep, kp, js, sc = run_nms(props, self.nms, self.nms_params, self.nms_rank, self.nms_scoring, self.nms_score)
        clock.lap("nms")
        results = proposals_to_records(props, keep, kp, js, sc)
        clock.lap(None)
        clock.t["total"] = clock.last - t_start
        return PipelineResult(results, props, keep, ids, clock.t, self.nms)

    def renms(self, result: PipelineResult, nms: Optional[str] = None, nms_params=None,
              nms_rank: Optional[str] = None) -> List[dict]:
        """The results of ``result``'s proposals under another NMS (no crops, no SPPE run again)."""
        method, params, scoring = _resolve_nms(nms, nms_params)
        keep, kp, js, sc = run_nms(result.proposals, method, params, self.nms_rank if nms_rank is None else nms_rank,
                                   scoring)
        return proposals_to_records(result.proposals, keep, kp, js, sc)
