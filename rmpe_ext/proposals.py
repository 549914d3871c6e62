"""Loading COCO-style keypoint results (pose proposals) into batched tensors."""
from __future__ import annotations

import gzip
import json
import numbers
import os
from typing import List, NamedTuple, Union

import torch
from torch import Tensor

__all__ = ["Proposals", "load_proposals", "proposals_from_records"]


class Proposals(NamedTuple):
    """N pose proposals of several images, batched.

    poses [N, K, 2] float32 pixels; joint_scores [N, K]; boxes [N, 4] xyxy pixels
    (the detector box each pose was estimated in); box_scores [N]; scores [N]
    (the record's ``score``); image_ids [N] int64 (COCO ids); image_index [N]
    int64 (0..B-1, images in order of first appearance); records: the input dicts.
    """

    poses: Tensor
    joint_scores: Tensor
    boxes: Tensor
    box_scores: Tensor
    scores: Tensor
    image_ids: Tensor
    image_index: Tensor
    records: list

    def image(self, b: int) -> "Proposals":
        """The proposals of image b (0-based position), as their own batch."""
        sel = torch.nonzero(self.image_index == b).flatten()
        return Proposals(self.poses[sel], self.joint_scores[sel], self.boxes[sel], self.box_scores[sel],
                         self.scores[sel], self.image_ids[sel], torch.zeros_like(sel),
                         [self.records[i] for i in sel.tolist()])

    @property
    def num_images(self) -> int:
        return int(self.image_index.max()) + 1 if len(self.image_index) else 0


def _number(v, n: int, field: str):
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise ValueError(f"record {n}: {field!r} must be a number, got {v!r}")
    return v


def _int64(v, n: int, field: str) -> int:
    """An id: integral and within int64 (a float like 785.5 would be truncated by the tensor)."""
    integral = isinstance(v, numbers.Integral) or (isinstance(v, numbers.Real) and float(v).is_integer())
    if isinstance(v, bool) or not integral or not -2 ** 63 <= v <= 2 ** 63 - 1:
        raise ValueError(f"record {n}: {field!r} must be a 64-bit integer, got {v!r}")
    return int(v)


def proposals_from_records(records: List[dict], keypoints_field: str = "keypoints",
                           box_field: str = "det_bbox") -> Proposals:
    """COCO keypoint result dicts (``image_id``, ``keypoints`` [3K], ``score``, and a box
    ``det_bbox``/``bbox`` as xywh) -> :class:`Proposals`. Raises ValueError naming the
    record and the field when one is missing or malformed."""
    if not records:
        z = torch.zeros(0)
        return Proposals(torch.zeros(0, 17, 2), torch.zeros(0, 17), torch.zeros(0, 4), z, z,
                         torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), [])
    kps, boxes, box_scores, scores, ids = [], [], [], [], []
    K = None
    for n, r in enumerate(records):
        for field in ("image_id", keypoints_field, "score"):
            if field not in r:
                raise ValueError(f"record {n}: missing field {field!r}")
        box = r.get(box_field, r.get("bbox"))
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            raise ValueError(f"record {n}: needs a 4-number xywh box in {box_field!r} or 'bbox'")
        kp = r[keypoints_field]
        if not isinstance(kp, (list, tuple)):
            raise ValueError(f"record {n}: {keypoints_field!r} must be a list of numbers, got {kp!r}"[:300])
        if not kp or len(kp) % 3 or (K is not None and len(kp) != 3 * K):
            raise ValueError(f"record {n}: {keypoints_field!r} has {len(kp)} numbers, expected 3 * K"
                             + (f" = {3 * K}" if K else ""))
        K = len(kp) // 3
        kps.append(kp)
        boxes.append(box)
        box_scores.append(_number(r.get("det_score", r["score"]), n, "det_score" if "det_score" in r else "score"))
        scores.append(_number(r["score"], n, "score"))
        ids.append(_int64(r["image_id"], n, "image_id"))
    try:
        kp = torch.tensor(kps, dtype=torch.float32).view(-1, K, 3)
        b = torch.tensor(boxes, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):  # a value that is not a number: name the first one
        for n, r in enumerate(records):
            field = box_field if box_field in r else "bbox"
            for name, values, what in ((keypoints_field, r[keypoints_field], "a list of numbers"),
                                       (field, r[field], "a list of 4 numbers")):
                if not all(isinstance(v, numbers.Real) for v in values):
                    raise ValueError(f"record {n}: {name!r} must be {what}, got {values!r}"[:300]) from None
        raise
    b = torch.cat([b[:, :2], b[:, :2] + b[:, 2:]], 1)
    image_ids = torch.tensor(ids, dtype=torch.long)
    order = {}  # image index in order of first appearance
    for i in ids:
        order.setdefault(i, len(order))
    image_index = torch.tensor([order[i] for i in ids], dtype=torch.long)
    return Proposals(kp[:, :, :2].contiguous(), kp[:, :, 2].contiguous(), b, torch.tensor(box_scores),
                     torch.tensor(scores), image_ids, image_index, list(records))


def load_proposals(path: Union[str, os.PathLike], **kwargs) -> Proposals:
    """Reads a COCO keypoint results file (``.json`` or ``.json.gz``); see :func:`proposals_from_records`."""
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        records = json.load(f)
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of keypoint results, got {type(records).__name__}")
    return proposals_from_records(records, **kwargs)
