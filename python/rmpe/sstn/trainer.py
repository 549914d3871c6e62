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

Distributed (``torchrun``; :mod:`rmpe.distributed`): when a process group of more than one process is
initialized, the trainer wraps the model in ``DistributedDataParallel`` (gradients averaged over the
processes; the frozen parallel SPPE copy has ``requires_grad=False`` and stays out of the all-reduce,
the shared parallel branch runs on detached weights) and each process trains on its share of every
epoch's crops (``torch.utils.data.DistributedSampler`` seeded with ``config.seed``, ``set_epoch(epoch)``,
shares padded to equal size). ``config.batch_size`` is per process: a step is one process' step on the
total batch ``batch_size x world_size`` at the same learning rate (not scaled). Losses are summed over
the processes; the held-out set is split over them and its figures reduced. At the end of each epoch
every process takes rank 0's buffers (batch-norm running statistics; each process normalizes with its
own batch: PyTorch's SyncBatchNorm is GPU-only). Rank 0 alone shows the progress bar, calls ``log`` and
writes the checkpoint (with every rank's random states and the ``"distributed"`` sizes in its config);
every process resumes from it. Without a group (one process) none of this applies: training is exactly
as described above.

Training data: a fixed :class:`rmpe.sstn.datasets.CropSet`, or a callable ``epoch -> CropSet`` (e.g.
:class:`rmpe.sstn.datasets.ResampledCrops`: new random boxes every epoch, a deterministic function of the
epoch so that resuming still reproduces the run).
"""
from __future__ import annotations

import dataclasses
import os
import random
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from .datasets import CropSet, heatmap_to_image_theta
from .model import SSTN, centre_displacement, heatmap_loss, sstn_loss

__all__ = ["TrainConfig", "Trainer", "evaluate", "evaluate_distributed", "set_seed"]


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
    if len(crops) == 0:
        raise ValueError("crops is empty")
    loss_sum, disp, disp0, e = _evaluate_parts(model, crops, batch_size)
    return {"loss": loss_sum / len(crops), "displacement_before": float(disp0.mean()),
            "displacement_after": float(disp.mean()), "mean_error": float(e.mean()) if e.numel() else
            float("nan"), "pck": float((e <= pck_alpha).double().mean()) if e.numel() else float("nan")}


def _evaluate_parts(model: SSTN, crops: CropSet, batch_size: int):
    """:func:`evaluate`'s per-crop figures: the main heatmap loss summed over the crops, the displacements
    before and after ``[N]``, the labelled joints' errors ``[L]`` (CPU tensors; the model runs on its own
    device, the crops are moved to it batch by batch)."""
    from rmpe_ext.ops import heatmap_decode

    device = _device_of(model)
    was_training = model.training
    model.eval()
    loss_sum, disp, disp0, errs, labelled = 0.0, [], [], [], []
    try:
        for s in range(0, len(crops), batch_size):
            sl = slice(s, s + batch_size)
            out = model(crops.images[sl].to(device))
            theta, hm = out.theta.cpu(), out.heatmaps[-1].cpu()
            n = theta.shape[0]
            loss_sum += float(heatmap_loss(hm, crops.target[sl], crops.weight[sl])) * n
            disp.append(centre_displacement(theta, crops.theta_star[sl]))
            disp0.append(centre_displacement(torch.eye(2, 3).expand(n, 2, 3), crops.theta_star[sl]))
            m = heatmap_to_image_theta(crops.proposal_theta_px[sl], model.input_size, hm.shape[2:])
            pts, _ = heatmap_decode(hm.contiguous(), m, refine="quarter")
            kp = crops.keypoints[sl]
            side = crops.gt_boxes[sl][:, 2:].amax(1)
            errs.append(torch.linalg.vector_norm(pts.to(torch.float64) - kp[..., :2], dim=-1) / side[:, None])
            labelled.append(kp[..., 2] > 0)
    finally:
        model.train(was_training)
    err, lab = torch.cat(errs), torch.cat(labelled)
    return loss_sum, torch.cat(disp), torch.cat(disp0), err[lab]


@torch.no_grad()
def evaluate_distributed(model: SSTN, crops: CropSet, batch_size: int = 128,
                         pck_alpha: float = 0.2) -> Dict[str, float]:
    """:func:`evaluate` with the crops split over the processes of the initialized group (process r takes
    crops r, r + world, ...) and the sums reduced: every process returns the whole set's figures (equal
    to :func:`evaluate`'s up to float summation order). Every process must call it, with the same crops
    and the same model. Without a group it is :func:`evaluate`."""
    from ..distributed import all_reduce_sum, get_rank, get_world_size, is_distributed

    if not is_distributed():
        return evaluate(model, crops, batch_size, pck_alpha)
    if len(crops) == 0:
        raise ValueError("crops is empty")
    mine = list(range(get_rank(), len(crops), get_world_size()))
    sums = dict.fromkeys(("loss", "before", "after", "error", "pck", "labelled"), 0.0)
    if mine:
        loss_sum, disp, disp0, e = _evaluate_parts(model, crops.subset(mine), batch_size)
        sums.update(loss=loss_sum, before=float(disp0.double().sum()), after=float(disp.double().sum()),
                    error=float(e.sum()), pck=float((e <= pck_alpha).double().sum()), labelled=float(e.numel()))
    t = all_reduce_sum(sums)
    n, lab = len(crops), t["labelled"]
    return {"loss": t["loss"] / n, "displacement_before": t["before"] / n, "displacement_after": t["after"] / n,
            "mean_error": t["error"] / lab if lab else float("nan"), "pck": t["pck"] / lab if lab else float("nan")}


def _device_of(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without any)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


class Trainer:
    """Trains ``model`` (an :class:`rmpe.sstn.SSTN`) on ``train`` (a :class:`rmpe.sstn.datasets.CropSet`, or a
    callable ``epoch (0-based) -> CropSet`` giving each epoch's crops); evaluates on ``val`` after every
    epoch when given; checkpoints to ``out_dir`` when given.

    ``distributed``: None (default) trains with ``DistributedDataParallel`` when a process group of more
    than one process is initialized (see the module docstring), else as one process; True requires such
    a group; False trains each process on its own. The model stays on its device (one GPU per process:
    move it to ``cuda:LOCAL_RANK`` first); batches are moved to it."""

    def __init__(self, model: SSTN, train, config: TrainConfig, val: Optional[CropSet] = None,
                 out_dir: Optional[str] = None, distributed: Optional[bool] = None):
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
        self.device = _device_of(model)
        self._setup_distributed(distributed)

    def _setup_distributed(self, distributed: Optional[bool]) -> None:
        from ..distributed import current, is_distributed

        if distributed and not is_distributed():
            raise ValueError("distributed=True needs an initialized torch.distributed process group of more than "
                             "one process (launch with torchrun; see rmpe.distributed.init_from_env)")
        self.distributed = is_distributed() if distributed is None else bool(distributed)
        ctx = current() if self.distributed else None
        self.rank, self.world_size = (ctx.rank, ctx.world_size) if ctx else (0, 1)
        self.backend = ctx.backend if ctx else None
        self.ddp = None  # made by the first epoch (it probes the model on that epoch's crops)

    def _wrap_ddp(self, data: CropSet):
        """``DistributedDataParallel`` around the model. It must be told when some trainable parameters get
        no gradient in a step: in the SPPE warm-up (a given theta leaves the localization net out), or
        when the model has parameters a training forward never uses (e.g. the 2x2 layer of a
        ``loc_transform="translation"`` net), found by one probe forward on two crops with the buffers
        cloned (no running statistic moves), in the modes the epoch set."""
        from torch.nn.parallel import DistributedDataParallel

        find_unused = self.epoch < self.config.sppe_warmup_epochs
        if not find_unused:
            params = {k: p for k, p in self.model.named_parameters() if p.requires_grad}
            buffers = {k: b.clone() for k, b in self.model.named_buffers()}
            out = torch.func.functional_call(self.model, {**params, **buffers}, (data.images[:2].to(self.device),))
            total = sum(t.sum() for t in out.heatmaps + (out.parallel or []) + [out.theta])
            grads = torch.autograd.grad(total, list(params.values()), allow_unused=True)
            find_unused = any(g is None for g in grads)
        return DistributedDataParallel(self.model, device_ids=[self.device] if self.device.type == "cuda" else None,
                                       find_unused_parameters=find_unused)

    @property
    def is_main(self) -> bool:
        """Rank 0 (or the one process): the one that shows progress, logs and writes."""
        return self.rank == 0

    def distributed_info(self) -> Optional[dict]:
        """The sizes of a distributed run (None for one process): processes, backend, batch per process and
        in total, the learning rates (the same on every process, on the gradient averaged over the total
        batch: not scaled)."""
        if not self.distributed:
            return None
        cfg = self.config
        return {"world_size": self.world_size, "backend": self.backend, "batch_size_per_process": int(cfg.batch_size),
                "batch_size_total": int(cfg.batch_size) * self.world_size, "lr": cfg.lr,
                "loc_lr": cfg.lr if cfg.loc_lr is None else cfg.loc_lr,
                "lr_scaling": "none: DDP averages the gradients, a step is one step on the total batch"}

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
        """Writes the checkpoint (default ``out_dir/last.pt``) atomically, and ``history.json`` beside it.
        Distributed: every process must call it (it gathers their random states); rank 0 writes, and every
        process returns once the files are complete."""
        path = path or self.checkpoint_path
        if path is None:
            raise ValueError("no checkpoint path: pass one or give the trainer an out_dir")
        if not self.distributed:
            self._write_checkpoint(self.state_dict(), path)
            return path
        from ..distributed import all_gather_object, run_on_main

        rngs = all_gather_object(self._rng_state())
        state = None
        if self.is_main:
            state = self.state_dict()
            state["rng_ranks"] = rngs
            state["config"]["distributed"] = self.distributed_info()
        return run_on_main(self._write_checkpoint, state, path)

    def _rng_state(self) -> dict:
        return {"generator": self.generator.get_state(), "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(), "python": random.getstate()}

    def _write_checkpoint(self, state: dict, path: str) -> str:
        from ..io import atomic_path, write_json

        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        write_json(os.path.join(os.path.dirname(os.path.abspath(path)), "history.json"), self.history, indent=1)
        return path

    def load_checkpoint(self, path: Optional[str] = None) -> None:
        path = path or self.checkpoint_path
        if path is None or not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint {path!r} does not exist")
        try:
            state = torch.load(path, map_location=self.device if self.device.type != "cpu" else "cpu",
                               weights_only=False)
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
        ranks = state.get("rng_ranks")
        if self.distributed:
            saved = (state.get("config") or {}).get("distributed") or {"world_size": 1}
            if saved.get("world_size") != self.world_size and self.is_main:
                warnings.warn(f"checkpoint {path!r} was written by a run of {saved.get('world_size')} process(es), "
                              f"resumed with {self.world_size}: the batches (and the total batch size) change")
            if ranks is not None and len(ranks) == self.world_size:
                rng = ranks[self.rank]
        self.generator.set_state(rng["generator"].cpu())
        torch.set_rng_state(rng["torch"].cpu())
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if self.model.parallel_mode == "copy":
            self.model.sync_parallel()

    # -- training

    def train_epoch(self) -> Dict[str, float]:
        """One pass over the training crops in a shuffled order; returns the mean losses."""
        from tqdm.auto import tqdm

        cfg, data, model, device = self.config, self.train_set, self.model, self.device
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
        if self.distributed and self.ddp is None:
            self.ddp = self._wrap_ddp(data)
        net = model if self.ddp is None else self.ddp
        if self.distributed:
            from torch.utils.data import DistributedSampler

            sampler = DistributedSampler(data, num_replicas=self.world_size, rank=self.rank, shuffle=True,
                                         seed=int(cfg.seed), drop_last=False)
            sampler.set_epoch(self.epoch)
            perm = torch.tensor(list(sampler), dtype=torch.long)
        else:
            perm = torch.randperm(len(data), generator=self.generator)
        batches = [perm[s:s + cfg.batch_size] for s in range(0, len(perm), cfg.batch_size)]
        sums = {"loss": 0.0, "main_loss": 0.0, "parallel_loss": 0.0}
        bar = tqdm(batches, desc=f"epoch {self.epoch + 1}/{cfg.epochs}" + (" (SPPE warm-up)" if warmup else ""),
                   disable=not (cfg.progress and self.is_main), leave=False, dynamic_ncols=True)
        try:
            if warmup:
                model.use_parallel = False
            for idx in bar:
                images = data.images[idx].to(device)
                theta = None
                if warmup:
                    theta = (data.theta_star[idx].to(device) if cfg.warmup_crops == "ideal" else
                             torch.eye(2, 3, dtype=images.dtype, device=device).expand(len(idx), 2, 3))
                out = net(images, theta=theta)
                total, main, par = sstn_loss(out, data.target[idx].to(device), data.weight[idx].to(device),
                                             data.centred_target[idx].to(device), data.centred_weight[idx].to(device),
                                             cfg.parallel_weight)
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
        if self.distributed:
            from ..distributed import all_reduce_sum, broadcast_buffers

            broadcast_buffers(model)  # every process continues, evaluates and saves with rank 0's statistics
            totals = all_reduce_sum({**sums, "count": float(len(perm))})
            return {k: totals[k] / totals["count"] for k in sums}
        return {k: v / len(data) for k, v in sums.items()}

    def fit(self, epochs: Optional[int] = None, resume: bool = False, log=None) -> List[Dict[str, float]]:
        """Trains up to epoch ``epochs`` (default ``config.epochs``), from ``out_dir/last.pt`` when
        ``resume`` and it exists. ``log``: a callable that receives each epoch's record (e.g. print; called
        on rank 0 only when distributed, where every process must call ``fit`` alike)."""
        if resume and self.checkpoint_path:
            exists = os.path.isfile(self.checkpoint_path)
            if self.distributed:  # rank 0 decides; a process that cannot see rank 0's file says so
                from ..distributed import broadcast_object

                on_main = broadcast_object(exists)
                if on_main and not exists:
                    raise FileNotFoundError(f"checkpoint {self.checkpoint_path!r}: rank 0 has it, rank {self.rank} "
                                            f"does not see it (the checkpoint folder must be on a file system "
                                            f"every process sees)")
                exists = on_main
            if exists:
                self.load_checkpoint()
        end = self.config.epochs if epochs is None else int(epochs)
        while self.epoch < end:
            lr = self.optimizer.param_groups[0]["lr"]
            record = {"epoch": self.epoch + 1, "lr": lr, **self.train_epoch()}
            self.scheduler.step()
            self.epoch += 1
            if self.val_set is not None and len(self.val_set):
                judge = evaluate_distributed if self.distributed else evaluate
                record.update({f"val_{k}": v for k, v in judge(self.model, self.val_set,
                                                                self.config.eval_batch_size).items()})
            self.history.append(record)
            if self.out_dir is not None:
                self.save_checkpoint()
            if log is not None and self.is_main:
                log(record)
        return self.history
