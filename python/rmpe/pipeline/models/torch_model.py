"""Any torch heatmap model as a pipeline SPPE (e.g. AlphaPose's FastPose: 256x192 crops -> [N, 17, 64, 48])."""
from __future__ import annotations

import os
import warnings
from typing import Optional, Sequence, Tuple, Union

import torch

from rmpe_ext.alphapose import ALPHAPOSE_MEAN

from . import _as3, check_model

__all__ = ["TorchHeatmapModel", "load_torch_model"]


class TorchHeatmapModel:
    """A torch module that maps crops ``[N, 3, h, w]`` to heatmaps ``[N, K, h', w']``.

    Defaults are AlphaPose's (``SimpleTransform.test_transform``): 256x192 RGB crops, ``pixel / 255 -
    ALPHAPOSE_MEAN``, std 1, float32, the AlphaPose box preset, heatmap pixel ``u`` = crop pixel
    ``u * w / w'``. ``num_joints`` is K (17 unless ``joint_map`` picks COCO-17 out of more).
    The module is put in eval mode (a ``torch.export`` module keeps the mode it was exported in) and
    moved to ``device`` (in place, as ``module.to`` does) and runs under ``torch.inference_mode``.
    A module that returns a tuple/list gives its first item.
    """

    def __init__(self, module: torch.nn.Module, input_size: Sequence[int] = (256, 192),
                 mean: Sequence[float] = ALPHAPOSE_MEAN, std: Sequence[float] = (1.0, 1.0, 1.0),
                 channel_order: str = "RGB", dtype: torch.dtype = torch.float32, num_joints: int = 17,
                 joint_map: Optional[Sequence[int]] = None, box_preset: str = "alphapose",
                 heatmap_offset: float = 0.0, heatmap_activation: Optional[str] = None,
                 device: Union[str, torch.device] = "cpu"):
        if not callable(module):
            raise TypeError(f"module must be a callable torch module, got {type(module).__name__}")
        self.device = torch.device(device)
        self.module = module
        if isinstance(module, torch.nn.Module):
            try:
                module.eval()
            except NotImplementedError:  # a torch.export module: exported in the mode it runs in
                pass
            module.to(self.device)
        self.input_size: Tuple[int, int] = tuple(int(s) for s in input_size)
        self.mean, self.std = _as3(mean, "mean"), _as3(std, "std")
        self.channel_order = channel_order
        self.dtype = dtype
        self.num_joints = int(num_joints)
        self.joint_map = None if joint_map is None else tuple(int(j) for j in joint_map)
        self.box_preset = box_preset
        self.heatmap_offset = float(heatmap_offset)
        self.heatmap_activation = heatmap_activation
        check_model(self)

    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        """crops ``[N, 3, h, w]`` (``self.dtype``) -> the module's heatmaps ``[N, K, h', w']``."""
        with torch.inference_mode():
            out = self.module(crops.to(self.device, self.dtype))
        if isinstance(out, (tuple, list)) and out:
            out = out[0]
        return out

    def __repr__(self) -> str:
        return (f"TorchHeatmapModel({type(self.module).__name__}, input_size={self.input_size}, "
                f"num_joints={self.num_joints}, device={self.device})")


def load_torch_model(path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu",
                     **kwargs) -> TorchHeatmapModel:
    """A :class:`TorchHeatmapModel` from a file: a ``torch.export`` program (``.pt2``) or a TorchScript
    module (any other name, ``torch.jit.save``). ``kwargs`` are the adapter's settings (input size,
    mean/std, ...). Raises FileNotFoundError / ValueError naming the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file {path!r} does not exist")
    try:
        if path.endswith(".pt2"):
            module = torch.export.load(path).module()
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load: still the way to read it
                module = torch.jit.load(path, map_location=torch.device(device))
    except Exception as e:  # torch raises RuntimeError, pickle errors, zipfile errors...
        raise ValueError(f"model file {path!r} is not a TorchScript module or torch.export program: "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    return TorchHeatmapModel(module, device=device, **kwargs)
