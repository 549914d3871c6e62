"""A reference single-person pose estimator (SPPE): the stacked hourglass (Newell et al., ECCV 2016).

    net = StackedHourglass(num_joints=17, stacks=2, width=32, depth=2)
    maps = net(crops)          # crops [N, 3, H, W] float -> list of `stacks` tensors [N, 17, H/4, W/4]
    maps[-1]                   # the prediction; the earlier stacks are for intermediate supervision

Small enough to train on a CPU at 64x48 or 128x96 inputs. The stem downsamples 4 times (a stride-2
7x7 convolution and a 2x2 max pool), so the heatmaps cover the crop at a quarter of its resolution
(heatmap pixel u spans crop pixels 4u .. 4u + 3: the crop and its heatmap share one normalized frame,
``align_corners=False``, which is what :mod:`rmpe.sstn` relies on). Odd sizes are fine: every
upsampling restores the size of the skip branch it is added to.
"""
from __future__ import annotations

from typing import List

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Residual", "Hourglass", "StackedHourglass"]


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class Residual(nn.Module):
    """Pre-activation bottleneck residual block: BN-ReLU-1x1 (out/2), BN-ReLU-3x3, BN-ReLU-1x1 (out),
    plus the input (through a 1x1 convolution when the widths differ). ``[N, in, H, W] -> [N, out, H, W]``."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = max(out_channels // 2, 1)
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True), nn.Conv2d(in_channels, mid, 1, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, out_channels, 1))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.skip(x)


class Hourglass(nn.Module):
    """One hourglass of ``depth`` levels at ``width`` channels: ``[N, width, H, W] -> same shape``.
    Each level keeps a full-resolution branch and recurses on a 2x max-pooled copy, then upsamples
    (nearest, to the branch's exact size) and adds."""

    def __init__(self, depth: int, width: int):
        super().__init__()
        self.up = Residual(width, width)
        self.down = Residual(width, width)
        self.inner = Hourglass(depth - 1, width) if depth > 1 else Residual(width, width)
        self.out = Residual(width, width)

    def forward(self, x: Tensor) -> Tensor:
        up = self.up(x)
        if min(x.shape[2:]) < 2:  # too small to pool again: the level degenerates to its skip branch
            return up + self.out(self.inner(self.down(x)))
        low = self.out(self.inner(self.down(F.max_pool2d(x, 2))))
        return up + F.interpolate(low, size=up.shape[2:], mode="nearest")


class StackedHourglass(nn.Module):
    """``stacks`` hourglasses of ``depth`` levels and ``width`` channels with intermediate supervision.

    ``forward(crops [N, in_channels, H, W] float) -> list of stacks tensors [N, num_joints, H', W']``
    (exactly the size of the stem's output: ``H' = floor(ceil(H / 2) / 2)`` for a 7x7 stride-2
    convolution with padding 3 and a 2x2 pool, i.e. H/4 when 4 divides H; likewise W'). The last tensor is the
    prediction; train every one against the same target (intermediate supervision).
    """

    def __init__(self, num_joints: int = 17, stacks: int = 2, width: int = 32, depth: int = 2, in_channels: int = 3):
        super().__init__()
        self.num_joints = _positive_int(num_joints, "num_joints")
        self.stacks = _positive_int(stacks, "stacks")
        self.width = _positive_int(width, "width")
        self.depth = _positive_int(depth, "depth")
        in_channels = _positive_int(in_channels, "in_channels")
        if self.width < 4:
            raise ValueError(f"width must be at least 4, got {width}")
        half = self.width // 2
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, half, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(half),
            nn.ReLU(inplace=True), Residual(half, half), nn.MaxPool2d(2), Residual(half, half),
            Residual(half, self.width))
        self.hourglasses = nn.ModuleList(Hourglass(self.depth, self.width) for _ in range(self.stacks))
        self.features = nn.ModuleList(
            nn.Sequential(Residual(self.width, self.width), nn.Conv2d(self.width, self.width, 1, bias=False),
                          nn.BatchNorm2d(self.width), nn.ReLU(inplace=True)) for _ in range(self.stacks))
        self.heads = nn.ModuleList(nn.Conv2d(self.width, self.num_joints, 1) for _ in range(self.stacks))
        self.merge_features = nn.ModuleList(nn.Conv2d(self.width, self.width, 1) for _ in range(self.stacks - 1))
        self.merge_maps = nn.ModuleList(nn.Conv2d(self.num_joints, self.width, 1) for _ in range(self.stacks - 1))

    def forward(self, x: Tensor) -> List[Tensor]:
        if x.dim() != 4:
            raise ValueError(f"crops must have shape [N, C, H, W], got {tuple(x.shape)}")
        x = self.stem(x)
        out = []
        for s in range(self.stacks):
            feat = self.features[s](self.hourglasses[s](x))
            maps = self.heads[s](feat)
            out.append(maps)
            if s < self.stacks - 1:
                x = x + self.merge_features[s](feat) + self.merge_maps[s](maps)
        return out

    def extra_repr(self) -> str:
        return f"num_joints={self.num_joints}, stacks={self.stacks}, width={self.width}, depth={self.depth}"
