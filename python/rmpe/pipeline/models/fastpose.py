"""AlphaPose's FastPose (SE-ResNet-50 + two DUC upsamplers) as a torch module that loads AlphaPose's checkpoints.

:class:`FastPose` is the network of AlphaPose's ``FastPose`` model class (config
``configs/coco/resnet/256x192_res50_lr1e-3_1x.yaml``, checkpoint ``fast_res50_256x192.pth``, 17 COCO joints;
``configs/halpe_26/resnet/256x192_res50_lr1e-3_1x.yaml``, ``halpe26_fast_res50_256x192.pth``, Halpe-26),
written here from its description (no AlphaPose code): its ``state_dict`` has AlphaPose's parameter names,
shapes, dtypes and registration order, so AlphaPose's files load with ``strict=True``.
:func:`load_fastpose` reads such a file; :class:`FastPoseModel` is the pipeline adapter with AlphaPose's
preprocessing.

The network (input ``[N, 3, 256, 192]``, output ``[N, J, 64, 48]``; eval mode, BatchNorm eps 1e-5):

* ``preact``: ResNet-50 (stem: conv 7x7/2 without bias, BN, ReLU, max-pool 3x3/2; bottleneck stages of
  3, 4, 6, 3 blocks, widths 64/128/256/512, expansion 4, the stride on the 3x3 convolution) with a
  squeeze-excitation layer in the **first block of each stage only** (the block with the projection
  shortcut ``downsample``), of reduction 1: global average pool -> Linear(C, C) -> ReLU -> Linear(C, C)
  -> sigmoid, scaling the ``bn3`` output before the residual addition. 2048 x 8 x 6.
* ``PixelShuffle(2)``: 512 x 16 x 12.
* ``duc1``, ``duc2``: conv 3x3 (padding 1, no bias), BN, ReLU, ``PixelShuffle(2)``: 512 -> 1024 -> 256 x
  32 x 24, then 256 -> 512 -> 128 x 64 x 48.
* ``conv_out``: conv 3x3 (padding 1, with bias) 128 -> J. No output activation (the heatmaps are scores).

Checked against AlphaPose master (commit c60106d) through the shared oracle
(``shared/data/alphapose_master``: state_dict schema, a deterministic weight fill, 8 real crops and
AlphaPose's heatmaps for J = 17 and 26): see ``tests/rmpe/test_fastpose.py``. Only this configuration
(ResNet-50, 128 output features, no deformable convolutions) is implemented: a checkpoint of another
FastPose variant (``FastPose_DUC``, DCN, ResNet-101/152, ``CONV_DIM`` 256) is refused by the strict load.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from rmpe_ext.alphapose import ALPHAPOSE_MEAN

from .torch_model import TorchHeatmapModel

__all__ = ["FastPose", "FastPoseModel", "load_fastpose", "fastpose_state_dict"]

_STAGES = (3, 4, 6, 3)  # ResNet-50
_WIDTHS = (64, 128, 256, 512)
_EXPANSION = 4
_BN_EPS = 1e-5


class _SqueezeExcite(nn.Module):
    """Channel gate of reduction 1: ``x * sigmoid(W2 relu(W1 mean_hw(x) + b1) + b2)``; keys ``fc.0``, ``fc.2``."""

    def __init__(self, channels: int):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(inplace=True),
                                nn.Linear(channels, channels), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        n, c = x.shape[:2]
        gate = self.fc(self.avg_pool(x).view(n, c)).view(n, c, 1, 1)
        return x * gate


class _Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 (x4 channels), BN after each; an optional SE gate on the ``bn3`` output
    and an optional projection shortcut (``downsample``: conv 1x1 with the stride, BN)."""

    def __init__(self, in_ch: int, width: int, stride: int = 1, project: bool = False, se: bool = False):
        super().__init__()
        out_ch = width * _EXPANSION
        # registration order matters for state_dict() order: conv1 bn1 conv2 bn2 conv3 bn3 se downsample
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=_BN_EPS)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width, eps=_BN_EPS)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch, eps=_BN_EPS)
        self.relu = nn.ReLU(inplace=True)
        if se:
            self.se = _SqueezeExcite(out_ch)
        else:
            self.se = None
        if project:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out_ch, eps=_BN_EPS))
        else:
            self.downsample = None

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        if self.se is not None:
            y = self.se(y)
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(y + shortcut)


