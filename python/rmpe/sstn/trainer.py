"""Training the SSTN + SPPE (+ parallel SPPE): Adam, an LR schedule, resumable checkpoints, a loss history.

    trainer = Trainer(model, train_crops, TrainConfig(epochs=8, lr=1e-3), val=held_out_crops, out_dir="ckpt")
    history = trainer.fit()                  # one dict per epoch: losses, lr, held-out displacement and error
    Trainer(model2, train_crops, cfg, val=..., out_dir="ckpt").fit(resume=True)   # continues from ckpt/last.pt

Checkpoints (``out_dir/last.pt``, written atomically through ``rmpe.io.atomic_path`` after every epoch)
hold the model, the optimizer, the scheduler, the epoch, the history, the config and every random state
used (the shuffling generator, torch's, numpy's and Python's global ones), so a resumed run gives the
same weights and history, bit for bit on the same machine and thread count, as an uninterrupted one.
``out_dir/history.json`` mirrors the history.

Warm-up (``sppe_warmup_epochs``): the first epochs train the SPPE alone on ideal crops (the STN's theta
replaced by ``theta_star``, the GT box's own crop, so it learns poses before it has to cope with the
STN); then the whole SSTN + SPPE trains end to end from the proposals. The paper starts from a
pre-trained SPPE; this is its small-scale equivalent. ``warmup_crops="proposal"`` warms it up on the
displaced proposal crops themselves instead (identity theta, targets in the proposal's own frame): with
many displaced boxes per person the SPPE cannot fit a mean-pose prior and must localize the joints,
so that its heatmaps move with the person (what the parallel branch and an SPPE-feature localization
net need). ``freeze_sppe``: after the warm-up the SPPE's weights are not updated and it runs in eval
mode (the paper's pre-trained, frozen parallel SPPE; only the localization network learns).

Training data: a fixed :class:`rmpe.sstn.datasets.CropSet`, or a callable ``epoch -> CropSet`` (e.g.
:class:`rmpe.sstn.datasets.ResampledCrops`: new random boxes every epoch, a deterministic function of the
epoch so that resuming still reproduces the run).
"""
from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from .datasets import CropSet, heatmap_to_image_theta
from .model import SSTN, centre_displacement, heatmap_loss, sstn_loss

__all__ = ["TrainConfig", "Trainer", "evaluate", "set_seed"]


@dataclass
class TrainConfig:
    """``epochs``: total epochs (warm-up included). ``lr``: Adam's learning rate for the SPPE; ``loc_lr``
    for the localization network (default ``lr``). ``schedule``: ``"step"`` (times ``lr_gamma`` at each
    epoch of ``lr_milestones``), ``"cosine"`` (to 0 over ``epochs``) or ``"constant"``.
    ``parallel_weight``: the parallel loss' weight. ``sppe_warmup_epochs``, ``warmup_crops`` (``"ideal"``
    or ``"proposal"``) and ``freeze_sppe``: see the module docstring."""
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    loc_lr: Optional[float] = None
    weight_decay: float = 0.0
    schedule: str = "cosine"
    lr_milestones: Sequence[int] = ()
    lr_gamma: float = 0.1
    parallel_weight: float = 1.0
    sppe_warmup_epochs: int = 0
    warmup_crops: str = "ideal"
    freeze_sppe: bool = False
    seed: int = 0
    progress: bool = True
    eval_batch_size: int = 128
    extra: Dict = field(default_factory=dict)  # free-form notes stored with the checkpoint

    def check(self) -> None:
        if int(self.epochs) < 0 or int(self.batch_size) < 1 or int(self.eval_batch_size) < 1:
            raise ValueError(f"epochs must be >= 0 and batch sizes >= 1, got {self.epochs}, {self.batch_size}")
        if not self.lr > 0 or (self.loc_lr is not None and not self.loc_lr >= 0):
            raise ValueError(f"lr must be > 0 and loc_lr >= 0, got {self.lr}, {self.loc_lr}")
        if self.schedule not in ("step", "cosine", "constant"):
            raise ValueError(f"schedule must be 'step', 'cosine' or 'constant', got {self.schedule!r}")
        if not 0 <= int(self.sppe_warmup_epochs) <= int(self.epochs):
            raise ValueError(f"sppe_warmup_epochs must be in [0, epochs], got {self.sppe_warmup_epochs}")
        if self.warmup_crops not in ("ideal", "proposal"):
            raise ValueError(f"warmup_crops must be 'ideal' or 'proposal', got {self.warmup_crops!r}")
        if self.parallel_weight < 0:
            raise ValueError(f"parallel_weight must be >= 0, got {self.parallel_weight}")


