"""``rmpe eval``: COCO keypoint AP/AR (pycocotools) of a results file against a ground truth.

Results: a JSON list (``.json``/``.json.gz``) of COCO keypoint results (``image_id``, ``keypoints`` x y
score per joint in image pixels, ``score``, ``category_id`` 1 when absent), AlphaPose's results (``image_id``
a file name, matched to the ground truth's ``images[].file_name``), or ``rmpe run --frames``' per-frame
records. Results on images the ground truth lacks are an error.

Which images are scored: the images the run covered. A per-frame file (as results or ``--frames``, which also
takes ``rmpe run --summary``'s file) lists them, frames without persons included; otherwise they are the
images the results name (an image where the run found nobody cannot be told from one it never saw: pass
``--frames``); ``--all-images`` scores every image of the ground truth. The count is printed.
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
    p.add_argument("results", metavar="RESULTS.json", help="COCO or AlphaPose keypoint results, or rmpe run --frames")
    p.add_argument("gt_pos", metavar="GT.json", nargs="?", default=None, help="COCO keypoint ground truth (or --gt)")
    p.add_argument("--gt", default=None, metavar="GT.json", help="COCO keypoint ground truth (as rmpe run and nms)")
    cover = p.add_mutually_exclusive_group()
    cover.add_argument("--frames", default=None, metavar="FRAMES.json",
                       help="the frames the run covered: rmpe run --frames or --summary output")
    cover.add_argument("--all-images", action="store_true",
                       help="score every image of the ground truth (a run that saw only some of them scores low)")
    p.add_argument("--json", action="store_true", help="print the stats as one JSON object")
    p.set_defaults(func=run)


def _is_frame_records(items) -> bool:
    return bool(items) and all(isinstance(r, dict) and "poses" in r and "frame" in r for r in items)


def _coco_id(value, names, what):
    """A result's or frame's image id as the ground truth's integer id (file names through ``names``)."""
    from ..io import json_int

    if isinstance(value, str):
        import os

        base = os.path.basename(value)
        if base in names:
            return names[base]
        raise ValueError(f"{what}: image {value!r} is not a file name of the ground truth's images")
    return json_int(value, what)


def _frames_covered(doc, names, path):
    """Image ids of the frames read by the run, from --frames (per-frame records or a summary)."""
    frames = doc.get("per_frame") if isinstance(doc, dict) else doc
    if not isinstance(frames, list) or not all(isinstance(r, dict) and "image_id" in r for r in frames):
        raise ValueError(f"frames file {path!r}: expected rmpe run's --frames list or --summary object")
    return [_coco_id(r["image_id"], names, f"frames file {path!r}: frame {n}") for n, r in enumerate(frames)
            if r.get("status", "ok") == "ok"]


def run(args) -> int:
    import json
    import os

    from ..cli import CommandError
    from ..evaluate import STAT_NAMES, KeypointAP
    from ..io import read_json

    if (args.gt_pos is None) == (args.gt is None):
        raise CommandError("give the ground truth once: GT.json or --gt GT.json")
    gt_path = args.gt or args.gt_pos
    evaluator = KeypointAP(gt_path)
    names = {os.path.basename(str(im.get("file_name", ""))): im["id"] for im in evaluator.coco.dataset["images"]
             if im.get("file_name")}
    results = read_json(args.results, "results file")
    if not isinstance(results, list):
        raise ValueError(f"results file {args.results!r}: expected a JSON list of keypoint results, "
                         f"got {type(results).__name__}")
    for n, r in enumerate(results):
        if not isinstance(r, dict):
            raise ValueError(f"results file {args.results!r}: result {n} is a {type(r).__name__}, not an object")
    covered, how = None, None
    if _is_frame_records(results):
        covered = _frames_covered(results, names, args.results)
        how = "the frames of the per-frame results"
        results = [p for r in results for p in r["poses"]]
    records = []
    for n, r in enumerate(results):
        if isinstance(r.get("image_id"), str):
            r = dict(r, image_id=_coco_id(r["image_id"], names, f"results file {args.results!r}: result {n}"))
        records.append(r)
    if args.frames:
        covered = _frames_covered(read_json(args.frames, "frames file"), names, args.frames)
        how = f"the frames of {args.frames}"
    full = evaluator
    try:
        checked = full._check(records)  # every field, and no image the ground truth lacks
    except (TypeError, ValueError) as e:
        raise ValueError(f"results file {args.results!r}: {e}") from None
    if args.all_images:
        covered, how = None, "every image of the ground truth"
    elif covered is None:
        covered = sorted({r["image_id"] for r in checked})
        how = "the images the results name; pass --frames to count images where the run found nobody"
    else:
        unknown = sorted(set(covered) - set(full.image_ids))
        if unknown:
            raise ValueError(f"{len(unknown)} image(s) of the run are not in the ground truth {gt_path!r}, "
                             f"e.g. {unknown[0]}")
    if covered is not None:
        evaluator = KeypointAP(full.coco, image_ids=covered) if covered else None
    stats = evaluator.stats(records) if evaluator is not None else None
    if stats is None:
        raise CommandError(f"no image to score ({how})")
    n_images = len(evaluator.image_ids)
    if args.json:
        print(json.dumps({**{k: stats[k] for k in (*STAT_NAMES, "n_results")}, "n_images": n_images}))
        return 0
    print(f"{stats['n_results']} results on {n_images} of the {len(full.image_ids)} images of the "
          f"ground truth ({how})")
    for k in STAT_NAMES:
        print(f"{k:>5}  {stats[k]:7.4f}   {LABELS[k]}")
    return 0
