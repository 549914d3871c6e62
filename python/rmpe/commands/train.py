"""``rmpe train``: train the SSTN + SPPE (+ parallel SPPE) on COCO persons cropped from displaced boxes.

Persons are split by image into training and held-out sets (``--val-fraction``); every epoch prints the
training loss and, on the held-out persons, the heatmap loss, the STN's displacement (before -> after,
normalized proposal units, see ``rmpe.sstn.model.centre_displacement``) and PCK@0.2 of the GT box's longer
side. Checkpoints (``CKPT_DIR/last.pt``) and ``history.json`` are written atomically after every epoch;
``--resume`` continues from ``last.pt``.

Under ``torchrun --nproc_per_node=N`` every process runs this command: the model is trained with
DistributedDataParallel (``--batch-size`` crops per process, N times that per step; the learning rates
are not scaled), rank 0 prints and writes the checkpoint, every process resumes from it (see
``rmpe.distributed`` and ``rmpe.sstn.trainer``). ``--device cuda`` gives each process the GPU
``cuda:LOCAL_RANK`` and the NCCL backend; ``cpu`` uses gloo.
"""
from __future__ import annotations

import argparse
import math


def register(sub) -> None:
    p = sub.add_parser("train", help="train the symmetric STN + SPPE (+ parallel SPPE) on COCO persons",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, metavar="COCO_JSON", help="COCO person-keypoint annotation file")
    p.add_argument("--images", required=True, metavar="DIR", help="folder of the annotation file's images")
    p.add_argument("--augment", choices=("jitter", "pgpg"), default="jitter",
                   help="where the training proposals come from (default: jitter)")
    p.add_argument("--parallel", action=argparse.BooleanOptionalAction, default=True,
                   help="train with the parallel SPPE branch (default: on)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--warmup-epochs", type=int, default=2,
                   help="first epochs train the SPPE alone on ideal (GT-box) crops (default: 2)")
    p.add_argument("--out", metavar="CKPT_DIR", default=None, help="checkpoint folder (default: none written)")
    p.add_argument("--resume", action="store_true", help="continue from CKPT_DIR/last.pt")
    p.add_argument("--input-size", type=int, nargs=2, default=(64, 48), metavar=("H", "W"),
                   help="proposal and crop size, multiples of 4 (default: 64 48)")
    p.add_argument("--stacks", type=int, default=1, help="hourglass stacks (default: 1)")
    p.add_argument("--width", type=int, default=32, help="hourglass width (default: 32)")
    p.add_argument("--depth", type=int, default=2, help="hourglass depth (default: 2)")
    p.add_argument("--loc-features", choices=("resnet", "sppe"), default="resnet",
                   help="the localization network's backbone (default: a compact ResNet)")
    p.add_argument("--loc-transform", choices=("affine", "scale", "translation"), default="affine",
                   help="what the STN may do: full affine, translation + log-scale, or translation only "
                        "(with --loc-features sppe; default: affine)")
    p.add_argument("--warmup-crops", choices=("ideal", "proposal"), default="ideal",
                   help="SPPE warm-up on the GT boxes' crops (ideal) or on the displaced proposals themselves "
                        "(proposal: the SPPE must localize; see docs/sstn_training.md)")
    p.add_argument("--freeze-sppe", action="store_true", help="after the warm-up only the STN learns")
    p.add_argument("--boxes-per-person", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--loc-lr", type=float, default=1e-3)
    p.add_argument("--sigma", type=float, default=2.0, help="target Gaussian sigma, heatmap pixels (default: 2)")
    p.add_argument("--min-keypoints", type=int, default=5)
    p.add_argument("--val-fraction", type=float, default=0.2, help="held-out share of the images (default: 0.2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default="cpu",
                   help="'cpu' or 'cuda' (under torchrun: one GPU per process, cuda:LOCAL_RANK; default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run, outputs=[("--out", "out", "folder", ("last.pt", "history.json"))])


def run(args) -> int:
    import torch

    from ..cli import CommandError
    from ..distributed import process_group
    from ..sstn.datasets import heatmap_size_for
    from . import check_input_size, check_threads

    if args.resume and not args.out:
        raise CommandError("--resume needs --out CKPT_DIR")
    if args.epochs < 1 or args.boxes_per_person < 1:
        raise CommandError("--epochs and --boxes-per-person must be at least 1")
    check_threads(args.threads)
    for name in ("lr", "loc_lr", "sigma"):
        if not math.isfinite(getattr(args, name)):
            raise CommandError(f"--{name.replace('_', '-')} must be finite, got {getattr(args, name)}")
    if args.seed < 0:
        raise CommandError(f"--seed must be >= 0, got {args.seed}")
    heatmap_size_for(args.input_size)  # input size must be a multiple of 4
    check_input_size(args.input_size)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with process_group(args.device) as ctx:  # one process without torchrun: no group, as before
        return _train(args, ctx)


def _train(args, ctx) -> int:
    import numpy as np

    from ..cli import CommandError
    from ..sstn import SSTN
    from ..sstn.augment import make_augmenter
    from ..sstn.datasets import load_frames, load_persons, make_crops, split_by_image
    from ..sstn.hourglass import StackedHourglass
    from ..sstn.trainer import Trainer, TrainConfig, set_seed

    say = print if ctx.is_main else (lambda *a, **k: None)
    set_seed(args.seed)
    persons = load_persons(args.data, args.images, min_keypoints=args.min_keypoints)
    if len(persons) < 2:
        raise CommandError(f"{args.data!r} has {len(persons)} usable persons (with >= {args.min_keypoints} "
                           f"keypoints and an image in {args.images!r}); need at least 2")
    train_p, val_p = split_by_image(persons, args.val_fraction, seed=args.seed)
    if not train_p:
        raise CommandError("no training persons left after the held-out split: lower --val-fraction")
    frames = load_frames(persons)
    aug = make_augmenter(args.augment)
    rng = np.random.default_rng(args.seed)
    kw = dict(input_size=tuple(args.input_size), sigma=args.sigma)
    train = make_crops(train_p, frames, aug, args.boxes_per_person, rng, **kw)
    val = make_crops(val_p, frames, aug, max(1, args.boxes_per_person // 2), rng, **kw) if val_p else None
    say(f"{len(train_p)} training persons ({len(train)} crops), {len(val_p)} held-out ({0 if val is None else len(val)}"
          f" crops); augment={args.augment}, parallel={'on' if args.parallel else 'off'}")
    model = SSTN(StackedHourglass(17, args.stacks, args.width, args.depth), input_size=tuple(args.input_size),
                 parallel="shared" if args.parallel else None, loc_features=args.loc_features, loc_width=8,
                 loc_transform=args.loc_transform).to(ctx.device)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, loc_lr=args.loc_lr,
                      sppe_warmup_epochs=min(args.warmup_epochs, args.epochs), seed=args.seed,
                      warmup_crops=args.warmup_crops, freeze_sppe=args.freeze_sppe,
                      progress=not args.no_progress,
                      extra={"augment": args.augment, "input_size": list(args.input_size), "stacks": args.stacks,
                             "width": args.width, "depth": args.depth, "loc_features": args.loc_features,
                             "loc_transform": args.loc_transform})
    trainer = Trainer(model, train, cfg, val=val, out_dir=args.out)
    info = trainer.distributed_info()
    if info:
        say(f"distributed: {info['world_size']} processes ({info['backend']}, {ctx.device.type}); batch "
            f"{info['batch_size_per_process']} per process, {info['batch_size_total']} in total; lr {info['lr']:g}, "
            f"loc-lr {info['loc_lr']:g} on every process, applied to the gradient averaged over the total batch "
            f"(not scaled)", flush=True)

    def log(r):
        line = f"epoch {r['epoch']}: loss {r['loss']:.5f} (main {r['main_loss']:.5f}, parallel {r['parallel_loss']:.5f})"
        if "val_loss" in r:
            line += (f"; held-out loss {r['val_loss']:.5f}, displacement {r['val_displacement_before']:.4f} -> "
                     f"{r['val_displacement_after']:.4f}, PCK@0.2 {r['val_pck']:.3f}")
        print(line, flush=True)

    start = trainer.epoch
    trainer.fit(resume=args.resume, log=log)
    if args.resume and trainer.epoch == start and trainer.history and trainer.epoch >= cfg.epochs:
        say(f"already trained for {trainer.epoch} epochs (--epochs {cfg.epochs}); nothing to do")
    if args.out:
        say(f"checkpoint: {trainer.checkpoint_path}")
    return 0
