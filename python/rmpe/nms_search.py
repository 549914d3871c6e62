"""Pose NMS on COCO-style proposals, its COCO keypoint AP, and the data-driven search of its parameters.

    props = read_proposals("data/blazepose_proposals_pre_nms_dev.json.gz")      # pre-NMS results, det_bbox
    ev = KeypointAP("data/gt_dev.json.gz")                                       # one prepared COCO setup
    out = apply_nms(props, "paper", PaperNMSParams(), Scoring())                 # one batched kernel call
    ev.ap(to_results(props, out))                                                # COCO keypoint AP
    res = tune_nms(props, ev, method="paper")                                    # the paper's pair search
    save_params("tuned.json", res.params, meta=res.meta())                       # rmpe.nms_params file

What is ranked and what is scored (:class:`Scoring`)
----------------------------------------------------
Pose NMS takes the most confident remaining pose first; the COCO evaluation sorts the kept poses of an
image by their ``score`` and reads only the first 20 (``maxDets``). Both numbers are explicit here:

* ``rank`` (the order NMS picks in): ``"proposal"``, the record's ``score`` (for the shipped BlazePose
  proposals: detection score x mean confident joint score); ``"joints"``, the mean joint score (AlphaPose's
  human score, zeros read as 1e-5 for ``alphapose``: the op's default); ``"box"``, the detection score.
* ``output`` (the kept pose's COCO ``score``): ``"rank"``, its ranking score (for soft-OKS the decayed
  one); ``"proposal"``; ``"box-joints"``, detection score x mean merged joint score; ``"joints"``, mean
  merged joint score; ``"alphapose"``, AlphaPose's final score ``mean + detection score + 1.25 max`` of the
  merged joint scores.

On the shipped BlazePose proposals this choice moves AP more than any NMS parameter (AlphaPose's own
ranking and score: 0.108; the same criterion ranked and scored by the proposal score: 0.164). It is
configured (``scoring=``; the search's default: the proposal's score for both) and stored in the ``meta``
of the parameter files (``meta["scoring"]``, read back by :func:`scoring_from_meta`).
``search_scoring=True`` searches it too; on 12 images that risks overfitting (``python
examples/tune_nms.py --search-scoring`` measures it on a 2-fold split; no run of it is recorded here).

The search (docs/design.md 2.1)
-----------------------
Coordinate search over pairs: for each pair of the searched parameters, with the others fixed, a 2-D grid
around the current values (log-spaced for scales, linear for thresholds, integer steps for counts); move
to the best point when it beats the current AP, ties broken towards the current point, then the nearest,
then grid order (so the result is deterministic). A round tries the boolean flags (``merge``), with
``search_scoring`` every scoring choice, then visits every pair; when a round improves AP by less than ``tol`` the grids are
refined (half the span), and after ``refine`` refinements the search stops. Each evaluation is one call
of the batched NMS op over all images (``image_index``) and one pass of a prepared ``COCOeval``
(:class:`KeypointAP`: one GT index, the AP-only area range, an OKS cache); identical NMS outputs are
scored once.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import itertools
import math
import os
import time
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from rmpe_ext.proposals import Proposals, proposals_from_records

from .nms_params import METHODS, make_params, params_to_json

__all__ = [
    "RANKS", "OUTPUTS", "Scoring", "default_scoring", "scoring_from_meta", "load_params_and_scoring", "read_proposals", "subset_proposals", "NMSOutput",
    "apply_nms", "no_nms", "to_results", "KeypointAP", "ParamSpec", "default_space", "default_flags", "TuneResult", "tune_nms",
    "tuned_params_path",
]

RANKS = ("proposal", "joints", "box")
OUTPUTS = ("rank", "proposal", "box-joints", "joints", "alphapose")


@dataclasses.dataclass(frozen=True)
class Scoring:
    """Which score orders the NMS (``rank``) and which is the kept pose's COCO ``score`` (``output``).
    See the module docstring for the choices (:data:`RANKS`, :data:`OUTPUTS`)."""

    rank: str = "proposal"
    output: str = "rank"

    def __post_init__(self):
        if self.rank not in RANKS:
            raise ValueError(f"scoring rank must be one of {list(RANKS)}, got {self.rank!r}")
        if self.output not in OUTPUTS:
            raise ValueError(f"scoring output must be one of {list(OUTPUTS)}, got {self.output!r}")

    def as_dict(self) -> Dict[str, str]:
        return {"rank": self.rank, "output": self.output}


def default_scoring(method: str) -> Scoring:
    """Each method's own convention (as :func:`rmpe.pipeline.run_nms`): ``alphapose`` ranks by the mean
    joint score and scores with AlphaPose's final score (AlphaPose exactly); the others rank and score by
    the proposal's ``score``."""
    return Scoring("joints", "alphapose") if method == "alphapose" else Scoring("proposal", "rank")


