"""Single-person pose estimators (SPPEs) the pipeline can run: a small adapter protocol.

An adapter tells :class:`rmpe.pipeline.Pipeline` how to feed the model and how to read its output:

* ``input_size``: ``(h, w)`` of the crops, pixels.
* ``mean``, ``std``: 3 floats each; a crop value is ``(pixel / 255 - mean[c]) / std[c]``.
* ``channel_order``: ``"RGB"`` or ``"BGR"``: the channel order the model wants (frames are BGR, as
  ``cv2.imread`` gives them).
* ``dtype``: the torch dtype of the crop batch (float32, float16 or bfloat16).
* ``num_joints``: K, the number of heatmaps the model outputs.
* ``joint_map``: ``None`` (the model's K joints are COCO-17 in COCO order) or 17 indices into the K
  heatmaps, in COCO-17 order.
* ``box_preset``: the default box-to-crop map (``"alphapose"`` or ``"paper"``, see
  :mod:`rmpe.pipeline`).
* ``heatmap_offset``: heatmap pixel ``u`` stands for crop pixel ``(u + heatmap_offset) * w / w'``
  (0 for AlphaPose's convention, 0.5 for a heatmap cell's centre).
* ``heatmap_activation``: ``None`` (the heatmaps are scores: the score of a joint is its peak) or
  ``"sigmoid"`` (they are logits: the pipeline applies a sigmoid before decoding, so the score is the
  sigmoid of the peak and DARK sees non-negative maps).
* ``device``: where the model runs (crops are moved there when they are elsewhere).
* ``__call__(crops [N, C, h, w]) -> heatmaps [N, K, h', w']`` (a float torch tensor); crops are always
  channels-first; an adapter whose model wants channels-last transposes them itself.

:func:`load_pose_model` gives the adapter of a name (``"blazepose"``, ``"blazepose-torch"``) or of a model file,
recognised by its contents (an ``rmpe train`` checkpoint: :class:`SSTNModel`; AlphaPose's FastPose checkpoints:
:class:`FastPoseModel`; TorchScript / ``torch.export`` files; a ``.tflite``). The BlazePose models ship inside the
package (:func:`shipped_model_dir`).

:class:`TorchHeatmapModel` wraps any torch module (or a TorchScript / ``torch.export`` file);
:class:`BlazePoseModel` runs MediaPipe's offline BlazePose landmark model with ai-edge-litert;
:class:`BlazePoseTorchModel` runs the same model as a batched torch module (:class:`BlazePoseTorch`, built from
the ``.tflite`` at load time; needs the ``tflite`` parser package).
"""
from __future__ import annotations

from typing import Optional, Protocol, Sequence, Tuple, runtime_checkable

import torch

__all__ = ["PoseModel", "ADAPTER_ATTRS", "check_model", "check_heatmaps", "COCO17_JOINTS", "TorchHeatmapModel", "BlazePoseModel",
           "load_torch_model", "default_blazepose_path", "shipped_model_dir", "BlazePoseTorch", "BlazePoseTorchModel"]

COCO17_JOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                 "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                 "right_knee", "left_ankle", "right_ankle")

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# the attributes of an adapter (see the module docstring and :class:`PoseModel`)
ADAPTER_ATTRS = ("input_size", "mean", "std", "channel_order", "dtype", "num_joints", "joint_map", "box_preset",
                 "heatmap_offset", "heatmap_activation", "device")


@runtime_checkable
class PoseModel(Protocol):
    """What :class:`rmpe.pipeline.Pipeline` needs from an SPPE (see the module docstring)."""

    input_size: Tuple[int, int]
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    channel_order: str
    dtype: torch.dtype
    num_joints: int
    joint_map: Optional[Tuple[int, ...]]
    box_preset: str
    heatmap_offset: float
    heatmap_activation: Optional[str]
    device: torch.device

    def __call__(self, crops: torch.Tensor) -> torch.Tensor: ...


