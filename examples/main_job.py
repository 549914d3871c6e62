"""The main job: the RMPE pipeline end to end on real data shipped in data/.

Four COCO val2017 images (data/coco4) with their 118 real AP_H_56 person boxes, the offline BlazePose
model (data/models/blazepose), the COCO ground truth. Prints

1. COCO keypoint AP before NMS and after each pose NMS (AlphaPose's, also ranked by the pose score
   det_score x mean confident joint score instead of AlphaPose's mean joint score; the paper's with its
   starting-point parameters; OKS; soft-OKS);
2. per-stage times (crop, SPPE, decode, NMS) of the pipeline beside AlphaPose's own code for the same
   work, measured in this run on the same boxes and heatmaps: crops by AlphaPose's per-box
   ``get_affine_transform`` + ``cv2.warpAffine`` + ``im_to_torch`` (``SimpleTransform.test_transform``);
   decode by AlphaPose's per-person ``heatmap_to_coord_simple``; NMS by AlphaPose's ``pose_nms``, image by
   image. Both decode columns include picking BlazePose's 17 COCO joints and their activation (AlphaPose's:
   a sigmoid over the maps; rmpe's: the logits decoded, the sigmoid of the peaks only); the SPPE is the
   same model for both and runs once. Crop, decode and NMS are medians of
   ``--repeat`` runs (the pipeline replays the recorded heatmaps, so only its SPPE stage is skipped);
3. where the rendered images went.

Run from the repository root:  python examples/main_job.py [--threads 1] [--repeat 5] [--out out/main_job]
"""
import argparse
import pathlib
import statistics
import sys
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "coco4"


class Replay:
    """An SPPE adapter that runs the real model once and then gives the recorded heatmaps again, so the
    other stages of the pipeline can be timed over many runs."""

    def __init__(self, model):
        self.model, self.recorded, self.calls = model, [], 0
        from rmpe.pipeline.models import ADAPTER_ATTRS

        for attr in ADAPTER_ATTRS:
            setattr(self, attr, getattr(model, attr))

    def __call__(self, crops):
        if self.calls < len(self.recorded):
            out = self.recorded[self.calls]
        else:
            out = self.model(crops)
            self.recorded.append(out)
        self.calls += 1
        return out

    def rewind(self):
        self.calls = 0


