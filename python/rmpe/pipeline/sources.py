"""Frames from a user's media: an image, a folder of images, a list of images, a video, a camera or a stream.

    src = open_source("clip.mp4")                # or "photo.jpg", "photos/", "list.txt", "0" (camera), "rtsp://..."
    with src.reader(queue_size=16) as frames:    # a background thread decodes into a bounded queue
        for frame in frames:                     # Frame(index, image_id, name, image, error, path)
            if frame.image is None: print(frame.error); continue
            ...

Every frame of the source is yielded exactly once, in order, also one that cannot be decoded (``image`` is
None and ``error`` says why): the caller decides whether to skip it or stop. ``image`` is a uint8
``[H, W, 3]`` BGR numpy array (as ``cv2.imread`` gives it; grey and 4-channel images are converted).

Kinds of source (:func:`open_source` decides from the argument):

* ``"image"``: one image file (an extension of :data:`IMAGE_EXTENSIONS`);
* ``"folder"``: the image files of a folder (not its subfolders), in name order, any file names; other files
  are ignored; a folder without images is an error;
* ``"list"``: a text file (``.txt``, ``.lst``, ``.list``) naming one image per line, relative to the list's
  folder or absolute; blank lines and lines starting with ``#`` are skipped; a listed file that is missing is
  an error before any frame is read;
* ``"video"``: a video file (any container OpenCV's ``VideoCapture`` reads; extensions of
  :data:`VIDEO_EXTENSIONS` are taken as videos without trying);
* ``"camera"``: an integer, the camera index of ``cv2.VideoCapture(index)``;
* ``"stream"``: a URL (``rtsp://``, ``http://``, ... anything with ``://``), opened by ``cv2.VideoCapture``.

Image ids (:attr:`Frame.image_id`): the file's base name for images (AlphaPose's results use the file name
as ``image_id``); the frame number (0-based, int) for videos, cameras and streams. ``ids`` (a mapping from
file name to id, e.g. a COCO file's ``images[].file_name -> id``) replaces the file names by those ids.
"""
from __future__ import annotations

import os
import queue
import threading
from typing import Dict, Iterator, List, NamedTuple, Optional, Union

import numpy as np

__all__ = ["Frame", "Source", "open_source", "read_image", "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS",
           "LIST_EXTENSIONS", "KINDS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
                    ".3gp", ".gif")
LIST_EXTENSIONS = (".txt", ".lst", ".list")
KINDS = ("image", "folder", "list", "video", "camera", "stream")


class Frame(NamedTuple):
    """One frame of a source.

    ``index``: its position in the source (0-based); ``image_id``: the file name (images), the frame
    number (videos, cameras, streams) or the id ``ids`` gave it; ``name``: the file's base name, or
    ``"frame 17"``; ``image``: uint8 ``[H, W, 3]`` BGR, or None when it could not be read; ``error``: why
    not (None when it was read); ``path``: the image file (None for video frames)."""

    index: int
    image_id: Union[int, str]
    name: str
    image: Optional[np.ndarray]
    error: Optional[str]
    path: Optional[str]


def read_image(path: Union[str, os.PathLike]) -> np.ndarray:
    """The image at ``path`` as uint8 ``[H, W, 3]`` BGR (grey and alpha images converted). Raises
    FileNotFoundError when it does not exist, ValueError when it cannot be decoded (not an image, a
    corrupt or truncated file)."""
    import cv2

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image {path!r} does not exist")
    data = np.fromfile(path, dtype=np.uint8)  # cv2.imread cannot say why it failed; decode ourselves
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None or img.size == 0:
        raise ValueError(f"image {path!r} could not be read (not an image, or a corrupt file)")
    return img


def _is_camera(spec: str) -> bool:
    return spec.strip().isdigit()


def _list_file(path: str) -> List[str]:
    base = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"image list {path!r} is not a UTF-8 text file") from None
    files, missing = [], []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = line if os.path.isabs(line) else os.path.join(base, line)
        (files if os.path.isfile(p) else missing).append(p if os.path.isfile(p) else f"line {n}: {line!r}")
    if missing:
        raise FileNotFoundError(f"image list {path!r}: {len(missing)} listed file(s) do not exist: "
                                + ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else ""))
    if not files:
        raise ValueError(f"image list {path!r} names no images")
    return files


