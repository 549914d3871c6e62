"""Symmetric spatial transformer network (SSTN = STN + SDTN) around any SPPE, and the parallel SPPE
(RMPE paper section 3.1, docs/design.md sections 1 and 4).

    sppe = StackedHourglass(num_joints=17, stacks=1, width=32, depth=2)
    model = SSTN(sppe, input_size=(64, 48))           # localization net: a compact ResNet
    out = model(proposals)                            # proposals [N, 3, 64, 48] float
    out.heatmaps[-1]                                  # [N, 17, 16, 12], in the proposal's frame (after the SDTN)
    out.parallel                                      # the parallel SPPE's maps on the STN crop (training only)
    loss = sstn_loss(out, target, weight, centred_target, centred_weight)

Coordinates. Everything is in torch's normalized frame (``F.affine_grid``, ``align_corners=False``):
a proposal image of H x W pixels spans [-1, 1]^2, pixel column j at x_n = (2 j + 1) / W - 1. The
localization network predicts theta [N, 2, 3], which maps normalized **crop** coordinates to normalized
**proposal** coordinates (paper Eq. 1); it starts at the identity (zero last-layer weights, identity
bias). The STN samples the crop (``rmpe_ext.nn.AffineSampler``), the SPPE predicts heatmaps on it,
and the SDTN (``rmpe_ext.nn.SDTN``) warps those back with gamma = theta^-1 (paper Eqs. 3-4) through the
same sampler. A heatmap of hh x hw pixels covers its crop in the same normalized frame
(heatmap pixel u at x_n = (2 u + 1) / hw - 1; true for the hourglass' 4x stem), so theta applies to
crops and heatmaps alike whatever their sizes; the SDTN's output covers the proposal at the heatmap
resolution. Gradients reach theta through the sampler (STN) and through gamma (SDTN, Eqs. 5-6).

The parallel SPPE (training only) runs a frozen SPPE on the same STN crop, without the SDTN, against
centre-located targets (the GT pose in the frame of the GT box's own crop); its loss reaches only the
STN. ``parallel="shared"`` (default) uses the main SPPE's current weights, detached, with its own
batch statistics, so it stays the same network as the main branch as that one learns; ``"copy"`` keeps a
separate frozen copy (``requires_grad=False``, always in eval mode), refreshed by :meth:`SSTN.sync_parallel`
(the paper's setting: a pre-trained SPPE, frozen). In ``eval()`` mode, or with ``use_parallel=False``,
the parallel branch is not run at all.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rmpe_ext.nn import SDTN, AffineSampler

__all__ = ["BasicBlock", "ResNetBackbone", "SPPEFeatures", "LocalizationNet", "SSTN", "SSTNOutput", "heatmap_loss", "sstn_loss",
           "centre_displacement", "IDENTITY_THETA"]

IDENTITY_THETA = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _size2(size, name: str):
    try:
        size = tuple(int(s) for s in size)
    except TypeError:
        raise ValueError(f"{name} must be (h, w), got {size!r}") from None
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"{name} must be (h, w) with h, w >= 1, got {size}")
    return size


# ------------------------------------------------------------------ localization network


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN, ReLU, identity (or 1x1 strided conv-BN) shortcut.
    ``[N, in, H, W] -> [N, out, ceil(H / stride), ceil(W / stride)]``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x), inplace=True)


class ResNetBackbone(nn.Module):
    """A compact ResNet (the paper's localization network is a ResNet-18; torchvision is not needed):
    a stride-2 3x3 stem of ``width`` channels, then ``len(blocks)`` stages of ``blocks[i]`` basic blocks,
    each stage after the first halving the resolution and doubling the width.

    ``[N, in_channels, H, W] -> [N, width * 2**(len(blocks) - 1), H / 2**len(blocks), W / 2**len(blocks)]``
    (sizes rounded up). The spatial map is kept (not pooled): where the person is matters to the STN.
    ResNet-18 is ``blocks=(2, 2, 2, 2)``, ``width=64`` (with a larger stem)."""

    def __init__(self, in_channels: int = 3, width: int = 16, blocks: Sequence[int] = (1, 1, 1, 1)):
        super().__init__()
        blocks = tuple(int(b) for b in blocks)
        if not blocks or min(blocks) < 1:
            raise ValueError(f"blocks must be a non-empty sequence of positive block counts, got {blocks}")
        if int(width) < 1:
            raise ValueError(f"width must be positive, got {width}")
        width = int(width)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        layers, c = [], width
        for i, n in enumerate(blocks):
            out = width * 2 ** i
            for b in range(n):
                layers.append(BasicBlock(c, out, stride=2 if (b == 0 and i > 0) else 1))
                c = out
        self.layers = nn.Sequential(*layers)
        self.out_channels = c

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(self.stem(x))


class SPPEFeatures(nn.Module):
    """A localization backbone that looks through the SPPE: ``images [N, C, H, W] -> the SPPE's
    last-stack heatmaps [N, K, hh, hw]`` of the proposal itself, computed without gradient (the SPPE's
    weights are not trained through this path and its batch-norm running statistics are not moved).
    With ``LocalizationNet(head="spatial")`` the STN then learns where to centre from where the SPPE
    sees the joints: a pose-guided localization that generalizes as well as the SPPE does.

    The SPPE is held by reference, not registered as a submodule (it belongs to the :class:`SSTN`,
    which trains, moves and saves it)."""

    def __init__(self, sppe: nn.Module):
        super().__init__()
        if not isinstance(sppe, nn.Module):
            raise ValueError(f"sppe must be a torch.nn.Module, got {type(sppe).__name__}")
        self._sppe = (sppe,)

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return _detached_call(self._sppe[0], x, "SPPE")[-1]


class LocalizationNet(nn.Module):
    """The STN's localization network: ``images [N, C, H, W] -> theta [N, 2, 3]`` (normalized, crop ->
    input, ``F.affine_grid``'s convention), **initialized to the identity**.

    ``backbone``: any module mapping the image batch to features; default :class:`ResNetBackbone`
    (``width``, ``blocks``). Two heads:

    * ``head="fc"`` (the classic STN): the features flattened (any shape ``[N, ...]``; ``feature_dim``
      is measured by one pass on zeros of ``input_size`` when omitted), a hidden layer of ``hidden``
      units, a linear layer to the 6 numbers of theta with zero weights and bias ``(1, 0, 0, 0, 1, 0)``.
    * ``head="spatial"`` (default; needs ``[N, C, h, w]`` features): a spatial soft-argmax per feature
      channel (Levine et al., JMLR 2016: each channel's softmax over positions, times ``beta``, gives
      its expected normalized position, ``align_corners=False`` pixel centres), a linear layer from
      those C points to theta's translation, and a linear layer on the average-pooled features to its
      2x2 part (as ``I + Linear``). Both start at zero: theta starts at the identity. Locating by where
      feature channels fire is meant to generalize from fewer persons than a regression from flattened
      features (in an experiment during development, not recorded here, the ``fc`` head trained on the
      GT displacement of 124 COCO persons memorized its training persons).

    ``transform`` (``head="spatial"`` only) restricts theta: ``"affine"`` (default: all six numbers),
    ``"scale"`` (translation plus one log-scale per axis, ``theta = [[exp(sx), 0, tx], [0, exp(sy), ty]]``,
    the log-scales a linear function of the same points as the translation: no rotation or shear, and
    theta is never singular) or ``"translation"`` (``theta = [[1, 0, tx], [0, 1, ty]]``). All start at
    the identity. ``beta``: the soft-argmax' inverse temperature (for SPPE heatmaps, whose peaks are
    about 1, 10-20 suits).
    """

    def __init__(self, input_size: Sequence[int] = (64, 48), backbone: Optional[nn.Module] = None,
                 feature_dim: Optional[int] = None, hidden: int = 64, width: int = 16,
                 blocks: Sequence[int] = (1, 1, 1, 1), in_channels: int = 3, head: str = "spatial",
                 beta: float = 10.0, transform: str = "affine"):
        super().__init__()
        if head not in ("fc", "spatial"):
            raise ValueError(f"head must be 'fc' or 'spatial', got {head!r}")
        if transform not in ("affine", "scale", "translation"):
            raise ValueError(f"transform must be 'affine', 'scale' or 'translation', got {transform!r}")
        if head == "fc" and transform != "affine":
            raise ValueError(f"transform={transform!r} needs head='spatial'")
        if not (float(beta) > 0 and float(beta) < float("inf")):
            raise ValueError(f"beta must be positive and finite, got {beta}")
        self.transform = transform
        self.input_size = _size2(input_size, "input_size")
        self.head_kind = head
        self.backbone = backbone if backbone is not None else ResNetBackbone(in_channels, width, blocks)
        was_training = self.backbone.training
        self.backbone.eval()
        with torch.no_grad():
            feats = self.backbone(torch.zeros(1, in_channels, *self.input_size))
        self.backbone.train(was_training)
        if head == "fc":
            if feature_dim is None:
                feature_dim = feats[0].numel()
            if int(feature_dim) < 1 or int(hidden) < 1:
                raise ValueError(f"feature_dim and hidden must be positive, got {feature_dim}, {hidden}")
            self.feature_dim = int(feature_dim)
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(self.feature_dim, int(hidden)), nn.ReLU(inplace=True))
            self.fc = nn.Linear(int(hidden), 6)
        else:
            if feats.dim() != 4:
                raise ValueError(f"head='spatial' needs a backbone giving [N, C, h, w] features, got {tuple(feats.shape)}")
            channels = feats.shape[1] if feature_dim is None else int(feature_dim)
            self.feature_dim = int(channels)
            self.beta = float(beta)
            self.points = nn.Linear(2 * self.feature_dim, 2)
            self.fc = nn.Linear(2 * self.feature_dim if transform == "scale" else self.feature_dim, 4 if
                                transform == "affine" else 2)
        self.reset_identity()

    def reset_identity(self) -> None:
        """Zero the last layers' weights and biases (the fc head's bias: the identity theta)."""
        with torch.no_grad():
            self.fc.weight.zero_()
            if self.head_kind == "fc":
                self.fc.bias.copy_(torch.tensor(IDENTITY_THETA))
            else:
                self.fc.bias.zero_()
                self.points.weight.zero_()
                self.points.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        feats = self.backbone(x)
        if self.head_kind == "fc":
            if feats.shape[0] != x.shape[0] or feats[0].numel() != self.feature_dim:
                raise ValueError(f"the backbone gave features of shape {tuple(feats.shape)}; expected "
                                 f"{self.feature_dim} numbers per image (feature_dim)")
            return self.fc(self.head(feats)).view(-1, 2, 3)
        if feats.dim() != 4 or feats.shape[1] != self.feature_dim:
            raise ValueError(f"the backbone gave features of shape {tuple(feats.shape)}; expected "
                             f"[N, {self.feature_dim}, h, w]")
        n, c, h, w = feats.shape
        p = torch.softmax(self.beta * feats.flatten(2), 2).view(n, c, h, w)
        xs = (2 * torch.arange(w, dtype=p.dtype, device=p.device) + 1) / w - 1
        ys = (2 * torch.arange(h, dtype=p.dtype, device=p.device) + 1) / h - 1
        pts = torch.cat([(p.sum(2) * xs).sum(2), (p.sum(3) * ys).sum(2)], 1)  # [N, 2C]: all x, then all y
        t = self.points(pts)
        if self.transform == "affine":
            a = torch.eye(2, dtype=p.dtype, device=p.device) + self.fc(feats.mean((2, 3))).view(n, 2, 2)
        elif self.transform == "scale":
            a = torch.diag_embed(torch.exp(self.fc(pts)))
        else:
            a = torch.eye(2, dtype=p.dtype, device=p.device).expand(n, 2, 2)
        return torch.cat([a, t[:, :, None]], 2)


# ------------------------------------------------------------------ SSTN


@dataclass
class SSTNOutput:
    """What :class:`SSTN` returns. Heatmaps are lists with one tensor per SPPE stack (the last is the
    prediction).

    * ``heatmaps``: ``[N, K, hh, hw]`` each, de-transformed by the SDTN: in the **proposal's** frame.
    * ``theta``: ``[N, 2, 3]``, normalized crop -> proposal.
    * ``crops``: ``[N, C, h, w]``, the STN's crops (the SPPE's input).
    * ``crop_heatmaps``: the SPPE's maps before the SDTN (in the crop's frame).
    * ``parallel``: the parallel SPPE's maps on the crops (crop frame, no SDTN), or None when not run.
    """
    heatmaps: List[Tensor]
    theta: Tensor
    crops: Tensor
    crop_heatmaps: List[Tensor]
    parallel: Optional[List[Tensor]]


def _as_stacks(out, what: str) -> List[Tensor]:
    if isinstance(out, Tensor):
        out = [out]
    if not isinstance(out, (list, tuple)) or not out or not all(isinstance(t, Tensor) and t.dim() == 4 for t in out):
        raise ValueError(f"the {what} must return a [N, K, h, w] tensor or a list of them (one per stack)")
    return list(out)


def _detached_call(sppe: nn.Module, x: Tensor, what: str) -> List[Tensor]:
    """``sppe(x)`` with its weights detached (no gradient reaches them) and its buffers cloned (the
    call does not move the running statistics the main branch keeps), in its current mode."""
    params = {k: v.detach() for k, v in sppe.named_parameters()}
    buffers = {k: v.clone() for k, v in sppe.named_buffers()}
    return _as_stacks(torch.func.functional_call(sppe, {**params, **buffers}, (x,)), what)


class SSTN(nn.Module):
    """STN -> SPPE -> SDTN, with the parallel SPPE for training (see the module docstring).

    ``sppe``: any module mapping crops ``[N, C, h, w]`` to heatmaps ``[N, K, hh, hw]`` (or a list of
    them, one per stack) that cover the crop in the same normalized frame. ``input_size``: the proposal
    images' (H, W); ``crop_size``: the STN crop's (h, w) (default: ``input_size``). ``loc_net``: default
    :class:`LocalizationNet` on a :class:`ResNetBackbone` (``loc_width``, ``loc_blocks``) with
    ``loc_features="resnet"``, or on :class:`SPPEFeatures` with ``"sppe"``; ``loc_transform`` and
    ``loc_beta`` are its ``transform`` and ``beta``. ``parallel``: ``"shared"``, ``"copy"`` or
    ``None`` (no parallel branch). ``padding_mode`` applies to the STN crop; the SDTN pads with zeros.
    """

    def __init__(self, sppe: nn.Module, input_size: Sequence[int] = (64, 48), crop_size: Optional[Sequence[int]] = None,
                 loc_net: Optional[nn.Module] = None, parallel: Optional[str] = "shared", loc_width: int = 16,
                 loc_blocks: Sequence[int] = (1, 1, 1, 1), padding_mode: str = "zeros", loc_features: str = "resnet",
                 loc_transform: str = "affine", loc_beta: float = 10.0):
        super().__init__()
        if not isinstance(sppe, nn.Module):
            raise ValueError(f"sppe must be a torch.nn.Module, got {type(sppe).__name__}")
        if parallel not in ("shared", "copy", None):
            raise ValueError(f"parallel must be 'shared', 'copy' or None, got {parallel!r}")
        if padding_mode not in ("zeros", "border"):
            raise ValueError(f"padding_mode must be 'zeros' or 'border', got {padding_mode!r}")
        self.input_size = _size2(input_size, "input_size")
        self.crop_size = self.input_size if crop_size is None else _size2(crop_size, "crop_size")
        self.sppe = sppe
        if loc_features not in ("resnet", "sppe"):
            raise ValueError(f"loc_features must be 'resnet' or 'sppe', got {loc_features!r}")
        if loc_net is None:
            backbone = SPPEFeatures(sppe) if loc_features == "sppe" else None
            loc_net = LocalizationNet(self.input_size, backbone=backbone, width=loc_width, blocks=loc_blocks,
                                      transform=loc_transform, beta=loc_beta)
        self.loc_net = loc_net
        self.parallel_mode = parallel
        self.use_parallel = parallel is not None
        self.padding_mode = padding_mode
        self.stn = AffineSampler(self.crop_size, padding_mode=padding_mode)
        self.sdtn = SDTN()  # at each map's own size, zero padding; NaN for a singular theta (a NaN loss)
        self.parallel_sppe: Optional[nn.Module] = None
        if parallel == "copy":
            self.parallel_sppe = copy.deepcopy(sppe)
            self.sync_parallel()

    # -- parallel branch

    def sync_parallel(self) -> None:
        """``parallel="copy"``: copy the main SPPE's weights into the frozen parallel copy."""
        if self.parallel_sppe is None:
            raise ValueError("sync_parallel needs parallel='copy'")
        self.parallel_sppe.load_state_dict(self.sppe.state_dict())
        for p in self.parallel_sppe.parameters():
            p.requires_grad_(False)
        self.parallel_sppe.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.parallel_sppe is not None:
            self.parallel_sppe.eval()  # frozen: running statistics too
        return self

    def _run_parallel(self, crops: Tensor) -> List[Tensor]:
        if self.parallel_mode == "copy":
            return _as_stacks(self.parallel_sppe(crops), "parallel SPPE")
        return _detached_call(self.sppe, crops, "parallel SPPE")

    # -- forward

    def forward(self, x: Tensor, theta: Optional[Tensor] = None) -> SSTNOutput:
        """``x``: proposal images ``[N, C, H, W]`` (float, ``input_size``). ``theta``: an optional fixed
        ``[N, 2, 3]`` that replaces the localization network's (for tests and ablations)."""
        if x.dim() != 4 or tuple(x.shape[2:]) != self.input_size:
            raise ValueError(f"x must have shape [N, C, {self.input_size[0]}, {self.input_size[1]}] (input_size), "
                             f"got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a floating-point tensor, got {x.dtype}")
        if theta is None:
            theta = self.loc_net(x)
        elif theta.shape != (x.shape[0], 2, 3):
            raise ValueError(f"theta must have shape [{x.shape[0]}, 2, 3], got {tuple(theta.shape)}")
        theta = theta.to(x.dtype)
        crops = self.stn(x, theta)
        crop_maps = _as_stacks(self.sppe(crops), "SPPE")
        maps = [self.sdtn(m, theta) for m in crop_maps]
        parallel = self._run_parallel(crops) if (self.training and self.use_parallel) else None
        return SSTNOutput(maps, theta, crops, crop_maps, parallel)