def check_model(model) -> None:
    """Raises ValueError/TypeError naming the attribute when ``model`` does not follow :class:`PoseModel`."""
    name = type(model).__name__
    for attr in ADAPTER_ATTRS:
        if not hasattr(model, attr):
            raise TypeError(f"model {name} lacks the adapter attribute {attr!r} (see rmpe.pipeline.models.PoseModel)")
    if not callable(model):
        raise TypeError(f"model {name} is not callable")
    size = tuple(model.input_size)
    if len(size) != 2 or min(int(s) for s in size) <= 0:
        raise ValueError(f"model.input_size must be (h, w) with h, w > 0, got {model.input_size}")
    for attr in ("mean", "std"):
        v = tuple(getattr(model, attr))
        if len(v) != 3:
            raise ValueError(f"model.{attr} must hold 3 numbers (one per channel), got {v}")
    if any(float(s) == 0 for s in model.std):
        raise ValueError(f"model.std must not contain 0, got {tuple(model.std)}")
    if model.channel_order not in ("RGB", "BGR"):
        raise ValueError(f"model.channel_order must be 'RGB' or 'BGR', got {model.channel_order!r}")
    if model.dtype not in _DTYPES:
        raise ValueError(f"model.dtype must be one of {_DTYPES}, got {model.dtype}")
    if int(model.num_joints) <= 0:
        raise ValueError(f"model.num_joints must be positive, got {model.num_joints}")
    if model.joint_map is None:
        if int(model.num_joints) != 17:
            raise ValueError(f"model.joint_map is needed: the model has {model.num_joints} joints, not COCO's 17")
    else:
        jm = tuple(model.joint_map)
        if len(jm) != 17 or any(not 0 <= int(j) < int(model.num_joints) for j in jm):
            raise ValueError(f"model.joint_map must hold 17 indices in [0, {model.num_joints}), got {jm}")
    if model.box_preset not in ("alphapose", "paper"):
        raise ValueError(f"model.box_preset must be 'alphapose' or 'paper', got {model.box_preset!r}")
    if model.heatmap_activation not in (None, "sigmoid"):
        raise ValueError(f"model.heatmap_activation must be None or 'sigmoid', got {model.heatmap_activation!r}")


def check_heatmaps(heatmaps, n: int, num_joints: int, who: str = "model") -> torch.Tensor:
    """``heatmaps`` must be a float tensor ``[n, num_joints, h', w']``; returns it (float32 when it was
    half precision); raises ValueError saying what the model returned otherwise."""
    if not isinstance(heatmaps, torch.Tensor):
        raise ValueError(f"{who} must return a torch tensor of heatmaps, got {type(heatmaps).__name__}")
    if heatmaps.dim() != 4:
        raise ValueError(f"{who} returned heatmaps of shape {tuple(heatmaps.shape)}; expected [N, K, h', w'] = "
                         f"[{n}, {num_joints}, h', w']")
    if heatmaps.shape[0] != n:
        raise ValueError(f"{who} returned {heatmaps.shape[0]} heatmap sets for {n} crops")
    if heatmaps.shape[1] != num_joints:
        raise ValueError(f"{who} returned heatmaps with {heatmaps.shape[1]} joints, expected num_joints = "
                         f"{num_joints} (shape {tuple(heatmaps.shape)})")
    if min(heatmaps.shape[2:]) <= 0:
        raise ValueError(f"{who} returned empty heatmaps of shape {tuple(heatmaps.shape)}")
    if not heatmaps.is_floating_point():
        raise ValueError(f"{who} returned {heatmaps.dtype} heatmaps; expected a floating dtype")
    if heatmaps.dtype in (torch.float16, torch.bfloat16):
        heatmaps = heatmaps.float()
    return heatmaps


def _as3(v: Sequence[float], name: str) -> Tuple[float, float, float]:
    t = tuple(float(x) for x in v)
    if len(t) != 3:
        raise ValueError(f"{name} must hold 3 numbers (one per channel), got {tuple(v)}")
    return t


from .torch_model import TorchHeatmapModel, load_torch_model  # noqa: E402
from .blazepose import BlazePoseModel, default_blazepose_path, shipped_model_dir  # noqa: E402
from .blazepose_torch import BlazePoseTorch, BlazePoseTorchModel  # noqa: E402
from .fastpose import FastPose, FastPoseModel, load_fastpose  # noqa: E402  (AlphaPose's FastPose and its checkpoints)
__all__ += ["FastPose", "FastPoseModel", "load_fastpose"]
from .loading import SSTNModel, load_pose_model, load_sstn_checkpoint  # noqa: E402  (any model from a name or a file)
__all__ += ["SSTNModel", "load_pose_model", "load_sstn_checkpoint"]
