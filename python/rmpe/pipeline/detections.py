"""Person boxes for the pipeline: COCO-style detection files, detector callables, image files.

A detections file is a JSON list (``.json`` or ``.json.gz``) of COCO detection results::

    [{"image_id": 785, "bbox": [x, y, w, h], "score": 0.99, "category_id": 1}, ...]

``bbox`` is xywh in image pixels; ``category_id`` is optional (when present only ``person_category``, 1,
is kept). ``image_id`` is a COCO id (an integer) or, as in AlphaPose's detection files (``--detfile``), the
image's file name (a string; its base name is the key: ``"imgs/kitchen.jpg"`` and ``"kitchen.jpg"`` name
the same frame); AlphaPose's optional ``idx`` field is accepted and ignored. An empty list is a valid file:
no image has a person. :func:`load_detections` turns it into :class:`FrameBoxes` per image: ``boxes [n, 4]``
float32 ``(x1, y1, x2, y2)`` pixels and ``scores [n]`` float32, in file order, after the score threshold.

A detector callable takes a frame (uint8 ``[H, W, 3]`` BGR numpy array) and returns its persons as
a tuple ``(boxes_xyxy [n, 4], scores [n])`` (array-likes), an ``[n, 5]`` array ``(x1, y1, x2, y2, score)``, a
:class:`FrameBoxes`, or a list of COCO detection dicts (xywh ``bbox``, ``score``).
"""
from __future__ import annotations

import math
import os
import pathlib
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Union

import numpy as np
import torch

from ..io import json_int, read_json

