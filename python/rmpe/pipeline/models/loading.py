"""One entry point for every SPPE the pipeline can run: :func:`load_pose_model`.

    from rmpe.pipeline.models import load_pose_model
    model = load_pose_model("blazepose")                  # the shipped BlazePose landmark model (LiteRT)
    model = load_pose_model("runs/sstn/last.pt")          # an `rmpe train` checkpoint (SSTN + SPPE)
    model = load_pose_model("fast_res50_256x192.pth")     # AlphaPose's FastPose checkpoint
    model = load_pose_model("sppe.pt", input_size=(256, 192))   # a TorchScript / torch.export file

What a file is, is read from its contents, not its name (see :func:`load_pose_model`). Files are read with
``torch.load(weights_only=True)`` (numpy's array reconstructors allowed, for the RNG state in ``rmpe train``
checkpoints): a ``--model`` file never runs code.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from typing import Any, Mapping, Union

import torch
from torch import Tensor, nn

from .torch_model import TorchHeatmapModel, load_torch_model

__all__ = ["load_pose_model", "SSTNModel", "load_sstn_checkpoint", "is_rmpe_checkpoint", "POSE_MODEL_SPECS"]

POSE_MODEL_SPECS = ("blazepose", "blazepose-torch", "<.tflite file>", "<TorchScript or torch.export (.pt2) file>",
                    "<rmpe train checkpoint>", "<AlphaPose FastPose checkpoint>")


# ------------------------------------------------------------------ rmpe train checkpoints


def is_rmpe_checkpoint(obj: Any) -> bool:
    """Whether ``obj`` (a loaded checkpoint) is what :class:`rmpe.sstn.trainer.Trainer` saves: a dict with the
    SSTN's ``model`` state_dict and the ``config`` whose ``extra`` holds the architecture (``rmpe train``)."""
    return (isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping) and "epoch" in obj
            and isinstance(obj.get("config"), Mapping) and isinstance(obj["config"].get("extra"), Mapping)
            and any(str(k).startswith("sppe.") for k in obj["model"]))


class _SSTNHeatmaps(nn.Module):
    """The SSTN at test time (STN -> SPPE -> SDTN): the last stack's heatmaps in the proposal's frame."""

    def __init__(self, sstn: nn.Module):
        super().__init__()
        self.sstn = sstn

    def forward(self, x: Tensor) -> Tensor:
        return self.sstn(x).heatmaps[-1]


class _LastStack(nn.Module):
    """An SPPE alone (no STN): its last stack's heatmaps, in the crop's frame."""

    def __init__(self, sppe: nn.Module):
        super().__init__()
        self.sppe = sppe

    def forward(self, x: Tensor) -> Tensor:
        out = self.sppe(x)
        return out[-1] if isinstance(out, (list, tuple)) else out


class SSTNModel(TorchHeatmapModel):
    """An ``rmpe train`` model as a pipeline SPPE: the proposal crop (``input_size`` from the checkpoint, RGB,
    ImageNet mean/std as :mod:`rmpe.sstn.datasets` makes them; the ``"alphapose"`` box preset, x1.25 with the
    aspect fix, as the training crops), through the STN, the SPPE and the SDTN back into the proposal's
    frame (``stn=True``, the paper's test-time network) or through the SPPE alone (``stn=False``).

    Heatmaps cover their crop in torch's normalized frame (``align_corners=False``): heatmap pixel ``u`` of
    ``w'`` is crop pixel ``(u + 1/2) w / w' - 1/2`` (:func:`rmpe.sstn.datasets.heatmap_to_image_theta`), i.e.
    the adapter's ``heatmap_offset = 1/2 - w' / (2 w)`` (3/8 for the hourglass' stride 4). No activation
    (Gaussian targets: the peak is the score).
    """

    def __init__(self, sstn: nn.Module, stn: bool = True, device: Union[str, torch.device] = "cpu", **kwargs):
        from ...sstn.datasets import MEAN, STD, heatmap_size_for

        input_size = tuple(int(s) for s in sstn.input_size)
        if tuple(sstn.crop_size) != input_size:
            raise ValueError(f"an SSTN whose STN crop size {tuple(sstn.crop_size)} differs from its input size "
                             f"{input_size} cannot serve as an SPPE here")
        hh, hw = heatmap_size_for(input_size)
        if input_size[0] / hh != input_size[1] / hw:
            raise ValueError(f"heatmaps {hh}x{hw} of {input_size} crops are not one stride both ways")
        module = _SSTNHeatmaps(sstn) if stn else _LastStack(sstn.sppe)
        settings = dict(input_size=input_size, mean=MEAN, std=STD, channel_order="RGB", box_preset="alphapose",
                        heatmap_offset=0.5 - hw / (2.0 * input_size[1]), heatmap_activation=None)
        settings.update(kwargs)
        self.stn = bool(stn)
        super().__init__(module, device=device, **settings)

    def __repr__(self) -> str:
        return f"SSTNModel(input_size={self.input_size}, stn={self.stn}, device={self.device})"