def scoring_from_meta(meta: Optional[Dict[str, Any]]) -> Optional[Scoring]:
    """The :class:`Scoring` stored in a parameters file's ``meta["scoring"]`` (None when absent)."""
    s = (meta or {}).get("scoring")
    if s is None:
        return None
    if not isinstance(s, dict):
        raise ValueError("meta 'scoring' must be an object with 'rank' and 'output'")
    return Scoring(rank=s.get("rank", "proposal"), output=s.get("output", "rank"))


def load_params_and_scoring(path: Union[str, os.PathLike]) -> Tuple[str, Any, Scoring]:
    """A parameters file -> ``(method, params, scoring)``: :func:`rmpe.nms_params.load_params` plus the
    scoring of its ``meta`` (the method's :func:`default_scoring` when the file has none)."""
    from .io import read_json
    from .nms_params import load_params

    method, params = load_params(path)
    doc = read_json(path, "NMS parameters file")
    meta = doc.get("meta") or {}
    try:
        sc = scoring_from_meta(meta) if isinstance(meta, dict) else None
    except ValueError as e:
        raise ValueError(f"NMS parameters file {os.fspath(path)!r}: {e}") from None
    return method, params, sc if sc is not None else default_scoring(method)


# ---------------------------------------------------------------------------------------------------------
# proposals


def read_proposals(path: Union[str, os.PathLike], num_joints: Optional[int] = None) -> Proposals:
    """Reads a pre-NMS COCO keypoint results file (``.json``/``.json.gz``: a list of dicts with
    ``image_id``, ``keypoints`` [3K] x y score in image pixels, ``score``, a detector box ``det_bbox`` or
    ``bbox`` as xywh pixels, optional ``det_score``) into :class:`rmpe_ext.proposals.Proposals`.

    Raises ``FileNotFoundError``/``ValueError`` naming the file (and the record and field) for a missing
    file, bad JSON, an empty list, a missing field, a keypoint count that is not ``3 * num_joints`` (when
    given) or differs between records, non-numeric or non-finite values, or a box of negative size."""
    from .io import read_json

    path = os.fspath(path)
    records = read_json(path, "proposals file")
    if not isinstance(records, list):
        raise ValueError(f"proposals file {path!r}: expected a JSON list of keypoint results, "
                         f"got {type(records).__name__}")
    if not records:
        raise ValueError(f"proposals file {path!r}: holds no proposals")
    for n, r in enumerate(records):
        if not isinstance(r, dict):
            raise ValueError(f"proposals file {path!r}: record {n} is a {type(r).__name__}, not an object")
    try:
        props = proposals_from_records(records)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"proposals file {path!r}: {e}") from None
    K = props.poses.shape[1]
    if num_joints is not None and K != num_joints:
        raise ValueError(f"proposals file {path!r}: {3 * K} keypoint numbers per record ({K} joints), "
                         f"expected {3 * num_joints} ({num_joints} joints)")
    for name, t in (("keypoints", props.poses), ("keypoints", props.joint_scores), ("det_bbox", props.boxes),
                    ("score", props.scores), ("det_score", props.box_scores)):
        bad = ~torch.isfinite(t.reshape(len(t), -1)).all(1)
        if bad.any():
            raise ValueError(f"proposals file {path!r}: record {int(bad.nonzero()[0])}: "
                             f"non-finite value in {name!r}")
    neg = (props.boxes[:, 2] < props.boxes[:, 0]) | (props.boxes[:, 3] < props.boxes[:, 1])
    if neg.any():
        raise ValueError(f"proposals file {path!r}: record {int(neg.nonzero()[0])}: the box has a negative "
                         "width or height")
    return props


def subset_proposals(props: Proposals, image_ids: Iterable[int]) -> Proposals:
    """The proposals of the given COCO image ids (a new batch, image indices renumbered 0..B-1 in order of
    first appearance). The caller's tensors are not modified."""
    want = torch.tensor(sorted({int(i) for i in image_ids}), dtype=torch.long)
    sel = torch.nonzero(torch.isin(props.image_ids, want)).flatten()
    ids = props.image_ids[sel]
    order: Dict[int, int] = {}
    for i in ids.tolist():
        order.setdefault(i, len(order))
    index = torch.tensor([order[i] for i in ids.tolist()], dtype=torch.long)
    return Proposals(props.poses[sel], props.joint_scores[sel], props.boxes[sel], props.box_scores[sel],
                     props.scores[sel], ids, index, [props.records[i] for i in sel.tolist()])


