"""COCO keypoint evaluation with pycocotools.

    stats = coco_keypoint_eval(gt, results)        # gt: path, dict or pycocotools COCO; results: list of dicts
    stats["AP"], stats["AP50"], ...

Results are COCO keypoint result dicts: ``image_id``, ``category_id`` (1 if absent), ``keypoints``
(3K numbers, x y score, image pixels) and ``score``. Only the images of the ground truth are scored
(``image_ids`` narrows that further); results on other images are an error, since pycocotools would
otherwise drop them silently.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
from typing import Any, Dict, Iterable, List, Optional, Union

import numpy as np

__all__ = ["STAT_NAMES", "load_gt", "coco_keypoint_eval", "to_coco_results"]

STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def load_gt(gt: Union[str, os.PathLike, dict, Any]):
    """A pycocotools ``COCO`` from a path, an annotation dict, or a ``COCO`` (returned as is)."""
    from pycocotools.coco import COCO

    from .io import check_coco, read_json

    if isinstance(gt, COCO):
        return gt
    what = "ground truth"
    if isinstance(gt, (str, os.PathLike)):
        what = f"ground-truth file {os.fspath(gt)!r}"
        gt = read_json(gt, "ground-truth file")
    if not isinstance(gt, dict) or "annotations" not in gt or "images" not in gt:
        raise ValueError("ground truth must be a COCO annotation dict with 'images' and 'annotations'")
    # what pycocotools' index reads (it raises KeyError/TypeError on anything else)
    check_coco(gt, what, require={"images": ("id",), "annotations": ("id", "image_id", "category_id"),
                                  "categories": ("id",)})
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    coco.dataset.setdefault("categories", [{"id": 1, "name": "person", "supercategory": "person"}])
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def to_coco_results(records: Iterable[dict]) -> List[dict]:
    """Keeps only what COCOeval reads (and copies, so the caller's dicts are left alone)."""
    from .io import json_int, json_number

    out = []
    for n, r in enumerate(records):
        for field in ("image_id", "keypoints", "score"):
            if field not in r:
                raise ValueError(f"result {n}: missing field {field!r}")
        kp = r["keypoints"]
        try:  # a list, or an array from the caller
            kp = np.asarray(kp, dtype=np.float64).ravel() if isinstance(kp, (list, tuple, np.ndarray)) else None
        except (TypeError, ValueError):
            kp = None
        if kp is None:
            raise ValueError(f"result {n}: 'keypoints' must be a list of numbers, got {r['keypoints']!r}"[:300])
        if kp.size % 3:
            raise ValueError(f"result {n}: 'keypoints' has {kp.size} numbers, not a multiple of 3")
        score = json_number(r["score"], f"result {n}: 'score'", finite=False)
        if not np.isfinite(kp).all() or not np.isfinite(score):
            raise ValueError(f"result {n}: non-finite keypoints or score")
        out.append({"image_id": json_int(r["image_id"], f"result {n}: 'image_id'"),
                    "category_id": json_int(r.get("category_id", 1), f"result {n}: 'category_id'"),
                    "keypoints": kp.tolist(), "score": score})
    return out


def coco_keypoint_eval(gt, results: Iterable[dict], image_ids: Optional[Iterable[int]] = None,
                       sigmas: Optional[np.ndarray] = None) -> Dict[str, float]:
    """COCO keypoint AP/AR of ``results`` against ``gt`` (pycocotools' ``COCOeval(..., 'keypoints')``).

    Returns a dict with the ten summary numbers (``STAT_NAMES``) and ``n_results``. An empty result list
    scores 0 everywhere (pycocotools cannot load one). ``sigmas`` overrides the COCO-17 OKS sigmas.
    """
    from pycocotools.cocoeval import COCOeval

    coco = load_gt(gt)
    res = to_coco_results(results)
    ids = sorted(coco.getImgIds()) if image_ids is None else sorted({int(i) for i in image_ids})
    known = set(coco.getImgIds())
    missing = {r["image_id"] for r in res} - known
    if missing:
        raise ValueError(f"results name {len(missing)} image ids that the ground truth lacks, e.g. {min(missing)}")
    stats = dict.fromkeys(STAT_NAMES, 0.0)
    res = [r for r in res if r["image_id"] in set(ids)]
    stats["n_results"] = len(res)
    if not res:
        return stats
    with contextlib.redirect_stdout(io.StringIO()):
        dt = coco.loadRes(res)
        ev = COCOeval(coco, dt, "keypoints")
        ev.params.imgIds = ids
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats.update({k: float(v) for k, v in zip(STAT_NAMES, ev.stats)})
    return stats
