"""rmpe.pipeline.sources: every kind of input (image, folder with any names, list, video, camera, stream),
unreadable images yielded as such, the background reader's bounded queue, and clear errors."""
import pathlib
import shutil
import threading
import time

import cv2
import numpy as np
import pytest

from rmpe.pipeline import sources
from rmpe.pipeline.sources import open_source, read_image

ROOT = pathlib.Path(__file__).resolve().parents[2]
COCO4 = ROOT / "data" / "coco4"
NAMES = ("000000000785.jpg", "000000040083.jpg", "000000196141.jpg", "000000197388.jpg")


def make_clip(path, n=6, size=(160, 120), fps=10.0, fourcc="mp4v"):
    """A short video of real frames: a window moving over a COCO image (frame t starts at x = 4t, y = 2t).
    Returns the frames written (BGR)."""
    img = cv2.imread(str(COCO4 / "000000040083.jpg"))
    w, h = size
    frames = [np.ascontiguousarray(img[2 * t:2 * t + h, 4 * t:4 * t + w]) for t in range(n)]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert vw.isOpened()
    for f in frames:
        vw.write(f)
    vw.release()
    return frames


def test_one_image(tmp_path):
    src = open_source(COCO4 / NAMES[0])
    assert src.kind == "image" and src.frame_count == 1
    frames = list(src)
    assert [(f.index, f.image_id, f.name, f.error) for f in frames] == [(0, NAMES[0], NAMES[0], None)]
    assert np.array_equal(frames[0].image, cv2.imread(str(COCO4 / NAMES[0])))


def test_folder_with_any_names_in_name_order(tmp_path):
    for src_name, name in zip(NAMES, ("kitchen.jpg", "IMG_0042.JPG", "b.png", "a b.jpeg")):
        img = cv2.imread(str(COCO4 / src_name))
        cv2.imwrite(str(tmp_path / name), img) if name.endswith(".png") else shutil.copy(COCO4 / src_name,
                                                                                         tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub.jpg").mkdir()  # a folder named like an image is not one
    src = open_source(tmp_path)
    assert src.kind == "folder" and src.frame_count == 4
    got = [(f.index, f.image_id) for f in src]
    assert got == [(0, "IMG_0042.JPG"), (1, "a b.jpeg"), (2, "b.png"), (3, "kitchen.jpg")]
    # COCO ids for some names
    ids = {f.name: f.image_id for f in open_source(tmp_path, ids={"kitchen.jpg": 785})}
    assert ids["kitchen.jpg"] == 785 and ids["b.png"] == "b.png"


def test_list_file(tmp_path):
    (tmp_path / "imgs").mkdir()
    for n in NAMES[:2]:
        shutil.copy(COCO4 / n, tmp_path / "imgs" / n)
    lst = tmp_path / "list.txt"
    lst.write_text(f"# my images\nimgs/{NAMES[1]}\n\n{COCO4 / NAMES[2]}\n  imgs/{NAMES[0]}  \n")
    src = open_source(lst)
    assert src.kind == "list"
    assert [f.name for f in src] == [NAMES[1], NAMES[2], NAMES[0]]  # the list's order
    lst.write_text(f"imgs/{NAMES[0]}\nimgs/missing.jpg\n")
    with pytest.raises(FileNotFoundError, match="line 2: 'imgs/missing.jpg'"):
        open_source(lst)
    lst.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="names no images"):
        open_source(lst)


def test_video_frames_are_numbered_and_decoded(tmp_path):
    clip = tmp_path / "clip.mp4"
    written = make_clip(clip, n=7)
    src = open_source(clip)
    assert src.kind == "video" and src.fps == pytest.approx(10.0) and src.frame_count == 7
    frames = list(src)
    assert [(f.index, f.image_id, f.name, f.path) for f in frames] == [(t, t, f"frame {t}", None) for t in range(7)]
    for f, w in zip(frames, written):
        assert f.image.shape == w.shape and f.image.dtype == np.uint8
        assert np.abs(f.image.astype(int) - w).mean() < 12  # lossy codec, same picture
    # a video without a known extension is still opened by OpenCV
    other = tmp_path / "clip.bin"
    shutil.copy(clip, other)
    assert open_source(other).kind == "video" and len(list(open_source(other))) == 7


