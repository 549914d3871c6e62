"""The paper's Table 3(a) at our scale: the SSTN trained in front of a real, frozen pose model (BlazePose in
torch), with and without the parallel SPPE, measured by COCO keypoint AP (pycocotools) and PCK@0.2 of
BlazePose on held-out persons.

    .venv/bin/python examples/table3a_blazepose.py --data-root /work/shared/data --jsonl runs.jsonl
    .venv/bin/python examples/table3a_blazepose.py --summary docs/data/table3a_blazepose.jsonl

Data (every COCO person with keypoints and an image the project may use). Held out, split by image: the
coco_mini val2017 images that have AP_H_56 detector boxes (``rmpe.sstn.datasets.split_by_image`` with those
images), all their non-crowd persons with at least one labelled joint. Training: every other person with
at least 5 labelled joints, from coco_mini val2017 and train2017 and the four mmpose test images (the
images of the project's ``data/coco4``). Images are the same in every seed; the seed draws the training
boxes, their order and mirroring.

Boxes. Training: new boxes every epoch (``ResampledCrops``), ``--boxes-per-person`` from random jitter
(``JitterAugmenter(shift=0.3, scale=(0.8, 1.25), keep_aspect=True)``, as docs/sstn_training.md) and as many
from PGPG (``rmpe.pgpg.load_default()``), mirrored at random. Held out (fixed, the same for every seed and
model): ``--held-boxes`` jitter boxes and as many PGPG boxes per person, the real AP_H_56 boxes matched to
the GT by IoU >= 0.5, and the GT boxes (the ceiling). Crops are BlazePose's: the box's square enlarged 1.25
times, 256 x 256, RGB.

Model. ``SSTN(BlazePoseSPPE(), input_size=(256, 256), loc_features="sppe", loc_transform=...)``: the
localization net is a spatial soft-argmax of the frozen BlazePose's own heatmaps on the proposal and a
linear map from the 17 joints' points to theta's translation (``--loc-transform translation``, the
default; identity start; 70 parameters); BlazePose is frozen (``TrainConfig(freeze_sppe=True)``), only the
localization net learns (Adam, ``--loc-lr``, batches of 16), from the SSTN loss (the SDTN's heatmaps against
the GT Gaussians in the proposal's frame) with the parallel branch (the same frozen BlazePose on the STN
crop against the centred targets) or without it. The targets' sigma is 8 heatmap cells: BlazePose's own
blobs are about 2 cells wide, but a displaced crop's blobs lie several cells from the centred targets,
where a narrow Gaussian gives the translation no usable gradient (``--gradient-check``).

References that need no training, on the same boxes: the ideal STN (theta*, the GT box's own crop inside
the proposal), its translation alone (what a translation-only STN could reach at best), and a ridge
regression of the localization net's own form (the same soft-argmax points, linear) fitted to the GT
centres of the seed-0 training boxes: the best this localization net could learn.

Measures, on each held-out box set: COCO keypoint AP of one BlazePose pose per box (the AP of each set of
one box per person, averaged over the ``--held-boxes`` sets; scored on the held-out images only), PCK@0.2
(labelled joints within 0.2 of the GT box's longer side), and the mean displacement of the crop from the
person (``rmpe.sstn.centre_displacement``, normalized proposal units). The STN's poses are decoded from the
heatmaps of its crop through theta (exact; the SDTN's resampled maps give the same points up to
interpolation). Without the STN the heatmaps are computed once (BlazePose is frozen) and reused.

Every run writes one JSON record per (seed, model) to ``--jsonl``; ``--summary`` prints the table (mean +-
sample SD over the seeds) from such records.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

from rmpe.sstn.augment import JitterAugmenter, PGPGAugmenter
from rmpe.sstn.blazepose_sppe import BlazePoseSPPE, crop_heatmap_to_image_theta
from rmpe.sstn.datasets import (CropSet, ResampledCrops, crops_from_boxes, detector_boxes, load_frames, load_persons,
                                make_crops, split_by_image)
from rmpe.sstn.model import SSTN, centre_displacement
from rmpe.sstn.trainer import Trainer, TrainConfig, set_seed

SIZE = (256, 256)
HEATMAP = (64, 64)
CROP_KW = dict(input_size=SIZE, sigma=8.0)
JITTER = dict(shift=0.3, scale=(0.8, 1.25), keep_aspect=True)
BOX_SETS = ("jitter", "pgpg", "detector", "gt")
MODELS = ("none", "stn", "stn_parallel")  # no STN (identity), STN without / with the parallel branch


def load_data(root: str, min_train_keypoints: int = 5, min_held_keypoints: int = 1):
    """(training persons, held-out persons, AP_H_56 detections, GT path of the held-out images)."""
    mini, mm = os.path.join(root, "coco_mini"), os.path.join(root, "mmpose_tests", "coco")
    val_json = os.path.join(mini, "person_keypoints_val2017_cocomini.json")
    with open(os.path.join(mini, "COCO_val2017_detections_AP_H_56_person_cocomini.json")) as f:
        dets = json.load(f)
    det_images = {int(d["image_id"]) for d in dets}
    val_dir = os.path.join(mini, "val2017")
    val_all = load_persons(val_json, val_dir, min_keypoints=min(min_train_keypoints, min_held_keypoints))
    held_paths = sorted({p.image_path for p in val_all if p.image_id in det_images})
    val_train, held = split_by_image(val_all, held_out_images=held_paths)
    train = (load_persons(os.path.join(mini, "person_keypoints_train2017_cocomini.json"),
                          os.path.join(mini, "train2017"), min_keypoints=min_train_keypoints)
             + load_persons(os.path.join(mm, "test_coco.json"), mm, min_keypoints=min_train_keypoints)
             + [p for p in val_train if int((p.keypoints[:, 2] > 0).sum()) >= min_train_keypoints])
    held = [p for p in held if int((p.keypoints[:, 2] > 0).sum()) >= min_held_keypoints]
    return train, held, dets, val_json


def held_out_sets(held, frames, dets, boxes: int):
    """The fixed held-out crop sets: name -> (CropSet, draw index [N] (which one-box-per-person set a crop
    belongs to))."""
    n = len(held)
    sets = {}
    jit = make_crops(held, frames, JitterAugmenter(**JITTER), boxes, np.random.default_rng(1), **CROP_KW)
    sets["jitter"] = (jit, torch.arange(n * boxes) % boxes)
    pg = make_crops(held, frames, PGPGAugmenter(), boxes, np.random.default_rng(2), **CROP_KW)
    sets["pgpg"] = (pg, torch.arange(n * boxes) % boxes)
    db, di = detector_boxes(held, dets, iou_thresh=0.5)
    sets["detector"] = (crops_from_boxes(held, frames, db, di, **CROP_KW), torch.zeros(len(di), dtype=torch.long))
    gt = np.array([[p.bbox[0], p.bbox[1], p.bbox[0] + p.bbox[2], p.bbox[1] + p.bbox[3]] for p in held])
    sets["gt"] = (crops_from_boxes(held, frames, gt, np.arange(n), **CROP_KW), torch.zeros(n, dtype=torch.long))
    return sets


@torch.no_grad()
def predict(model, sppe, crops: CropSet, batch: int = 16, theta=None):
    """Decoded poses ``[N, 17, 2]`` (image px), scores ``[N, 17]`` and the crop's displacement ``[N]``: through
    the SSTN ``model`` (eval mode; ``theta [N, 2, 3]``, when given, replaces its localization net's), or, with
    ``model=None``, ``sppe`` on the proposal crops (identity theta)."""
    from rmpe_ext.ops import heatmap_decode

    pts, scores, disp = [], [], []
    if model is not None:
        model.eval()
    for s in range(0, len(crops), batch):
        sl = slice(s, s + batch)
        x = crops.images[sl]
        if model is None:
            th, hm = torch.eye(2, 3).expand(len(x), 2, 3), sppe(x)
        else:
            out = model(x, theta=None if theta is None else theta[sl])
            th, hm = out.theta, out.crop_heatmaps[-1]
        m = crop_heatmap_to_image_theta(th, crops.proposal_theta_px[sl], SIZE, hm.shape[2:])
        p, sc = heatmap_decode(hm.contiguous(), m, refine="quarter")
        pts.append(p.double())
        scores.append(sc.double())
        disp.append(centre_displacement(th.double(), crops.theta_star[sl].double()))
    return torch.cat(pts), torch.cat(scores), torch.cat(disp)


@torch.no_grad()
def soft_argmax_points(sppe, crops: CropSet, beta: float, batch: int = 16):
    """The localization net's input: ``[N, 34]`` (x of the 17 joints, then y), the spatial soft-argmax
    (inverse temperature ``beta``) of BlazePose's maps of each proposal crop, normalized proposal frame."""
    out = []
    for s in range(0, len(crops), batch):
        f = sppe(crops.images[s:s + batch])
        n, c, h, w = f.shape
        p = torch.softmax(beta * f.flatten(2), 2).view(n, c, h, w)
        xs = (2 * torch.arange(w, dtype=p.dtype) + 1) / w - 1
        ys = (2 * torch.arange(h, dtype=p.dtype) + 1) / h - 1
        out.append(torch.cat([(p.sum(2) * xs).sum(2), (p.sum(3) * ys).sum(2)], 1))
    return torch.cat(out).double().numpy()


def translation_theta(t) -> torch.Tensor:
    """``[N, 2]`` translations -> ``[N, 2, 3]`` translation-only thetas."""
    t = torch.as_tensor(t, dtype=torch.float32)
    theta = torch.eye(2, 3).repeat(len(t), 1, 1)
    theta[:, :, 2] = t
    return theta


def measures(pts, scores, disp, crops: CropSet, draw, gt_path: str, pck_alpha: float = 0.2):
    """AP (mean over the draws of one box per person), PCK@``pck_alpha``, mean displacement."""
    from rmpe.evaluate import coco_keypoint_eval

    kp = crops.keypoints
    lab = kp[..., 2] > 0
    side = crops.gt_boxes[:, 2:].amax(1)
    err = torch.linalg.vector_norm(pts - kp[..., :2], dim=-1) / side[:, None]
    pck = float((err[lab] <= pck_alpha).double().mean())
    images = sorted({int(i) for i in crops.image_id})
    aps = []
    for d in sorted({int(v) for v in draw}):
        sel = (draw == d).nonzero()[:, 0]
        res = [{"image_id": int(crops.image_id[i]), "category_id": 1, "score": float(scores[i].mean()),
                "keypoints": torch.cat([pts[i], scores[i][:, None]], 1).flatten().tolist()} for i in sel.tolist()]
        aps.append(coco_keypoint_eval(gt_path, res, image_ids=images)["AP"])
    return {"ap": float(np.mean(aps)), "pck": pck, "displacement": float(disp.mean()), "n": len(crops)}


def gradient_check(sppe, persons, frames, sigma: float, seed: int = 5) -> dict:
    """Whether the parallel branch's loss can teach a translation: one jitter box per person (``seed``), the
    parallel loss (BlazePose on the crop against the centred targets, ``sigma`` heatmap cells) at the
    identity, at theta*'s translation and at theta*; the fraction of crops whose loss is lower at theta*'s
    translation; and the cosine between the loss' negative gradient with respect to the translation at the
    identity and theta*'s translation (1: the gradient points straight at the person's centre)."""
    crops = make_crops(persons, frames, JitterAugmenter(**JITTER), 1, np.random.default_rng(seed),
                       input_size=SIZE, sigma=sigma)
    model = SSTN(sppe, input_size=SIZE, parallel="shared", loc_features="sppe").train()
    n = len(crops)

    def loss(theta, grad=False):
        theta = theta.clone().requires_grad_(grad)
        per = []
        for s in range(0, n, 16):
            out = model(crops.images[s:s + 16], theta=theta[s:s + 16])
            w = crops.centred_weight[s:s + 16, :, None, None]
            l = ((out.parallel[-1] - crops.centred_target[s:s + 16]) ** 2 * w).mean((1, 2, 3))
            if grad:
                l.sum().backward()
            per.append(l.detach())
        return torch.cat(per), (theta.grad[:, :, 2] if grad else None)

    eye = torch.eye(2, 3).expand(n, 2, 3)
    l0, g = loss(eye, grad=True)
    lt, _ = loss(translation_theta(crops.theta_star[:, :, 2]))
    ls, _ = loss(crops.theta_star)
    cos = torch.nn.functional.cosine_similarity(-g, crops.theta_star[:, :, 2], dim=1)
    return {"crops": n, "sigma": sigma, "loss_identity": float(l0.mean()), "loss_theta_star_translation":
            float(lt.mean()), "loss_theta_star": float(ls.mean()), "lower_at_translation": float((lt < l0).double().mean()),
            "cosine_mean": float(cos.mean()), "cosine_median": float(cos.median())}


def train_stn(sppe, data, parallel: bool, args, seed: int, log=print):
    set_seed(seed)
    model = SSTN(sppe, input_size=SIZE, parallel="shared" if parallel else None, loc_features="sppe",
                 loc_transform=args.loc_transform, loc_beta=args.loc_beta)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=1e-3, loc_lr=args.loc_lr, freeze_sppe=True,
                      schedule="constant", progress=False, seed=seed, parallel_weight=args.parallel_weight)
    t = time.time()
    Trainer(model, data, cfg).fit(log=lambda r: log(
        f"    epoch {r['epoch']}: loss {r['loss']:.6f} (main {r['main_loss']:.6f}, parallel {r['parallel_loss']:.6f}) "
        f"{time.time() - t:.0f}s"))
    return model, time.time() - t


