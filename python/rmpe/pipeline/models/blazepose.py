"""MediaPipe's BlazePose landmark model (``pose_landmark_full.tflite``, mediapipe 0.10.21) as a pipeline SPPE.

The model takes one ``1x256x256x3`` float32 RGB crop in [0, 1] and has five outputs; the one of shape
``1x64x64x39`` is a heatmap per BlazePose landmark (33 body landmarks + 6 auxiliary ones) holding
**logits** (from about -98 to 3 on the 118 crops of ``data/coco4``), so a joint's score is the sigmoid of
its peak. Heatmap cell ``(u, v)`` covers crop pixels ``[4u, 4u + 4)``; the team's proposals
(``make_blazepose_proposals.py``) read it at its centre, crop pixel ``4 (u + 0.5)``: the adapter's
``heatmap_offset = 0.5``. The crop is the box's square (the longer side) enlarged 1.25 times about its
centre, i.e. the AlphaPose box preset at a 256x256 input.

Needs ``ai-edge-litert`` (an optional dependency: ``pip install ai-edge-litert``).
"""
from __future__ import annotations

import os
import pathlib
from typing import Optional, Union

import numpy as np
import torch

__all__ = ["BlazePoseModel", "BLAZEPOSE_TO_COCO", "default_blazepose_path", "shipped_model_dir"]

# BlazePose landmark -> COCO-17 joint (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles)
BLAZEPOSE_TO_COCO = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)

_MODEL_ENV = "RMPE_BLAZEPOSE_MODEL"


def shipped_model_dir() -> pathlib.Path:
    """The folder of the models shipped inside the ``rmpe`` package (package data, in the wheel as in the
    source tree): ``rmpe/data/models/blazepose/`` with ``pose_landmark_full.tflite`` (the landmark model),
    ``pose_detection.tflite`` (its person detector) and their ``LICENSE`` (Apache-2.0)."""
    # rmpe/pipeline/models/blazepose.py -> rmpe/
    return pathlib.Path(__file__).resolve().parents[2] / "data" / "models" / "blazepose"


def default_blazepose_path() -> pathlib.Path:
    """``$RMPE_BLAZEPOSE_MODEL`` if set, else the landmark model shipped with the package
    (``rmpe/data/models/blazepose/pose_landmark_full.tflite``, see :func:`shipped_model_dir`)."""
    env = os.environ.get(_MODEL_ENV)
    if env:
        return pathlib.Path(env)
    return shipped_model_dir() / "pose_landmark_full.tflite"


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        raise ImportError("the BlazePose model needs ai-edge-litert (the LiteRT interpreter): "
                          "pip install ai-edge-litert") from e
    return Interpreter


class BlazePoseModel:
    """The BlazePose landmark model's heatmap head, ``[N, 3, 256, 256]`` crops -> ``[N, 39, 64, 64]`` logits.

    ``model_path``: the ``.tflite`` file (default :func:`default_blazepose_path`). ``num_threads``: the
    interpreter's threads. ``batch``: crops per ``invoke``; the interpreter's input can be resized to a
    batch (``resize_tensor_input``) and gives the same heatmaps, but in the author's (unrecorded) timing
    it was no faster per crop than one crop at a time, so the default is 1. The interpreter runs on the
    CPU: crops on another device are copied to it and the heatmaps are returned on the crops' device.
    """

    input_size = (256, 256)
    mean = (0.0, 0.0, 0.0)
    std = (1.0, 1.0, 1.0)
    channel_order = "RGB"
    dtype = torch.float32
    num_joints = 39
    joint_map = BLAZEPOSE_TO_COCO
    box_preset = "alphapose"
    heatmap_offset = 0.5
    heatmap_activation = "sigmoid"
    device = torch.device("cpu")

    def __init__(self, model_path: Optional[Union[str, os.PathLike]] = None, num_threads: int = 1, batch: int = 1):
        Interpreter = _interpreter_class()
        path = pathlib.Path(model_path) if model_path is not None else default_blazepose_path()
        if not path.is_file():
            raise FileNotFoundError(f"BlazePose model file {str(path)!r} does not exist (set {_MODEL_ENV} or pass "
                                    "model_path)")
        if int(num_threads) < 1:
            raise ValueError(f"num_threads must be at least 1, got {num_threads}")
        if int(batch) < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        self.model_path, self.num_threads, self.batch = path, int(num_threads), int(batch)
        try:
            it = Interpreter(model_path=str(path), num_threads=self.num_threads)
            inp = it.get_input_details()
            if len(inp) != 1 or tuple(inp[0]["shape"]) != (1, 256, 256, 3):
                raise ValueError(f"expected one 1x256x256x3 input, got {[tuple(d['shape']) for d in inp]}")
            self._input = inp[0]["index"]
            if self.batch > 1:
                it.resize_tensor_input(self._input, [self.batch, 256, 256, 3])
            it.allocate_tensors()
        except ValueError as e:
            raise ValueError(f"BlazePose model file {str(path)!r}: {e}") from None
        heat = [d for d in it.get_output_details() if tuple(d["shape"][1:]) == (64, 64, 39)]
        if len(heat) != 1:
            raise ValueError(f"BlazePose model file {str(path)!r}: no single Nx64x64x39 heatmap output among "
                             f"{[tuple(d['shape']) for d in it.get_output_details()]}")
        self._heatmap = heat[0]["index"]
        self._interpreter = it

    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        """crops ``[N, 3, 256, 256]`` float RGB in [0, 1] -> heatmap logits ``[N, 39, 64, 64]`` float32, contiguous NCHW."""
        if not isinstance(crops, torch.Tensor) or crops.dim() != 4 or tuple(crops.shape[1:]) != (3, 256, 256):
            shape = tuple(crops.shape) if isinstance(crops, torch.Tensor) else type(crops).__name__
            raise ValueError(f"crops must be a [N, 3, 256, 256] tensor, got {shape}")
        n = crops.shape[0]
        x = crops.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).contiguous().numpy()
        out = np.empty((n, 39, 64, 64), np.float32)  # NCHW, filled crop by crop from the interpreter's NHWC
        it, b = self._interpreter, self.batch
        for s in range(0, n, b):
            chunk = x[s:s + b]
            m = len(chunk)
            if m < b:  # the interpreter's batch is fixed: pad the last chunk
                chunk = np.concatenate([chunk, np.zeros((b - m, 256, 256, 3), np.float32)])
            it.set_tensor(self._input, chunk)
            it.invoke()
            out[s:s + m] = it.get_tensor(self._heatmap)[:m].transpose(0, 3, 1, 2)
        return torch.from_numpy(out).to(crops.device)

    def __repr__(self) -> str:
        return f"BlazePoseModel({str(self.model_path)!r}, num_threads={self.num_threads}, batch={self.batch})"
