"""``rmpe eval``: COCO keypoint AP/AR (pycocotools) of a results file against a ground truth.

Results: a JSON list (``.json``/``.json.gz``) of COCO keypoint results (``image_id``, ``keypoints`` x y
score per joint in image pixels, ``score``, ``category_id`` 1 when absent). Every image of the ground truth
is scored; results on images it lacks are an error.
"""
from __future__ import annotations

LABELS = {
    "AP": "AP @ OKS=0.50:0.95, all, maxDets=20",
    "AP50": "AP @ OKS=0.50",
    "AP75": "AP @ OKS=0.75",
    "APm": "AP medium",
    "APl": "AP large",
    "AR": "AR @ OKS=0.50:0.95, all, maxDets=20",
    "AR50": "AR @ OKS=0.50",
    "AR75": "AR @ OKS=0.75",
    "ARm": "AR medium",
    "ARl": "AR large",
}


def register(sub) -> None:
    p = sub.add_parser("eval", help="COCO keypoint AP/AR of a results file", description=__doc__.split("\n\n")[0])
    p.add_argument("results", metavar="RESULTS.json", help="COCO keypoint results")
    p.add_argument("gt", metavar="GT.json", help="COCO keypoint ground truth")
    p.add_argument("--json", action="store_true", help="print the stats as one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from ..evaluate import STAT_NAMES, KeypointAP
    from ..io import read_json

    evaluator = KeypointAP(args.gt)
    results = read_json(args.results, "results file")
    if not isinstance(results, list):
        raise ValueError(f"results file {args.results!r}: expected a JSON list of keypoint results, "
                         f"got {type(results).__name__}")
    for n, r in enumerate(results):
        if not isinstance(r, dict):
            raise ValueError(f"results file {args.results!r}: result {n} is a {type(r).__name__}, not an object")
    try:
        stats = evaluator.stats(results)
    except (TypeError, ValueError) as e:
        raise ValueError(f"results file {args.results!r}: {e}") from None
    if args.json:
        print(json.dumps({k: stats[k] for k in (*STAT_NAMES, "n_results")}))
        return 0
    print(f"{stats['n_results']} results on {len(evaluator.image_ids)} images")
    for k in STAT_NAMES:
        print(f"{k:>5}  {stats[k]:7.4f}   {LABELS[k]}")
    return 0