class _SEResNet50(nn.Module):
    """FastPose's backbone ``preact``: ResNet-50 with an SE gate in each stage's first block (no classifier)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=_BN_EPS)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = 64
        for s, (blocks, width) in enumerate(zip(_STAGES, _WIDTHS)):
            stride = 1 if s == 0 else 2
            layers = []
            for b in range(blocks):
                first = b == 0
                project = first and (stride != 1 or in_ch != width * _EXPANSION)
                layers.append(_Bottleneck(in_ch, width, stride if first else 1, project=project, se=project))
                in_ch = width * _EXPANSION
            setattr(self, f"layer{s + 1}", nn.Sequential(*layers))

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class _DUC(nn.Module):
    """Dense upsampling convolution: conv 3x3 (no bias), BN, ReLU, ``PixelShuffle(2)`` (``out_ch / 4`` channels, 2x size)."""

    def __init__(self, in_ch: int, out_ch: int, upscale: int = 2):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=_BN_EPS)
        self.relu = nn.ReLU(inplace=True)
        self.pixel_shuffle = nn.PixelShuffle(upscale)

    def forward(self, x: Tensor) -> Tensor:
        return self.pixel_shuffle(self.relu(self.bn(self.conv(x))))


class FastPose(nn.Module):
    """AlphaPose's FastPose (ResNet-50, 128 features): ``[N, 3, 256, 192]`` crops -> ``[N, num_joints, 64, 48]``.

    Parameter names are AlphaPose's (``preact.layer1.0.se.fc.0.weight``, ``duc1.bn.running_var``,
    ``conv_out.bias``, ...), so ``load_state_dict(alphapose_state_dict, strict=True)`` works. Weights are
    torch's default initialisation (AlphaPose's own starts the backbone from ImageNet weights; load a
    checkpoint with :func:`load_fastpose`). Any input size divisible by 32 works (output: a quarter of it).
    """

    def __init__(self, num_joints: int = 17):
        super().__init__()
        if int(num_joints) <= 0:
            raise ValueError(f"num_joints must be positive, got {num_joints}")
        self.num_joints = int(num_joints)
        self.preact = _SEResNet50()
        self.shuffle1 = nn.PixelShuffle(2)
        self.duc1 = _DUC(512, 1024)
        self.duc2 = _DUC(256, 512)
        self.conv_out = nn.Conv2d(128, self.num_joints, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_out(self.duc2(self.duc1(self.shuffle1(self.preact(x)))))


def fastpose_state_dict(checkpoint) -> "OrderedDict[str, Tensor]":
    """The FastPose state_dict inside ``checkpoint`` (a dict): AlphaPose saves the plain state_dict; a dict
    holding it under ``'state_dict'`` or ``'model'`` is unwrapped, and a ``'module.'`` prefix on every key
    (``nn.DataParallel`` / DDP) is removed. Raises ValueError when no such dict is found."""
    sd = checkpoint
    for _ in range(3):  # e.g. {'model': {'state_dict': ...}}
        if isinstance(sd, Mapping) and "conv_out.weight" not in sd and "module.conv_out.weight" not in sd:
            inner = next((sd[k] for k in ("state_dict", "model") if isinstance(sd.get(k), Mapping)), None)
            if inner is None:
                break
            sd = inner
    if not isinstance(sd, Mapping):
        raise ValueError(f"a FastPose checkpoint is a state_dict (a dict of tensors), got {type(checkpoint).__name__}")
    keys = list(sd)
    if keys and all(k.startswith("module.") for k in keys):
        sd = OrderedDict((k[len("module."):], v) for k, v in sd.items())
    if "conv_out.weight" not in sd:
        shown = ", ".join(map(repr, keys[:5])) + (", ..." if len(keys) > 5 else "")
        raise ValueError(f"not a FastPose state_dict: no 'conv_out.weight' (keys: {shown or 'none'})")
    return OrderedDict(sd)


def load_fastpose(path_or_state_dict, num_joints: Optional[int] = None,
                  map_location: Union[str, torch.device] = "cpu") -> FastPose:
    """A :class:`FastPose` in eval mode holding the weights of an AlphaPose checkpoint.

    ``path_or_state_dict``: a file saved with ``torch.save`` (AlphaPose's ``fast_res50_256x192.pth``,
    ``halpe26_fast_res50_256x192.pth``, ...) or the loaded object (see :func:`fastpose_state_dict` for
    the forms taken). ``num_joints``: inferred from ``conv_out.weight``; when given it must agree.
    The state_dict is loaded with ``strict=True``; a file of another FastPose variant raises ValueError
    naming the keys that differ. Files are read with ``torch.load(weights_only=True)``.
    """
    ckpt = path_or_state_dict
    if isinstance(ckpt, (str, os.PathLike)):
        path = os.fspath(ckpt)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"FastPose checkpoint {path!r} does not exist")
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    sd = fastpose_state_dict(ckpt)
    w = sd["conv_out.weight"]
    if not isinstance(w, Tensor) or w.dim() != 4:
        raise ValueError(f"conv_out.weight must be a 4-D tensor [J, 128, 3, 3], got "
                         f"{tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__}")
    j = int(w.shape[0])
    if num_joints is not None and int(num_joints) != j:
        raise ValueError(f"num_joints={num_joints} but the checkpoint's conv_out.weight has {j} output channels")
    model = FastPose(j)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"the checkpoint is not the FastPose implemented here (ResNet-50, 128 features, no DCN): "
                         f"{str(e).strip()}") from None
    return model.eval()


# Halpe-26, Halpe-136 and COCO-WholeBody-133 all start with COCO-17 in COCO order
_COCO17_FIRST = (26, 133, 136)


class FastPoseModel(TorchHeatmapModel):
    """:class:`FastPose` as a pipeline SPPE with AlphaPose's preprocessing: 256x192 RGB crops, ``pixel / 255 -
    ALPHAPOSE_MEAN`` (std 1), float32, the ``"alphapose"`` box preset, heatmap pixel ``u`` = crop pixel
    ``u * 192 / 48`` (offset 0), no activation (the peak is the score).

    ``module``: a :class:`FastPose` (or any module with its input and output). ``joint_map``: default COCO-17
    itself for 17 joints and the first 17 heatmaps for Halpe-26 (and 133/136 layouts); other joint counts
    need it. ``kwargs``: other :class:`TorchHeatmapModel` settings (e.g. ``dtype``).
    """

    def __init__(self, module: nn.Module, device: Union[str, torch.device] = "cpu",
                 joint_map: Optional[Sequence[int]] = None, **kwargs):
        num_joints = int(getattr(module, "num_joints", 17))
        if joint_map is None and num_joints != 17:
            if num_joints not in _COCO17_FIRST:
                raise ValueError(f"a FastPose of {num_joints} joints needs joint_map (17 indices of COCO-17's joints)")
            joint_map = tuple(range(17))
        settings = dict(input_size=(256, 192), mean=ALPHAPOSE_MEAN, std=(1.0, 1.0, 1.0), channel_order="RGB",
                        box_preset="alphapose", heatmap_offset=0.0, heatmap_activation=None)
        settings.update(kwargs)
        super().__init__(module, num_joints=num_joints, joint_map=joint_map, device=device, **settings)

    @classmethod
    def from_checkpoint(cls, path_or_state_dict, device: Union[str, torch.device] = "cpu",
                        num_joints: Optional[int] = None, **kwargs) -> "FastPoseModel":
        """The adapter over :func:`load_fastpose` ``(path_or_state_dict, num_joints)``, on ``device``."""
        return cls(load_fastpose(path_or_state_dict, num_joints=num_joints), device=device, **kwargs)

    def __repr__(self) -> str:
        return f"FastPoseModel(num_joints={self.num_joints}, device={self.device})"