def set_seed(seed: int) -> None:
    """Seeds torch, numpy's and Python's global generators."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


@torch.no_grad()
def evaluate(model: SSTN, crops: CropSet, batch_size: int = 128, pck_alpha: float = 0.2) -> Dict[str, float]:
    """Held-out figures of ``model`` (run in eval mode: no parallel branch; its mode is restored):

    * ``loss``: the main branch's heatmap loss (proposal frame);
    * ``displacement_before`` / ``displacement_after``: mean :func:`rmpe.sstn.model.centre_displacement` of
      the plain proposal crop (identity theta) and of the STN's crop (normalized proposal units);
    * ``mean_error``: mean distance between the decoded joints (argmax with AlphaPose's quarter step,
      through the SDTN's maps) and the labelled GT joints, in units of the GT box's longer side;
      ``pck``: the fraction of labelled joints within ``pck_alpha`` of that side.
    """
    from rmpe_ext.ops import heatmap_decode

    if len(crops) == 0:
        raise ValueError("crops is empty")
    was_training = model.training
    model.eval()
    loss_sum, disp, disp0, errs, labelled = 0.0, [], [], [], []
    try:
        for s in range(0, len(crops), batch_size):
            sl = slice(s, s + batch_size)
            out = model(crops.images[sl])
            n = out.theta.shape[0]
            loss_sum += float(heatmap_loss(out.heatmaps[-1], crops.target[sl], crops.weight[sl])) * n
            disp.append(centre_displacement(out.theta, crops.theta_star[sl]))
            disp0.append(centre_displacement(torch.eye(2, 3).expand(n, 2, 3), crops.theta_star[sl]))
            hm = out.heatmaps[-1]
            m = heatmap_to_image_theta(crops.proposal_theta_px[sl], model.input_size, hm.shape[2:])
            pts, _ = heatmap_decode(hm.contiguous(), m, refine="quarter")
            kp = crops.keypoints[sl]
            side = crops.gt_boxes[sl][:, 2:].amax(1)
            errs.append(torch.linalg.vector_norm(pts.to(torch.float64) - kp[..., :2], dim=-1) / side[:, None])
            labelled.append(kp[..., 2] > 0)
    finally:
        model.train(was_training)
    err, lab = torch.cat(errs), torch.cat(labelled)
    e = err[lab]
    return {"loss": loss_sum / len(crops), "displacement_before": float(torch.cat(disp0).mean()),
            "displacement_after": float(torch.cat(disp).mean()), "mean_error": float(e.mean()) if e.numel() else
            float("nan"), "pck": float((e <= pck_alpha).double().mean()) if e.numel() else float("nan")}


class Trainer:
    """Trains ``model`` (an :class:`rmpe.sstn.SSTN`) on ``train`` (a :class:`rmpe.sstn.datasets.CropSet`, or a
    callable ``epoch (0-based) -> CropSet`` giving each epoch's crops); evaluates on ``val`` after every
    epoch when given; checkpoints to ``out_dir`` when given."""

    def __init__(self, model: SSTN, train, config: TrainConfig, val: Optional[CropSet] = None,
                 out_dir: Optional[str] = None):
        if not isinstance(model, SSTN):
            raise ValueError(f"model must be an rmpe.sstn.SSTN, got {type(model).__name__}")
        if not callable(train) and (not isinstance(train, CropSet) or len(train) == 0):
            raise ValueError("train must be a non-empty rmpe.sstn.datasets.CropSet or a callable epoch -> CropSet")
        config.check()
        self.model, self.train_set, self.val_set, self.config = model, train, val, config
        self.out_dir = None if out_dir is None else os.fspath(out_dir)
        loc_lr = config.lr if config.loc_lr is None else config.loc_lr
        loc_ids = {id(p) for p in model.loc_net.parameters()}
        others = [p for p in model.parameters() if id(p) not in loc_ids and p.requires_grad]
        self.optimizer = torch.optim.Adam([{"params": others, "lr": config.lr},
                                           {"params": list(model.loc_net.parameters()), "lr": loc_lr}],
                                          weight_decay=config.weight_decay)
        if config.schedule == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(config.epochs, 1))
        elif config.schedule == "step":
            self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, list(config.lr_milestones),
                                                                  config.lr_gamma)
        else:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda e: 1.0)
        self.generator = torch.Generator().manual_seed(int(config.seed))
        self.epoch = 0
        self.history: List[Dict[str, float]] = []

    # -- checkpoints

    @property
    def checkpoint_path(self) -> Optional[str]:
        return None if self.out_dir is None else os.path.join(self.out_dir, "last.pt")

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "epoch": self.epoch, "history": list(self.history),
                "config": dataclasses.asdict(self.config),
                "rng": {"generator": self.generator.get_state(), "torch": torch.get_rng_state(),
                        "numpy": np.random.get_state(), "python": random.getstate()}}

    def save_checkpoint(self, path: Optional[str] = None) -> str:
        """Writes the checkpoint (default ``out_dir/last.pt``) atomically, and ``history.json`` beside it."""
        from ..io import atomic_path, write_json

        path = path or self.checkpoint_path
        if path is None:
            raise ValueError("no checkpoint path: pass one or give the trainer an out_dir")
        with atomic_path(path) as tmp:
            torch.save(self.state_dict(), tmp)
        write_json(os.path.join(os.path.dirname(os.path.abspath(path)), "history.json"), self.history, indent=1)
        return path

    def load_checkpoint(self, path: Optional[str] = None) -> None:
        path = path or self.checkpoint_path
        if path is None or not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint {path!r} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # a truncated or foreign file
            raise ValueError(f"checkpoint {path!r} could not be read: {e}") from None
        for key in ("model", "optimizer", "scheduler", "epoch", "history", "rng"):
            if key not in state:
                raise ValueError(f"checkpoint {path!r} lacks {key!r}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.history = int(state["epoch"]), list(state["history"])
        rng = state["rng"]
        self.generator.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if self.model.parallel_mode == "copy":
            self.model.sync_parallel()

    # -- training

    def train_epoch(self) -> Dict[str, float]:
        """One pass over the training crops in a shuffled order; returns the mean losses."""
        from tqdm.auto import tqdm

        cfg, data, model = self.config, self.train_set, self.model
        if callable(data):
            data = data(self.epoch)
            if not isinstance(data, CropSet) or len(data) == 0:
                raise ValueError(f"the training-set callable gave {type(data).__name__} for epoch {self.epoch}; "
                                 f"expected a non-empty rmpe.sstn.datasets.CropSet")
        warmup = self.epoch < cfg.sppe_warmup_epochs
        frozen = cfg.freeze_sppe and not warmup
        if model.parallel_mode == "copy" and not warmup:
            model.sync_parallel()  # the frozen copy takes the SPPE as it stands at the epoch's start
        model.train()
        if frozen:
            model.sppe.eval()
        sppe_params = self.optimizer.param_groups[0]["params"]  # everything but the localization net
        use_parallel = model.use_parallel
        perm = torch.randperm(len(data), generator=self.generator)
        batches = [perm[s:s + cfg.batch_size] for s in range(0, len(perm), cfg.batch_size)]
        sums = {"loss": 0.0, "main_loss": 0.0, "parallel_loss": 0.0}
        bar = tqdm(batches, desc=f"epoch {self.epoch + 1}/{cfg.epochs}" + (" (SPPE warm-up)" if warmup else ""),
                   disable=not cfg.progress, leave=False, dynamic_ncols=True)
        try:
            if warmup:
                model.use_parallel = False
            for idx in bar:
                images = data.images[idx]
                theta = None
                if warmup:
                    theta = (data.theta_star[idx] if cfg.warmup_crops == "ideal" else
                             torch.eye(2, 3, dtype=images.dtype).expand(len(idx), 2, 3))
                out = model(images, theta=theta)
                total, main, par = sstn_loss(out, data.target[idx], data.weight[idx], data.centred_target[idx],
                                             data.centred_weight[idx], cfg.parallel_weight)
                if not torch.isfinite(total):
                    raise FloatingPointError(f"the loss became {float(total)} at epoch {self.epoch + 1}")
                self.optimizer.zero_grad(set_to_none=True)
                total.backward()
                if frozen:
                    for p in sppe_params:
                        p.grad = None  # Adam skips parameters without a gradient
                self.optimizer.step()
                n = len(idx)
                sums["loss"] += float(total.detach()) * n
                sums["main_loss"] += float(main.detach()) * n
                sums["parallel_loss"] += float(par.detach()) * n
                bar.set_postfix(loss=f"{float(total.detach()):.5f}")
        finally:
            model.use_parallel = use_parallel
            bar.close()
        return {k: v / len(data) for k, v in sums.items()}

    def fit(self, epochs: Optional[int] = None, resume: bool = False, log=None) -> List[Dict[str, float]]:
        """Trains up to epoch ``epochs`` (default ``config.epochs``), from ``out_dir/last.pt`` when
        ``resume`` and it exists. ``log``: a callable that receives each epoch's record (e.g. print)."""
        if resume and self.checkpoint_path and os.path.isfile(self.checkpoint_path):
            self.load_checkpoint()
        end = self.config.epochs if epochs is None else int(epochs)
        while self.epoch < end:
            lr = self.optimizer.param_groups[0]["lr"]
            record = {"epoch": self.epoch + 1, "lr": lr, **self.train_epoch()}
            self.scheduler.step()
            self.epoch += 1
            if self.val_set is not None and len(self.val_set):
                record.update({f"val_{k}": v for k, v in evaluate(self.model, self.val_set,
                                                                   self.config.eval_batch_size).items()})
            self.history.append(record)
            if self.out_dir is not None:
                self.save_checkpoint()
            if log is not None:
                log(record)
        return self.history