# ------------------------------------------------------------------ losses and measures


def heatmap_loss(pred: Union[Tensor, Sequence[Tensor]], target: Tensor, weight: Tensor) -> Tensor:
    """Weighted heatmap MSE averaged over stacks (intermediate supervision): for each stack
    ``mean(weight[n, k] * (pred - target)^2)`` over all N K hh hw elements; ``weight [N, K]`` is 0 for
    unlabelled joints. ``target [N, K, hh, hw]``; each prediction must have its shape."""
    stacks = _as_stacks(pred, "prediction")
    if target.dim() != 4:
        raise ValueError(f"target must have shape [N, K, hh, hw], got {tuple(target.shape)}")
    if weight.shape != target.shape[:2]:
        raise ValueError(f"weight must have shape {tuple(target.shape[:2])} (target's N, K), got {tuple(weight.shape)}")
    w = weight[:, :, None, None].to(target.dtype)
    total = 0.0
    for p in stacks:
        if p.shape != target.shape:
            raise ValueError(f"prediction of shape {tuple(p.shape)} does not match target {tuple(target.shape)}")
        total = total + (w * (p - target) ** 2).mean()
    return total / len(stacks)


def sstn_loss(out: SSTNOutput, target: Tensor, weight: Tensor, centred_target: Optional[Tensor] = None,
              centred_weight: Optional[Tensor] = None, parallel_weight: float = 1.0):
    """Training loss: the main branch's heatmap loss (proposal frame) plus ``parallel_weight`` times
    the parallel branch's (crop frame, centre-located targets) when it ran. Returns
    ``(total, main, parallel)`` (``parallel`` is a zero tensor when the branch did not run)."""
    main = heatmap_loss(out.heatmaps, target, weight)
    if out.parallel is None:
        return main, main, torch.zeros((), dtype=main.dtype)
    if centred_target is None or centred_weight is None:
        raise ValueError("the parallel branch ran: centred_target and centred_weight are needed")
    par = heatmap_loss(out.parallel, centred_target, centred_weight)
    return main + parallel_weight * par, main, par


def centre_displacement(theta: Tensor, theta_star: Tensor) -> Tensor:
    """Displacement ``[N]`` between the STN's crop and the person: the distance between the point the
    crop's centre maps to (``theta[:, :, 2]``, normalized proposal coordinates) and the GT box's centre
    (``theta_star[:, :, 2]``, where ``theta_star`` maps the GT box's own crop into the proposal). Units:
    the proposal's half-width along x and half-height along y. For the plain proposal crop (the
    identity) it is the proposal's own displacement."""
    if theta.shape != theta_star.shape or theta.dim() != 3 or tuple(theta.shape[1:]) != (2, 3):
        raise ValueError(f"theta and theta_star must both be [N, 2, 3], got {tuple(theta.shape)} and "
                         f"{tuple(theta_star.shape)}")
    return torch.linalg.vector_norm(theta[:, :, 2] - theta_star[:, :, 2].to(theta.dtype), dim=1)