def alphapose_baselines(frames, per_frame, heatmaps, input_size, joint_map, mean):
    """AlphaPose's crops, decode and pose NMS on the same boxes and heatmaps. Returns (times in s,
    kept pose indices per image or None when alphapose is missing)."""
    from alphapose.utils.bbox import _box_to_center_scale, _center_scale_to_box
    from alphapose.utils.pPose_nms import pose_nms
    from alphapose.utils.transforms import get_affine_transform, heatmap_to_coord_simple, im_to_torch
    import cv2

    inp_h, inp_w = input_size
    t = {}
    # crops: SimpleTransform.test_transform, box by box (AlphaPose crops RGB frames)
    t0 = time.perf_counter()
    crop_boxes = []
    for frame, fb in zip(frames, per_frame):
        src = frame[:, :, ::-1]
        for x1, y1, x2, y2 in fb.boxes.tolist():
            center, scale = _box_to_center_scale(x1, y1, x2 - x1, y2 - y1, inp_w / inp_h)
            trans = get_affine_transform(center, scale, 0, [inp_w, inp_h])
            img = cv2.warpAffine(src, trans, (int(inp_w), int(inp_h)), flags=cv2.INTER_LINEAR)
            crop_boxes.append(_center_scale_to_box(center, scale))
            img = im_to_torch(img)
            for c in range(3):
                img[c].add_(-mean[c])
    t["crop"] = time.perf_counter() - t0
    # decode: the same joint pick, a sigmoid over the maps, then heatmap_to_coord_simple person by person
    t0 = time.perf_counter()
    hm = torch.sigmoid(heatmaps.index_select(1, torch.tensor(list(joint_map))).contiguous())
    coords, maxvals = [], []
    for i in range(hm.shape[0]):
        c, m = heatmap_to_coord_simple(hm[i], crop_boxes[i])
        coords.append(c)
        maxvals.append(m)
    t["decode"] = time.perf_counter() - t0
    # pose NMS, image by image, on AlphaPose's own decode
    poses = torch.from_numpy(np.stack(coords)).float()
    scores = torch.from_numpy(np.stack(maxvals)).float()
    keeps, start = [], 0
    t0 = time.perf_counter()
    for fb in per_frame:
        n = len(fb)
        sl = slice(start, start + n)
        out = pose_nms(fb.boxes.clone(), fb.scores.view(-1, 1).clone(), torch.arange(n).view(-1, 1),
                       poses[sl].clone(), scores[sl].clone(), 0)
        keeps.append(sorted(int(k) + start for k in out[5]))
        start += n
    t["nms"] = time.perf_counter() - t0
    return t, keeps, poses, scores.squeeze(-1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch and interpreter threads (default: 1)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per timed stage (default: 5)")
    ap.add_argument("--out", default=str(ROOT / "out" / "main_job"), help="folder for the rendered images")
    ap.add_argument("--no-alphapose", action="store_true", help="skip AlphaPose's columns")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from rmpe.pipeline.detections import image_files, load_detections, load_image
    from rmpe.pipeline.draw import draw_results, save_image
    from rmpe.coco import load_gt
    from rmpe.evaluate import coco_keypoint_eval
    from rmpe.pipeline.models import BlazePoseModel
    from rmpe.pipeline import Pipeline, run_nms

    gt = load_gt(DATA / "test_coco.json")  # read once: the image names and the six evaluations below
    dets = load_detections(DATA / "test_coco_det_AP_H_56.json")
    ids = list(dets)
    files = image_files(DATA, ids, gt.dataset)
    frames = [load_image(files[i]) for i in ids]
    per_frame = [dets[i] for i in ids]
    n_boxes = sum(len(fb) for fb in per_frame)

    model = Replay(BlazePoseModel(num_threads=args.threads))
    pipe = Pipeline(model, nms="alphapose", batch_size=64)
    first = pipe(frames, per_frame, ids)
    runs = []
    for _ in range(args.repeat):
        model.rewind()
        runs.append(pipe(frames, per_frame, ids).timings)
    ours = {s: statistics.median(r[s] for r in runs) for s in ("crop", "decode", "nms")}
    ours["sppe"] = first.timings["sppe"]

    # 1. AP before / after each NMS (same proposals)
    print(f"rmpe main job: {len(ids)} COCO val2017 images, {n_boxes} AP_H_56 boxes, BlazePose "
          f"(LiteRT, {args.threads} thread{'s' if args.threads > 1 else ''}), {pipe.device}\n")
    print(f"{'pose NMS':<16}{'poses':>6}{'AP':>8}{'AP50':>8}")
    rows = [("none (before)", first.pre_nms_results()), ("alphapose", first.results),
            ("  ranked by pose", pipe.renms(first, "alphapose", nms_rank="pose"))]
    rows += [(method, pipe.renms(first, method)) for method in ("paper", "oks", "soft-oks")]
    for name, res in rows:
        st = coco_keypoint_eval(gt, res)
        print(f"{name:<16}{len(res):>6}{st['AP']:>8.3f}{st['AP50']:>8.3f}")

    # 2. stage times beside AlphaPose's
    base, same = None, None
    if not args.no_alphapose:
        try:
            import alphapose  # noqa: F401
        except ImportError:
            print("\n(alphapose is not importable: its columns are skipped)")
        else:
            heatmaps = torch.cat(model.recorded)
            bruns = []
            for _ in range(args.repeat):
                bt, keeps, ap_poses, ap_scores = alphapose_baselines(frames, per_frame, heatmaps, model.input_size,
                                                                     model.joint_map, model.mean)
                bruns.append(bt)
            base = {s: statistics.median(r[s] for r in bruns) for s in ("crop", "decode", "nms")}
            # the same NMS input for both: AlphaPose's decode; do the kept sets agree?
            p = first.proposals._replace(poses=ap_poses, joint_scores=ap_scores)
            keep = run_nms(p, "alphapose")[0].tolist()
            same = sorted(keep) == sorted(k for ks in keeps for k in ks)
    n_hm = f"{n_boxes}x17x64x64"
    print(f"\n{'stage (ms)':<28}{'rmpe':>9}{'AlphaPose':>11}{'ratio':>8}")
    lines = [("crop", f"crop ({n_boxes} x 256x256)"), ("sppe", "SPPE (BlazePose, once)"),
             ("decode", f"decode ({n_hm})"), ("nms", f"pose NMS ({len(ids)} images)")]
    for key, label in lines:
        o = 1000 * ours[key]
        if base is not None and key in base:
            b = 1000 * base[key]
            print(f"{label:<28}{o:>9.1f}{b:>11.1f}{b / o:>7.1f}x")
        else:
            print(f"{label:<28}{o:>9.1f}{'-':>11}{'':>8}")
    print(f"{'total (one pipeline run)':<28}{1000 * first.timings['total']:>9.1f}")
    print(f"(crop, decode, NMS: median of {args.repeat} runs; ratio = AlphaPose time / rmpe time)")
    if same is not None:
        print(f"pose NMS on AlphaPose's own decode: rmpe_ext keeps {'the same' if same else 'DIFFERENT'} poses "
              f"as AlphaPose's pose_nms")

    # 3. rendered frames
    out = pathlib.Path(args.out)
    by_image = {i: [] for i in ids}
    for r in first.results:
        by_image[r["image_id"]].append(r)
    for i, f in zip(ids, frames):
        save_image(out / files[i].name, draw_results(f, by_image[i]))
    print(f"\nrendered {len(ids)} images (skeletons after alphapose NMS) to {out}/")
    return 0 if same in (None, True) else 1


if __name__ == "__main__":
    sys.exit(main())
