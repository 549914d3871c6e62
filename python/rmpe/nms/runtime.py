"""Pose NMS at run time: the scoring policy, one batched NMS call over all images, COCO result dicts.

    props = read_proposals("data/blazepose_proposals_pre_nms_dev.json.gz")      # rmpe.coco
    out = apply_nms(props, "paper", PaperNMSParams(), Scoring())                 # one batched kernel call
    results = to_results(props, out)                                             # COCO keypoint results
    method, params, scoring = load_params_and_scoring("tuned.json")              # an rmpe.nms.params file

This is what :mod:`rmpe.pipeline` and ``rmpe nms`` import; the parameter search lives in
:mod:`rmpe.nms.search` and is never imported from here.

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
``rmpe.nms.search.tune_nms(search_scoring=True)`` searches it too; on 12 images that risks overfitting
(``python examples/tune_nms.py --search-scoring`` measures it on a 2-fold split; no run of it is recorded
here).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor

from rmpe_ext.proposals import Proposals

from .params import METHODS, make_params

__all__ = ["RANKS", "OUTPUTS", "Scoring", "default_scoring", "scoring_from_meta", "load_params_and_scoring",
           "NMSOutput", "apply_nms", "no_nms", "to_results"]

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
    """A parameters file -> ``(method, params, scoring)``: :func:`rmpe.nms.params.load_params` plus the
    scoring of its ``meta`` (the method's :func:`default_scoring` when the file has none)."""
    from ..io import read_json
    from .params import load_params

    method, params = load_params(path)
    doc = read_json(path, "NMS parameters file")
    meta = doc.get("meta") or {}
    try:
        sc = scoring_from_meta(meta) if isinstance(meta, dict) else None
    except ValueError as e:
        raise ValueError(f"NMS parameters file {os.fspath(path)!r}: {e}") from None
    return method, params, sc if sc is not None else default_scoring(method)


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