def load_sstn_checkpoint(checkpoint: Any, stn: bool = True, device: Union[str, torch.device] = "cpu",
                         what: str = "checkpoint", **kwargs) -> SSTNModel:
    """An :class:`SSTNModel` from an ``rmpe train`` checkpoint (a path or the loaded dict): the SSTN is rebuilt
    from the checkpoint's own ``config["extra"]`` (``input_size``, ``stacks``, ``width``, ``depth``,
    ``loc_features``, ``loc_transform``; the localization network's width from its weights), without the
    parallel branch (training only), and its weights loaded with ``strict=True``."""
    from ...sstn import SSTN
    from ...sstn.hourglass import StackedHourglass

    if isinstance(checkpoint, (str, os.PathLike)):
        what = f"checkpoint {os.fspath(checkpoint)!r}"
        checkpoint = _torch_load(os.fspath(checkpoint), what)
    if not is_rmpe_checkpoint(checkpoint):
        raise ValueError(f"{what} is not an rmpe train checkpoint (a dict with 'model', 'config' and 'epoch')")
    extra = checkpoint["config"]["extra"]
    sd = {k: v for k, v in checkpoint["model"].items() if not str(k).startswith("parallel_sppe.")}
    try:
        input_size = tuple(int(s) for s in extra["input_size"])
        stacks, width, depth = int(extra["stacks"]), int(extra["width"]), int(extra["depth"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{what}: config['extra'] lacks the architecture ({e}): input_size, stacks, width, "
                         "depth") from None
    loc_features = extra.get("loc_features", "resnet")
    stem = sd.get("loc_net.backbone.stem.0.weight")
    loc_width = int(stem.shape[0]) if isinstance(stem, Tensor) and stem.dim() == 4 else 16
    joints = 17
    try:
        sppe = StackedHourglass(joints, stacks, width, depth)
        model = SSTN(sppe, input_size=input_size, parallel=None, loc_features=loc_features, loc_width=loc_width,
                     loc_transform=extra.get("loc_transform", "affine"))
    except ValueError as e:
        raise ValueError(f"{what}: its architecture cannot be built: {e}") from None
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{what}: the weights do not fit the SSTN of its config: "
                         f"{' '.join(str(e).split())[:300]}") from None
    return SSTNModel(model.eval(), stn=stn, device=device, **kwargs)


# ------------------------------------------------------------------ files


def _numpy_safe_globals():
    """numpy's array/dtype reconstructors (data only), so ``weights_only`` loads read the numpy RNG state that
    ``rmpe train`` checkpoints hold."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    out = [_reconstruct, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    for name in ("UInt32DType", "Int64DType", "Float64DType", "Float32DType"):
        if dtypes is not None and hasattr(dtypes, name):
            out.append(getattr(dtypes, name))
    return out


def _torch_load(path: str, what: str):
    """``torch.load(weights_only=True)`` of a file saved with ``torch.save`` (a zip archive, or the legacy
    pickle format); ValueError with one line naming the file otherwise."""
    with open(path, "rb") as f:
        head = f.read(2)
    if not zipfile.is_zipfile(path) and head[:1] != b"\x80":  # neither torch.save's zip nor a pickle
        raise ValueError(f"{what} is not a model rmpe can load: not a torch file, nor a .tflite model")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = " ".join(str(e).split())
        detail = msg.split("WeightsUnpickler error:", 1)[1].strip() if "WeightsUnpickler error:" in msg else msg
        raise ValueError(f"{what} holds objects other than tensors and plain data (rmpe reads model files with "
                         f"torch.load(weights_only=True), which runs no code): {detail[:160]}") from None
    except Exception as e:  # zip, torch errors (a truncated file...): one line
        msg = " ".join(str(e).split())
        raise ValueError(f"{what} could not be read as a torch checkpoint: {type(e).__name__}: {msg[:200]}") from None


def _is_torchscript(path: str) -> bool:
    """A ``torch.jit.save`` archive: a zip whose records hold ``code/`` and ``constants.pkl``."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _is_tflite(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(8)
    return len(head) == 8 and head[4:8] == b"TFL3"


