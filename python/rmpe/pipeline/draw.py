"""Drawing COCO-17 skeletons and person boxes on frames with OpenCV, and writing them as JPEG/PNG.

    img = draw_results(frame_bgr, results)   # results: COCO keypoint dicts of this frame
    save_image("out/000000000785.jpg", img)  # atomic: never a half-written file

Images are uint8 ``[H, W, 3]`` BGR numpy arrays (as ``cv2.imread`` gives them); the input is never
modified (the drawing is made on a copy). Keypoints are image pixels (x, y, score); joints with a score
below ``kp_thresh`` and limbs touching them are not drawn.
"""
from __future__ import annotations

import os
from typing import Iterable, Optional, Sequence, Tuple, Union

import numpy as np

from ..io import atomic_path

__all__ = ["COCO_LIMBS", "draw_poses", "draw_results", "save_image", "IMAGE_FORMATS"]

# COCO-17 skeleton (pycocotools' person category, made 0-based): legs, hips, torso, arms, head
COCO_LIMBS = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
              (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))

# tab10 (matplotlib's default cycle) in BGR: one colour per person
_PALETTE = ((180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148), (75, 86, 140),
            (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23))

IMAGE_FORMATS = (".jpg", ".jpeg", ".png")


def _check_image(image) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be a uint8 [H, W, 3] BGR numpy array, got {desc}")
    return image


def draw_poses(image: np.ndarray, keypoints, boxes=None, kp_thresh: float = 0.2,
               colors: Optional[Sequence[Tuple[int, int, int]]] = None, thickness: Optional[int] = None,
               labels: Optional[Sequence[str]] = None) -> np.ndarray:
    """A copy of ``image`` with skeletons and boxes drawn.

    ``keypoints``: ``[N, 17, 3]`` (or ``[N, 51]``) x, y, score in image pixels; ``boxes``: ``[N, 4]``
    x1, y1, x2, y2 pixels or None; ``colors``: BGR per person (default: the tab10 cycle);
    ``thickness``: lines (default: scaled with the image size); ``labels``: a text per box.
    """
    import cv2

    img = _check_image(image).copy()
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.size == 0:
        return img
    kp = kp.reshape(len(kp), -1, 3) if kp.ndim == 2 else kp
    if kp.ndim != 3 or kp.shape[1:] != (17, 3):
        raise ValueError(f"keypoints must have shape [N, 17, 3] (or [N, 51]), got {np.shape(keypoints)}")
    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(boxes) != len(kp):
            raise ValueError(f"boxes has {len(boxes)} rows for {len(kp)} poses")
    if labels is not None and len(labels) != len(kp):
        raise ValueError(f"labels has {len(labels)} entries for {len(kp)} poses")
    th = thickness or max(1, int(round(max(img.shape[:2]) / 320)))
    pal = list(colors) if colors else list(_PALETTE)
    for n, person in enumerate(kp):
        color = tuple(int(c) for c in pal[n % len(pal)])
        ok = np.isfinite(person).all(1) & (person[:, 2] >= kp_thresh)
        pts = np.round(person[:, :2]).astype(np.int64)
        if boxes is not None and np.isfinite(boxes[n]).all():
            x1, y1, x2, y2 = (int(round(v)) for v in boxes[n])
            cv2.rectangle(img, (x1, y1), (x2, y2), color, th)
            if labels is not None:
                cv2.putText(img, str(labels[n]), (x1, max(y1 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * th, color,
                            th, cv2.LINE_AA)
        for a, b in COCO_LIMBS:
            if ok[a] and ok[b]:
                cv2.line(img, (int(pts[a, 0]), int(pts[a, 1])), (int(pts[b, 0]), int(pts[b, 1])), color, th + 1,
                         cv2.LINE_AA)
        for j in np.nonzero(ok)[0]:
            cv2.circle(img, (int(pts[j, 0]), int(pts[j, 1])), th + 2, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(img, (int(pts[j, 0]), int(pts[j, 1])), th + 1, color, -1, cv2.LINE_AA)
    return img


def draw_results(image: np.ndarray, results: Iterable[dict], kp_thresh: float = 0.2, draw_boxes: bool = True,
                 score_labels: bool = True, box_thresh: float = 0.0, **kwargs) -> np.ndarray:
    """:func:`draw_poses` for COCO keypoint result dicts (``keypoints``; ``det_bbox`` xywh, or AlphaPose's
    ``box``, for the box; ``score`` for its label). Poses whose box score (``det_score``; the ``score`` when
    absent) is below ``box_thresh`` are not drawn; joints scored below ``kp_thresh`` are not. A result with a
    ``track_id`` gets its track's colour (the same in every frame) and ``#id`` in its label. Raises ValueError
    naming the result that lacks ``keypoints``."""
    results = list(results)
    for n, r in enumerate(results):
        if "keypoints" not in r:
            raise ValueError(f"result {n}: missing field 'keypoints'")
    for name, v in (("kp_thresh", kp_thresh), ("box_thresh", box_thresh)):
        if not np.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v}")
    results = [r for r in results if float(r.get("det_score", r.get("score", 1.0))) >= box_thresh]
    if not results:
        return _check_image(image).copy()
    kp = np.array([np.asarray(r["keypoints"], dtype=np.float64).reshape(-1) for r in results])
    boxes = labels = None
    key = "det_bbox" if all("det_bbox" in r for r in results) else "box"
    if draw_boxes and all(key in r for r in results):
        b = np.array([r[key] for r in results], dtype=np.float64).reshape(-1, 4)
        boxes = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1)
        if score_labels and all("score" in r for r in results):
            labels = [(f"#{r['track_id']} " if "track_id" in r else "") + f"{float(r['score']):.2f}" for r in results]
    if "colors" not in kwargs and all("track_id" in r for r in results):
        kwargs["colors"] = [_PALETTE[int(r["track_id"]) % len(_PALETTE)] for r in results]
    return draw_poses(image, kp, boxes, kp_thresh, labels=labels, **kwargs)


def save_image(path: Union[str, os.PathLike], image: np.ndarray, jpeg_quality: int = 90) -> None:
    """Writes ``image`` (uint8 ``[H, W, 3]`` BGR) as JPEG or PNG by the file's extension, atomically."""
    import cv2

    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in IMAGE_FORMATS:
        raise ValueError(f"image file {path!r}: the extension must be one of {IMAGE_FORMATS}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, _check_image(image), params)
    if not ok:
        raise ValueError(f"image file {path!r}: OpenCV could not encode the image")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(buf.tobytes())