def run(args) -> int:
    torch.set_num_threads(args.threads)
    t0 = time.time()
    train_p, held_p, dets, gt_path = load_data(args.data_root)
    if args.train_persons:
        train_p = train_p[:args.train_persons]
    if args.held_persons:
        held_p = held_p[:args.held_persons]
    frames = load_frames(train_p + held_p)
    sets = held_out_sets(held_p, frames, dets, args.held_boxes)
    print(f"{len(train_p)} training persons, {len(held_p)} held-out persons on "
          f"{len({p.image_id for p in held_p})} images; held-out crops: "
          + ", ".join(f"{k} {len(v[0])}" for k, v in sets.items())
          + f"; {args.threads} thread(s); seeds {args.seeds}", flush=True)
    sppe = BlazePoseSPPE()
    base = {"kind": "setting", "train_persons": len(train_p), "held_persons": len(held_p),
            "epochs": args.epochs, "boxes_per_person": args.boxes_per_person, "held_boxes": args.held_boxes,
            "loc_lr": args.loc_lr, "loc_beta": args.loc_beta, "parallel_weight": args.parallel_weight, "loc_transform": args.loc_transform,
            "batch_size": args.batch_size, "threads": args.threads, "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    records = []

    def emit(rec):
        rec = {**base, **rec}
        records.append(rec)
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(json.dumps(rec) + "\n")

    t = time.time()
    rec = {"kind": "result", "model": "none", "seed": None}
    for name, (crops, draw) in sets.items():
        rec[name] = measures(*predict(None, sppe, crops), crops, draw, gt_path)
    emit(rec)
    print(f"no STN ({time.time() - t:.0f}s): " + "; ".join(f"{k} AP {v['ap']:.3f} PCK {v['pck']:.3f} disp "
                                                          f"{v['displacement']:.4f}" for k, v in rec.items()
                                                          if isinstance(v, dict)), flush=True)
    # references that need no training: the ideal STN (theta*: the GT box's own crop, and its translation
    # alone, what a translation-only STN could reach), and the localization net's linear form fitted to
    # the GT centres directly (ridge regression on the seed-0 training boxes of epoch 0)
    from sklearn.linear_model import RidgeCV

    t = time.time()
    fixed = SSTN(sppe, input_size=SIZE, parallel=None, loc_features="sppe", loc_beta=args.loc_beta)
    train0 = CropSet.concat([ResampledCrops(train_p, frames, JitterAugmenter(**JITTER), args.boxes_per_person, seed=0,
                                            flip=True, **CROP_KW)(0),
                             ResampledCrops(train_p, frames, PGPGAugmenter(), args.boxes_per_person, seed=1_000_003,
                                            flip=True, **CROP_KW)(0)])
    ridge = RidgeCV(alphas=np.logspace(-3, 2, 11)).fit(soft_argmax_points(sppe, train0, args.loc_beta),
                                                        train0.theta_star[:, :, 2].double().numpy())
    del train0
    refs = {"ideal": lambda cs: cs.theta_star, "ideal_translation": lambda cs: translation_theta(cs.theta_star[:, :, 2]),
            "probe": lambda cs: translation_theta(ridge.predict(soft_argmax_points(sppe, cs, args.loc_beta)))}
    for name, theta_of in refs.items():
        rec = {"kind": "result", "model": name, "seed": None}
        for bname, (crops, draw) in sets.items():
            if bname != "gt":
                rec[bname] = measures(*predict(fixed, sppe, crops, theta=theta_of(crops)), crops, draw, gt_path)
        emit(rec)
        print(f"{name}: " + "; ".join(f"{k} AP {v['ap']:.3f} PCK {v['pck']:.3f} disp {v['displacement']:.4f}"
                                      for k, v in rec.items() if isinstance(v, dict)), flush=True)
    print(f"references {time.time() - t:.0f}s", flush=True)
    for seed in args.seeds:
        jit = ResampledCrops(train_p, frames, JitterAugmenter(**JITTER), args.boxes_per_person, seed=seed, flip=True,
                             **CROP_KW)
        pg = ResampledCrops(train_p, frames, PGPGAugmenter(), args.boxes_per_person, seed=seed + 1_000_003,
                            flip=True, **CROP_KW)
        data = (lambda e, jit=jit, pg=pg: CropSet.concat([jit(e), pg(e)]))
        for parallel in [m == "stn_parallel" for m in ("stn", "stn_parallel") if m in args.models]:
            name = "stn_parallel" if parallel else "stn"
            print(f"seed {seed}, {name}: training", flush=True)
            model, secs = train_stn(sppe, data, parallel, args, seed)
            t = time.time()
            rec = {"kind": "result", "model": name, "seed": seed, "train_seconds": round(secs, 1),
                   "theta_bias": model.loc_net.points.bias.detach().tolist(),
                   "weight_norm": float(model.loc_net.points.weight.detach().norm())}
            for bname, (crops, draw) in sets.items():
                if bname == "gt":
                    continue
                rec[bname] = measures(*predict(model, sppe, crops), crops, draw, gt_path)
            emit(rec)
            print(f"  {name} seed {seed} (train {secs:.0f}s, eval {time.time() - t:.0f}s): "
                  + "; ".join(f"{k} AP {v['ap']:.3f} PCK {v['pck']:.3f} disp {v['displacement']:.4f}"
                              for k, v in rec.items() if isinstance(v, dict)), flush=True)
    print(f"total {time.time() - t0:.0f}s")
    print()
    print(summary(records))
    return 0


def summary(records) -> str:
    """The table (markdown) from result records: mean +- sample SD over seeds."""
    res = [r for r in records if r.get("kind") == "result"]
    if not res:
        raise ValueError("no result records")

    def cell(model, box, key, fmt):
        vals = [r[box][key] for r in res if r["model"] == model and box in r]
        if model == "gt":
            vals = [r["gt"][key] for r in res if r["model"] == "none" and "gt" in r]
        if not vals:
            return "-"
        if len(vals) == 1:
            return format(vals[0], fmt)
        return f"{statistics.mean(vals):{fmt}} +- {statistics.stdev(vals):{fmt}}"

    seeds = sorted({r["seed"] for r in res if r["seed"] is not None})
    lines = [f"seeds {seeds}", "",
             "| held-out boxes | measure | no STN | STN | STN + parallel SPPE | linear probe | ideal shift | ideal theta* "
             "| GT boxes |", "|---|---|---|---|---|---|---|---|---|"]
    for box in ("jitter", "pgpg", "detector"):
        for key, label, fmt in (("ap", "keypoint AP", ".3f"), ("pck", "PCK@0.2", ".3f"),
                                ("displacement", "displacement", ".4f")):
            gt = cell("gt", box, key, fmt) if key != "displacement" else "0"
            lines.append(f"| {box} | {label} | {cell('none', box, key, fmt)} | {cell('stn', box, key, fmt)} | "
                         f"{cell('stn_parallel', box, key, fmt)} | {cell('probe', box, key, fmt)} | "
                         f"{cell('ideal_translation', box, key, fmt)} | {cell('ideal', box, key, fmt)} | {gt} |")
    return "\n".join(lines)


def deltas(records):
    """Per trained run (seed, model, threads, CPU kernels): the change from its own setting's no-STN record
    on each held-out box set: displacement reduction (before - after: > 0 is towards the person), AP and
    PCK gains. Returns a list of dicts."""
    res = [r for r in records if r.get("kind") == "result"]
    key = lambda r: (r["threads"], r["cpu_capability"], r["train_persons"], r["held_persons"], r["epochs"])  # noqa: E731
    base = {key(r): r for r in res if r["model"] == "none"}
    out = []
    for r in res:
        if r["model"] not in ("stn", "stn_parallel") or key(r) not in base:
            continue
        b = base[key(r)]
        d = {"seed": r["seed"], "model": r["model"], "threads": r["threads"], "cpu_capability": r["cpu_capability"]}
        for box in ("jitter", "pgpg", "detector"):
            d[f"{box}_disp_reduction"] = b[box]["displacement"] - r[box]["displacement"]
            d[f"{box}_ap_gain"] = r[box]["ap"] - b[box]["ap"]
            d[f"{box}_pck_gain"] = r[box]["pck"] - b[box]["pck"]
        out.append(d)
    return out


def spread_table(records) -> str:
    """Markdown: every trained run's changes (:func:`deltas`), then mean +- sample SD (min..max) per model."""
    ds = deltas(records)
    cols = [f"{b}_{m}" for b in ("jitter", "pgpg", "detector") for m in ("disp_reduction", "ap_gain", "pck_gain")]
    lines = ["| seed | threads | kernels | model | " + " | ".join(cols) + " |", "|---" * (4 + len(cols)) + "|"]
    for d in sorted(ds, key=lambda d: (d["model"], d["seed"], d["threads"], d["cpu_capability"])):
        lines.append(f"| {d['seed']} | {d['threads']} | {d['cpu_capability']} | {d['model']} | "
                     + " | ".join(f"{d[c]:+.4f}" for c in cols) + " |")
    lines.append("")
    for model in ("stn", "stn_parallel"):
        sel = [d for d in ds if d["model"] == model]
        if len(sel) < 2:
            continue
        lines.append(f"{model} ({len(sel)} runs): " + "; ".join(
            f"{c} {statistics.mean(v):+.4f} +- {statistics.stdev(v):.4f} ({min(v):+.4f}..{max(v):+.4f})"
            for c in cols for v in [[d[c] for d in sel]]))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--boxes-per-person", type=int, default=2, help="per augmenter (jitter, PGPG) and epoch")
    ap.add_argument("--held-boxes", type=int, default=4, help="held-out jitter and PGPG boxes per person")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--loc-lr", type=float, default=3e-3)
    ap.add_argument("--loc-beta", type=float, default=20.0)
    ap.add_argument("--parallel-weight", type=float, default=10.0, help="the parallel branch's loss weight")
    ap.add_argument("--models", nargs="+", choices=("stn", "stn_parallel"), default=["stn", "stn_parallel"],
                    help="which STNs to train")
    ap.add_argument("--loc-transform", choices=("translation", "scale"), default="translation")
    ap.add_argument("--train-persons", type=int, default=0, help="use only the first N training persons (0: all)")
    ap.add_argument("--held-persons", type=int, default=0, help="use only the first N held-out persons (0: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jsonl", help="append one JSON record per (seed, model) to this file")
    ap.add_argument("--gradient-check", type=int, default=0, metavar="N",
                    help="only check the parallel loss' gradient on N training persons' jitter boxes, and exit")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[2.0, 4.0, 8.0], help="target sigmas for --gradient-check")
    ap.add_argument("--summary", metavar="JSONL", help="print the table from the records of a JSONL file and exit")
    args = ap.parse_args(argv)
    if args.gradient_check:
        torch.set_num_threads(args.threads)
        train_p = load_data(args.data_root)[0][:args.gradient_check]
        frames, sppe = load_frames(train_p), BlazePoseSPPE()
        for sigma in args.sigmas:
            print(json.dumps(gradient_check(sppe, train_p, frames, sigma)), flush=True)
        return 0
    if args.summary:
        with open(args.summary) as f:
            records = [json.loads(line) for line in f if line.strip()]
        print(summary(records))
        print()
        print(spread_table(records))
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
