"""A person detector's box AP on COCO images (pycocotools, category person), and the pipeline's keypoint AP
with its boxes.

    python tools/eval_person_detector.py --gt GT.json --images DIR [--detector blazepose]
        [--detections FILE ...] [--keypoints] [--subset DETECTIONS_FILE] [--out DIR]

* ``--detector SPEC`` (``rmpe.pipeline.detectors.make_detector``; default ``blazepose``): run on every image
  of the GT file; its boxes are scored as COCO detection results.
* ``--detections FILE``: a detections file (COCO results) scored the same way, e.g. the AP_H_56 boxes.
* ``--subset FILE``: also score on only the images that FILE (a COCO detections file) has boxes for.
* ``--keypoints``: run the pipeline (``rmpe.pipeline.Pipeline`` with the shipped BlazePose landmark model,
  LiteRT, ``--nms``) on the detector's boxes and on each ``--detections`` file's, and score the keypoints.

Prints one line per (boxes, image set): images, boxes, AP, AP50, AR@100 (box), and keypoint AP with
``--keypoints``. ``--out DIR`` writes the detector's boxes (``boxes.json``) and pipeline results there.
Run from the repository root. The figures of the README's "Person detectors" came from:

    python tools/eval_person_detector.py --gt ../shared/data/coco_mini/person_keypoints_val2017_cocomini.json \\
        --images ../shared/data/coco_mini/val2017 \\
        --detections ../shared/data/coco_mini/COCO_val2017_detections_AP_H_56_person_cocomini.json \\
        --subset ../shared/data/coco_mini/COCO_val2017_detections_AP_H_56_person_cocomini.json --keypoints

and the BlazePose detector's ``body_width`` was chosen on the other images of that set (train2017) with

    python tools/eval_person_detector.py --gt ../shared/data/coco_mini/person_keypoints_train2017_cocomini.json \
        --images ../shared/data/coco_mini/train2017 --body-widths 0.3,0.4,0.5,0.6,0.8,1.0
"""
import argparse
import contextlib
import io
import json
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))


def coco_eval(gt, results, iou_type, image_ids=None):
    """(AP, AP50, AR@100 or AR) of ``results`` against the pycocotools COCO ``gt``, person category,
    on ``image_ids`` (default: all of the GT's images). 0s when there are no results."""
    from pycocotools.cocoeval import COCOeval

    if not results:
        return 0.0, 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        e = COCOeval(gt, dt, iou_type)
        e.params.catIds = [1]
        if image_ids is not None:
            e.params.imgIds = sorted(image_ids)
        e.evaluate()
        e.accumulate()
        e.summarize()
    return float(e.stats[0]), float(e.stats[1]), float(e.stats[8] if iou_type == "bbox" else e.stats[5])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gt", required=True, help="COCO person-keypoint ground truth (its images are run)")
    ap.add_argument("--images", required=True, help="folder of the GT's images")
    ap.add_argument("--detector", default="blazepose", help="detector spec (default: blazepose)")
    ap.add_argument("--detections", nargs="*", default=[], help="detections files to score beside the detector")
    ap.add_argument("--subset", default=None, help="also score on the images this detections file covers")
    ap.add_argument("--keypoints", action="store_true", help="also the pipeline's keypoint AP on the boxes")
    ap.add_argument("--nms", default="oks", help="the pipeline's pose NMS with --keypoints (default: oks)")
    ap.add_argument("--threads", type=int, default=1, help="torch/LiteRT threads (default: 1)")
    ap.add_argument("--out", default=None, help="folder for boxes.json and the pipeline's results")
    ap.add_argument("--body-widths", default=None, metavar="W,W,...",
                    help="only the BlazePose detector's box AP for each of these body_width values (and the "
                         "'square' rule): how its default was chosen")
    args = ap.parse_args(argv)

    import torch
    from pycocotools.coco import COCO

    from rmpe.pipeline.detections import load_detections, load_image
    from rmpe.pipeline.detectors import make_detector

    torch.set_num_threads(args.threads)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(args.gt)
    images = gt.dataset["images"]
    all_ids = [im["id"] for im in images]
    subset = None
    if args.subset:
        with open(args.subset) as f:
            subset = sorted({int(r["image_id"]) for r in json.load(f)})
    frames = {im["id"]: load_image(os.path.join(args.images, im["file_name"])) for im in images}

    if args.body_widths:
        from rmpe.pipeline.detectors import BlazePoseDetector

        rules = [("square", None)] + [("body", float(w)) for w in args.body_widths.split(",")]
        for rule, w in rules:
            det = BlazePoseDetector(box=rule, **({} if w is None else {"body_width": w}))
            res = [{"image_id": int(i), "category_id": 1, "score": float(s),
                    "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
                   for i in all_ids for fb in [det(frames[i])] for b, s in zip(fb.boxes.tolist(), fb.scores.tolist())]
            a, a50, ar = coco_eval(gt, res, "bbox")
            print(f"box={rule:6s} body_width={'-' if w is None else w:<5} {len(all_ids)} images {len(res):4d} boxes: "
                  f"box AP {a:.3f}, AP50 {a50:.3f}, AR@100 {ar:.3f}", flush=True)
        return 0
    detector = make_detector(args.detector)
    t0 = time.perf_counter()
    per_image = {i: detector(frames[i]) for i in all_ids}
    det_s = (time.perf_counter() - t0) / len(all_ids)
    sets = [(f"detector {args.detector}", per_image)]
    for path in args.detections:
        loaded = load_detections(path)
        sets.append((f"file {os.path.basename(path)}", {i: loaded[i] for i in all_ids if i in loaded}))
    print(f"{len(all_ids)} images; detector {detector!r}: {det_s * 1e3:.1f} ms per image "
          f"({args.threads} thread(s)), {sum(len(b) for b in per_image.values())} boxes")

    pipe = None
    if args.keypoints:
        from rmpe.pipeline import Pipeline
        from rmpe.pipeline.models import BlazePoseModel

        pipe = Pipeline(BlazePoseModel(num_threads=args.threads), nms=args.nms)
    out = pathlib.Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    for name, boxes in sets:
        res = [{"image_id": int(i), "category_id": 1, "score": float(s),
                "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
               for i, fb in boxes.items() for b, s in zip(fb.boxes.tolist(), fb.scores.tolist())]
        kp_res = None
        if pipe is not None:
            ids = [i for i in all_ids if i in boxes]
            r = pipe([frames[i] for i in ids], [boxes[i] for i in ids], ids)
            kp_res = r.results
        for set_name, ids in (("all GT images", None), ("subset", subset)):
            if set_name == "subset" and ids is None:
                continue
            scored = all_ids if ids is None else ids
            nbox = sum(len(boxes[i]) for i in scored if i in boxes)
            a, a50, ar = coco_eval(gt, res, "bbox", ids)
            line = (f"{name:52s} {set_name:14s} {len(scored):3d} images {nbox:4d} boxes: box AP {a:.3f}, "
                    f"AP50 {a50:.3f}, AR@100 {ar:.3f}")
            if kp_res is not None:
                ka, ka50, _ = coco_eval(gt, kp_res, "keypoints", ids)
                line += f"; keypoint AP ({args.nms} NMS) {ka:.3f}, AP50 {ka50:.3f}"
            print(line, flush=True)
        if out and name.startswith("detector"):
            with open(out / "boxes.json", "w") as f:
                json.dump(res, f)
            if kp_res is not None:
                with open(out / "keypoints.json", "w") as f:
                    json.dump(kp_res, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
