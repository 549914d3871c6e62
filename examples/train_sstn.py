"""Train the SSTN (STN + SPPE + SDTN, with and without the parallel SPPE) on real COCO persons and
measure whether the STN learns to centre the person; then the paper's Table 3b at a small scale
(training boxes from random jittering vs from PGPG, evaluated on real detector boxes).

    .venv/bin/python examples/train_sstn.py                       # needs ../shared/data (coco_mini, mmpose_tests)
    .venv/bin/python examples/train_sstn.py --warmup-epochs 4 --stn-epochs 2   # a quick look

Data. Held out: the coco_mini val2017 persons (>= 5 labelled joints) of the 15 images that have
AP_H_56 detector boxes; training: every other coco_mini val2017 person, coco_mini train2017 and the
mmpose test images (124 persons). Held-out proposals: (a) random jitter (shift up to 0.3 of the box,
scale 0.8-1.25, 8 per person, fixed seed) and (b) the real AP_H_56 boxes matched to the GT by IoU
>= 0.5 (one per person).

Recipe (see docs/sstn_training.md). 1. SPPE warm-up on the displaced proposal crops themselves (identity
theta, targets in the crop's own frame), 12 new random boxes per person every epoch, mirrored at
random: the SPPE has to localize the joints, not fit a mean pose. A probe (ridge regression from the
heatmaps' joint centroids to the person's displacement, fitted on training crops, scored on held-out
ones) says how much position its heatmaps carry. 2. The STN, its localization net a spatial soft-argmax
on the SPPE's own heatmaps (translation only by default, identity start), trains with the SPPE
frozen: the SSTN loss with the parallel branch, and without it. Every epoch prints the losses and,
on the held-out jitter crops, the heatmap loss, the displacement (plain proposal -> STN crop,
normalized proposal units, rmpe.sstn.model.centre_displacement) and PCK@0.2.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import time

import numpy as np
import torch

from rmpe.sstn import SSTN
from rmpe.sstn.augment import JitterAugmenter, PGPGAugmenter
from rmpe.sstn.datasets import (ResampledCrops, crops_from_boxes, detector_boxes, heatmap_to_image_theta,
                                load_frames, load_persons, make_crops)
from rmpe.sstn.hourglass import StackedHourglass
from rmpe.sstn.trainer import Trainer, TrainConfig, evaluate, set_seed


def load_data(root):
    mini, mm = os.path.join(root, "coco_mini"), os.path.join(root, "mmpose_tests", "coco")
    dets_path = os.path.join(mini, "COCO_val2017_detections_AP_H_56_person_cocomini.json")
    with open(dets_path) as f:
        dets = json.load(f)
    det_images = {int(d["image_id"]) for d in dets}
    val = load_persons(os.path.join(mini, "person_keypoints_val2017_cocomini.json"), os.path.join(mini, "val2017"),
                       min_keypoints=5)
    train = (load_persons(os.path.join(mini, "person_keypoints_train2017_cocomini.json"),
                          os.path.join(mini, "train2017"), min_keypoints=5)
             + load_persons(os.path.join(mm, "test_coco.json"), mm, min_keypoints=5)
             + [p for p in val if p.image_id not in det_images])
    held = [p for p in val if p.image_id in det_images]
    return train, held, dets


@torch.no_grad()
def position_probe(sppe, train_crops, held_crops):
    """Ridge regression (scikit-learn, alpha by leave-one-out CV) from the SPPE's per-joint heatmap
    centroids (ReLU-normalized maps, normalized crop coordinates, 34 numbers) to the GT box centre in
    the proposal (theta_star's translation); returns (mean held-out displacement of the proposal, of
    the probe's correction, mean correlation of the joints' mean centroid with the displacement)."""
    from sklearn.linear_model import RidgeCV

    def centroids(cs):
        was = sppe.training
        sppe.eval()
        hm = torch.cat([sppe(cs.images[s:s + 256])[-1] for s in range(0, len(cs), 256)]).clamp(min=0)
        sppe.train(was)
        n, k, h, w = hm.shape
        p = hm.flatten(2) / (hm.flatten(2).sum(2, keepdim=True) + 1e-9)
        p = p.view(n, k, h, w)
        xs, ys = (2 * torch.arange(w) + 1) / w - 1, (2 * torch.arange(h) + 1) / h - 1
        return torch.stack([(p.sum(2) * xs).sum(2), (p.sum(3) * ys).sum(2)], 2).numpy()

    ct, cv = centroids(train_crops), centroids(held_crops)
    yt, yv = train_crops.theta_star[:, :, 2].numpy(), held_crops.theta_star[:, :, 2].numpy()
    ridge = RidgeCV(alphas=np.logspace(-3, 2, 11)).fit(ct.reshape(len(ct), -1), yt)
    pred = ridge.predict(cv.reshape(len(cv), -1))
    corr = np.mean([np.corrcoef(cv.mean(1)[:, j], yv[:, j])[0, 1] for j in (0, 1)])
    return float(np.linalg.norm(yv, axis=1).mean()), float(np.linalg.norm(yv - pred, axis=1).mean()), float(corr)


def fmt(r):
    line = f"  epoch {r['epoch']:2d}: loss {r['loss']:.5f} (main {r['main_loss']:.5f}, parallel {r['parallel_loss']:.5f})"
    if "val_loss" in r:
        line += (f" | held-out jitter: loss {r['val_loss']:.5f}, displacement {r['val_displacement_before']:.4f} -> "
                 f"{r['val_displacement_after']:.4f}, PCK@0.2 {r['val_pck']:.3f}")
    return line


@torch.no_grad()
def keypoint_ap(model, crops, gt_path):
    """COCO keypoint AP (rmpe.evaluate) of one pose per detector crop, on the crops' images."""
    from rmpe_ext.ops import heatmap_decode
    from rmpe.evaluate import coco_keypoint_eval

    was = model.training
    model.eval()
    hm = model(crops.images).heatmaps[-1]
    model.train(was)
    m = heatmap_to_image_theta(crops.proposal_theta_px, model.input_size, hm.shape[2:])
    pts, scores = heatmap_decode(hm.contiguous(), m, refine="quarter")
    res = [{"image_id": int(i), "category_id": 1, "score": float(s.mean()),
            "keypoints": torch.cat([p.double(), s.double()[:, None]], 1).flatten().tolist()}
           for i, p, s in zip(crops.image_id, pts, scores)]
    return coco_keypoint_eval(gt_path, res, image_ids=sorted({int(i) for i in crops.image_id}))["AP"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    ap.add_argument("--warmup-epochs", type=int, default=12)
    ap.add_argument("--stn-epochs", type=int, default=4)
    ap.add_argument("--width", type=int, default=16, help="hourglass width (1 stack, depth 2)")
    ap.add_argument("--input-size", type=int, nargs=2, default=(64, 48), metavar=("H", "W"))
    ap.add_argument("--boxes-per-person", type=int, default=12)
    ap.add_argument("--loc-lr", type=float, default=1e-3)
    ap.add_argument("--loc-transform", choices=("translation", "scale", "affine"), default="translation")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-table3b", action="store_true", help="skip the jitter vs PGPG comparison")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.time()
    size = tuple(args.input_size)
    train_p, held_p, dets = load_data(args.data_root)
    frames = load_frames(train_p + held_p)
    jitter = JitterAugmenter(shift=0.3, scale=(0.8, 1.25), keep_aspect=True)
    kw = dict(input_size=size, sigma=2.0)
    held_jitter = make_crops(held_p, frames, jitter, 8, np.random.default_rng(1), **kw)
    db, di = detector_boxes(held_p, dets, iou_thresh=0.5)
    held_det = crops_from_boxes(held_p, frames, db, di, **kw)
    probe_train = make_crops(train_p, frames, jitter, 4, np.random.default_rng(2), **kw)
    gt_path = os.path.join(args.data_root, "coco_mini", "person_keypoints_val2017_cocomini.json")
    print(f"{len(train_p)} training persons; held out: {len(held_p)} persons, {len(held_jitter)} jitter crops, "
          f"{len(held_det)} detector crops (AP_H_56, IoU >= 0.5); input {size}, threads {args.threads}")

    def warmed_up(augmenter, name):
        set_seed(args.seed)
        model = SSTN(StackedHourglass(17, 1, args.width, 2), input_size=size, parallel="shared",
                     loc_features="sppe", loc_transform=args.loc_transform, loc_beta=10.0)
        data = ResampledCrops(train_p, frames, augmenter, args.boxes_per_person, seed=args.seed, flip=True, **kw)
        cfg = TrainConfig(epochs=args.warmup_epochs, lr=2e-3, sppe_warmup_epochs=args.warmup_epochs,
                          warmup_crops="proposal", schedule="constant", progress=False, seed=args.seed)
        print(f"\n[{name}] SPPE warm-up on the displaced proposal crops ({args.boxes_per_person} new boxes per "
              f"person per epoch, random mirror)")
        t = time.time()
        Trainer(model, data, cfg, val=held_jitter).fit(log=lambda r: print(fmt(r), flush=True))
        d0, d1, corr = position_probe(model.sppe, probe_train, held_jitter)
        print(f"  warm-up {time.time() - t:.0f}s; position probe (held-out jitter): displacement {d0:.4f}, "
              f"after the ridge probe's correction {d1:.4f}; corr(mean joint centroid, displacement) {corr:.3f}")
        return model, data

    def train_stn(model, data, parallel, name):
        model = copy.deepcopy(model)
        model.use_parallel = parallel
        cfg = TrainConfig(epochs=args.stn_epochs, lr=2e-3, loc_lr=args.loc_lr, freeze_sppe=True,
                          schedule="constant", progress=False, seed=args.seed)
        print(f"\n[{name}] STN training, SPPE frozen, parallel branch {'on' if parallel else 'off'}")
        before = evaluate(model, held_jitter)
        print(f"  before: held-out jitter loss {before['loss']:.5f}, displacement {before['displacement_after']:.4f}, "
              f"PCK@0.2 {before['pck']:.3f}")
        t = time.time()
        Trainer(model, lambda e: data(args.warmup_epochs + e), cfg, val=held_jitter).fit(
            log=lambda r: print(fmt(r), flush=True))
        print(f"  STN training {time.time() - t:.0f}s")
        return model

    def report(model, name):
        j, d = evaluate(model, held_jitter), evaluate(model, held_det)
        print(f"  {name:34s} jitter: disp {j['displacement_before']:.4f} -> {j['displacement_after']:.4f}, PCK "
              f"{j['pck']:.3f} | detector: disp {d['displacement_before']:.4f} -> {d['displacement_after']:.4f}, "
              f"PCK {d['pck']:.3f}, mean error {d['mean_error']:.4f}, AP {keypoint_ap(model, held_det, gt_path):.3f}")

    sppe_j, data_j = warmed_up(jitter, "jitter")
    with_par = train_stn(sppe_j, data_j, True, "jitter")
    without = train_stn(sppe_j, data_j, False, "jitter")
    results = [("jitter, SPPE only (identity STN)", sppe_j), ("jitter, SSTN + parallel", with_par),
               ("jitter, SSTN, no parallel", without)]
    if not args.no_table3b:
        sppe_g, data_g = warmed_up(PGPGAugmenter(), "PGPG")
        results += [("PGPG, SPPE only (identity STN)", sppe_g),
                    ("PGPG, SSTN + parallel", train_stn(sppe_g, data_g, True, "PGPG"))]
    print("\nHeld-out results (displacement: plain proposal -> STN crop, normalized proposal units):")
    for name, model in results:
        report(model, name)
    print(f"\ntotal wall time {time.time() - t_start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
