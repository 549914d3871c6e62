"""Which pose NMS should ``rmpe run`` use by default? Chosen on one set of images, reported on another.

The candidates are every method (AlphaPose's, the paper's, OKS, soft-OKS) with its default parameters under
each ranking (``--nms-rank``: the proposal's score det_score x mean confident joint score, the mean joint
score, the detector's box score), plus AlphaPose's exact behaviour (joint-mean ranking, AlphaPose's final
score) and no NMS. Their COCO keypoint AP (pycocotools) is measured on the poses ``rmpe run`` itself
computes before NMS (offline BlazePose on the real AP_H_56 person boxes) on 23 COCO val2017 images, in two
disjoint parts:

* **A**: the 12 images of the shipped dev set (``data/gt_dev.json.gz``, the images whose proposals ship as
  ``data/blazepose_proposals_pre_nms_dev.json.gz`` and that ``rmpe tune-nms`` / ``examples/tune_nms.py``
  use); their AP is also given on those shipped proposals (column ``A shipped``: BlazePose's regression
  keypoints rather than the pipeline's heatmap decode);
* **B**: the 11 other images with AP_H_56 boxes: ``data/coco4``'s 197388 and ten of the coco_mini images
  (the shared test data, ``../shared/data/coco_mini``; without it the script stops with a message).

The default is the candidate with the best AP on A; its AP on B (held out) is what the README reports,
beside AlphaPose's. The reverse (chosen on B, reported on A) is printed as a check.

    python examples/choose_default_nms.py [--threads 2] [--out out/default_nms]

The pre-NMS poses are cached in ``OUT/proposals_pre_nms.json.gz`` (delete it to recompute them).
"""
import argparse
import gzip
import json
import os
import pathlib
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
COCO4 = DATA / "coco4"
SHARED = pathlib.Path(os.environ.get("RMPE_SHARED_DATA", ROOT.parent / "shared" / "data"))
COCO_MINI = SHARED / "coco_mini"

METHODS = ("alphapose", "paper", "oks", "soft-oks")
RANKS = ("proposal", "joints", "box")


def candidates():
    """(label, method, Scoring or None) in table order; None is AlphaPose's exact convention."""
    from rmpe.nms.runtime import Scoring

    out = [("none", None, None), ("alphapose (AlphaPose exactly: rank joints, score alphapose)", "alphapose",
                                  Scoring("joints", "alphapose"))]
    for m in METHODS:
        for r in RANKS:
            out.append((f"{m}, rank {r}", m, Scoring(r, "rank")))
    return out