class Source:
    """A sequence of frames (see the module docstring); :func:`open_source` makes one.

    ``kind``: one of :data:`KINDS`; ``spec``: what was opened; ``files``: the image files (image kinds), or
    None; ``fps``: the video's frame rate (None when unknown or for images); ``frame_count``: the number of
    frames when known in advance (images; a video's container count, which OpenCV may only estimate),
    else None (cameras, streams); ``ids``: file name -> image id overrides."""

    def __init__(self, kind: str, spec: Union[str, int], files: Optional[List[str]] = None,
                 ids: Optional[Dict[str, Union[int, str]]] = None):
        if kind not in KINDS:
            raise ValueError(f"source kind must be one of {KINDS}, got {kind!r}")
        self.kind, self.spec, self.files = kind, spec, files
        self.ids = dict(ids or {})
        self.fps: Optional[float] = None
        self._cap = None
        self.frame_count: Optional[int] = len(files) if files is not None else None
        if kind in ("video", "camera", "stream"):
            cap = self._cap = self._capture()  # kept for the first read (a camera opens slowly)
            fps = cap.get(_cv2().CAP_PROP_FPS)
            n = cap.get(_cv2().CAP_PROP_FRAME_COUNT)
            self.fps = float(fps) if fps and np.isfinite(fps) and 0 < fps < 1000 else None
            self.frame_count = int(n) if kind == "video" and n and np.isfinite(n) and n > 0 else None

    def __repr__(self) -> str:
        return f"Source({self.kind!r}, {self.spec!r}, frames={self.frame_count})"

    def _capture(self):
        cv2 = _cv2()
        cap = cv2.VideoCapture(int(self.spec) if self.kind == "camera" else str(self.spec))
        if not cap.isOpened():
            cap.release()
            what = {"video": "video file", "camera": "camera", "stream": "stream"}[self.kind]
            raise ValueError(f"{what} {self.spec!r} could not be opened by OpenCV (cv2.VideoCapture)")
        return cap

    def __iter__(self) -> Iterator[Frame]:
        """The frames, read in the calling thread (see :meth:`reader` for a background thread)."""
        if self.files is not None:
            for n, path in enumerate(self.files):
                name = os.path.basename(path)
                image_id = self.ids.get(name, name)
                try:
                    yield Frame(n, image_id, name, read_image(path), None, path)
                except (OSError, ValueError) as e:
                    yield Frame(n, image_id, name, None, str(e), path)
            return
        cap, self._cap = self._cap or self._capture(), None
        try:
            n = 0
            while True:
                ok, img = cap.read()
                if not ok or img is None:
                    break
                if img.ndim == 2:
                    img = np.repeat(img[:, :, None], 3, 2)
                elif img.shape[2] == 4:
                    img = np.ascontiguousarray(img[:, :, :3])
                yield Frame(n, n, f"frame {n}", img, None, None)
                n += 1
        finally:
            cap.release()

    def close(self) -> None:
        """Releases a capture opened to probe the video and not read yet."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def reader(self, queue_size: int = 16) -> "Reader":
        """A context manager iterating the frames decoded by a background thread into a queue of at most
        ``queue_size`` frames (memory stays flat on a long video); see :class:`Reader`."""
        return Reader(self, queue_size)


class Reader:
    """Iterates a :class:`Source` whose frames a daemon thread decodes ahead into a bounded queue.

    Leaving the ``with`` block (normally, on an error or on Ctrl-C) stops the thread and releases the
    source. An exception inside the thread (a bug, not an unreadable frame: those are yielded as frames
    with an ``error``) is raised again in the consumer. ``wait_seconds`` sums the time the consumer waited
    for frames (decode slower than the rest)."""

    _DONE = object()

    def __init__(self, source: Source, queue_size: int = 16):
        if int(queue_size) < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        self.source = source
        self.queue: "queue.Queue" = queue.Queue(maxsize=int(queue_size))
        self._stop = threading.Event()
        self._error: Optional[BaseException] = None
        self._thread: Optional[threading.Thread] = None
        self.wait_seconds = 0.0
        self.max_queued = 0

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for frame in self.source:
                if not self._put(frame):
                    return
        except BaseException as e:  # handed to the consumer
            self._error = e
        finally:
            self._put(self._DONE)

    def __enter__(self) -> "Reader":
        self._thread = threading.Thread(target=self._run, name="rmpe-frame-reader", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:  # unblock a put waiting on a full queue
                    self.queue.get_nowait()
                except queue.Empty:
                    pass
                self._thread.join(timeout=0.05)
            self._thread = None
        self.source.close()

    def __iter__(self) -> Iterator[Frame]:
        import time

        if self._thread is None:
            raise RuntimeError("Reader must be entered (with src.reader() as frames: ...) before iterating")
        while True:
            t0 = time.perf_counter()
            self.max_queued = max(self.max_queued, self.queue.qsize())
            item = self.queue.get()
            self.wait_seconds += time.perf_counter() - t0
            if item is self._DONE:
                if self._error is not None:
                    raise self._error
                return
            yield item


def _cv2():
    import cv2

    return cv2


def _folder_images(folder: str) -> List[str]:
    names = sorted(n for n in os.listdir(folder) if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS
                   and os.path.isfile(os.path.join(folder, n)))
    if not names:
        raise ValueError(f"folder {folder!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return [os.path.join(folder, n) for n in names]


def open_source(spec: Union[str, int, os.PathLike], ids: Optional[Dict[str, Union[int, str]]] = None) -> Source:
    """The :class:`Source` named by ``spec`` (see the module docstring for how its kind is decided).
    ``ids``: file base name -> image id for image sources. Raises FileNotFoundError for a path that does
    not exist, ValueError for one that is no image, folder of images, image list or readable video."""
    if isinstance(spec, bool):
        raise ValueError(f"source must be a path, a camera index or a URL, got {spec!r}")
    if isinstance(spec, int):
        if spec < 0:
            raise ValueError(f"camera index must be >= 0, got {spec}")
        return Source("camera", spec)
    spec = os.fspath(spec)
    if not spec:
        raise ValueError("source: empty path")
    if "://" in spec:
        return Source("stream", spec)
    if _is_camera(spec) and not os.path.exists(spec):
        return Source("camera", int(spec))
    if os.path.isdir(spec):
        return Source("folder", spec, _folder_images(spec), ids)
    if not os.path.exists(spec):
        raise FileNotFoundError(f"source {spec!r} does not exist (an image, a folder of images, a list of "
                                "images, a video, a camera index or a stream URL)")
    if not os.path.isfile(spec):
        raise ValueError(f"source {spec!r} is not a file or a folder")
    ext = os.path.splitext(spec)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return Source("image", spec, [spec], ids)
    if ext in LIST_EXTENSIONS:
        return Source("list", spec, _list_file(spec), ids)
    if ext in VIDEO_EXTENSIONS:
        return Source("video", spec)
    try:  # an unknown extension: a video OpenCV can open, or nothing we read
        return Source("video", spec)
    except ValueError:
        raise ValueError(f"source {spec!r} is not an image ({', '.join(IMAGE_EXTENSIONS)}), an image list "
                         f"({', '.join(LIST_EXTENSIONS)}) or a video OpenCV can open") from None