# ---------------------------------------------------------------------------------------------------------
# NMS


class NMSOutput(NamedTuple):
    """The kept poses: ``keep`` [M] int64 indices into the proposals (image by image, pick order);
    ``poses`` [M, K, 2] float32 pixels (merged where the method merges; a joint the merge left without
    weight keeps the pick's own joint); ``joint_scores`` [M, K] (likewise); ``scores`` [M] float32, the
    COCO score of each (per :class:`Scoring`)."""

    keep: Tensor
    poses: Tensor
    joint_scores: Tensor
    scores: Tensor


def _rank_scores(props: Proposals, rank: str) -> Optional[Tensor]:
    if rank == "proposal":
        return props.scores
    if rank == "box":
        return props.box_scores
    return None  # "joints": the op's default, mean joint score (AlphaPose's human score)


def apply_nms(props: Proposals, method: str, params=None, scoring: Optional[Scoring] = None) -> NMSOutput:
    """Pose NMS of all images of ``props`` in one batched call (``image_index``).

    ``method``: ``alphapose``, ``paper``, ``oks`` (``rmpe_ext.ops.pose_nms``) or ``soft-oks``
    (``rmpe_ext.ops.soft_oks_nms``, which rescores instead of merging: its ``output`` must be ``"rank"``,
    the decayed ranking score); ``params`` the method's parameter object (or a dict of its fields, or None
    for the defaults); ``scoring`` a :class:`Scoring` (None: the method's :func:`default_scoring`).
    The inputs are not modified."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    if scoring is None:
        scoring = default_scoring(method)
    if params is None or isinstance(params, dict):
        params = make_params(method, params)
    if getattr(params, "method", None) != method:
        raise ValueError(f"params are for method {getattr(params, 'method', None)!r}, not {method!r}")
    K = props.poses.shape[1]
    if getattr(params, "sigmas", None) is not None and len(params.sigmas) != K:
        raise ValueError(f"{method} NMS parameter 'sigmas' holds {len(params.sigmas)} sigmas, the proposals have "
                         f"{K} joints")
    from rmpe_ext import ops

    rank = _rank_scores(props, scoring.rank)
    if method == "soft-oks":
        if scoring.output != "rank":
            raise ValueError("soft-oks rescores the ranking score: its scoring output must be 'rank'")
        r = props.joint_scores.mean(1) if rank is None else rank
        keep, rescored = ops.soft_oks_nms(props.poses, props.joint_scores, props.boxes, r, props.image_index,
                                          thresh=params.thresh, max_dets=params.max_dets, linear=params.linear)
        return NMSOutput(keep, props.poses[keep], props.joint_scores[keep], rescored.to(torch.float32))
    res = ops.pose_nms(props.poses, props.joint_scores, props.boxes, rank, props.image_index, method, params)
    keep = res.keep
    poses, js = res.poses, res.scores
    bad = ~torch.isfinite(poses).all(2) | ~torch.isfinite(js)
    if bad.any():  # alphapose: a joint without merge weight is NaN; keep the pick's own joint
        poses = torch.where(bad[:, :, None], props.poses[keep], poses)
        js = torch.where(bad, props.joint_scores[keep], js)
    out = scoring.output
    if out == "rank":  # the pick's own ranking score
        if scoring.rank == "joints":
            own = props.joint_scores[keep]
            s = (torch.where(own == 0, 1e-5, own) if method == "alphapose" else own).mean(1)
        else:
            s = rank[keep]
    elif out == "proposal":
        s = props.scores[keep]
    elif out == "joints":
        s = js.mean(1)
    elif out == "box-joints":
        s = props.box_scores[keep] * js.mean(1)
    else:  # alphapose
        s = js.mean(1) + props.box_scores[keep] + 1.25 * js.amax(1)
    return NMSOutput(keep, poses, js, s.to(torch.float32))


def no_nms(props: Proposals) -> NMSOutput:
    """Every proposal kept as it is, scored by its own ``score`` (the "before NMS" baseline)."""
    return NMSOutput(torch.arange(len(props.poses)), props.poses, props.joint_scores, props.scores)


def to_results(props: Proposals, out: NMSOutput, extra: bool = False) -> List[dict]:
    """COCO keypoint result dicts (``image_id``, ``category_id`` 1, ``keypoints`` [3K], ``score``) of the
    kept poses; with ``extra`` also the pick's ``det_bbox`` (xywh) and ``det_score``, so the output can be
    fed to NMS again."""
    kp = torch.cat([out.poses, out.joint_scores[:, :, None]], 2).flatten(1).to(torch.float64).tolist()
    ids = props.image_ids[out.keep].tolist()
    scores = out.scores.to(torch.float64).tolist()
    res = [{"image_id": i, "category_id": 1, "keypoints": k, "score": s} for i, k, s in zip(ids, kp, scores)]
    if extra:
        b = props.boxes[out.keep].to(torch.float64)
        xywh = torch.cat([b[:, :2], b[:, 2:] - b[:, :2]], 1).tolist()
        for r, box, ds in zip(res, xywh, props.box_scores[out.keep].to(torch.float64).tolist()):
            r["det_bbox"] = box
            r["det_score"] = ds
    return res


# ---------------------------------------------------------------------------------------------------------
# evaluation


def _cached_oks_eval_class():
    from pycocotools.cocoeval import COCOeval

    class _CachedOKSEval(COCOeval):
        """COCOeval whose ``computeOks`` reuses, across evaluations, the OKS row of a detection it has seen
        (same image, same keypoints): pycocotools' own computeOks runs on the unseen ones only."""

        def __init__(self, coco_gt, coco_dt, params, cache):
            super().__init__(coco_gt, coco_dt, "keypoints")
            self.params = params
            self._oks_cache = cache

        def computeOks(self, imgId, catId):
            dts = self._dts[imgId, catId]
            gts = self._gts[imgId, catId]
            inds = np.argsort([-d["score"] for d in dts], kind="mergesort")
            dts = [dts[i] for i in inds][: self.params.maxDets[-1]]
            if len(gts) == 0 or len(dts) == 0:
                return []
            keys = [(imgId, catId, tuple(d["keypoints"])) for d in dts]
            todo = [n for n, k in enumerate(keys) if k not in self._oks_cache]
            if todo:  # pycocotools on the unseen detections, in this order (descending fake scores)
                saved = self._dts[imgId, catId]
                self._dts[imgId, catId] = [{"keypoints": dts[n]["keypoints"], "score": -float(j)}
                                           for j, n in enumerate(todo)]
                try:
                    rows = super().computeOks(imgId, catId)
                finally:
                    self._dts[imgId, catId] = saved
                for j, n in enumerate(todo):
                    self._oks_cache[keys[n]] = rows[j]
            return np.stack([self._oks_cache[k] for k in keys])

    return _CachedOKSEval


