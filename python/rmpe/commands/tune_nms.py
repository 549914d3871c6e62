"""``rmpe tune-nms``: search the pose-NMS parameters that maximise COCO keypoint AP on pre-NMS proposals.

Two parameters at a time with the others fixed, on 2-D grids refined when a round stops improving (the
paper's scheme, ``rmpe.nms.search.tune_nms``), and the merge flag; the ranking/score choice is set by
``--nms-rank``/``--nms-score`` (searched only with ``--search-scoring``). Writes an NMS parameters file
(``rmpe.nms.params``) whose ``meta`` holds the scoring, the AP and how it was found; ``rmpe nms
--nms-params`` and ``rmpe run --nms-params`` read it. The NMS flags are ``rmpe run``'s.
"""
from __future__ import annotations

MAX_GRID = 101  # grid points per parameter: a round evaluates grid^2 points per pair


def register(sub) -> None:
    from . import add_nms_flags

    p = sub.add_parser("tune-nms", help="search pose-NMS parameters for COCO keypoint AP",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("proposals", metavar="PROPOSALS.json", help="pre-NMS COCO keypoint results with det_bbox")
    p.add_argument("gt", metavar="GT.json", help="COCO keypoint ground truth of those images")
    p.add_argument("-o", "--output", required=True, metavar="PARAMS.json", help="where to write the parameters")
    add_nms_flags(p, "default: paper", params=False, default_method="paper",
                  scoring_default="--start's, else the proposal's score, written as the ranking score")
    p.add_argument("--start", default=None, metavar="FILE",
                   help="start from this parameters file (default: the method's defaults)")
    p.add_argument("--names", default=None, metavar="A,B,...",
                   help="the parameters searched in pairs (default: rmpe.nms.search.default_space)")
    p.add_argument("--max-rounds", type=int, default=20, help="at most this many rounds (default: 20)")
    p.add_argument("--grid", type=int, default=7, help="grid points per parameter, odd (default: 7)")
    p.add_argument("--refine", type=int, default=2, help="grid refinements before stopping (default: 2)")
    p.add_argument("--tol", type=float, default=1e-4,
                   help="a round improving AP by less than this has converged (default: 1e-4)")
    p.add_argument("--search-scoring", action="store_true",
                   help="also search the ranking/score choice (overfits on a dozen images)")
    p.add_argument("--images", default=None, metavar="ID,ID,...",
                   help="tune on these image ids only (default: every image of the ground truth)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run, outputs=[("-o", "output", "file")])


def _ints(text, what):
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers, got {text!r}") from None


def run(args) -> int:
    import dataclasses

    import torch

    from ..cli import CommandError
    from ..coco import read_proposals, subset_proposals
    from ..evaluate import KeypointAP
    from ..nms.params import save_params
    from ..nms.runtime import Scoring, load_params_and_scoring, no_nms, to_results
    from ..nms.search import tune_nms

    from . import check_renamed

    check_renamed(args)
    torch.set_num_threads(1)
    if args.max_rounds < 1:
        raise CommandError(f"--max-rounds must be at least 1, got {args.max_rounds}")
    if args.grid < 3 or args.grid % 2 == 0 or args.grid > MAX_GRID:
        raise CommandError(f"--grid must be an odd number >= 3 and at most {MAX_GRID}, got {args.grid}")
    if args.refine < 0 or not args.tol >= 0:
        raise CommandError("--refine and --tol must be >= 0")
    start, scoring = None, None
    if args.start:
        method, start, scoring = load_params_and_scoring(args.start)
        if method != args.nms:
            raise CommandError(f"--start {args.start!r} is a {method} parameters file, not {args.nms}")
    base = scoring or Scoring()
    scoring = Scoring(args.nms_rank or base.rank, args.nms_score or base.output)
    if args.nms == "soft-oks" and scoring.output != "rank":
        raise CommandError("soft-oks scores by its rescored ranking score: --nms-score must be 'rank'")
    images = _ints(args.images, "--images") if args.images else None
    evaluator = KeypointAP(args.gt, image_ids=images)
    props = read_proposals(args.proposals, num_joints=evaluator.num_joints)
    unknown = set(props.image_ids.tolist()) - set(evaluator.coco.getImgIds())
    if unknown:
        raise CommandError(f"{len(unknown)} proposal image ids are not in the ground truth {args.gt!r}, "
                           f"e.g. {min(unknown)}")
    props = subset_proposals(props, evaluator.image_ids)
    if len(props.poses) == 0:
        raise CommandError("no proposals on the images tuned on")
    names = [n.strip() for n in args.names.split(",") if n.strip()] if args.names else None
    none_ap = evaluator.ap(to_results(props, no_nms(props)))
    res = tune_nms(props, evaluator, method=args.nms, start=start, names=names, scoring=scoring,
                   search_scoring=args.search_scoring, grid=args.grid, max_rounds=args.max_rounds,
                   refine=args.refine, tol=args.tol, progress=not args.quiet)
    meta = res.meta(ap_no_nms=none_ap, proposals=str(args.proposals), gt=str(args.gt),
                    num_proposals=len(props.poses), num_images=len(evaluator.image_ids),
                    evals_per_second=round(res.evals_per_second, 1),
                    coco_evals_per_second=round(res.coco_evals_per_second, 1))
    save_params(args.output, res.params, meta=meta)
    changed = [f.name for f in dataclasses.fields(res.params)
               if getattr(res.params, f.name) != getattr(res.start_params, f.name)]
    print(f"{args.nms} NMS on {len(props.poses)} proposals, {len(evaluator.image_ids)} images: COCO keypoint AP "
          f"{none_ap:.4f} without NMS, {res.start_ap:.4f} at the start, {res.ap:.4f} tuned "
          f"({res.rounds} rounds, {'converged' if res.converged else 'stopped at --max-rounds'})")
    print("tuned: " + ", ".join(f"{k}={getattr(res.params, k)}" for k in changed) +
          (", " if changed else "") + f"rank={res.scoring.rank}, score={res.scoring.output}")
    print(f"{res.nms_calls} points in {res.seconds:.1f} s ({res.evals_per_second:.1f}/s; {res.coco_evals} "
          f"COCO evaluations, {res.coco_evals_per_second:.1f}/s); wrote {args.output}")
    return 0
