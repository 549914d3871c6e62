"""A short video made from real photos, for trying ``rmpe run`` on a video: a window panning over each image.

    python examples/make_clip.py data/coco4/000000197388.jpg -o out/clip.mp4 [--frames 60] [--fps 25]

Frame ``t`` of an image is the window of ``--size`` (default: the image less 10%) starting at
``(t * dx, t * dy)`` (``--step``, default 2 1 pixels), bouncing back at the image's edge; several images
give one segment each (an image smaller than the window is scaled up to cover it). The persons move by that step from frame to frame,
as they would under a slowly panning camera. The container and codec follow the extension (.mp4: mp4v,
.avi: MJPG; OpenCV's own writers, no ffmpeg needed).
"""
import argparse
import math
import os
import sys

import cv2
import numpy as np


def pan(img, size, n, step):
    """``n`` windows of ``size = (w, h)`` over ``img``, moving by ``step`` pixels a frame, bouncing at the edges."""
    h, w = img.shape[:2]
    ww, wh = size
    span_x, span_y = max(w - ww, 0), max(h - wh, 0)
    frames = []
    for t in range(n):
        def bounce(p, span):
            if span == 0:
                return 0
            p %= 2 * span
            return p if p <= span else 2 * span - p

        x, y = bounce(t * step[0], span_x), bounce(t * step[1], span_y)
        win = img[y:y + wh, x:x + ww]
        if win.shape[:2] != (wh, ww):
            win = cv2.resize(win, (ww, wh), interpolation=cv2.INTER_AREA)
        frames.append(np.ascontiguousarray(win))
    return frames


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", nargs="+", help="photos (each gives one segment of the clip)")
    ap.add_argument("-o", "--output", required=True, help="the video file (.mp4, .avi, ...)")
    ap.add_argument("--frames", type=int, default=60, help="frames per image (default: 60)")
    ap.add_argument("--fps", type=float, default=25.0, help="frame rate (default: 25)")
    ap.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), default=None,
                    help="window size (default: 90%% of the first image)")
    ap.add_argument("--step", type=int, nargs=2, metavar=("DX", "DY"), default=(2, 1),
                    help="pixels the window moves per frame (default: 2 1)")
    args = ap.parse_args()
    if args.frames < 1 or not args.fps > 0:
        sys.exit("--frames must be >= 1 and --fps > 0")
    imgs = []
    for p in args.images:
        img = cv2.imread(p)
        if img is None:
            sys.exit(f"{p}: not an image")
        imgs.append(img)
    h, w = imgs[0].shape[:2]
    size = tuple(args.size) if args.size else (int(w * 0.9) // 2 * 2, int(h * 0.9) // 2 * 2)
    ext = os.path.splitext(args.output)[1].lower()
    fourcc = "MJPG" if ext in (".avi", ".mkv") else "mp4v"
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    vw = cv2.VideoWriter(args.output, cv2.VideoWriter_fourcc(*fourcc), args.fps, size)
    if not vw.isOpened():
        sys.exit(f"{args.output}: OpenCV cannot write {fourcc} video")
    n = 0
    for img in imgs:
        if img.shape[1] < size[0] or img.shape[0] < size[1]:  # too small for the window: scaled up to cover it
            s = max(size[0] / img.shape[1], size[1] / img.shape[0])
            img = cv2.resize(img, (math.ceil(img.shape[1] * s), math.ceil(img.shape[0] * s)))
        for f in pan(img, size, args.frames, args.step):
            vw.write(f)
            n += 1
    vw.release()
    print(f"wrote {args.output}: {n} frames of {size[0]}x{size[1]} at {args.fps:g} fps")


if __name__ == "__main__":
    main()