def load_pose_model(spec: Union[str, os.PathLike], **adapter_kwargs):
    """A pipeline SPPE adapter (:class:`rmpe.pipeline.models.PoseModel`) from ``spec``:

    * ``"blazepose"``: :class:`BlazePoseModel` (the shipped landmark model, ai-edge-litert);
    * ``"blazepose-torch"``: :class:`BlazePoseTorchModel` (the same model in torch, batched);
    * a file, recognised by its contents:

      - a TFLite flatbuffer (``TFL3``): :class:`BlazePoseModel` on that file;
      - a ``torch.export`` program (``.pt2``) or a TorchScript archive: :func:`load_torch_model` (its
        preprocessing from ``adapter_kwargs``; AlphaPose's by default);
      - an ``rmpe train`` checkpoint (``{"model", "config", "epoch", ...}``): :func:`load_sstn_checkpoint`
        (``stn=False`` in ``adapter_kwargs``: the SPPE alone);
      - an AlphaPose FastPose checkpoint (a state_dict with ``conv_out.weight``, plain or wrapped):
        :class:`FastPoseModel` (loaded with ``strict=True``).

    ``adapter_kwargs`` go to the adapter (e.g. ``device``, ``num_threads`` for LiteRT, ``dtype``).
    Raises FileNotFoundError for a missing file and ValueError with one line naming the file otherwise.
    """
    from .blazepose import BlazePoseModel
    from .blazepose_torch import BlazePoseTorchModel
    from .fastpose import FastPoseModel, fastpose_state_dict

    if isinstance(spec, str) and spec == "blazepose":
        return BlazePoseModel(**adapter_kwargs)
    if isinstance(spec, str) and spec == "blazepose-torch":
        return BlazePoseTorchModel(**adapter_kwargs)
    if not isinstance(spec, (str, os.PathLike)) or not os.fspath(spec):
        raise ValueError(f"model must be one of {list(POSE_MODEL_SPECS)}, got {spec!r}")
    path = os.fspath(spec)
    what = f"model file {path!r}"
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} does not exist (model: 'blazepose', 'blazepose-torch' or a model file)")
    if not os.path.isfile(path):
        raise ValueError(f"{what} is not a file")
    if _is_tflite(path):
        return BlazePoseModel(path, **adapter_kwargs)
    if path.endswith(".pt2") or _is_torchscript(path):
        return load_torch_model(path, **adapter_kwargs)
    obj = _torch_load(path, what)
    if is_rmpe_checkpoint(obj):
        return load_sstn_checkpoint(obj, what=what, **adapter_kwargs)
    try:
        sd = fastpose_state_dict(obj)
    except ValueError:
        sd = None
    if sd is not None:
        try:
            return FastPoseModel.from_checkpoint(sd, **adapter_kwargs)
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None
    if isinstance(obj, Mapping):
        keys = list(obj)
        shown = ", ".join(map(repr, keys[:5])) + (", ..." if len(keys) > 5 else "")
        found = f"a dict with keys {shown or 'none'}"
    else:
        found = f"a {type(obj).__name__}"
    raise ValueError(f"{what} is not a model rmpe can load ({found}): expected an rmpe train checkpoint, an "
                     "AlphaPose FastPose checkpoint, a TorchScript or torch.export file, or a .tflite model")
