"""Person detectors for the pipeline: callables ``frame -> person boxes``.

A detector takes one frame, a uint8 ``[H, W, 3]`` **BGR** image (a numpy array, as
:func:`rmpe.pipeline.detections.load_image` and ``cv2.imread`` give it, or a uint8 tensor of that shape on
any device) and returns its persons as :class:`rmpe.pipeline.detections.FrameBoxes`: ``boxes [n, 4]``
float32 ``(x1, y1, x2, y2)`` image pixels and ``scores [n]`` float32, on the CPU, best score first. Any of
them can be given to :class:`rmpe.pipeline.Pipeline` as its ``detections`` argument; the frame is not
modified.

* :class:`BlazePoseDetector`: MediaPipe's BlazePose person detector (``pose_detection.tflite``, shipped
  with the package beside the landmark model), run with ai-edge-litert. Offline and small, but made for
  **one person** (a fitness/selfie camera): it finds the most prominent persons and misses most of a crowd
  (see the README's "Person detectors" for its box AP on COCO images). The box rule is documented on
  the class.
* :class:`TorchvisionDetector`: a torchvision detection model (Faster R-CNN, RetinaNet, FCOS, SSDlite) with
  the user's own weights (a file, or torchvision's ``DEFAULT`` weights already in the user's torch hub
  cache; nothing is downloaded). Needs ``torchvision``.
* :class:`UltralyticsDetector`: an Ultralytics YOLO model file (``yolov8n.pt``, ...). Needs ``ultralytics``.

The last two are the way to go for scenes with several persons. :func:`make_detector` builds any of them
from a short text (what ``rmpe run --detector`` takes).
"""
from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from typing import List, NamedTuple, Optional, Tuple, Union

import numpy as np
import torch

from .detections import FrameBoxes

__all__ = ["SsdAnchorOptions", "BLAZEPOSE_DETECTOR_ANCHORS", "ssd_anchors", "weighted_nms", "BlazePoseDetections",
           "BlazePoseDetector", "default_detector_path", "TorchvisionDetector", "TORCHVISION_ARCHS",
           "UltralyticsDetector", "make_detector", "DETECTOR_SPECS"]

DETECTOR_SPECS = ("blazepose", "torchvision:<arch>[:<weights file or DEFAULT>]", "yolo:<model file>")


def _frame_array(frame, what: str = "frame") -> np.ndarray:
    """A detector's frame as a uint8 ``[H, W, 3]`` numpy array (BGR), on the CPU; not copied when it is one."""
    if isinstance(frame, torch.Tensor):
        frame = frame.detach().to("cpu").numpy()
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"{what} must be a uint8 [H, W, 3] BGR image (numpy array or tensor), "
                         f"got {type(frame).__name__}")
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"{what} must be a uint8 [H, W, 3] BGR image, got {frame.dtype} {frame.shape}")
    if min(frame.shape[:2]) == 0:
        raise ValueError(f"{what} is empty: shape {frame.shape}")
    return frame


def _empty_boxes() -> FrameBoxes:
    return FrameBoxes(torch.zeros(0, 4), torch.zeros(0))


