"""Seed spread of the SSTN learning figures that tests/rmpe/test_rmpe_train.py asserts: how much of
"the STN learns to centre the person" and "training improves the held-out loss and PCK" survives a
different seed, thread count or CPU kernel set (docs/sstn_training.md has the tables and the limits
derived from them).

    .venv/bin/python examples/sstn_seed_spread.py --matrix --seeds 0 1 2 3 --jsonl runs.jsonl
    .venv/bin/python examples/sstn_seed_spread.py --seeds 4 5 6 7 8 9 --threads 1 --jsonl runs.jsonl
    .venv/bin/python examples/sstn_seed_spread.py --summary runs.jsonl        # the tables, from the records

``--matrix`` runs the seeds once per (threads 1 and 2) x (ATEN_CPU_CAPABILITY unset and "default"),
one configuration at a time, each in a child process (the variable must be set before torch loads);
without it the seeds run in this process (set ATEN_CPU_CAPABILITY and OMP_NUM_THREADS yourself).
Each record holds the CPU's name, torch's kernel set and the thread count.

Two parts (``--part``), each a copy of a test's settings, the seed replacing the test's 0 everywhere
(model init, per-epoch boxes, shuffling); with seed 0 a record gives the test's figures at that thread
count and kernel set (the per-epoch evaluations do not touch any random state):

* ``centring`` (test_stn_learns_to_centre_the_person; defaults = the test's = examples/train_sstn.py's):
  SPPE warm-up on displaced proposal crops (``--warmup-epochs`` 12, ``--boxes-per-person`` 12 new jitter
  boxes per person per epoch, mirrored at random), then STN training with the SPPE frozen
  (``--stn-epochs`` 4), with the parallel branch and without it, from the same warmed-up SPPE.
  Displacement (``rmpe.sstn.model.centre_displacement``, mean over crops) after every STN epoch on the
  training persons' unseen boxes (``data(100)``) and on the 53 held-out persons' 424 fixed jitter crops.
* ``short`` (test_short_training_on_real_persons): ``--short-epochs`` 6 (1 SPPE warm-up) of end-to-end
  training on coco_mini train2017 (4 jitter boxes per person, fixed), held out 20 val2017 persons (2
  boxes each, fixed); the training loss, the held-out loss and PCK@0.2 before and after.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ROOT = os.path.join(HERE, "..", "..", "shared", "data")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def centring_runs(args, seed):
    """One warm-up, then the STN with and without the parallel branch: two records."""
    from rmpe.sstn import SSTN
    from rmpe.sstn.augment import JitterAugmenter
    from rmpe.sstn.datasets import ResampledCrops, load_frames, make_crops
    from rmpe.sstn.hourglass import StackedHourglass
    from rmpe.sstn.trainer import Trainer, TrainConfig, evaluate, set_seed
    from train_sstn import load_data

    train_p, held_p, _ = load_data(args.data_root)
    frames = load_frames(train_p + held_p)
    aug = JitterAugmenter(shift=0.3, scale=(0.8, 1.25), keep_aspect=True)
    data = ResampledCrops(train_p, frames, aug, args.boxes_per_person, seed=seed, flip=True, sigma=2.0)
    held = make_crops(held_p, frames, aug, 8, np.random.default_rng(1), sigma=2.0)
    set_seed(seed)
    base = SSTN(StackedHourglass(stacks=1, width=16, depth=2), loc_features="sppe", loc_transform="translation")
    w = args.warmup_epochs
    t0 = time.time()
    warm = Trainer(base, data, TrainConfig(epochs=w, lr=2e-3, sppe_warmup_epochs=w, warmup_crops="proposal",
                                           schedule="constant", progress=False, seed=seed)).fit()
    warm_s = time.time() - t0
    train_eval = data(100)  # boxes the run never trains on, of the training persons
    out = []
    for parallel in (True, False):
        model = copy.deepcopy(base)
        model.use_parallel = parallel
        b_tr, b_ho = evaluate(model, train_eval), evaluate(model, held)
        cfg = TrainConfig(epochs=args.stn_epochs, lr=2e-3, loc_lr=args.loc_lr, freeze_sppe=True,
                          schedule="constant", progress=False, seed=seed)
        trainer = Trainer(model, lambda e: data(w + e), cfg)
        t0 = time.time()
        tr, ho, pck, loss = [b_tr["displacement_after"]], [b_ho["displacement_after"]], [b_ho["pck"]], []
        for e in range(1, args.stn_epochs + 1):
            loss.append(trainer.fit(epochs=e)[-1]["main_loss"])
            a_tr, a_ho = evaluate(model, train_eval), evaluate(model, held)
            tr.append(a_tr["displacement_after"])
            ho.append(a_ho["displacement_after"])
            pck.append(a_ho["pck"])
        out.append({"part": "centring", "parallel": parallel, "warmup_main_loss": [h["main_loss"] for h in warm],
                    "stn_main_loss": loss, "train_disp": tr, "held_disp": ho, "held_pck": pck,
                    "warmup_s": round(warm_s, 1), "stn_s": round(time.time() - t0, 1)})
    return out


def short_runs(args, seed):
    from rmpe.sstn import SSTN
    from rmpe.sstn.augment import JitterAugmenter
    from rmpe.sstn.datasets import load_frames, load_persons, make_crops
    from rmpe.sstn.hourglass import StackedHourglass
    from rmpe.sstn.trainer import Trainer, TrainConfig, evaluate, set_seed

    root = os.path.join(args.data_root, "coco_mini")
    train_p = load_persons(os.path.join(root, "person_keypoints_train2017_cocomini.json"),
                           os.path.join(root, "train2017"), min_keypoints=5)
    val_p = load_persons(os.path.join(root, "person_keypoints_val2017_cocomini.json"), os.path.join(root, "val2017"),
                         min_keypoints=8)[:20]
    frames = load_frames(train_p + val_p)
    aug = JitterAugmenter(shift=0.25, scale=(0.9, 1.1), keep_aspect=True)
    tr = make_crops(train_p, frames, aug, 4, np.random.default_rng(0), sigma=2.0)
    va = make_crops(val_p, frames, aug, 2, np.random.default_rng(1), sigma=2.0)
    out = []
    for parallel in ("shared", None):
        set_seed(seed)
        model = SSTN(StackedHourglass(stacks=1, width=16, depth=2), parallel=parallel, loc_width=8,
                     loc_blocks=(1, 1, 1))
        before = evaluate(model, va)
        t0 = time.time()
        cfg = TrainConfig(epochs=args.short_epochs, lr=3e-3, loc_lr=1e-3, sppe_warmup_epochs=1, progress=False,
                          seed=seed)
        hist = Trainer(model, tr, cfg, val=va).fit()
        out.append({"part": "short", "parallel": parallel is not None, "main_loss": [h["main_loss"] for h in hist],
                    "val_loss": [before["loss"]] + [h["val_loss"] for h in hist],
                    "val_pck": [before["pck"]] + [h["val_pck"] for h in hist],
                    "val_disp": [before["displacement_after"]] + [h["val_displacement_after"] for h in hist],
                    "s": round(time.time() - t0, 1)})
    return out


def run(args) -> int:
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, HERE)
    env = {"cpu": cpu_name(), "capability": torch.backends.cpu.get_cpu_capability(),
           "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY", ""), "threads": torch.get_num_threads(),
           "torch": torch.__version__}
    for seed in args.seeds:
        for part in (("centring", "short") if args.part == "both" else (args.part,)):
            fn = centring_runs if part == "centring" else short_runs
            for rec in fn(args, seed):
                rec = {"seed": seed, **env, **rec}
                if part == "centring":
                    rec.update(warmup_epochs=args.warmup_epochs, stn_epochs=args.stn_epochs, loc_lr=args.loc_lr,
                               boxes_per_person=args.boxes_per_person)
                else:
                    rec.update(epochs=args.short_epochs)
                print(brief(rec), flush=True)
                if args.jsonl:
                    with open(args.jsonl, "a") as f:
                        f.write(json.dumps(rec) + "\n")
    return 0


def brief(r) -> str:
    head = (f"seed {r['seed']:2d} threads {r['threads']} {r['capability']:7s} "
            f"{'parallel   ' if r['parallel'] else 'no-parallel'}")
    if r["part"] == "centring":
        return (f"{head} train disp {r['train_disp'][0]:.4f} -> " + " ".join(f"{d:.4f}" for d in r["train_disp"][1:])
                + f" | held-out {r['held_disp'][0]:.4f} -> " + " ".join(f"{d:.4f}" for d in r["held_disp"][1:])
                + f" | warm-up loss {r['warmup_main_loss'][0]:.4f} -> {r['warmup_main_loss'][-1]:.4f}"
                + f" | {r['warmup_s']:.0f}+{r['stn_s']:.0f}s")
    return (f"{head} short: loss {r['main_loss'][0]:.4f} -> {r['main_loss'][-1]:.4f} (x{r['main_loss'][-1] / r['main_loss'][0]:.3f})"
            f" | val loss x{r['val_loss'][-1] / r['val_loss'][0]:.3f} | val PCK {r['val_pck'][0]:.3f} -> "
            f"{r['val_pck'][-1]:.3f} | {r['s']:.0f}s")


def matrix(args) -> int:
    base = [sys.executable, os.path.abspath(__file__), "--part", args.part, "--data-root", args.data_root,
            "--warmup-epochs", str(args.warmup_epochs), "--stn-epochs", str(args.stn_epochs),
            "--loc-lr", str(args.loc_lr), "--boxes-per-person", str(args.boxes_per_person),
            "--short-epochs", str(args.short_epochs), "--seeds", *map(str, args.seeds)]
    if args.jsonl:
        base += ["--jsonl", args.jsonl]
    for threads in args.matrix_threads:
        for isa in ("", "default"):
            env = dict(os.environ, OMP_NUM_THREADS=str(threads))
            env.pop("ATEN_CPU_CAPABILITY", None)
            if isa:
                env["ATEN_CPU_CAPABILITY"] = isa
            rc = subprocess.call(base + ["--threads", str(threads)], env=env)
            if rc:
                return rc
    return 0


def _ms(xs):
    return (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else float("nan"))


def summary(path, stn_epoch=None) -> int:
    """Per-seed tables and mean +- sample SD over every record (all configurations)."""
    with open(path) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    cent = [r for r in recs if r["part"] == "centring"]
    def setting(r):
        return r["warmup_epochs"], r["stn_epochs"], r["loc_lr"], r.get("boxes_per_person", 8)

    for key in sorted({setting(r) for r in cent}):
        rs = [r for r in cent if setting(r) == key]
        k = key[1] if stn_epoch is None else min(stn_epoch, key[1])
        print(f"\n## centring: warm-up {key[0]} epochs, STN {k} of {key[1]} epochs, loc_lr {key[2]}, {key[3]} boxes "
              f"per person\n\nDisplacement reduction (before - after; > 0: towards the person) after STN epoch {k}; "
              f"loss ratio: the larger branch's last STN-epoch main loss over the first warm-up epoch's.\n")
        print("| seed | threads | ISA | loss ratio | training persons: parallel / none | parallel - none | mean of both "
              "| held-out: parallel / none | parallel - none | mean of both | held-out PCK change: parallel / none |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        pairs = {}
        for r in rs:
            pairs.setdefault((r["seed"], r["threads"], r["capability"]), {})[r["parallel"]] = r
        names = ("loss", "tp", "tn", "td", "tm", "hp", "hn", "hd", "hm", "pp", "pn")
        cols = {n: [] for n in names}
        for (seed, threads, cap), p in sorted(pairs.items()):
            if True not in p or False not in p:
                continue
            a, b = p[True], p[False]
            tp, tn = a["train_disp"][0] - a["train_disp"][k], b["train_disp"][0] - b["train_disp"][k]
            hp, hn = a["held_disp"][0] - a["held_disp"][k], b["held_disp"][0] - b["held_disp"][k]
            pp, pn = a["held_pck"][k] - a["held_pck"][0], b["held_pck"][k] - b["held_pck"][0]
            ratio = max(a["stn_main_loss"][k - 1], b["stn_main_loss"][k - 1]) / a["warmup_main_loss"][0]
            v = dict(zip(names, (ratio, tp, tn, tp - tn, (tp + tn) / 2, hp, hn, hp - hn, (hp + hn) / 2, pp, pn)))
            for n in names:
                cols[n].append(v[n])
            print(f"| {seed} | {threads} | {cap} | {ratio:.3f} | {tp:+.4f} / {tn:+.4f} | {tp - tn:+.4f} | "
                  f"{(tp + tn) / 2:+.4f} | {hp:+.4f} / {hn:+.4f} | {hp - hn:+.4f} | {(hp + hn) / 2:+.4f} | "
                  f"{pp:+.3f} / {pn:+.3f} |")
        if cols["tp"]:
            ms = {n: _ms(v) for n, v in cols.items()}

            def cell(*ns, f="{:+.4f}"):
                return " / ".join(f"{f.format(ms[n][0])} +- {ms[n][1]:.4f}" for n in ns)

            print(f"| mean +- SD ({len(cols['tp'])} runs) | | | {cell('loss', f='{:.3f}')} | {cell('tp', 'tn')} | "
                  f"{cell('td')} | {cell('tm')} | {cell('hp', 'hn')} | {cell('hd')} | {cell('hm')} | "
                  f"{cell('pp', 'pn')} |")

            def rng(*ns, f="{:+.4f}"):
                return " / ".join(f"{f.format(min(cols[n]))}..{f.format(max(cols[n]))}" for n in ns)

            print(f"| min..max | | | {rng('loss', f='{:.3f}')} | {rng('tp', 'tn')} | {rng('td')} | {rng('tm')} | "
                  f"{rng('hp', 'hn')} | {rng('hd')} | {rng('hm')} | {rng('pp', 'pn')} |")
    short = [r for r in recs if r["part"] == "short"]
    for epochs in sorted({r.get("epochs", 3) for r in short}):
        pairs = {}
        for r in short:
            if r.get("epochs", 3) == epochs:
                pairs.setdefault((r["seed"], r["threads"], r["capability"]), {})[r["parallel"]] = r
        print(f"\n## short end-to-end run: {epochs} epochs (1 of them SPPE warm-up); parallel / none\n")
        print("| seed | threads | ISA | train loss last/first | held-out loss after/before | held-out PCK before "
              "| held-out PCK gain |")
        print("|---|---|---|---|---|---|---|")
        cols = {(n, par): [] for n in ("lr", "vr", "dp") for par in (True, False)}
        for (seed, threads, cap), p in sorted(pairs.items()):
            if True not in p or False not in p:
                continue
            row = {}
            for par, r in p.items():
                row["lr", par] = r["main_loss"][-1] / r["main_loss"][0]
                row["vr", par] = r["val_loss"][-1] / r["val_loss"][0]
                row["dp", par] = r["val_pck"][-1] - r["val_pck"][0]
            for key, v in row.items():
                cols[key].append(v)
            print(f"| {seed} | {threads} | {cap} | {row['lr', True]:.3f} / {row['lr', False]:.3f} | "
                  f"{row['vr', True]:.3f} / {row['vr', False]:.3f} | {p[True]['val_pck'][0]:.3f} | "
                  f"{row['dp', True]:+.3f} / {row['dp', False]:+.3f} |")
        if cols["lr", True]:
            cells = []
            for n, f in (("lr", "{:.3f}"), ("vr", "{:.3f}"), ("dp", "{:+.3f}")):
                cells.append(" / ".join(f"{f.format(_ms(cols[n, par])[0])} +- {_ms(cols[n, par])[1]:.3f}"
                                        for par in (True, False)))
            print(f"| mean +- SD ({len(cols['lr', True])} runs) | | | {cells[0]} | {cells[1]} | | {cells[2]} |")
            print("| min..max | | | " + " | ".join(
                " / ".join(f"{min(cols[n, par]):.3f}..{max(cols[n, par]):.3f}" for par in (True, False))
                for n in ("lr", "vr")) + " | | " + " / ".join(
                f"{min(cols['dp', par]):+.3f}..{max(cols['dp', par]):+.3f}" for par in (True, False)) + " |")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default=DEFAULT_ROOT)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--part", choices=("centring", "short", "both"), default="both")
    ap.add_argument("--warmup-epochs", type=int, default=12)
    ap.add_argument("--stn-epochs", type=int, default=4)
    ap.add_argument("--loc-lr", type=float, default=1e-3)
    ap.add_argument("--boxes-per-person", type=int, default=12, help="centring: new jitter boxes per person per epoch")
    ap.add_argument("--short-epochs", type=int, default=6, help="epochs of the short end-to-end run")
    ap.add_argument("--jsonl", help="append one JSON record per run to this file")
    ap.add_argument("--matrix", action="store_true", help="threads x ATEN_CPU_CAPABILITY, in child processes")
    ap.add_argument("--matrix-threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--summary", metavar="JSONL", help="print the tables from the records and exit")
    ap.add_argument("--summary-epoch", type=int, help="the STN epoch the centring table reads (default: the last)")
    args = ap.parse_args(argv)
    if args.summary:
        return summary(args.summary, args.summary_epoch)
    return matrix(args) if args.matrix else run(args)


if __name__ == "__main__":
    raise SystemExit(main())
