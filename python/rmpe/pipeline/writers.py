"""What ``rmpe run`` writes: pose results (COCO or AlphaPose style), one record per frame, the run's summary,
and an output video. Every file is written atomically: a temporary file beside it, renamed into place when
complete, removed when the run fails (see :func:`rmpe.io.atomic_path`).

Result formats (:data:`FORMATS`), one JSON list of poses after NMS:

* ``"coco"``: COCO keypoint results as ``rmpe eval`` / ``rmpe nms`` read them: ``image_id`` (the frame's
  COCO id when known, else its file name; the frame number for videos), ``category_id`` 1, ``keypoints``
  (x, y, score per joint, image pixels), ``score``, ``det_bbox`` (xywh), ``det_score``, and ``track_id``
  with tracking.
* ``"alphapose"``: AlphaPose's ``alphapose-results.json``: ``image_id`` the file name (for video frames
  AlphaPose's ``"<frame>.jpg"``), ``category_id`` 1, ``keypoints``, ``score``, ``box`` (the detector box,
  xywh), ``idx`` (the track id with tracking, else the pose's index within its frame).

Per-frame records (:func:`frame_record`, ``--frames``): one object per input frame, in input order, also for
frames without persons and frames that could not be read: ``frame`` (index), ``image_id``, ``file``,
``status`` (``"ok"`` or ``"unreadable"``), ``error`` (when unreadable), ``boxes`` (person boxes found),
``poses`` (the frame's results in the chosen format).
"""
from __future__ import annotations

import contextlib
import gzip
import json
import os
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..io import atomic_path

__all__ = ["FORMATS", "format_results", "frame_record", "JsonListWriter", "VideoWriter", "VIDEO_CODECS"]

FORMATS = ("coco", "alphapose")

# container extension -> FourCC OpenCV's own backends (no ffmpeg needed) write
VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


def _alphapose_name(image_id: Union[int, str], is_video: bool) -> str:
    return f"{image_id}.jpg" if is_video else str(image_id)


