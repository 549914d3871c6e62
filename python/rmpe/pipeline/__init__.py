"""The RMPE pipeline at run time: frames and person boxes in, COCO keypoint results out.

    core.py        Pipeline: boxes -> affine crops -> SPPE -> heatmap decode -> pose NMS (one batch at a time)
    models/        SPPE adapters: the PoseModel protocol, torch heatmap models, BlazePose (LiteRT and torch),
                   AlphaPose's FastPose
    detections.py  person boxes per frame (FrameBoxes), COCO detection files, image lookup and loading
    draw.py        renders of the kept poses (keypoint and box-score thresholds, track colours)
    sources.py     frames from an image, a folder, a list, a video, a camera or a stream (background reader)
    tracking.py    track ids across frames (OKS / IoU, optimal assignment)
    writers.py     COCO / AlphaPose results, per-frame records, streamed atomic JSON, the output video

Pose NMS comes from :mod:`rmpe.nms`'s run-time part only (never its parameter search).
"""
from .core import *  # noqa: F401,F403
from .core import __all__  # noqa: F401
