"""PGPG training pairs: box offsets, COCO ground-truth and detection parsing, the greedy one-to-one matching
of detections to ground-truth persons (COCO's rule) and row-wise box IoU (conventions: :mod:`rmpe.pgpg.model`).

Boxes: ground truth and detections COCO ``xywh`` pixels as read; detected boxes ``xyxy`` pixels once matched;
offsets normalized by the ground-truth side (4 numbers, see :func:`box_offsets`).
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..io import json_number, read_json
from .atoms import NUM_JOINTS, _box_xywh, _keypoints_array, _torso

__all__ = ["box_offsets", "offsets_to_boxes", "match_detections", "matched_pairs"]

PathLike = Union[str, os.PathLike]


def box_offsets(det_xyxy: Any, gt_xywh: Any) -> np.ndarray:
    """Normalized offsets of detected boxes from ground-truth boxes.

    ``det_xyxy``: [N, 4] (or [4]) detected boxes, xyxy px; ``gt_xywh``: [N, 4] (or [4]) ground-truth
    boxes, COCO xywh px, positive w and h. Returns float64 [N, 4] (or [4]):
    ``((x1d-x1)/w, (y1d-y1)/h, (x2d-x2)/w, (y2d-y2)/h)``."""
    d = np.array(det_xyxy, dtype=np.float64)
    g = np.array(gt_xywh, dtype=np.float64)
    single = d.ndim == 1 and g.ndim == 1
    d, g = np.atleast_2d(d), np.atleast_2d(g)
    if d.shape[-1] != 4 or g.shape[-1] != 4 or d.ndim != 2 or g.ndim != 2:
        raise ValueError(f"det_xyxy and gt_xywh must be [N, 4], got {list(d.shape)} and {list(g.shape)}")
    if len(d) != len(g):
        raise ValueError(f"det_xyxy has {len(d)} boxes but gt_xywh has {len(g)}")
    if not (np.isfinite(d).all() and np.isfinite(g).all()):
        raise ValueError("det_xyxy / gt_xywh hold NaN or infinite values")
    if (g[:, 2:] <= 0).any():
        raise ValueError("gt_xywh must have positive widths and heights")
    wh = np.concatenate([g[:, 2:], g[:, 2:]], axis=1)
    gxyxy = np.concatenate([g[:, :2], g[:, :2] + g[:, 2:]], axis=1)
    out = (d - gxyxy) / wh
    return out[0] if single else out


def offsets_to_boxes(offsets: Any, gt_xywh: Any) -> np.ndarray:
    """Inverse of :func:`box_offsets` for one ground-truth box: ``offsets`` [N, 4] normalized offsets,
    ``gt_xywh`` 4 numbers (COCO xywh px) -> float64 [N, 4] boxes xyxy px."""
    o = np.asarray(offsets, dtype=np.float64)
    if o.ndim != 2 or o.shape[1] != 4:
        raise ValueError(f"offsets must be [N, 4], got {list(o.shape)}")
    g = _box_xywh(gt_xywh)
    w, h = g[2], g[3]
    base = np.array([g[0], g[1], g[0] + w, g[1] + h])
    return base + o * np.array([w, h, w, h])


# ----------------------------------------------------------------------------------------------------
# ground truth and detections

def _load_gt(gt: Union[PathLike, Dict[str, Any]]) -> Dict[str, Any]:
    if isinstance(gt, (str, os.PathLike)):
        gt = read_json(gt, "ground-truth file")
    if not isinstance(gt, dict) or not isinstance(gt.get("annotations"), list):
        raise ValueError("gt must be a COCO keypoints dict (or its file) with an 'annotations' list")
    return gt


def _person_category(gt: Dict[str, Any]) -> Optional[int]:
    for c in gt.get("categories") or []:
        if isinstance(c, dict) and c.get("name") == "person" and "id" in c:
            return c["id"]
    return None


def _floats(value: Any) -> np.ndarray:
    """A JSON list as a flat float64 array; NaN (then rejected with the field's message) where it holds
    anything else (strings, nested lists of other lengths)."""
    try:
        return np.array(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return np.array([np.nan])


def _parse_gt(gt: Dict[str, Any]) -> Dict[Any, List[Dict[str, Any]]]:
    """-> image_id -> list of {'id', 'box' xywh [4], 'crowd' bool, 'kp' [17, 3] or None}."""
    person = _person_category(gt)
    out: Dict[Any, List[Dict[str, Any]]] = {}
    for i, a in enumerate(gt["annotations"]):
        if not isinstance(a, dict):
            raise ValueError(f"gt annotation #{i} is not an object")
        if person is not None and "category_id" in a and a["category_id"] != person:
            continue
        aid = a.get("id", f"#{i}")
        for field in ("image_id", "bbox"):
            if field not in a:
                raise ValueError(f"gt annotation {aid} has no {field!r} field")
        box = _floats(a["bbox"])
        if box.shape != (4,) or not np.isfinite(box).all():
            raise ValueError(f"gt annotation {aid}: 'bbox' must be 4 finite numbers (x, y, w, h), got {a['bbox']}")
        crowd = bool(a.get("iscrowd", 0))
        kp = None
        if not crowd and "keypoints" in a:
            flat = _floats(a["keypoints"])
            if flat.size != NUM_JOINTS * 3:
                raise ValueError(f"gt annotation {aid}: 'keypoints' must hold 17 x 3 = 51 numbers (COCO-17), "
                                 f"got {flat.size}")
            kp = _keypoints_array(flat, f"gt annotation {aid} keypoints")
            if not (kp[:, 2] > 0).any():
                kp = None
        if box[2] <= 0 or box[3] <= 0:
            continue  # degenerate box: cannot be matched nor normalize offsets
        out.setdefault(a["image_id"], []).append({"id": aid, "box": box, "crowd": crowd, "kp": kp})
    return out


def _parse_dets(detections: Union[PathLike, Sequence[Dict[str, Any]]], person: Optional[int]
                ) -> Dict[Any, List[Tuple[float, int, np.ndarray]]]:
    """-> image_id -> list of (score, file index, box xywh [4])."""
    if isinstance(detections, (str, os.PathLike)):
        detections = read_json(detections, "detections file")
    if not isinstance(detections, (list, tuple)):
        raise ValueError("detections must be a list of COCO detection dicts (image_id, bbox, score) or its file")
    out: Dict[Any, List[Tuple[float, int, np.ndarray]]] = {}
    for i, d in enumerate(detections):
        if not isinstance(d, dict):
            raise ValueError(f"detection #{i} is not an object")
        for field in ("image_id", "bbox", "score"):
            if field not in d:
                raise ValueError(f"detection #{i} has no {field!r} field")
        if person is not None and "category_id" in d and d["category_id"] != person:
            continue
        box = _floats(d["bbox"])
        if box.shape != (4,) or not np.isfinite(box).all():
            raise ValueError(f"detection #{i}: 'bbox' must be 4 finite numbers (x, y, w, h), got {d['bbox']}")
        score = json_number(d["score"], f"detection #{i}: 'score'", finite=False)
        if not np.isfinite(score):
            raise ValueError(f"detection #{i}: 'score' is not finite")
        out.setdefault(d["image_id"], []).append((score, i, box))
    return out


def match_detections(gt_boxes_xywh: np.ndarray, det_boxes_xywh: np.ndarray, det_scores: np.ndarray,
                     iou_thresh: float) -> List[Tuple[int, int, float]]:
    """Greedy one-to-one matching of one image's detections to its ground-truth boxes (COCO evaluation
    rule): detections in decreasing score order (stable), each takes the unmatched ground truth of
    highest IoU if that IoU is ``>= iou_thresh``. Boxes: [G, 4] and [D, 4] COCO xywh px; scores [D].
    Returns ``[(gt index, det index, iou)]``."""
    from pycocotools import mask as mask_utils

    g = np.asarray(gt_boxes_xywh, dtype=np.float64).reshape(-1, 4)
    d = np.asarray(det_boxes_xywh, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(det_scores, dtype=np.float64).reshape(-1)
    if len(s) != len(d):
        raise ValueError(f"det_scores has {len(s)} entries but det_boxes_xywh has {len(d)} boxes")
    if len(g) == 0 or len(d) == 0:
        return []
    ious = np.asarray(mask_utils.iou(d.tolist(), g.tolist(), [0] * len(g)), dtype=np.float64).reshape(len(d), len(g))
    taken = np.zeros(len(g), dtype=bool)
    pairs = []
    for di in np.argsort(-s, kind="stable"):
        row = np.where(taken, -1.0, ious[di])
        gi = int(np.argmax(row))
        if row[gi] >= iou_thresh:
            taken[gi] = True
            pairs.append((gi, int(di), float(row[gi])))
    return pairs


def _match(persons: Dict[Any, List[Dict[str, Any]]], dets: Dict[Any, List[Tuple[float, int, np.ndarray]]],
           score_thresh: float, iou_thresh: float) -> Dict[str, Any]:
    rows = []
    for img, ps in persons.items():
        cand = [i for i, p in enumerate(ps) if not p["crowd"]]
        ds = [d for d in dets.get(img, []) if d[0] >= score_thresh]
        if not cand or not ds:
            continue
        for gi, di, iou in match_detections(np.stack([ps[i]["box"] for i in cand]), np.stack([d[2] for d in ds]),
                                            np.array([d[0] for d in ds]), iou_thresh):
            p, d = ps[cand[gi]], ds[di]
            rows.append((img, p, d, iou))
    kp = np.full((len(rows), NUM_JOINTS, 3), 0.0)
    for r, (_, p, _, _) in enumerate(rows):
        if p["kp"] is not None:
            kp[r] = p["kp"]
    gtb = np.array([p["box"] for _, p, _, _ in rows], dtype=np.float64).reshape(-1, 4)
    db = np.array([d[2] for _, _, d, _ in rows], dtype=np.float64).reshape(-1, 4)
    det_xyxy = np.concatenate([db[:, :2], db[:, :2] + db[:, 2:]], axis=1)
    return dict(
        image_id=[img for img, _, _, _ in rows], gt_id=[p["id"] for _, p, _, _ in rows], keypoints=kp,
        has_torso=np.array([p["kp"] is not None and _torso(p["kp"]) is not None for _, p, _, _ in rows], dtype=bool),
        gt_xywh=gtb, det_xyxy=det_xyxy, det_score=np.array([d[0] for _, _, d, _ in rows], dtype=np.float64),
        iou=np.array([r[3] for r in rows], dtype=np.float64),
        offsets=box_offsets(det_xyxy, gtb) if rows else np.zeros((0, 4)))


def matched_pairs(gt: Union[PathLike, Dict[str, Any]], detections: Union[PathLike, Sequence[Dict[str, Any]]],
                  score_thresh: float = 0.3, iou_thresh: float = 0.5, image_ids: Optional[Sequence[Any]] = None
                  ) -> Dict[str, Any]:
    """GT persons matched one-to-one to detections (the rule of :mod:`rmpe.pgpg.model`), as :meth:`PGPG.fit`
    matches them. Returns a dict of N rows: ``image_id``, ``gt_id`` (lists); ``keypoints`` float64
    [N, 17, 3] (zeros for a person without keypoints); ``has_torso`` bool [N]; ``gt_xywh`` [N, 4];
    ``det_xyxy`` [N, 4] px; ``det_score`` [N]; ``iou`` [N]; ``offsets`` [N, 4] normalized."""
    persons, dets = _persons_and_dets(gt, detections, image_ids)
    return _match(persons, dets, score_thresh, iou_thresh)


def _persons_and_dets(gt, detections, image_ids):
    """The parsed GT persons (of ``image_ids`` when given) and detections, as fit and matched_pairs read them."""
    gt = _load_gt(gt)
    persons = _parse_gt(gt)
    if image_ids is not None:
        keep = set(image_ids)
        persons = {k: v for k, v in persons.items() if k in keep}
    return persons, _parse_dets(detections, _person_category(gt))


def _iou_xyxy_vs_xywh(boxes_xyxy: np.ndarray, gt_xywh: np.ndarray) -> np.ndarray:
    """Row-wise IoU of boxes [N, 4] xyxy with gt [N, 4] xywh -> [N]."""
    g = np.concatenate([gt_xywh[:, :2], gt_xywh[:, :2] + gt_xywh[:, 2:]], axis=1)
    lo = np.maximum(boxes_xyxy[:, :2], g[:, :2])
    hi = np.minimum(boxes_xyxy[:, 2:], g[:, 2:])
    inter = np.clip(hi - lo, 0, None).prod(1)
    area = lambda b: np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    return inter / (area(boxes_xyxy) + area(g) - inter)