def format_results(results: Sequence[dict], fmt: str, image_id: Union[int, str, None] = None,
                   file_name: Optional[str] = None, is_video: bool = False,
                   track_ids: Optional[Sequence[int]] = None) -> List[dict]:
    """One frame's pipeline results (COCO keypoint dicts with ``det_bbox``/``det_score``) in the format
    ``fmt`` (see the module docstring). ``image_id`` replaces the dicts' (the pipeline numbers frames);
    ``file_name`` is AlphaPose's ``image_id`` for an image; ``track_ids`` one per result. New dicts."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if track_ids is not None and len(track_ids) != len(results):
        raise ValueError(f"track_ids has {len(track_ids)} entries for {len(results)} results")
    out = []
    for n, r in enumerate(results):
        iid = r["image_id"] if image_id is None else image_id
        if fmt == "coco":
            d = {"image_id": iid, "category_id": 1, "keypoints": list(r["keypoints"]), "score": r["score"],
                 "det_bbox": list(r["det_bbox"]), "det_score": r["det_score"]}
            if track_ids is not None:
                d["track_id"] = int(track_ids[n])
        else:
            name = file_name if (file_name is not None and not is_video) else _alphapose_name(iid, is_video)
            d = {"image_id": name, "category_id": 1, "keypoints": list(r["keypoints"]), "score": r["score"],
                 "box": list(r["det_bbox"]), "idx": int(track_ids[n]) if track_ids is not None else n}
        out.append(d)
    return out


def frame_record(index: int, image_id: Union[int, str], file: Optional[str], poses: List[dict],
                 boxes: int = 0, error: Optional[str] = None) -> Dict[str, Any]:
    """The per-frame record of one input frame (see the module docstring)."""
    rec: Dict[str, Any] = {"frame": int(index), "image_id": image_id, "file": file,
                           "status": "ok" if error is None else "unreadable"}
    if error is not None:
        rec["error"] = error
    rec["boxes"] = int(boxes)
    rec["poses"] = poses
    return rec


class JsonListWriter:
    """Streams a JSON list to ``path`` one item at a time (memory stays flat however long the run), into a
    temporary file renamed to ``path`` by :meth:`commit`; :meth:`abort` (or leaving a ``with`` block on an
    exception) removes it. Gzip-compressed when ``path`` ends in ``.gz``. ``count``: items written."""

    class _Abort(Exception):
        pass

    def __init__(self, path: Union[str, os.PathLike]):
        self.path = os.fspath(path)
        self._cm = atomic_path(self.path)
        tmp = self._cm.__enter__()
        try:
            self._f = (gzip.open if self.path.endswith(".gz") else open)(tmp, "wt")
            self._f.write("[")
        except BaseException as e:
            self._cm.__exit__(type(e), e, e.__traceback__)
            raise
        self.count = 0
        self._open = True

    def write(self, item: Any) -> None:
        if not self._open:
            raise ValueError(f"{self.path!r}: the writer is closed")
        self._f.write(("," if self.count else "") + "\n" + json.dumps(item))
        self.count += 1

    def commit(self) -> None:
        if not self._open:
            return
        self._open = False
        try:
            self._f.write("\n]\n")
            self._f.close()
        except BaseException as e:
            self._cm.__exit__(type(e), e, e.__traceback__)
            raise
        self._cm.__exit__(None, None, None)

    def abort(self) -> None:
        if not self._open:
            return
        self._open = False
        with contextlib.suppress(Exception):
            self._f.close()
        e = self._Abort()
        with contextlib.suppress(self._Abort):
            self._cm.__exit__(self._Abort, e, None)

    def __enter__(self) -> "JsonListWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def _letterbox(img: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """``img`` scaled to fit ``size = (w, h)`` keeping its aspect ratio, centred on black."""
    import cv2

    w, h = size
    ih, iw = img.shape[:2]
    if (iw, ih) == (w, h):
        return img
    s = min(w / iw, h / ih)
    nw, nh = max(1, int(round(iw * s))), max(1, int(round(ih * s)))
    out = np.zeros((h, w, 3), dtype=np.uint8)
    x0, y0 = (w - nw) // 2, (h - nh) // 2
    out[y0:y0 + nh, x0:x0 + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    return out


class VideoWriter:
    """Writes uint8 ``[H, W, 3]`` BGR frames to a video file with ``cv2.VideoWriter`` (the codec by the
    extension: :data:`VIDEO_CODECS`), into a temporary file in the same folder (same extension, so OpenCV
    picks the same container), renamed to ``path`` by :meth:`commit`, removed by :meth:`abort`. The first
    frame fixes the size; later frames of another size are scaled to fit it (letterboxed). ``fps`` must be
    positive. ``count``: frames written."""

    def __init__(self, path: Union[str, os.PathLike], fps: float):
        self.path = os.fspath(path)
        ext = os.path.splitext(self.path)[1].lower()
        if ext not in VIDEO_CODECS:
            raise ValueError(f"video file {self.path!r}: the extension must be one of {sorted(VIDEO_CODECS)}")
        if not (np.isfinite(fps) and fps > 0):
            raise ValueError(f"video frame rate must be a positive number, got {fps}")
        self.fps, self.ext, self.fourcc = float(fps), ext, VIDEO_CODECS[ext]
        self.size: Optional[Tuple[int, int]] = None
        self.count = 0
        self._writer = None
        self._tmp: Optional[str] = None

    def write(self, image: np.ndarray) -> None:
        import cv2

        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError("video frames must be uint8 [H, W, 3] BGR arrays")
        if self._writer is None:
            folder = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(folder, exist_ok=True)
            fd, self._tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(self.path) + ".",
                                             suffix=".tmp" + self.ext)
            os.close(fd)
            h, w = image.shape[:2]
            self.size = (w, h)
            self._writer = cv2.VideoWriter(self._tmp, cv2.VideoWriter_fourcc(*self.fourcc), self.fps, self.size)
            if not self._writer.isOpened():
                self.abort()
                raise ValueError(f"video file {self.path!r}: OpenCV cannot write {self.fourcc} video here")
        self._writer.write(np.ascontiguousarray(_letterbox(image, self.size)))
        self.count += 1

    def commit(self) -> None:
        """Finishes the file and moves it into place (nothing is written when no frame was)."""
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self._tmp, 0o666 & ~umask)
        os.replace(self._tmp, self.path)
        self._tmp = None

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._tmp)
            self._tmp = None
