"""COCO I/O: ground truth, keypoint results, annotation checks, pre-NMS proposal files.

    coco = load_gt("data/gt_dev.json.gz")                  # a pycocotools COCO (path, dict or COCO)
    res = to_coco_results(records)                         # what COCOeval reads, checked and copied
    check_coco(doc, "ground-truth file 'x.json'")          # field checks before pycocotools indexes it
    props = read_proposals("data/blazepose_proposals_pre_nms_dev.json.gz")   # rmpe_ext Proposals
    props12 = subset_proposals(props, image_ids)

COCO keypoint results are dicts with ``image_id``, ``category_id`` (1 if absent), ``keypoints`` (3K
numbers: x y score in image pixels) and ``score``. Scoring them: :mod:`rmpe.evaluate`.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
from typing import Any, Dict, Iterable, List, Optional, Union

import numpy as np
import torch

from rmpe_ext.proposals import Proposals, proposals_from_records

from .io import json_int, json_number, json_numbers, read_json

__all__ = ["load_gt", "to_coco_results", "check_coco", "read_proposals", "subset_proposals"]


def load_gt(gt: Union[str, os.PathLike, dict, Any]):
    """A pycocotools ``COCO`` from a path, an annotation dict, or a ``COCO`` (returned as is)."""
    from pycocotools.coco import COCO

    from .io import read_json

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


def _a(obj: Any) -> str:
    name = type(obj).__name__
    return ("an " if name[:1] in "aeiou" else "a ") + name


def check_coco(doc: Any, what: str, require: Optional[dict] = None, num_joints: Optional[int] = None) -> None:
    """Checks a COCO annotation document before it is indexed: ``images``, ``annotations`` (and
    ``categories`` when present) are lists of objects; ids are 64-bit integers; and, where present, an
    annotation's ``bbox`` is 4 finite numbers, ``keypoints`` a list of 3K finite numbers (K =
    ``num_joints`` when given), ``area`` and ``num_keypoints`` numbers, ``iscrowd`` 0 or 1, an image's
    ``file_name`` a string. ``require`` maps a section to the fields each of its entries must have.
    Raises ``ValueError`` naming ``what`` (the file), the entry and the field."""
    require = require or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{what} must be a COCO annotation object, got {_a(doc)}")
    for section in ("images", "annotations", "categories"):
        if section not in doc and section == "categories":
            continue
        entries = doc.get(section)
        if not isinstance(entries, list):
            raise ValueError(f"{what}: {section!r} must be a list, got {_a(entries)}")
        for n, e in enumerate(entries):
            where = f"{what}: {section}[{n}]"
            if not isinstance(e, dict):
                raise ValueError(f"{where} is {_a(e)}, not an object")
            for field in require.get(section, ()):
                if field not in e:
                    raise ValueError(f"{where} has no {field!r}")
            for field in ("id", "image_id", "category_id"):
                if field in e:
                    json_int(e[field], f"{where}: {field!r}")
            if section == "images" and "file_name" in e and not isinstance(e["file_name"], str):
                raise ValueError(f"{where}: 'file_name' must be a string, got {e['file_name']!r}")
            if section != "annotations":
                continue
            if "bbox" in e:
                try:
                    json_numbers(e["bbox"], "", 4)
                except ValueError:
                    raise ValueError(f"{where}: 'bbox' must be a list of 4 finite numbers, got {e['bbox']!r}") from None
            if "keypoints" in e:
                kp = e["keypoints"]
                try:
                    json_numbers(kp, "")
                except ValueError:
                    msg = f"{where}: 'keypoints' must be a list of finite numbers, got {kp!r}"
                    raise ValueError(msg[:300]) from None
                if num_joints is not None and len(kp) != 3 * num_joints:
                    raise ValueError(f"{where}: 'keypoints' has {len(kp)} numbers, expected {3 * num_joints} "
                                     f"({num_joints} joints)")
                if len(kp) % 3:
                    raise ValueError(f"{where}: 'keypoints' has {len(kp)} numbers, not a multiple of 3")
            for field in ("area", "num_keypoints"):
                if field in e:
                    json_number(e[field], f"{where}: {field!r}")
            if "iscrowd" in e and e["iscrowd"] not in (0, 1):  # True/False compare equal to 1/0
                raise ValueError(f"{where}: 'iscrowd' must be 0 or 1, got {e['iscrowd']!r}")


def read_proposals(path: Union[str, os.PathLike], num_joints: Optional[int] = None) -> Proposals:
    """Reads a pre-NMS COCO keypoint results file (``.json``/``.json.gz``: a list of dicts with
    ``image_id``, ``keypoints`` [3K] x y score in image pixels, ``score``, a detector box ``det_bbox`` or
    ``bbox`` as xywh pixels, optional ``det_score``) into :class:`rmpe_ext.proposals.Proposals`.

    Raises ``FileNotFoundError``/``ValueError`` naming the file (and the record and field) for a missing
    file, bad JSON, an empty list, a missing field, a keypoint count that is not ``3 * num_joints`` (when
    given) or differs between records, non-numeric or non-finite values, or a box of negative size."""
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