__all__ = ["FrameBoxes", "load_detections", "detections_from_records", "detection_image_id", "as_frame_boxes",
           "image_files", "load_image", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class FrameBoxes(NamedTuple):
    """The person boxes of one frame: ``boxes [n, 4]`` float32 xyxy pixels, ``scores [n]`` float32 (CPU)."""

    boxes: torch.Tensor
    scores: torch.Tensor

    def __len__(self) -> int:  # the number of boxes, not of fields
        return int(self.boxes.shape[0])

    def above(self, thresh: float) -> "FrameBoxes":
        """The boxes whose score is >= ``thresh``."""
        keep = self.scores >= thresh
        return FrameBoxes(self.boxes[keep], self.scores[keep])


def _empty() -> FrameBoxes:
    return FrameBoxes(torch.zeros(0, 4), torch.zeros(0))


def _from_pairs(pairs: List[tuple]) -> FrameBoxes:
    """``[((x1, y1, x2, y2), score), ...]`` (as :func:`_record_box` gives them) -> FrameBoxes."""
    if not pairs:
        return _empty()
    return FrameBoxes(torch.tensor([b for b, _ in pairs], dtype=torch.float32),
                      torch.tensor([s for _, s in pairs], dtype=torch.float32))


def _check_boxes(boxes: torch.Tensor, scores: torch.Tensor, what: str) -> FrameBoxes:
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{what}: boxes must have shape [n, 4] (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    if scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"{what}: scores must have shape [n] = [{boxes.shape[0]}] to match the boxes, "
                         f"got {tuple(scores.shape)}")
    if not torch.isfinite(boxes).all():
        raise ValueError(f"{what}: boxes contain NaN or infinite values")
    if not torch.isfinite(scores).all():
        raise ValueError(f"{what}: scores contain NaN or infinite values")
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
        i = int(torch.nonzero(bad)[0])
        raise ValueError(f"{what}: box {i} has x2 < x1 or y2 < y1: {boxes[i].tolist()}")
    return FrameBoxes(boxes, scores)


def _record_box(r: Any, n: int, what: str) -> tuple:
    if not isinstance(r, dict):
        raise ValueError(f"{what}: record {n} is a {type(r).__name__}, not an object")
    for field in ("bbox", "score"):
        if field not in r:
            raise ValueError(f"{what}: record {n}: missing field {field!r}")
    box = r["bbox"]
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise ValueError(f"{what}: record {n}: 'bbox' must be 4 numbers [x, y, w, h], got {box!r}")
    try:
        x, y, w, h = (float(v) for v in box)
        score = float(r["score"])
    except (TypeError, ValueError):
        raise ValueError(f"{what}: record {n}: 'bbox' and 'score' must be numbers, got {box!r}, "
                         f"{r['score']!r}") from None
    if not all(math.isfinite(v) for v in (x, y, w, h, score)):
        raise ValueError(f"{what}: record {n}: non-finite 'bbox' or 'score'")
    if w < 0 or h < 0:
        raise ValueError(f"{what}: record {n}: 'bbox' has a negative width or height: {list(box)}")
    return (x, y, x + w, y + h), score


def detection_image_id(value: Any, what: str) -> Union[int, str]:
    """A detection's ``image_id``: a COCO id (an integral JSON number that fits in int64; 785.5 is not 785)
    or a file name (a non-empty string, reduced to its base name). ValueError naming ``what`` otherwise."""
    if isinstance(value, str):
        name = os.path.basename(value.replace("\\", "/").rstrip("/"))
        if not name:
            raise ValueError(f"{what} must be a 64-bit integer or a file name, got {value!r}")
        return name
    try:
        return json_int(value, what)
    except ValueError:
        raise ValueError(f"{what} must be a 64-bit integer or a file name, got {value!r}") from None


def detections_from_records(records: Iterable[dict], det_thresh: float = 0.0, person_category: int = 1,
                            what: str = "detections") -> Dict[Union[int, str], FrameBoxes]:
    """COCO (or AlphaPose) detection dicts -> ``{image_id: FrameBoxes}`` (images in order of first
    appearance, boxes in record order; ids as :func:`detection_image_id` reads them), keeping records with
    ``score >= det_thresh`` and, when they have a ``category_id``, ``category_id == person_category``.
    An empty list gives ``{}``. Raises ValueError naming the record and the field."""
    if not isinstance(records, (list, tuple)):
        raise ValueError(f"{what}: expected a JSON list of detections, got {type(records).__name__}")
    per: Dict[Union[int, str], list] = {}
    for n, r in enumerate(records):
        box, score = _record_box(r, n, what)
        if "image_id" not in r:
            raise ValueError(f"{what}: record {n}: missing field 'image_id'")
        image_id = detection_image_id(r["image_id"], f"{what}: record {n}: 'image_id'")
        cat = r.get("category_id", person_category)
        lst = per.setdefault(image_id, [])
        if cat == person_category and score >= det_thresh:
            lst.append((box, score))
    return {image_id: _from_pairs(lst) for image_id, lst in per.items()}


def load_detections(path: Union[str, os.PathLike], det_thresh: float = 0.0,
                    person_category: int = 1) -> Dict[Union[int, str], FrameBoxes]:
    """Reads a detections file (see the module docstring); see :func:`detections_from_records`."""
    records = read_json(path, "detections file")
    return detections_from_records(records, det_thresh, person_category, what=f"detections file {os.fspath(path)!r}")


def as_frame_boxes(obj: Any, det_thresh: float = 0.0, what: str = "detections") -> FrameBoxes:
    """One frame's boxes from any of the forms a detector may return (see the module docstring),
    validated (shapes, finite values, x2 >= x1, y2 >= y1), on the CPU, thresholded at ``det_thresh``.
    The caller's arrays are not modified."""
    if isinstance(obj, FrameBoxes):
        fb = obj
    elif isinstance(obj, (list, tuple)) and (len(obj) == 0 or isinstance(obj[0], dict)):
        if not obj:
            return _empty()
        fb = _from_pairs([_record_box(r, n, what) for n, r in enumerate(obj)])
    elif isinstance(obj, tuple) and len(obj) == 2:
        boxes, scores = (o if isinstance(o, torch.Tensor) else torch.as_tensor(np.asarray(o, dtype=np.float32))
                         for o in obj)
        if boxes.numel() == 0:
            boxes = boxes.reshape(0, 4)
        fb = FrameBoxes(boxes, scores.reshape(-1) if scores.dim() == 0 else scores)
    else:
        a = obj if isinstance(obj, torch.Tensor) else torch.as_tensor(np.asarray(obj, dtype=np.float32))
        if a.dim() != 2 or a.shape[1] != 5:
            raise ValueError(f"{what}: expected (boxes [n, 4], scores [n]), an [n, 5] array, FrameBoxes or a list "
                             f"of COCO detection dicts, got {type(obj).__name__} of shape {tuple(a.shape)}")
        fb = FrameBoxes(a[:, :4], a[:, 4])
    boxes = fb.boxes.detach().to("cpu", torch.float32)
    scores = fb.scores.detach().to("cpu", torch.float32)
    return _check_boxes(boxes, scores, what).above(det_thresh)


def image_files(images_dir: Union[str, os.PathLike], image_ids: Iterable[int],
                images_json: Optional[Union[str, os.PathLike, dict]] = None) -> Dict[int, pathlib.Path]:
    """``{image_id: path}`` for ``image_ids`` in ``images_dir``.

    With ``images_json`` (a COCO file or dict with ``images: [{id, file_name}]``, e.g. the ground truth)
    the file names come from it (their base names, looked up in ``images_dir``); otherwise from COCO's
    convention ``{image_id:012d}.jpg`` (or another extension of :data:`IMAGE_EXTENSIONS`), or
    ``{image_id}.jpg``. Raises FileNotFoundError naming the ids whose files are missing."""
    folder = pathlib.Path(images_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"images folder {str(folder)!r} does not exist")
    ids = list(dict.fromkeys(int(i) for i in image_ids))
    names: Dict[int, str] = {}
    if images_json is not None:
        doc = images_json if isinstance(images_json, dict) else read_json(images_json, "images file")
        src = f"images file {os.fspath(images_json)!r}" if not isinstance(images_json, dict) else "images_json"
        if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
            raise ValueError(f"{src} needs an 'images' list of {{id, file_name}}")
        for n, im in enumerate(doc["images"]):
            if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
                raise ValueError(f"{src}: images[{n}] needs the fields 'id' and 'file_name'")
            names[json_int(im["id"], f"{src}: images[{n}]: 'id'")] = os.path.basename(str(im["file_name"]))
    out: Dict[int, pathlib.Path] = {}
    missing: List[str] = []
    for i in ids:
        if images_json is not None:
            if i not in names:
                missing.append(f"{i} (not listed in the images file)")
                continue
            p = folder / names[i]
            if p.is_file():
                out[i] = p
            else:
                missing.append(f"{i} ({names[i]})")
            continue
        cands = [folder / f"{i:012d}{ext}" for ext in IMAGE_EXTENSIONS] + [folder / f"{i}{ext}" for ext in
                                                                         IMAGE_EXTENSIONS]
        found = next((p for p in cands if p.is_file()), None)
        if found is None:
            missing.append(f"{i} ({i:012d}.jpg)")
        else:
            out[i] = found
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) named by the detections are not in {str(folder)!r}: "
                                + ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else ""))
    return out


def load_image(path: Union[str, os.PathLike]) -> np.ndarray:
    """The image at ``path`` as a uint8 ``[H, W, 3]`` BGR array (``cv2.imread``); ValueError if it does not load."""
    import cv2

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image {path!r} does not exist")
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise ValueError(f"image {path!r} could not be read (not an image, or a corrupt file)")
    return img