def test_camera_index_and_stream_url_go_through_videocapture(tmp_path, monkeypatch):
    """The camera and stream paths, with cv2.VideoCapture answering from a video file."""
    clip = tmp_path / "clip.avi"
    make_clip(clip, n=5, fourcc="MJPG")
    opened = []
    real = cv2.VideoCapture

    def fake_capture(arg):
        opened.append(arg)
        return real(str(clip))

    monkeypatch.setattr(cv2, "VideoCapture", fake_capture)
    cam = open_source("0")
    assert cam.kind == "camera" and cam.spec == 0
    assert [f.image_id for f in cam] == [0, 1, 2, 3, 4]
    assert opened == [0]  # the probe's capture is the one read
    assert open_source(2).kind == "camera"
    url = "rtsp://camera.local/stream1"
    stream = open_source(url)
    assert stream.kind == "stream" and len(list(stream)) == 5 and opened[-1] == url


def test_unreadable_images_are_yielded_with_the_reason(tmp_path):
    shutil.copy(COCO4 / NAMES[0], tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "c.png").write_bytes(b"")
    good = cv2.imread(str(COCO4 / NAMES[0]))
    truncated = (COCO4 / NAMES[1]).read_bytes()[:200]
    (tmp_path / "d.jpg").write_bytes(truncated)
    frames = list(open_source(tmp_path))
    assert [f.name for f in frames] == ["a.jpg", "b.jpg", "c.png", "d.jpg"]
    assert frames[0].error is None and np.array_equal(frames[0].image, good)
    for f in frames[1:]:
        assert f.image is None and "could not be read" in f.error and f.name in f.error
    with pytest.raises(ValueError, match="could not be read"):
        read_image(tmp_path / "b.jpg")
    # grey and 4-channel images come as 3-channel BGR
    cv2.imwrite(str(tmp_path / "g.png"), good[:, :, 0])
    cv2.imwrite(str(tmp_path / "r.png"), np.dstack([good, np.full(good.shape[:2], 255, np.uint8)]))
    assert read_image(tmp_path / "g.png").shape == good.shape
    assert np.array_equal(read_image(tmp_path / "r.png"), good)


def test_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_source(tmp_path / "nothing.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        open_source(tmp_path / "empty")
    (tmp_path / "fake.mp4").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="could not be opened"):
        open_source(tmp_path / "fake.mp4")
    (tmp_path / "data.xyz").write_bytes(b"what")
    with pytest.raises(ValueError, match="not an image"):
        open_source(tmp_path / "data.xyz")
    for bad in ("", -1, True):
        with pytest.raises(ValueError):
            open_source(bad)


def test_reader_thread_keeps_a_bounded_queue(tmp_path):
    """The reader decodes ahead at most queue_size frames: with nobody consuming, it fills the queue and
    waits (memory stays flat however long the video); then every frame still comes, in order."""
    clip = tmp_path / "clip.mp4"
    make_clip(clip, n=20)
    src = open_source(clip)
    with src.reader(queue_size=3) as frames:
        deadline = time.monotonic() + 30
        while frames.queue.qsize() < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # time to overfill the queue, were it unbounded
        assert frames.queue.qsize() == 3
        seen = [f.index for f in frames]
    assert seen == list(range(20))


def test_reader_stops_when_the_consumer_leaves(tmp_path):
    clip = tmp_path / "clip.mp4"
    make_clip(clip, n=30)
    before = threading.active_count()
    with open_source(clip).reader(queue_size=2) as frames:
        for f in frames:
            if f.index == 3:
                break
    assert threading.active_count() == before  # the thread ended
    with pytest.raises(RuntimeError, match="must be entered"):
        next(iter(open_source(clip).reader()))
    with pytest.raises(ValueError, match="queue_size"):
        open_source(clip).reader(queue_size=0)


def test_reader_hands_a_thread_error_to_the_consumer(tmp_path, monkeypatch):
    shutil.copy(COCO4 / NAMES[0], tmp_path / "a.jpg")
    shutil.copy(COCO4 / NAMES[1], tmp_path / "b.jpg")

    def broken(path):
        if str(path).endswith("b.jpg"):
            raise RuntimeError("decoder bug")
        return np.zeros((4, 4, 3), np.uint8)

    monkeypatch.setattr(sources, "read_image", broken)
    got = []
    with pytest.raises(RuntimeError, match="decoder bug"):
        with open_source(tmp_path).reader() as frames:
            for f in frames:
                got.append(f.name)
    assert got == ["a.jpg"]
