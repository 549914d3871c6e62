"""Pose NMS on real data: 413 BlazePose pose proposals (before NMS) on 12 COCO
val2017 images, shipped in data/.

1. AlphaPose's own pose_nms (if `alphapose` is installed) against the drop-in
   rmpe_ext.alphapose.pose_nms, image by image: same kept poses? how fast?
2. The batched tensor op over all 12 images at once.
3. COCO keypoint AP (pycocotools) with no NMS, AlphaPose's NMS, the paper's
   NMS, OKS-NMS and soft-OKS-NMS.

Run from the repository root:  python examples/pose_nms_demo.py
"""
import argparse
import gzip
import json
import pathlib
import time

import torch

from rmpe_ext import alphapose, ops
from rmpe_ext.proposals import load_proposals

ROOT = pathlib.Path(__file__).resolve().parents[1]


def timed(fn, *args, repeat=20, **kwargs):
    """(result, median seconds over `repeat` calls)."""
    out = fn(*args, **kwargs)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*args, **kwargs)
        times.append(time.perf_counter() - t)
    return out, sorted(times)[len(times) // 2]


def coco_ap(gt, results):
    """Keypoint AP and AP50 of COCO-style results against the GT dict (rmpe's evaluator: pycocotools)."""
    from rmpe.evaluate import coco_keypoint_eval

    stats = coco_keypoint_eval(gt, results)
    return stats["AP"], stats["AP50"]


def as_results(p, keep, poses=None, joint_scores=None, scores=None):
    """COCO keypoint results for the kept poses (merged joints when given)."""
    poses = p.poses[keep] if poses is None else poses
    joint_scores = p.joint_scores[keep] if joint_scores is None else joint_scores
    scores = p.scores[keep] if scores is None else scores
    kp = torch.cat([poses, joint_scores[:, :, None]], 2).reshape(len(keep), -1)
    ids = p.image_ids[keep].tolist()
    return [dict(image_id=i, category_id=1, keypoints=k, score=float(s))
            for i, k, s in zip(ids, kp.tolist(), scores.tolist())]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=ROOT / "data", type=pathlib.Path, help="folder with the shipped sample")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    props = load_proposals(args.data / "blazepose_proposals_pre_nms_dev.json.gz")
    with gzip.open(args.data / "gt_dev.json.gz", "rt") as f:
        gt = json.load(f)
    print(f"{len(props.poses)} real pose proposals on {props.num_images} COCO images; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s)\n")

    try:
        from alphapose.utils.pPose_nms import pose_nms as alphapose_pose_nms
    except ImportError:
        alphapose_pose_nms = None
        print("(alphapose is not installed: `pip install --no-deps alphapose==1.1` to compare with it)\n")

    print(f"{'image':>8} {'proposals':>9} {'kept':>5} {'same as AlphaPose':>18} {'AlphaPose':>11} {'rmpe_ext':>10} {'speed-up':>9}")
    ours_total = theirs_total = 0.0
    results_alphapose = []
    for b in range(props.num_images):
        p = props.image(b)
        n = len(p.poses)
        inputs = (p.boxes, p.box_scores.reshape(n, 1), torch.arange(n).reshape(n, 1).float(), p.poses,
                  p.joint_scores.reshape(n, -1, 1))
        mine, t_ours = timed(alphapose.pose_nms, *inputs, repeat=200)
        ours_total += t_ours
        same, t_theirs = "-", float("nan")
        if alphapose_pose_nms is not None:
            theirs, t_theirs = timed(alphapose_pose_nms, *[t.clone() for t in inputs], repeat=3)
            theirs_total += t_theirs
            same = "yes" if [int(i) for i in theirs[5]] == [int(i) for i in mine[5]] else "NO"
        # AlphaPose's final score of a merged pose: mean + box score + 1.25 max of its joint scores
        for box_score, pose, score, pick in zip(mine[1], mine[3], mine[4], mine[5]):
            s = score.flatten()
            results_alphapose.append(dict(
                image_id=int(p.image_ids[pick]), category_id=1,
                keypoints=torch.cat([pose, score], 1).flatten().tolist(),
                score=float(s.mean() + box_score.flatten()[0] + 1.25 * s.max())))
        print(f"{int(p.image_ids[0]):>8} {n:>9} {len(mine[5]):>5} {same:>18} {t_theirs * 1e3:>9.2f}ms "
              f"{t_ours * 1e6:>8.1f}µs {t_theirs / t_ours:>8.0f}x")
    if alphapose_pose_nms is not None:
        print(f"{'all':>8} {len(props.poses):>9} {'':>5} {'':>18} {theirs_total * 1e3:>9.2f}ms "
              f"{ours_total * 1e6:>8.1f}µs {theirs_total / ours_total:>8.0f}x")

    batched = (props.poses, props.joint_scores, props.boxes, props.scores, props.image_index)
    res, t_batch = timed(ops.pose_nms, *batched)
    print(f"\nrmpe_ext.ops.pose_nms, all {props.num_images} images in one call: {t_batch * 1e6:.1f} µs, "
          f"{len(res.keep)} poses kept\n")

    rows = [("no NMS", as_results(props, torch.arange(len(props.poses))))]
    rows.append(("AlphaPose pose_nms, as AlphaPose scores", results_alphapose))
    r = ops.pose_nms(*batched)
    rows.append(("AlphaPose criterion, proposal scores", as_results(props, r.keep, r.poses, r.scores)))
    r = ops.pose_nms(*batched, method="paper")
    rows.append(("paper pose NMS (default params)", as_results(props, r.keep)))
    keep = ops.oks_nms(*batched, thresh=0.9)
    rows.append(("OKS-NMS, 0.9", as_results(props, keep)))
    keep, rescored = ops.soft_oks_nms(*batched, thresh=0.9)
    rows.append(("soft-OKS-NMS, 0.9, 20 per image", as_results(props, keep, scores=rescored)))
    print("COCO keypoint AP on these 12 images (AlphaPose ranks and scores by its joint scores; the other rows\n"
          "rank and score by the proposal's detection score x mean joint score)")
    print(f"{'':40s} {'poses':>6} {'AP':>6} {'AP50':>6}")
    for name, results in rows:
        a, a50 = coco_ap(gt, results)
        print(f"{name:40s} {len(results):>6} {a:6.3f} {a50:6.3f}")


if __name__ == "__main__":
    main()
