"""A real, frozen pose model as the SSTN's SPPE: MediaPipe's BlazePose landmark network in torch.

    sppe = BlazePoseSPPE()                                   # frozen BlazePoseTorch, heatmap head only
    model = SSTN(sppe, input_size=(256, 256), loc_features="sppe", loc_transform="translation")
    out = model(proposals)                                   # proposals [N, 3, 256, 256], rmpe.sstn.datasets' normalization
    out.crop_heatmaps[-1]                                    # [N, 17, 64, 64] COCO-17 joint probabilities, crop frame

:class:`BlazePoseSPPE` wraps :class:`rmpe.pipeline.models.BlazePoseTorch` (the ``pose_landmark_full.tflite``
network rebuilt in torch, built with its heatmap output only) so that it takes the crops the SSTN produces
and gives the heatmaps the SSTN's loss and decoding expect:

* **Input**: ``[N, 3, 256, 256]`` floating-point crops, RGB, normalized as :mod:`rmpe.sstn.datasets` makes
  them (``(pixel / 255 - MEAN) / STD``, ImageNet statistics; ``mean``/``std`` say otherwise). The wrapper
  undoes the normalization (``x * std + mean``: RGB in [0, 1], what BlazePose takes), a differentiable
  step, so gradients reach the crop and, through the STN's sampler, theta. An STN crop that reaches past
  the proposal is zero there (``SSTN(padding_mode="zeros")``), i.e. the ImageNet mean colour for
  BlazePose; the proposal crops themselves are black (0 before normalization) outside the image.
* **Output**: ``[N, 17, 64, 64]`` float (the parameters' dtype): the sigmoid of BlazePose's heatmap logits
  (BlazePose's own joint scores; the pipeline adapters read the same sigmoid), for the 17 COCO joints in
  COCO order (``joints``, default :data:`rmpe.pipeline.models.BLAZEPOSE_TO_COCO`), so
  ``rmpe.sstn.datasets.FLIP_PAIRS`` and the COCO evaluation apply. Values lie in [0, 1]: a zero-padded
  map (the SDTN's) means "no joint", and the Gaussian targets' peak of 1 is the same scale. BlazePose's
  blobs on real GT-box crops have a half-maximum width of about 2 heatmap cells (sigma about 2) and peaks
  of 0.4-0.7, so targets with ``sigma=2`` match their width. To train an STN through this frozen model,
  broader targets give the STN a usable gradient (a displaced crop's blobs lie several cells from the
  centred targets, where a sigma-2 Gaussian is flat): ``examples/table3a_blazepose.py`` uses ``sigma=8``.
* **Frame**: heatmap cell ``(u, v)`` covers crop pixels ``[4u, 4u + 4) x [4v, 4v + 4)``, so its centre is
  at normalized ``x_n = (2 u + 1) / 64 - 1``, the SSTN's convention (``rmpe.sstn.model``): theta applies
  to the crop and its heatmaps alike.
* **Frozen**: the BlazePose weights never get a gradient (``requires_grad`` is off, and the module stays in
  eval mode: BlazePose has no train-mode behaviour anyway). ``SSTN(parallel="shared")`` runs the same
  frozen network as the parallel SPPE: the paper's setting (a pre-trained SPPE, frozen). Gradients still
  flow through the network to its input.

Cost: the SSTN with the parallel branch and ``loc_features="sppe"`` runs the network three times per
training crop (the localization net's features without gradient, the main branch and the parallel branch
with gradients to their input); ``tools/bench_blazepose_torch.py`` times the network's forward and
forward + backward, and ``docs/sstn_training.md`` gives the run time of ``examples/table3a_blazepose.py``.

Needs the ``tflite`` package to build BlazePoseTorch from the shipped ``.tflite`` (see
:mod:`rmpe.pipeline.models.blazepose_torch`).
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..pipeline.models.blazepose import BLAZEPOSE_TO_COCO
from ..pipeline.models.blazepose_torch import BlazePoseTorch
from .datasets import MEAN, STD

__all__ = ["BlazePoseSPPE", "crop_heatmap_to_image_theta"]


def _triple(values, name: str) -> Tensor:
    try:
        t = torch.tensor([float(v) for v in values], dtype=torch.float32)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be 3 numbers (R, G, B), got {values!r}") from None
    if t.shape != (3,) or not torch.isfinite(t).all():
        raise ValueError(f"{name} must be 3 finite numbers (R, G, B), got {values!r}")
    return t


class BlazePoseSPPE(nn.Module):
    """Frozen BlazePose as an SPPE: normalized RGB crops ``[N, 3, 256, 256]`` -> COCO-17 joint
    probabilities ``[N, 17, 64, 64]`` (see the module docstring for the conventions).

    ``model_path``: the ``.tflite`` file (default: the shipped one, see
    :func:`rmpe.pipeline.models.default_blazepose_path`). ``model``: an already built
    :class:`~rmpe.pipeline.models.BlazePoseTorch` with ``"heatmap"`` among its outputs, used instead (shared,
    not copied: its parameters' ``requires_grad`` is switched off in place, which is what freezing means;
    give a copy to keep the original trainable). ``mean``/``std``: the per-channel (R, G, B) statistics the
    crops were normalized with (default ``rmpe.sstn.datasets.MEAN``/``STD``; ``(0, 0, 0)``/``(1, 1, 1)`` for
    crops already in [0, 1]). ``joints``: the BlazePose heatmap channels to return, in order (default the
    COCO-17 map). ``channels_last``: BlazePoseTorch's memory format (only with ``model_path``)."""

    input_size = (256, 256)
    heatmap_size = (64, 64)

    def __init__(self, model_path: Optional[Union[str, os.PathLike]] = None, model: Optional[BlazePoseTorch] = None,
                 mean: Sequence[float] = MEAN, std: Sequence[float] = STD, joints: Sequence[int] = BLAZEPOSE_TO_COCO,
                 channels_last: bool = True):
        super().__init__()
        if model is not None and model_path is not None:
            raise ValueError("give model_path or model, not both")
        if model is None:
            model = BlazePoseTorch(model_path, outputs=("heatmap",), channels_last=channels_last)
        elif not isinstance(model, BlazePoseTorch) or "heatmap" not in model.outputs:
            raise ValueError(f"model must be a BlazePoseTorch with a 'heatmap' output, got {model!r}")
        std_t = _triple(std, "std")
        if (std_t <= 0).any():
            raise ValueError(f"std must be positive, got {std!r}")
        try:
            idx = [int(j) for j in joints]
        except (TypeError, ValueError):
            raise ValueError(f"joints must be a sequence of heatmap channel indices, got {joints!r}") from None
        if not idx or min(idx) < 0 or max(idx) >= 39 or any(int(j) != j for j in joints):
            raise ValueError(f"joints must be a non-empty sequence of integers in [0, 39), got {joints!r}")
        self.net = model.requires_grad_(False).eval()
        self._head = model.outputs.index("heatmap")
        self.num_joints = len(idx)
        self.register_buffer("mean", _triple(mean, "mean")[:, None, None], persistent=False)
        self.register_buffer("std", std_t[:, None, None], persistent=False)
        self.register_buffer("joints", torch.tensor(idx, dtype=torch.long), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.net.eval()  # frozen (and BlazePose behaves the same in either mode)
        return self

    def forward(self, crops: Tensor) -> Tensor:
        """``crops [N, 3, 256, 256]`` float, normalized RGB -> ``[N, len(joints), 64, 64]`` probabilities in
        [0, 1], differentiable with respect to ``crops`` (NaN in a crop gives NaN in its maps)."""
        if not isinstance(crops, Tensor) or crops.dim() != 4 or tuple(crops.shape[1:]) != (3, 256, 256):
            shape = tuple(crops.shape) if isinstance(crops, Tensor) else type(crops).__name__
            raise ValueError(f"crops must be a [N, 3, 256, 256] tensor (normalized RGB), got {shape}")
        if not crops.is_floating_point():
            raise ValueError(f"crops must be a floating-point tensor, got {crops.dtype}")
        x = crops * self.std.to(crops.dtype) + self.mean.to(crops.dtype)  # RGB in [0, 1]
        logits = self.net(x)["heatmap"]
        return torch.sigmoid(logits.index_select(1, self.joints))

    def extra_repr(self) -> str:
        return f"joints={self.joints.tolist()}, frozen"


def crop_heatmap_to_image_theta(theta: Tensor, proposal_theta_px: Tensor, input_size: Sequence[int],
                                heatmap_size: Sequence[int]) -> Tensor:
    """The map ``[N, 2, 3]`` (float64) from pixels of a heatmap on the STN's **crop** (``SSTNOutput
    .crop_heatmaps``, ``heatmap_size`` = (hh, hw)) to image pixels, for ``rmpe_ext.ops.heatmap_decode``:
    heatmap pixel u -> normalized crop ``(2 u + 1) / hw - 1`` -> ``theta [N, 2, 3]`` (normalized crop ->
    normalized proposal) -> proposal pixel ``((x_n + 1) W - 1) / 2`` (``input_size`` = (H, W)) ->
    ``proposal_theta_px [N, 2, 3]`` (proposal pixels -> image pixels). Decoding the crop's maps this way is
    exact; decoding the SDTN's output (``rmpe.sstn.datasets.heatmap_to_image_theta``) gives the same points
    up to the bilinear resampling of the maps. A heatmap covers its crop whatever the crop's pixel count,
    so the crop's size does not enter."""
    if theta.dim() != 3 or tuple(theta.shape[1:]) != (2, 3):
        raise ValueError(f"theta must be [N, 2, 3], got {tuple(theta.shape)}")
    if proposal_theta_px.shape != theta.shape:
        raise ValueError(f"proposal_theta_px must be [N, 2, 3] like theta {tuple(theta.shape)}, got "
                         f"{tuple(proposal_theta_px.shape)}")
    sizes = []
    for name, s in (("input_size", input_size), ("heatmap_size", heatmap_size)):
        s = tuple(int(v) for v in s)
        if len(s) != 2 or min(s) < 1:
            raise ValueError(f"{name} must be (h, w) with h, w >= 1, got {s}")
        sizes.append(s)
    (h, w), (hh, hw) = sizes
    d = dict(dtype=torch.float64, device=theta.device)
    # heatmap px -> normalized crop: x_n = (2 / hw) u + (1 / hw - 1)
    hm_to_n = torch.tensor([[2.0 / hw, 0.0, 1.0 / hw - 1], [0.0, 2.0 / hh, 1.0 / hh - 1]], **d)
    # normalized proposal -> proposal px: u = (W / 2) x_n + (W - 1) / 2
    n_to_px = torch.tensor([[w / 2.0, 0.0, (w - 1) / 2.0], [0.0, h / 2.0, (h - 1) / 2.0]], **d)

    def compose(a, b):  # a o b (b first), [.., 2, 3]
        return torch.cat([a[..., :2] @ b[..., :2], a[..., :2] @ b[..., 2:] + a[..., 2:]], -1)

    m = compose(theta.to(**d), hm_to_n.expand(theta.shape[0], 2, 3))
    m = compose(n_to_px.expand(theta.shape[0], 2, 3), m)
    return compose(proposal_theta_px.to(**d), m)