class KeypointAP:
    """COCO keypoint AP (pycocotools) of many result sets against one ground truth, prepared once.

    ``gt``: a path, an annotation dict or a pycocotools ``COCO`` (:func:`rmpe.eval.load_gt`); ``image_ids``
    narrows the images scored (results on other images are dropped); ``sigmas`` overrides the COCO-17 OKS
    sigmas. :meth:`ap` returns ``stats[0]`` of pycocotools' summary (AP at OKS .50:.95, all areas, 20
    detections per image), bit for bit, but computes only that area range and caches the OKS of every
    detection it has seen; :meth:`stats` runs the full evaluation (:func:`rmpe.eval.coco_keypoint_eval`).
    ``n_evals`` and ``seconds`` count the :meth:`ap` calls and their time.
    """

    def __init__(self, gt, image_ids: Optional[Iterable[int]] = None, sigmas: Optional[Sequence[float]] = None):
        from pycocotools.cocoeval import Params

        from .eval import load_gt

        self.coco = load_gt(gt)
        known = sorted(self.coco.getImgIds())
        self._known = set(known)
        if image_ids is None:
            self.image_ids = known
        else:
            self.image_ids = sorted({int(i) for i in image_ids})
            unknown = set(self.image_ids) - self._known
            if unknown:
                raise ValueError(f"image_ids: {len(unknown)} ids are not in the ground truth, e.g. {min(unknown)}")
        self._ids = set(self.image_ids)
        p = Params(iouType="keypoints")
        p.imgIds = list(self.image_ids)
        p.catIds = sorted(self.coco.getCatIds())
        p.areaRng = [p.areaRng[0]]
        p.areaRngLbl = [p.areaRngLbl[0]]  # "all": the only range AP reads
        if sigmas is not None:
            p.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        self.sigmas = None if sigmas is None else np.asarray(sigmas, dtype=np.float64)
        self.num_joints = len(p.kpt_oks_sigmas)
        what = f"ground-truth file {os.fspath(gt)!r}" if isinstance(gt, (str, os.PathLike)) else "ground truth"
        _check_keypoint_gt(self.coco, self.num_joints, what)
        self._params = p
        self._cache: Dict[tuple, np.ndarray] = {}
        self._eval_cls = _cached_oks_eval_class()
        self.n_evals = 0
        self.seconds = 0.0

    def _check(self, results: List[dict]) -> List[dict]:
        from .eval import to_coco_results

        res = to_coco_results(results)
        missing = {r["image_id"] for r in res} - self._known
        if missing:
            raise ValueError(f"results name {len(missing)} image ids that the ground truth lacks, "
                             f"e.g. {min(missing)}")
        bad = [n for n, r in enumerate(res) if len(r["keypoints"]) != 3 * self.num_joints]
        if bad:
            raise ValueError(f"result {bad[0]}: {len(res[bad[0]]['keypoints'])} keypoint numbers, the ground "
                             f"truth has {self.num_joints} joints ({3 * self.num_joints} numbers)")
        return [r for r in res if r["image_id"] in self._ids]

    def ap(self, results: List[dict]) -> float:
        """COCO keypoint AP (stats[0]) of ``results`` (COCO keypoint result dicts)."""
        import copy

        t0 = time.perf_counter()
        res = self._check(results)
        self.n_evals += 1
        if not res:
            self.seconds += time.perf_counter() - t0
            return 0.0
        with contextlib.redirect_stdout(io.StringIO()):
            dt = self.coco.loadRes(res)
            ev = self._eval_cls(self.coco, dt, copy.copy(self._params), self._cache)
            ev.evaluate()
            ev.accumulate()
        s = ev.eval["precision"][:, :, :, 0, 0]
        ap = float(np.mean(s[s > -1])) if (s > -1).any() else -1.0
        self.seconds += time.perf_counter() - t0
        return ap

    def stats(self, results: List[dict]) -> Dict[str, float]:
        """The ten COCO keypoint summary numbers (``rmpe.eval.STAT_NAMES``) and ``n_results``."""
        from .eval import coco_keypoint_eval

        self._check(results)
        return coco_keypoint_eval(self.coco, results, image_ids=self.image_ids, sigmas=self.sigmas)