def _sorted_boxes(boxes: torch.Tensor, scores: torch.Tensor, who: str) -> FrameBoxes:
    """CPU float32, best score first (stable). A detector's non-finite or inverted (x2 < x1, y2 < y1) box is an
    error naming the detector (``who``), not something dropped quietly."""
    boxes = boxes.detach().to("cpu", torch.float32).reshape(-1, 4)
    scores = scores.detach().to("cpu", torch.float32).reshape(-1)
    if not (bool(torch.isfinite(boxes).all()) and bool(torch.isfinite(scores).all())):
        raise ValueError(f"{who} returned NaN or infinite boxes or scores")
    if bool(((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any()):
        raise ValueError(f"{who} returned a box with x2 < x1 or y2 < y1")
    order = torch.argsort(scores, descending=True, stable=True)
    return FrameBoxes(boxes[order].contiguous(), scores[order].contiguous())


def _check_thresh(score_thresh, name: str = "score_thresh") -> float:
    try:
        t = float(score_thresh)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {score_thresh!r}") from None
    if not math.isfinite(t):
        raise ValueError(f"{name} must be finite, got {score_thresh}")
    return t


# ------------------------------------------------------------------ SSD anchors (MediaPipe's SsdAnchorsCalculator)


@dataclasses.dataclass(frozen=True)
class SsdAnchorOptions:
    """The options of MediaPipe's ``SsdAnchorsCalculator`` (the fields of its ``SsdAnchorsCalculatorOptions``
    that the BlazePose/BlazeFace detectors use). The defaults are the pose detector's
    (``pose_detection_cpu.pbtxt`` of mediapipe 0.10.21): 224x224 input, five layers of strides 8, 16, 32,
    32, 32, one aspect ratio (1) plus the interpolated scale, fixed anchor size."""

    input_size_height: int = 224
    input_size_width: int = 224
    num_layers: int = 5
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    anchor_offset_x: float = 0.5
    anchor_offset_y: float = 0.5
    strides: Tuple[int, ...] = (8, 16, 32, 32, 32)
    aspect_ratios: Tuple[float, ...] = (1.0,)
    reduce_boxes_in_lowest_layer: bool = False
    interpolated_scale_aspect_ratio: float = 1.0
    fixed_anchor_size: bool = True


def _layer_scale(opts: SsdAnchorOptions, layer: int) -> float:
    if opts.num_layers == 1:
        return (opts.min_scale + opts.max_scale) / 2
    return opts.min_scale + (opts.max_scale - opts.min_scale) * layer / (opts.num_layers - 1)


def ssd_anchors(opts: SsdAnchorOptions = SsdAnchorOptions()) -> np.ndarray:
    """SSD anchors ``[A, 4]`` float32 ``(x_center, y_center, w, h)``, normalized to the input (0..1), in the
    order of the model's outputs: layer groups of equal stride, then feature-map rows, columns, and the
    anchors of a cell (one per aspect ratio and scale, plus the interpolated scale). Consecutive layers of
    the same stride share one feature map and pool their anchors per cell. With ``fixed_anchor_size`` every
    anchor is 1 x 1 (the model regresses absolute sizes). The pose detector's options give 2254 anchors:
    28x28x2 + 14x14x2 + 7x7x6."""
    if opts.num_layers < 1 or len(opts.strides) != opts.num_layers:
        raise ValueError(f"strides must hold num_layers = {opts.num_layers} values, got {opts.strides}")
    if min(opts.strides) < 1 or min(opts.input_size_height, opts.input_size_width) < 1:
        raise ValueError(f"strides and the input size must be positive, got {opts.strides}, "
                         f"{opts.input_size_height}x{opts.input_size_width}")
    rows: List[np.ndarray] = []
    layer = 0
    while layer < opts.num_layers:
        ratios: List[float] = []
        scales: List[float] = []
        last = layer
        while last < opts.num_layers and opts.strides[last] == opts.strides[layer]:
            scale = _layer_scale(opts, last)
            if last == 0 and opts.reduce_boxes_in_lowest_layer:
                ratios += [1.0, 2.0, 0.5]
                scales += [0.1, scale, scale]
            else:
                for r in opts.aspect_ratios:
                    ratios.append(float(r))
                    scales.append(scale)
                if opts.interpolated_scale_aspect_ratio > 0:
                    nxt = 1.0 if last == opts.num_layers - 1 else _layer_scale(opts, last + 1)
                    scales.append(math.sqrt(scale * nxt))
                    ratios.append(float(opts.interpolated_scale_aspect_ratio))
            last += 1
        stride = opts.strides[layer]
        fh = math.ceil(opts.input_size_height / stride)
        fw = math.ceil(opts.input_size_width / stride)
        k = len(ratios)
        ys, xs = np.meshgrid(np.arange(fh, dtype=np.float64), np.arange(fw, dtype=np.float64), indexing="ij")
        cx = np.repeat(((xs + opts.anchor_offset_x) / fw).reshape(-1), k)
        cy = np.repeat(((ys + opts.anchor_offset_y) / fh).reshape(-1), k)
        if opts.fixed_anchor_size:
            w = np.ones_like(cx)
            h = np.ones_like(cx)
        else:
            sq = np.sqrt(np.array(ratios))
            w = np.tile(np.array(scales) * sq, fh * fw)
            h = np.tile(np.array(scales) / sq, fh * fw)
        rows.append(np.stack([cx, cy, w, h], 1))
        layer = last
    return np.concatenate(rows).astype(np.float32)


BLAZEPOSE_DETECTOR_ANCHORS = SsdAnchorOptions()


# ------------------------------------------------------------------ box NMS


def _iou_one(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with each of ``boxes [n, 4]`` (0 when the union is empty)."""
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou_thresh: float = 0.3, weighted: bool = True,
                 values: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Box NMS as MediaPipe's ``NonMaxSuppressionCalculator`` does it (``IoU`` overlap).

    ``boxes [n, 4]`` xyxy, ``scores [n]``; ``values [n, d]``: anything else to merge with the boxes (e.g.
    keypoints). In descending score order the best remaining box takes every remaining box whose IoU with
    it is **above** ``iou_thresh`` (itself included). ``weighted=True`` (MediaPipe's ``WEIGHTED``): the
    output box and values are the score-weighted mean of that cluster's; ``False`` (``DEFAULT``): the
    best box's own. The output score is the best box's. Returns ``(boxes [m, 4], scores [m], values
    [m, d] or None)`` float64, best first."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"scores has {scores.shape[0]} entries for {boxes.shape[0]} boxes")
    vals = None if values is None else np.asarray(values, dtype=np.float64).reshape(boxes.shape[0], -1)
    order = np.argsort(-scores, kind="stable")
    out_b, out_s, out_v = [], [], []
    while order.size:
        top = order[0]
        iou = _iou_one(boxes[top], boxes[order])
        cluster = order[iou > iou_thresh]
        if cluster.size == 0 or cluster[0] != top:  # a degenerate (zero-area) best box still stands alone
            cluster = np.concatenate([[top], cluster[cluster != top]])
        if weighted:
            w = scores[cluster]
            tw = w.sum()
            if tw > 0:
                out_b.append((boxes[cluster] * w[:, None]).sum(0) / tw)
                if vals is not None:
                    out_v.append((vals[cluster] * w[:, None]).sum(0) / tw)
            else:
                out_b.append(boxes[top])
                if vals is not None:
                    out_v.append(vals[top])
        else:
            out_b.append(boxes[top])
            if vals is not None:
                out_v.append(vals[top])
        out_s.append(scores[top])
        order = order[~np.isin(order, cluster)]
    d = 0 if vals is None else vals.shape[1]
    return (np.array(out_b, dtype=np.float64).reshape(-1, 4), np.array(out_s, dtype=np.float64),
            None if vals is None else np.array(out_v, dtype=np.float64).reshape(-1, d))


# ------------------------------------------------------------------ BlazePose's person detector


def default_detector_path() -> pathlib.Path:
    """``$RMPE_BLAZEPOSE_DETECTOR`` if set, else the detector shipped with the package
    (``rmpe/data/models/blazepose/pose_detection.tflite``)."""
    env = os.environ.get("RMPE_BLAZEPOSE_DETECTOR")
    if env:
        return pathlib.Path(env)
    from .models.blazepose import shipped_model_dir

    return shipped_model_dir() / "pose_detection.tflite"


class BlazePoseDetections(NamedTuple):
    """Everything :meth:`BlazePoseDetector.detect` decodes for one frame, best first, image pixels (float32, CPU):

    ``boxes [n, 4]`` the person boxes (xyxy, the detector's box rule); ``scores [n]``;
    ``keypoints [n, 4, 2]`` MediaPipe's four alignment points: 0 the mid-hip centre, 1 a point whose distance
    from it is the radius of a circle enclosing the whole body (and whose direction is the body's "up"), 2
    the mid-shoulder centre, 3 the same kind of point for the upper body; ``face_boxes [n, 4]`` the box
    the SSD head regresses (xyxy; MediaPipe's pose detector boxes the **face**)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    keypoints: torch.Tensor
    face_boxes: torch.Tensor


BOX_RULES = ("body", "square")


class BlazePoseDetector:
    """MediaPipe's BlazePose person detector (``pose_detection.tflite`` of mediapipe 0.10.21), run with
    ai-edge-litert on the CPU, decoded as MediaPipe's ``PoseDetectionCpu`` graph does, written here from
    that graph's settings:

    1. **Letterbox** the frame (BGR -> RGB) into 224x224 keeping its aspect ratio (the frame centred, the
       border black), values ``pixel / 127.5 - 1``.
    2. **Scores**: the 2254 logits clipped to [-100, 100], sigmoid; anchors scoring ``>= min_score`` are kept.
    3. **Boxes**: each of the 2254 SSD anchors (:func:`ssd_anchors`, fixed size) regresses a box centre
       (offset from the anchor, /224), its size (/224) and four keypoints (offsets, /224).
    4. **NMS** (:func:`weighted_nms`) on those boxes at IoU > ``nms_iou`` (MediaPipe: 0.3), ``weighted``
       (MediaPipe: score-weighted means of each cluster's boxes and keypoints) or not.
    5. Letterbox removed: back to frame pixels.
    6. **Person box** from the keypoints: the box the SSD head regresses is the *face*, so the person box
       comes from the full-body alignment points, the mid-hip centre ``c`` (keypoint 0) and the radius
       ``r = |k1 - c|`` of a circle about it that encloses the body (MediaPipe crops the square of side
       ``2 r`` about ``c``, rotated upright, then enlarged 1.25x, for its landmark model). ``box="square"``:
       that square, axis-aligned (no rotation); its crop through the pipeline's ``"alphapose"`` preset (x1.25)
       is exactly MediaPipe's landmark crop for an upright person. ``box="body"`` (default): the square's
       extent along the body's axis (``c -> k1``) and ``body_width`` times it across, i.e. a rotated
       ``2r x 2 r body_width`` rectangle, whose axis-aligned bounding box is returned (for an upright
       person: ``2 r body_width`` wide, ``2 r`` tall, centred on ``c``): a person box as COCO draws them,
       so the pipeline's box presets work as they do for any detector's boxes. ``body_width`` = 0.4 by
       default (see the README's "Person detectors and models" for how it was chosen). Boxes are clipped to
       the frame.

    ``score_thresh``: boxes scoring below it are dropped after the NMS (on top of ``min_score``).
    ``max_detections``: at most this many boxes per frame (None: all). Several persons give several boxes
    (nothing limits the count to one), but the model was trained for one prominent person: in a crowd it
    finds few of them.
    """

    input_size = 224

    def __init__(self, model_path: Optional[Union[str, os.PathLike]] = None, min_score: float = 0.2,
                 nms_iou: float = 0.3, weighted: bool = True, box: str = "body", body_width: float = 0.4,
                 score_thresh: float = 0.0, max_detections: Optional[int] = 100, num_threads: int = 1):
        from .models.blazepose import _interpreter_class

        self.min_score = _check_thresh(min_score, "min_score")
        if not 0.0 <= self.min_score < 1.0:
            raise ValueError(f"min_score must lie in [0, 1), got {min_score}")
        self.nms_iou = _check_thresh(nms_iou, "nms_iou")
        if not 0.0 <= self.nms_iou < 1.0:
            raise ValueError(f"nms_iou must lie in [0, 1), got {nms_iou}")
        if box not in BOX_RULES:
            raise ValueError(f"box must be one of {list(BOX_RULES)}, got {box!r}")
        self.body_width = _check_thresh(body_width, "body_width")
        if not 0.0 < self.body_width <= 1.0:
            raise ValueError(f"body_width must lie in (0, 1], got {body_width}")
        self.score_thresh = _check_thresh(score_thresh)
        if max_detections is not None and int(max_detections) < 1:
            raise ValueError(f"max_detections must be at least 1 (or None), got {max_detections}")
        if int(num_threads) < 1:
            raise ValueError(f"num_threads must be at least 1, got {num_threads}")
        self.box, self.weighted = box, bool(weighted)
        self.max_detections = None if max_detections is None else int(max_detections)
        path = pathlib.Path(model_path) if model_path is not None else default_detector_path()
        if not path.is_file():
            raise FileNotFoundError(f"BlazePose detector model file {str(path)!r} does not exist (set "
                                    "RMPE_BLAZEPOSE_DETECTOR or pass model_path)")
        self.model_path, self.num_threads = path, int(num_threads)
        Interpreter = _interpreter_class()
        self.anchors = ssd_anchors(BLAZEPOSE_DETECTOR_ANCHORS)
        n = self.anchors.shape[0]
        try:
            it = Interpreter(model_path=str(path), num_threads=self.num_threads)
            it.allocate_tensors()
        except ValueError as e:
            raise ValueError(f"BlazePose detector model file {str(path)!r}: {e}") from None
        inp = it.get_input_details()
        outs = {tuple(d["shape"]): d["index"] for d in it.get_output_details()}
        if len(inp) != 1 or tuple(inp[0]["shape"]) != (1, 224, 224, 3) or (1, n, 12) not in outs or \
                (1, n, 1) not in outs:
            raise ValueError(f"BlazePose detector model file {str(path)!r}: expected a 1x224x224x3 input and "
                             f"1x{n}x12, 1x{n}x1 outputs, got {[tuple(d['shape']) for d in inp]} -> {list(outs)}")
        self._input, self._raw, self._logits = inp[0]["index"], outs[(1, n, 12)], outs[(1, n, 1)]
        self._interpreter = it

    # -- steps

    def letterbox(self, frame: np.ndarray) -> Tuple[np.ndarray, float, float, float]:
        """``frame`` (BGR uint8) -> ``(tensor [1, 224, 224, 3] float32 RGB in [-1, 1], side, x0, y0)``:
        letterbox pixel ``p`` shows frame pixel ``p * side / 224 + (x0, y0)`` (point coordinates, corners
        of the square ``side x side`` about the frame's centre map to the tensor's corners)."""
        import cv2

        h, w = frame.shape[:2]
        side = float(max(h, w))
        x0, y0 = (w - side) / 2.0, (h - side) / 2.0
        s = self.input_size / side
        m = np.array([[s, 0.0, -s * x0], [0.0, s, -s * y0]], dtype=np.float64)
        img = cv2.warpAffine(frame, m, (self.input_size, self.input_size), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32)
        rgb *= 1.0 / 127.5
        rgb -= 1.0
        return rgb[None], side, x0, y0

    def raw(self, tensor: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """The model on a letterboxed tensor: ``(regressors [2254, 12], logits [2254])`` float32 (copies)."""
        it = self._interpreter
        it.set_tensor(self._input, np.ascontiguousarray(tensor, dtype=np.float32))
        it.invoke()
        return it.get_tensor(self._raw)[0].copy(), it.get_tensor(self._logits)[0, :, 0].copy()

    def decode(self, regressors: np.ndarray, logits: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Steps 2-4 on the model's outputs: ``(face boxes [m, 4] xyxy, scores [m], keypoints [m, 4, 2])``,
        float64, normalized to the letterboxed input (0..1), after the NMS, best first."""
        a = self.anchors.astype(np.float64)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -100.0, 100.0)))
        keep = np.nonzero(scores >= self.min_score)[0]
        if keep.size == 0:
            return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 4, 2))
        r, a, scores = regressors[keep].astype(np.float64) / self.input_size, a[keep], scores[keep]
        cx = r[:, 0] * a[:, 2] + a[:, 0]
        cy = r[:, 1] * a[:, 3] + a[:, 1]
        bw, bh = r[:, 2] * a[:, 2], r[:, 3] * a[:, 3]
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        kx = r[:, 4::2] * a[:, 2:3] + a[:, 0:1]
        ky = r[:, 5::2] * a[:, 3:4] + a[:, 1:2]
        kps = np.stack([kx, ky], 2)  # [m, 4, 2]
        boxes, scores, kv = weighted_nms(boxes, scores, self.nms_iou, self.weighted, kps.reshape(len(kps), 8))
        return boxes, scores, kv.reshape(-1, 4, 2)

    def person_boxes(self, keypoints: np.ndarray, width: int, height: int) -> np.ndarray:
        """Person boxes ``[n, 4]`` xyxy (frame pixels, clipped to the frame) from the alignment points
        ``[n, 4, 2]`` (frame pixels) by the box rule (see the class docstring)."""
        kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 4, 2)
        c = kp[:, 0]
        up = kp[:, 1] - c
        r = np.linalg.norm(up, axis=1)
        if self.box == "square":
            half_x = half_y = r
        else:
            u = np.where(r[:, None] > 0, up / np.where(r > 0, r, 1.0)[:, None], np.array([0.0, -1.0]))
            # the rotated rectangle: half-extent r along u, r * body_width across it
            half_x = r * np.abs(u[:, 0]) + r * self.body_width * np.abs(u[:, 1])
            half_y = r * np.abs(u[:, 1]) + r * self.body_width * np.abs(u[:, 0])
        boxes = np.stack([c[:, 0] - half_x, c[:, 1] - half_y, c[:, 0] + half_x, c[:, 1] + half_y], 1)
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0.0, float(width))
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0.0, float(height))
        return boxes

    def detect(self, frame) -> BlazePoseDetections:
        """Everything decoded for one frame (see :class:`BlazePoseDetections`)."""
        frame = _frame_array(frame)
        h, w = frame.shape[:2]
        tensor, side, x0, y0 = self.letterbox(frame)
        face, scores, kps = self.decode(*self.raw(tensor))
        face = face * side
        face[:, 0::2] += x0
        face[:, 1::2] += y0
        kps = kps * side + np.array([x0, y0])
        boxes = self.person_boxes(kps, w, h)
        keep = (scores >= self.score_thresh) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        idx = np.nonzero(keep)[0]
        if self.max_detections is not None:
            idx = idx[:self.max_detections]
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a[idx], dtype=np.float32))  # noqa: E731
        return BlazePoseDetections(t(boxes).reshape(-1, 4), t(scores).reshape(-1), t(kps).reshape(-1, 4, 2),
                                   t(face).reshape(-1, 4))

    def __call__(self, frame) -> FrameBoxes:
        """The person boxes of one frame (see the module docstring)."""
        d = self.detect(frame)
        return FrameBoxes(d.boxes, d.scores)

    def __repr__(self) -> str:
        return (f"BlazePoseDetector({str(self.model_path)!r}, box={self.box!r}, min_score={self.min_score}, "
                f"score_thresh={self.score_thresh})")


# ------------------------------------------------------------------ torchvision detection models

# arch -> the name of its weights enum in torchvision.models.detection
TORCHVISION_ARCHS = {
    "fasterrcnn_resnet50_fpn": "FasterRCNN_ResNet50_FPN_Weights",
    "fasterrcnn_resnet50_fpn_v2": "FasterRCNN_ResNet50_FPN_V2_Weights",
    "retinanet_resnet50_fpn": "RetinaNet_ResNet50_FPN_Weights",
    "retinanet_resnet50_fpn_v2": "RetinaNet_ResNet50_FPN_V2_Weights",
    "fcos_resnet50_fpn": "FCOS_ResNet50_FPN_Weights",
    "ssdlite320_mobilenet_v3_large": "SSDLite320_MobileNet_V3_Large_Weights",
}


def _import_torchvision():
    try:
        import torchvision  # noqa: F401
        from torchvision.models import detection
    except ImportError as e:
        raise ImportError("the torchvision detectors need torchvision, built for your torch "
                          f"{torch.__version__} (pip install torchvision, or rmpe_ext[torchvision]): {e}") from e
    return detection


def _torchvision_default_weights(detection, arch: str) -> pathlib.Path:
    """The file of torchvision's ``DEFAULT`` weights of ``arch`` in the user's torch hub cache (where
    torchvision itself stores them: ``torch.hub.get_dir()/checkpoints/<file name of the weights' URL>``).
    Nothing is downloaded: FileNotFoundError when the file is not there."""
    enum = getattr(detection, TORCHVISION_ARCHS[arch], None)
    if enum is None:
        raise ValueError(f"this torchvision has no {TORCHVISION_ARCHS[arch]} (the weights of {arch})")
    url = enum.DEFAULT.url
    path = pathlib.Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if not path.is_file():
        raise FileNotFoundError(f"torchvision's DEFAULT weights of {arch} are not in your torch hub cache: "
                                f"{str(path)!r} does not exist (rmpe does not download; fetch {url} there, e.g. by "
                                f"building torchvision.models.detection.{arch}(weights='DEFAULT') once on a "
                                "connected machine, or pass the weights file's path)")
    return path


class TorchvisionDetector:
    """A torchvision detection model as a person detector (only its person class is kept).

    ``arch``: one of :data:`TORCHVISION_ARCHS`. ``weights``: ``None`` (untrained: for tests of the plumbing
    only), a file holding the model's ``state_dict`` (``torch.save``; read with ``weights_only=True``;
    a dict holding it under ``'model'`` or ``'state_dict'`` also works), or ``"DEFAULT"``: torchvision's
    default COCO weights, taken from the user's torch hub cache (never downloaded; see
    :func:`_torchvision_default_weights`). ``num_classes``: the model's classes (91: torchvision's COCO
    weights, where person is label 1); ``person_label``: the label kept. ``score_thresh``: boxes below it
    are dropped (the model's own floor applies first: 0.05 for Faster R-CNN, RetinaNet, FCOS; 0.001 for
    SSDlite). ``device``: where the model runs. torchvision is imported (and the model built) only here.

    The frame (BGR uint8) is given to the model as its RGB ``[3, H, W]`` float tensor in [0, 1], as
    torchvision's detection models take images (they resize and normalize it themselves); the output
    ``{"boxes" [n, 4] xyxy, "labels" [n], "scores" [n]}`` is read for ``labels == person_label``.
    """

    def __init__(self, arch: str, weights: Optional[Union[str, os.PathLike]] = None,
                 device: Union[str, torch.device] = "cpu", score_thresh: float = 0.0, num_classes: int = 91,
                 person_label: int = 1):
        if arch not in TORCHVISION_ARCHS:
            raise ValueError(f"arch must be one of {sorted(TORCHVISION_ARCHS)}, got {arch!r}")
        self.score_thresh = _check_thresh(score_thresh)
        if int(num_classes) < 2 or not 0 <= int(person_label) < int(num_classes):
            raise ValueError(f"num_classes must be >= 2 and person_label in [0, num_classes), got {num_classes}, "
                             f"{person_label}")
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"device {device!r} is not a torch device: {e}") from None
        self.arch, self.person_label = arch, int(person_label)
        path = None
        if weights is not None:
            if isinstance(weights, str) and weights == "DEFAULT":
                path = None  # resolved below, once torchvision is imported
            else:
                path = pathlib.Path(os.fspath(weights))
                if not path.is_file():
                    raise FileNotFoundError(f"weights file {str(path)!r} of the {arch} detector does not exist")
        detection = _import_torchvision()
        if isinstance(weights, str) and weights == "DEFAULT":
            path = _torchvision_default_weights(detection, arch)
        self.weights = None if path is None else str(path)
        builder = getattr(detection, arch, None)
        if builder is None:
            raise ValueError(f"this torchvision has no detection model {arch!r}")
        model = builder(weights=None, weights_backbone=None, num_classes=int(num_classes))
        if path is not None:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # pickle, zip or torch errors
                raise ValueError(f"weights file {str(path)!r} of the {arch} detector could not be read: "
                                 f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
            for key in ("model", "state_dict"):
                if isinstance(state, dict) and isinstance(state.get(key), dict):
                    state = state[key]
            if not isinstance(state, dict):
                raise ValueError(f"weights file {str(path)!r}: expected a state_dict, got {type(state).__name__}")
            try:
                model.load_state_dict(state, strict=True)
            except RuntimeError as e:
                raise ValueError(f"weights file {str(path)!r} does not fit torchvision's {arch} with {num_classes} "
                                 f"classes: {str(e).strip().splitlines()[0]}") from None
        self.model = model.eval().to(self.device)

    def __call__(self, frame) -> FrameBoxes:
        """The person boxes of one frame (see the module docstring)."""
        img = _frame_array(frame)
        x = torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1])).to(self.device)
        x = x.permute(2, 0, 1).to(torch.float32).div_(255.0)
        with torch.inference_mode():
            out = self.model([x])
        if not isinstance(out, (list, tuple)) or len(out) != 1 or not isinstance(out[0], dict) or \
                not all(k in out[0] for k in ("boxes", "labels", "scores")):
            raise ValueError(f"the {self.arch} model returned {type(out).__name__}; expected torchvision's detection "
                             "output, a list of one dict with 'boxes', 'labels', 'scores'")
        o = out[0]
        boxes, labels, scores = (torch.as_tensor(o[k]).detach().to("cpu") for k in ("boxes", "labels", "scores"))
        if boxes.dim() != 2 or boxes.shape[1] != 4 or labels.shape != scores.shape or \
                labels.shape[0] != boxes.shape[0]:
            raise ValueError(f"the {self.arch} model returned boxes {tuple(boxes.shape)}, labels "
                             f"{tuple(labels.shape)}, scores {tuple(scores.shape)}; expected [n, 4], [n], [n]")
        keep = (labels == self.person_label) & (scores >= self.score_thresh)
        return _sorted_boxes(boxes[keep], scores[keep], f"the {self.arch} model")

    def __repr__(self) -> str:
        return f"TorchvisionDetector({self.arch!r}, weights={self.weights!r}, device={self.device})"


# ------------------------------------------------------------------ Ultralytics YOLO


class UltralyticsDetector:
    """An Ultralytics YOLO model file (``yolov8n.pt``, ``yolo11s.pt``, an exported ``.onnx``, ...) as a person
    detector: ``ultralytics.YOLO(model_file)``, called on the BGR frame (Ultralytics takes numpy frames as
    BGR, as OpenCV reads them) with ``classes=[person_class]`` (0 in COCO-80), ``conf`` and ``device``;
    the first result's ``boxes.xyxy``, ``boxes.conf``, ``boxes.cls`` are read (rows of other classes are
    dropped as well). ``score_thresh``: the ``conf`` passed (0: Ultralytics' default, 0.25).
    ``ultralytics`` is imported only here (``pip install ultralytics``)."""

    def __init__(self, model_file: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu",
                 score_thresh: float = 0.0, person_class: int = 0, imgsz: Optional[int] = None):
        path = pathlib.Path(os.fspath(model_file))
        if not path.is_file():
            raise FileNotFoundError(f"YOLO model file {str(path)!r} does not exist")
        self.score_thresh = _check_thresh(score_thresh)
        if not 0.0 <= self.score_thresh < 1.0:
            raise ValueError(f"score_thresh must lie in [0, 1) for a YOLO model, got {score_thresh}")
        if imgsz is not None and int(imgsz) < 32:
            raise ValueError(f"imgsz must be at least 32, got {imgsz}")
        self.model_file, self.person_class, self.imgsz = path, int(person_class), imgsz
        self.device = str(device)
        try:
            from ultralytics import YOLO
        except ImportError as e:
            raise ImportError(f"a YOLO detector needs the ultralytics package (pip install ultralytics): {e}") from e
        self.model = YOLO(str(path))

    def __call__(self, frame) -> FrameBoxes:
        """The person boxes of one frame (see the module docstring)."""
        img = _frame_array(frame)
        kw = dict(classes=[self.person_class], device=self.device, verbose=False)
        if self.score_thresh > 0:
            kw["conf"] = self.score_thresh
        if self.imgsz is not None:
            kw["imgsz"] = int(self.imgsz)
        results = self.model.predict(img, **kw)
        if not results:
            return _empty_boxes()
        b = getattr(results[0], "boxes", None)
        if b is None:
            return _empty_boxes()

        def arr(v, name):
            if v is None:
                raise ValueError(f"the YOLO model's result has no boxes.{name}")
            if isinstance(v, torch.Tensor):
                return v.detach().to("cpu", torch.float32)
            return torch.as_tensor(np.asarray(v, dtype=np.float32))

        xyxy, conf, cls = (arr(getattr(b, k, None), k) for k in ("xyxy", "conf", "cls"))
        xyxy = xyxy.reshape(-1, 4) if xyxy.numel() == 0 else xyxy
        if xyxy.dim() != 2 or xyxy.shape[1] != 4 or conf.reshape(-1).shape[0] != xyxy.shape[0] or \
                cls.reshape(-1).shape[0] != xyxy.shape[0]:
            raise ValueError(f"the YOLO model's boxes have xyxy {tuple(xyxy.shape)}, conf {tuple(conf.shape)}, cls "
                             f"{tuple(cls.shape)}; expected [n, 4], [n], [n]")
        conf, cls = conf.reshape(-1), cls.reshape(-1)
        keep = (cls.round().long() == self.person_class) & (conf >= self.score_thresh)
        return _sorted_boxes(xyxy[keep], conf[keep], "the YOLO model")

    def __repr__(self) -> str:
        return f"UltralyticsDetector({str(self.model_file)!r}, device={self.device!r})"


# ------------------------------------------------------------------ from a text


def make_detector(spec: str, *, device: Union[str, torch.device] = "cpu", score_thresh: float = 0.0):
    """A detector from ``spec`` (what ``rmpe run --detector`` takes):

    * ``"blazepose"``: :class:`BlazePoseDetector` (the shipped model; runs on the CPU whatever ``device``);
    * ``"torchvision:<arch>"``, ``"torchvision:<arch>:<weights file>"``, ``"torchvision:<arch>:DEFAULT"``:
      :class:`TorchvisionDetector` (no weights part: untrained, for tests only);
    * ``"yolo:<model file>"``: :class:`UltralyticsDetector`.

    ``score_thresh``: boxes below it are dropped (on top of each detector's own floor). Raises ValueError
    naming the spec when it is not one of these, FileNotFoundError for a missing file, ImportError when the
    detector's package is not installed."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"detector must be one of {list(DETECTOR_SPECS)}, got {spec!r}")
    thresh = _check_thresh(score_thresh)
    kind, _, rest = spec.partition(":")
    if kind == "blazepose":
        if rest:
            return BlazePoseDetector(rest, score_thresh=thresh)
        return BlazePoseDetector(score_thresh=thresh)
    if kind == "torchvision":
        arch, _, weights = rest.partition(":")
        if arch not in TORCHVISION_ARCHS:
            raise ValueError(f"detector {spec!r}: the torchvision architecture must be one of "
                             f"{sorted(TORCHVISION_ARCHS)}, got {arch!r}")
        return TorchvisionDetector(arch, weights or None, device=device, score_thresh=thresh)
    if kind in ("yolo", "ultralytics"):
        if not rest:
            raise ValueError(f"detector {spec!r}: name the YOLO model file, yolo:<model file>")
        return UltralyticsDetector(rest, device=device, score_thresh=thresh)
    raise ValueError(f"detector must be one of {list(DETECTOR_SPECS)}, got {spec!r}")
