"""torch.nn modules around the affine operators, to slot into a model.

* :class:`AffineSampler`: the STN's sampler (crops through normalized thetas).
* :class:`SDTN`: the spatial de-transformer: warps what the network produced
  in crop space back with gamma = theta^-1 (paper Eqs. 2-6), with gradients to
  theta through gamma.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from .ops.affine import affine_grid_sample, affine_inverse

__all__ = ["AffineSampler", "SDTN"]


class AffineSampler(nn.Module):
    """``input [B, C, H, W]``, normalized ``theta [N, 2, 3]`` (F.affine_grid's convention),
    optional ``batch_index [N]`` -> crops ``[N, C, h, w]``; bilinear, differentiable in
    the input and theta. See :func:`rmpe_ext.ops.affine_grid_sample`."""

    def __init__(self, size: Sequence[int], align_corners: bool = False, padding_mode: str = "zeros",
                 value: float = 0.0):
        super().__init__()
        self.size = tuple(int(s) for s in size)
        self.align_corners, self.padding_mode, self.value = align_corners, padding_mode, value

    def forward(self, input: Tensor, theta: Tensor, batch_index: Optional[Tensor] = None) -> Tensor:
        return affine_grid_sample(input, theta, self.size, batch_index, self.align_corners, self.padding_mode,
                                  self.value, check=False)

    def extra_repr(self) -> str:
        return f"size={self.size}, align_corners={self.align_corners}, padding_mode={self.padding_mode!r}"


class SDTN(nn.Module):
    """Spatial de-transformer network (paper section 3.1): ``maps [N, C, h, w]`` computed
    on crops taken with normalized ``theta [N, 2, 3]`` are warped back to the frame of
    the crop's input with ``gamma = theta^-1``, at ``size`` (default: the maps' size).

    Normalized coordinates make this exact for any sizes: output point u of the
    de-transformed map reads the crop at gamma(u). Gradients reach theta through the
    inverse (Eqs. 5-6) and the sampler."""

    def __init__(self, size: Optional[Sequence[int]] = None, align_corners: bool = False,
                 padding_mode: str = "zeros"):
        super().__init__()
        self.size = None if size is None else tuple(int(s) for s in size)
        self.align_corners, self.padding_mode = align_corners, padding_mode

    def forward(self, maps: Tensor, theta: Tensor) -> Tensor:
        gamma = affine_inverse(theta, check=False)
        size = self.size or tuple(maps.shape[2:])
        return affine_grid_sample(maps, gamma, size, None, self.align_corners, self.padding_mode, check=False)

    def extra_repr(self) -> str:
        return f"size={self.size}, align_corners={self.align_corners}, padding_mode={self.padding_mode!r}"
