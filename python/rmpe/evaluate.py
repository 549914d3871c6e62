"""COCO keypoint evaluation: the one evaluator (pycocotools' ``COCOeval``, prepared once, OKS cached).

    ev = KeypointAP("data/gt_dev.json.gz")          # gt: path, dict or pycocotools COCO
    ev.ap(results)                                  # AP (stats[0]), the only area range it needs
    ev.stats(results)["AP50"]                       # the ten summary numbers (STAT_NAMES) and n_results
    coco_keypoint_eval(gt, results)                 # one-off: KeypointAP(gt, ...).stats(results)

Results are COCO keypoint result dicts (:func:`rmpe.coco.to_coco_results`): ``image_id``, ``category_id``
(1 if absent), ``keypoints`` (3K numbers, x y score, image pixels) and ``score``. Only the images of the
ground truth are scored (``image_ids`` narrows that further: results on other images are dropped);
results naming an image the ground truth lacks are an error, since pycocotools would drop them silently.
The AP values are pycocotools' own, bit for bit (tests/rmpe/test_rmpe_nms_search.py checks it).
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import time
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from .coco import load_gt, to_coco_results

__all__ = ["STAT_NAMES", "KeypointAP", "coco_keypoint_eval"]

STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


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

    ``gt``: a path, an annotation dict or a pycocotools ``COCO`` (:func:`rmpe.coco.load_gt`); it must be a
    keypoint ground truth (annotations with ``image_id``, ``keypoints`` [3K], ``num_keypoints``, ``bbox``,
    ``area``, ``iscrowd``, ``id``; K = the number of OKS sigmas). ``image_ids`` narrows the images scored
    (results on other images are dropped; ids the ground truth lacks are an error); ``sigmas`` overrides the
    COCO-17 OKS sigmas. Results naming an image the ground truth lacks, or holding another joint count, are
    an error (pycocotools would drop or misread them silently).

    :meth:`ap` returns ``stats[0]`` of pycocotools' summary (AP at OKS .50:.95, all areas, 20 detections per
    image), bit for bit, computing only that area range; :meth:`stats` the ten summary numbers
    (:data:`STAT_NAMES`) with all three area ranges. Both run pycocotools' ``COCOeval`` on the same prepared
    ground truth and parameters, and share one cache of the OKS of every detection seen (same image, same
    keypoints), so only unseen detections cost an OKS computation. ``n_evals`` and ``seconds`` count the
    :meth:`ap` calls and their time.
    """

    def __init__(self, gt, image_ids: Optional[Iterable[int]] = None, sigmas: Optional[Sequence[float]] = None):
        from pycocotools.cocoeval import Params

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
        full = Params(iouType="keypoints")  # the summary's area ranges: all, medium, large
        full.imgIds = list(self.image_ids)
        full.catIds = sorted(self.coco.getCatIds())
        if sigmas is not None:
            full.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        p = copy.copy(full)
        p.areaRng = [full.areaRng[0]]
        p.areaRngLbl = [full.areaRngLbl[0]]  # "all": the only range AP reads
        self.sigmas = None if sigmas is None else np.asarray(sigmas, dtype=np.float64)
        self.num_joints = len(p.kpt_oks_sigmas)
        what = f"ground-truth file {os.fspath(gt)!r}" if isinstance(gt, (str, os.PathLike)) else "ground truth"
        _check_keypoint_gt(self.coco, self.num_joints, what)
        self._params = p
        self._full_params = full
        self._cache: Dict[tuple, np.ndarray] = {}
        self._eval_cls = _cached_oks_eval_class()
        self.n_evals = 0
        self.seconds = 0.0

    def _check(self, results: List[dict]) -> List[dict]:
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

    def _run(self, res: List[dict], params, summarize: bool):
        """pycocotools' COCOeval (OKS cached) of checked, non-empty results under ``params`` (copied: COCOeval
        rewrites some of its fields)."""
        with contextlib.redirect_stdout(io.StringIO()):
            dt = self.coco.loadRes(res)
            ev = self._eval_cls(self.coco, dt, copy.copy(params), self._cache)
            ev.evaluate()
            ev.accumulate()
            if summarize:
                ev.summarize()
        return ev

    def ap(self, results: List[dict]) -> float:
        """COCO keypoint AP (stats[0]) of ``results`` (COCO keypoint result dicts)."""
        t0 = time.perf_counter()
        res = self._check(results)
        self.n_evals += 1
        if not res:
            self.seconds += time.perf_counter() - t0
            return 0.0
        ev = self._run(res, self._params, summarize=False)
        s = ev.eval["precision"][:, :, :, 0, 0]
        ap = float(np.mean(s[s > -1])) if (s > -1).any() else -1.0
        self.seconds += time.perf_counter() - t0
        return ap

    def stats(self, results: List[dict]) -> Dict[str, float]:
        """The ten COCO keypoint summary numbers (:data:`STAT_NAMES`: pycocotools' ``stats`` in order) and
        ``n_results`` (the results on the scored images). No results score 0 everywhere (pycocotools cannot
        load an empty list)."""
        res = self._check(results)
        out: Dict[str, float] = dict.fromkeys(STAT_NAMES, 0.0)
        out["n_results"] = len(res)
        if res:
            ev = self._run(res, self._full_params, summarize=True)
            out.update({k: float(v) for k, v in zip(STAT_NAMES, ev.stats)})
        return out


def _check_keypoint_gt(coco, num_joints: int, what: str = "ground truth") -> None:
    from .coco import check_coco

    anns = coco.dataset.get("annotations", [])
    if not anns:
        raise ValueError("ground truth has no annotations")
    for n, a in enumerate(anns):
        for field in ("image_id", "keypoints", "num_keypoints", "bbox", "area", "iscrowd", "id"):
            if field not in a:
                raise ValueError(f"ground-truth annotation {n}: missing field {field!r} (a keypoint "
                                 "ground truth needs image_id, keypoints, num_keypoints, bbox, area, iscrowd, id)")
    check_coco(coco.dataset, what, num_joints=num_joints)  # field types, and the joint count of the OKS sigmas


def coco_keypoint_eval(gt, results: Iterable[dict], image_ids: Optional[Iterable[int]] = None,
                       sigmas: Optional[Sequence[float]] = None) -> Dict[str, float]:
    """COCO keypoint AP/AR of ``results`` against ``gt``: ``KeypointAP(gt, image_ids, sigmas).stats(results)``
    (see :class:`KeypointAP` for the arguments and the checks). Returns a dict with the ten summary numbers
    (:data:`STAT_NAMES`) and ``n_results``; an empty result list scores 0 everywhere."""
    return KeypointAP(gt, image_ids=image_ids, sigmas=sigmas).stats(list(results))