def _check_keypoint_gt(coco, num_joints: int, what: str = "ground truth") -> None:
    from .io import check_coco

    anns = coco.dataset.get("annotations", [])
    if not anns:
        raise ValueError("ground truth has no annotations")
    for n, a in enumerate(anns):
        for field in ("image_id", "keypoints", "num_keypoints", "bbox", "area", "iscrowd", "id"):
            if field not in a:
                raise ValueError(f"ground-truth annotation {n}: missing field {field!r} (a keypoint "
                                 "ground truth needs image_id, keypoints, num_keypoints, bbox, area, iscrowd, id)")
    check_coco(coco.dataset, what, num_joints=num_joints)  # field types, and the joint count of the OKS sigmas


# ---------------------------------------------------------------------------------------------------------
# the search


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One searched parameter: ``scale`` ``"log"`` (grid ``v * span ** t``), ``"linear"`` (``v + span t``),
    ``t`` in [-1, 1] (``n`` points), or ``"int"`` (every integer within ``v +- span``, whatever ``n``); the
    span halves at each refinement (the log exponent halves); values are clipped to ``[lo, hi]`` and
    rounded to 4 significant digits (the current value is kept exactly)."""

    name: str
    scale: str
    span: float
    lo: float = -math.inf
    hi: float = math.inf

    def __post_init__(self):
        if self.scale not in ("log", "linear", "int"):
            raise ValueError(f"ParamSpec {self.name!r}: scale must be 'log', 'linear' or 'int', got {self.scale!r}")
        if not self.span > 0 or (self.scale == "log" and not self.span > 1):
            raise ValueError(f"ParamSpec {self.name!r}: span must be > 0 (> 1 for a log scale), got {self.span}")
        if self.scale == "log" and not self.lo > 0:
            object.__setattr__(self, "lo", max(self.lo, 1e-12))

    def grid(self, value: float, n: int, level: int) -> List[float]:
        """``n`` values around ``value`` (itself included), ascending, without duplicates."""
        value = float(value)
        ts = np.linspace(-1.0, 1.0, n)
        f = 0.5 ** level
        if self.scale == "log":
            if not value > 0:
                raise ValueError(f"{self.name} = {value}: a log-scale parameter must be > 0")
            vals = [value * self.span ** (f * t) for t in ts]
        elif self.scale == "linear":
            vals = [value + self.span * f * t for t in ts]
        else:  # every integer within the span (at least the neighbours)
            half = max(1, int(round(self.span * f)))
            vals = [round(value) + k for k in range(-half, half + 1)]
        out = set()
        for v in vals:
            v = min(max(v, self.lo), self.hi)
            if self.scale == "int":
                v = float(round(v))
            elif v != value:
                v = float(f"{v:.4g}")
            out.add(v)
        out.add(min(max(value, self.lo), self.hi) if self.scale != "int" else float(round(value)))
        return sorted(out)


def default_space(method: str, num_joints: int = 17) -> List[ParamSpec]:
    """The parameters searched by default (measured on the BlazePose dev proposals: the ones whose change
    moves AP):

    * ``paper``: ``sigma1`` (KSim's tanh scale), ``sigma2`` (HSim's width, px^2), ``lam``, ``eta``: the
      paper's four.
    * ``alphapose``: ``gamma`` and ``delta2`` (the spatial term and its threshold; ``mu`` only rescales
      that term against ``gamma``), ``match_thresh`` (the PCK count, ``K + 1`` turns it off), ``pck_cap``
      and ``alpha`` (the PCK radius ``min(alpha max(w, h), pck_cap)``; ``alpha`` is also the merge radius).
      ``delta1`` only acts on joints within one pixel and ``score_thresh`` only drops poses that rank last
      anyway; add them by name.
    * ``oks``/``soft-oks``: ``thresh``.

    The boolean ``merge`` (``linear`` for soft-oks) is searched with the scoring, see :func:`tune_nms`."""
    if method == "paper":
        return [ParamSpec("sigma1", "log", 8.0, 1e-3, 1e3), ParamSpec("sigma2", "log", 8.0, 1e-2, 1e7),
                ParamSpec("lam", "log", 8.0, 1e-4, 1e3),
                ParamSpec("eta", "linear", 6.0, 0.0, 2.0 * num_joints * 1000)]
    if method == "alphapose":
        return [ParamSpec("gamma", "linear", 8.0, 0.0, 1e5), ParamSpec("delta2", "log", 8.0, 1e-3, 1e4),
                ParamSpec("match_thresh", "int", num_joints, 1, num_joints + 1),
                ParamSpec("pck_cap", "log", 8.0, 1e-2, 1e4), ParamSpec("alpha", "log", 4.0, 1e-3, 10.0)]
    if method in ("oks", "soft-oks"):
        return [ParamSpec("thresh", "linear", 0.4, 0.0, 1.0)]
    raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")


def default_flags(method: str) -> List[str]:
    """The boolean fields searched beside the scoring: ``merge`` (``linear`` for soft-oks)."""
    return ["linear"] if method == "soft-oks" else ["merge"]


_EXTRA_SPECS = {
    "delta1": ParamSpec("delta1", "log", 8.0, 1e-3, 1e3),
    "mu": ParamSpec("mu", "log", 8.0, 1e-4, 1e3),
    "score_thresh": ParamSpec("score_thresh", "linear", 0.3, 0.0, 1.0),
    "merge_cap": ParamSpec("merge_cap", "log", 4.0, 1e-2, 1e4),
    "box_frac": ParamSpec("box_frac", "log", 4.0, 1e-3, 10.0),
    "area_thresh": ParamSpec("area_thresh", "linear", 2000.0, 0.0, 1e9),
    "max_dets": ParamSpec("max_dets", "int", 10, 1, 1000),
}


@dataclasses.dataclass
class TuneResult:
    """What :func:`tune_nms` found: the tuned ``params`` and ``scoring``, their ``ap`` and the starting
    point's (``start_ap``, ``start_params``, ``start_scoring``); ``history``: one entry per pair step
    (``round``, ``level``, the ``step``: a pair, a flag or "scoring", the values chosen, ``ap``); ``rounds``; ``converged`` (False: stopped by
    ``max_rounds``); counts: ``nms_calls``, ``coco_evals`` (distinct NMS outputs scored), ``seconds``."""

    method: str
    params: Any
    scoring: Scoring
    ap: float
    start_params: Any
    start_scoring: Scoring
    start_ap: float
    names: List[str]
    history: List[dict]
    rounds: int
    converged: bool
    nms_calls: int
    coco_evals: int
    seconds: float
    eval_seconds: float
    image_ids: List[int]

    @property
    def evals_per_second(self) -> float:
        """Parameter points evaluated (NMS + AP, cached or not) per second of search."""
        return self.nms_calls / self.seconds if self.seconds > 0 else float("nan")

    @property
    def coco_evals_per_second(self) -> float:
        """COCOeval runs per second of COCOeval time (the prepared evaluator alone)."""
        return self.coco_evals / self.eval_seconds if self.eval_seconds > 0 else float("nan")

    def meta(self, **extra) -> Dict[str, Any]:
        """A ``meta`` dict for :func:`rmpe.nms_params.save_params`: the scoring (read back by
        :func:`scoring_from_meta`), the AP reached and how it was found."""
        m = {
            "scoring": self.scoring.as_dict(),
            "ap": self.ap,
            "start_ap": self.start_ap,
            "start_params": params_to_json(self.start_params),
            "start_scoring": self.start_scoring.as_dict(),
            "searched": list(self.names),
            "search": "coordinate search over pairs of parameters (2-D grids, refined on convergence), "
                      "rmpe.nms_search.tune_nms",
            "rounds": self.rounds,
            "converged": self.converged,
            "nms_calls": self.nms_calls,
            "coco_evals": self.coco_evals,
            "seconds": round(self.seconds, 2),
            "tuned_on_image_ids": list(self.image_ids),
        }
        m.update(extra)
        return m


def _digest(out: NMSOutput) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for t in out:
        h.update(t.contiguous().numpy().tobytes())
    return h.digest()


def tune_nms(props: Proposals, evaluator: KeypointAP, method: str = "paper", start=None,
             names: Optional[Sequence[str]] = None, scoring: Optional[Scoring] = None, search_scoring: bool = False,
             flags: Optional[Sequence[str]] = None, grid: int = 7, max_rounds: int = 20, refine: int = 2,
             tol: float = 1e-4, specs: Optional[Sequence[ParamSpec]] = None,
             progress: bool = True) -> TuneResult:
    """Searches the NMS parameters of ``method`` that maximise COCO keypoint AP of ``props`` (pre-NMS
    proposals) under ``evaluator`` (a :class:`KeypointAP`), two parameters at a time (the module docstring
    gives the scheme).

    ``start``: the starting parameters (object or dict; default: the method's defaults); ``names``: the
    numeric parameters searched in pairs (default :func:`default_space`; other fields by name where a spec
    is known, or give ``specs``); ``flags``: boolean fields tried both ways after each round (default
    :func:`default_flags`; ``[]``: none) at the start of each round; ``scoring``: the :class:`Scoring`
    (None: ``Scoring("proposal", "rank")`` for every method, the proposal's own score), fixed unless
    ``search_scoring``, which tries every (rank, output) choice at the start of each round too (off by
    default: on the 12 dev images it risks overfitting, see the module docstring); ``grid``: points per axis
    (odd, >= 3); ``max_rounds`` caps the rounds; ``refine``: how many times the grids are refined; ``tol``:
    the AP gain below which a round counts as converged; ``progress``: a tqdm bar on stderr.

    A point moves only on a strictly higher AP; ties go to the current point, then the nearest grid point,
    then grid order, so the result is deterministic. Raises ValueError for an unknown method or name or a
    bad setting."""
    from tqdm.auto import tqdm

    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    if int(grid) != grid or grid < 3 or grid % 2 == 0:
        raise ValueError(f"grid must be an odd number >= 3, got {grid}")
    if int(max_rounds) != max_rounds or max_rounds < 1:
        raise ValueError(f"max_rounds must be an integer >= 1, got {max_rounds}")
    if refine < 0 or not tol >= 0:
        raise ValueError(f"refine must be >= 0 and tol >= 0, got refine={refine}, tol={tol}")
    if len(props.poses) == 0:
        raise ValueError("props: no proposals to tune on")
    K = props.poses.shape[1]
    by_name = {s.name: s for s in default_space(method, K)}
    by_name.update({k: v for k, v in _EXTRA_SPECS.items() if k not in by_name})
    if specs is not None:
        by_name.update({s.name: s for s in specs})
    if names is None:
        names = [s.name for s in (specs if specs is not None else default_space(method, K))]
    names = list(names)
    flags = default_flags(method) if flags is None else list(flags)
    fields = {f.name: f for f in dataclasses.fields(METHODS[method])}
    if not names or len(set(names)) != len(names):
        raise ValueError(f"names must be distinct parameter names, got {names}")
    for nm in names:
        if nm not in fields:
            raise ValueError(f"{nm!r} is not a {method} NMS parameter; known: {sorted(fields)}")
        if nm not in by_name:
            raise ValueError(f"no search range known for {nm!r}: pass a ParamSpec for it in specs")
    for nm in flags:
        if nm not in fields or fields[nm].type not in (bool, "bool"):
            raise ValueError(f"flag {nm!r} is not a boolean {method} NMS parameter")
    if start is None or isinstance(start, dict):
        start = make_params(method, start)
    if getattr(start, "method", None) != method:
        raise ValueError(f"start params are for method {getattr(start, 'method', None)!r}, not {method!r}")
    if scoring is None:
        scoring = Scoring()
    choices: List[Scoring] = []
    if search_scoring:
        outs = ("rank",) if method == "soft-oks" else OUTPUTS
        choices = [Scoring(r, o) for r in RANKS for o in outs
                   if not (o == "proposal" and r == "proposal")]  # the same as ("proposal", "rank")

    t_start = time.perf_counter()
    eval_s0, evals0 = evaluator.seconds, evaluator.n_evals
    by_output: Dict[bytes, float] = {}
    by_point: Dict[tuple, float] = {}
    nms_calls = 0
    bar = tqdm(desc=f"tune {method} NMS", unit="pt", disable=not progress, leave=False)

    def score(params, sc: Scoring) -> float:
        nonlocal nms_calls
        key = (tuple(getattr(params, f.name) for f in dataclasses.fields(params)), sc)
        if key not in by_point:
            out = apply_nms(props, method, params, sc)
            nms_calls += 1
            d = _digest(out)
            if d not in by_output:
                by_output[d] = evaluator.ap(to_results(props, out))
            by_point[key] = by_output[d]
            bar.update(1)
        return by_point[key]

    cur, cur_sc = start, scoring
    cur_ap = start_ap = score(cur, cur_sc)
    history: List[dict] = []
    level, rounds, converged = 0, 0, False
    pairs = list(itertools.combinations(names, 2)) if len(names) > 1 else [(names[0],)]
    try:
        while rounds < max_rounds:
            rounds += 1
            round_start = cur_ap
            for nm in flags:
                p = dataclasses.replace(cur, **{nm: not getattr(cur, nm)})
                ap = score(p, cur_sc)
                if ap > cur_ap:
                    cur, cur_ap = p, ap
                history.append({"round": rounds, "level": level, "step": [nm], "values": {nm: getattr(cur, nm)},
                                "ap": cur_ap})
            if choices:
                for sc in choices:
                    ap = score(cur, sc)
                    if ap > cur_ap:
                        cur_sc, cur_ap = sc, ap
                history.append({"round": rounds, "level": level, "step": ["scoring"], "values": cur_sc.as_dict(),
                                "ap": cur_ap})
            for pair in pairs:
                axes = [by_name[nm].grid(getattr(cur, nm), grid, level) for nm in pair]
                centre = [axis.index(_nearest(axis, getattr(cur, nm))) for axis, nm in zip(axes, pair)]
                best, best_key = None, None
                for idx in itertools.product(*[range(len(a)) for a in axes]):
                    vals = {nm: _cast(cur, nm, axes[a][i]) for a, (nm, i) in enumerate(zip(pair, idx))}
                    p = dataclasses.replace(cur, **vals)
                    is_cur = all(v == getattr(cur, nm) for nm, v in vals.items())
                    dist = sum(abs(i - c) for i, c in zip(idx, centre))
                    # higher AP, then the current point, then the nearest (grid steps), then grid order
                    key = (-score(p, cur_sc), not is_cur, dist)
                    if best_key is None or key < best_key:
                        best, best_key = p, key
                if -best_key[0] > cur_ap:
                    cur, cur_ap = best, -best_key[0]
                history.append({"round": rounds, "level": level, "step": list(pair),
                                "values": {nm: getattr(cur, nm) for nm in pair}, "ap": cur_ap})
                bar.set_postfix(round=rounds, level=level, AP=f"{cur_ap:.4f}")
            if cur_ap - round_start < tol:
                if level >= refine:
                    converged = True
                    break
                level += 1
    finally:
        bar.close()
    return TuneResult(method=method, params=cur, scoring=cur_sc, ap=cur_ap, start_params=start,
                      start_scoring=scoring, start_ap=start_ap, names=names + flags, history=history,
                      rounds=rounds, converged=converged, nms_calls=nms_calls,
                      coco_evals=evaluator.n_evals - evals0, seconds=time.perf_counter() - t_start,
                      eval_seconds=evaluator.seconds - eval_s0, image_ids=sorted(set(props.image_ids.tolist())))


def _nearest(axis: List[float], v: float) -> float:
    return min(axis, key=lambda a: (abs(a - v), a))


def _cast(params, name: str, v: float):
    """``v`` in the type of the field (match_thresh / max_dets stay integers)."""
    old = getattr(params, name)
    if isinstance(old, bool):
        return bool(v)
    if isinstance(old, int) or name in ("match_thresh", "max_dets"):
        return int(round(v))
    return float(v)


def tuned_params_path(method: str, proposals: str = "blazepose_dev") -> str:
    """The shipped tuned parameters file of ``method`` (``rmpe/data/nms_params_<method>_<proposals>.json``,
    a :func:`rmpe.nms_params.load_params` file whose ``meta`` says how it was found and what AP it reached).
    Raises FileNotFoundError naming what is shipped when there is none."""
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
    path = os.path.join(folder, f"nms_params_{method}_{proposals}.json")
    if not os.path.isfile(path):
        have = sorted(f for f in os.listdir(folder) if f.startswith("nms_params_")) if os.path.isdir(folder) else []
        raise FileNotFoundError(f"no tuned NMS parameters for {method!r} on {proposals!r}; shipped: {have}")
    return path