def read_gt(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        return json.load(f)


def merged_gt(ids):
    """One COCO keypoint ground truth for ``ids`` from coco4's and coco_mini's files (the official COCO
    val2017 annotations in both)."""
    docs = [read_gt(COCO4 / "test_coco.json"), read_gt(COCO_MINI / "person_keypoints_val2017_cocomini.json")]
    images, anns, seen = [], [], set()
    for d in docs:
        for im in d["images"]:
            if im["id"] in ids and im["id"] not in seen:
                seen.add(im["id"])
                images.append(im)
                anns += [a for a in d["annotations"] if a["image_id"] == im["id"]]
    missing = set(ids) - seen
    if missing:
        raise SystemExit(f"no ground truth for images {sorted(missing)}")
    return {"images": images, "annotations": anns, "categories": docs[0]["categories"]}


def pipeline_proposals(cache, threads):
    """The poses ``rmpe run`` computes before NMS (BlazePose, every AP_H_56 box) on the 23 images, as
    pre-NMS result records (cached)."""
    from rmpe.io import write_json
    from rmpe.pipeline import Pipeline
    from rmpe.pipeline.detections import load_detections, load_image
    from rmpe.pipeline.models import BlazePoseModel

    if cache.exists():
        return
    dets = load_detections(COCO4 / "test_coco_det_AP_H_56.json")
    files = {i: COCO4 / f"{i:012d}.jpg" for i in dets}
    mini = load_detections(COCO_MINI / "COCO_val2017_detections_AP_H_56_person_cocomini.json")
    for i, fb in mini.items():
        if i not in dets:
            dets[i] = fb
            files[i] = COCO_MINI / "val2017" / f"{i:012d}.jpg"
    pipe = Pipeline(BlazePoseModel(num_threads=threads), nms="none", batch_size=64)
    records, t0 = [], time.perf_counter()
    for i in sorted(dets):
        res = pipe([load_image(files[i])], [dets[i]], [i])
        records += res.pre_nms_results()
    print(f"pipeline poses before NMS: {len(records)} on {len(dets)} images ({time.perf_counter() - t0:.0f} s)")
    write_json(cache, records)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="out/default_nms")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not COCO_MINI.is_dir():
        sys.exit(f"needs the coco_mini images and boxes at {COCO_MINI} (set RMPE_SHARED_DATA)")
    from rmpe.coco import read_proposals, subset_proposals
    from rmpe.evaluate import KeypointAP
    from rmpe.nms.runtime import apply_nms, no_nms, to_results

    out = pathlib.Path(args.out)
    cache = out / "proposals_pre_nms.json.gz"
    pipeline_proposals(cache, args.threads)
    props = read_proposals(cache)
    all_ids = sorted(set(props.image_ids.tolist()))
    a_ids = sorted(im["id"] for im in read_gt(DATA / "gt_dev.json.gz")["images"])
    b_ids = [i for i in all_ids if i not in a_ids]
    assert set(a_ids) <= set(all_ids), "the dev images must all have boxes"
    parts = {
        "A": (subset_proposals(props, a_ids), KeypointAP(merged_gt(a_ids))),
        "A shipped": (read_proposals(DATA / "blazepose_proposals_pre_nms_dev.json.gz"),
                      KeypointAP(DATA / "gt_dev.json.gz")),
        "B": (subset_proposals(props, b_ids), KeypointAP(merged_gt(b_ids))),
    }
    print(f"A: {len(a_ids)} images, {len(parts['A'][0].poses)} poses; B: {len(b_ids)} images "
          f"({', '.join(map(str, b_ids))}), {len(parts['B'][0].poses)} poses")
    table, spec = {}, {}
    for label, method, scoring in candidates():
        spec[label] = {"method": method or "none", "rank": scoring.rank if scoring else None,
                       "score": scoring.output if scoring else None}
        row = {}
        for name, (p, ev) in parts.items():
            o = no_nms(p) if method is None else apply_nms(p, method, None, scoring)
            row[name] = ev.ap(to_results(p, o))
        table[label] = row
    print(f"\n{'candidate':<62}" + "".join(f"{n:>11}" for n in parts))
    for label, row in table.items():
        print(f"{label:<62}" + "".join(f"{row[n]:11.4f}" for n in parts))
    exact = "alphapose (AlphaPose exactly: rank joints, score alphapose)"
    pool = [k for k in table if k != "none"]
    best_a = max(pool, key=lambda k: table[k]["A"])
    best_b = max(pool, key=lambda k: table[k]["B"])
    print(f"\nchosen on A: {best_a} (A {table[best_a]['A']:.4f}); held out on B: {table[best_a]['B']:.4f} "
          f"against AlphaPose's exact {table[exact]['B']:.4f} ({table[best_a]['B'] - table[exact]['B']:+.4f}) "
          f"and no NMS {table['none']['B']:.4f}")
    print(f"chosen on B: {best_b} (B {table[best_b]['B']:.4f}); held out on A: {table[best_b]['A']:.4f} "
          f"against AlphaPose's exact {table[exact]['A']:.4f} ({table[best_b]['A'] - table[exact]['A']:+.4f})")
    with open(out / "table.json", "w") as f:
        json.dump({"A": a_ids, "B": b_ids, "ap": table, "candidates": spec, "chosen_on_A": best_a,
                   "chosen_on_B": best_b}, f, indent=1)


if __name__ == "__main__":
    main()
