"""``rmpe nms``: pre-NMS COCO keypoint results (each with its detector box) -> post-NMS results.

Input: a JSON list (``.json``/``.json.gz``) of ``image_id``, ``keypoints`` (x y score per joint, image
pixels), ``score``, ``det_bbox`` (xywh; ``bbox`` is read when absent), optional ``det_score``. Output: the
kept poses as COCO keypoint results (``image_id``, ``category_id``, ``keypoints`` merged where the method
merges, ``score``, ``det_bbox``, ``det_score``), all images in one batched NMS call. The score that ranks
the NMS and the one written are chosen by ``--nms-rank``/``--nms-score`` (default: the parameters file's, else
the method's own convention; see ``rmpe.nms.runtime.Scoring``). The method is ``--nms`` (default: the
parameters file's, else ``oks``, as ``rmpe run``); the flags are ``rmpe run``'s.
"""
from __future__ import annotations


def register(sub) -> None:
    from . import add_nms_flags

    p = sub.add_parser("nms", help="pose NMS on pre-NMS COCO keypoint results",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("proposals", metavar="PROPOSALS.json", help="pre-NMS COCO keypoint results with det_bbox")
    p.add_argument("-o", "--output", required=True, metavar="OUT.json", help="where to write the kept poses")
    add_nms_flags(p, "default: the method of --nms-params, else oks, as rmpe run")
    p.add_argument("--gt", default=None, metavar="GT.json", help="COCO keypoint ground truth: also print AP")
    p.add_argument("--indent", type=int, default=None, help="indent the output JSON")
    p.set_defaults(func=run, outputs=[("-o", "output", "file")])


def resolve_method_params(method, params_arg):
    """(method, params, scoring-or-None) from --nms and --nms-params (None: the pipeline's default method)."""
    from ..nms.params import make_params
    from ..nms.runtime import load_params_and_scoring
    from ..nms.search import tuned_params_path
    from ..pipeline.core import DEFAULT_NMS

    if params_arg is None:
        method = method or DEFAULT_NMS
        return method, make_params(method), None
    if params_arg == "tuned":
        method = method or DEFAULT_NMS
        params_arg = tuned_params_path(method)
    file_method, params, scoring = load_params_and_scoring(params_arg)
    if method is not None and method != file_method:
        raise ValueError(f"--nms {method} but the parameters file {params_arg!r} is for {file_method!r}")
    return file_method, params, scoring


def run(args) -> int:
    import torch

    from ..cli import CommandError
    from ..coco import read_proposals
    from ..evaluate import KeypointAP
    from ..io import write_json
    from ..nms.runtime import Scoring, apply_nms, default_scoring, no_nms, to_results

    from . import check_renamed

    check_renamed(args)
    torch.set_num_threads(min(torch.get_num_threads(), 4))
    method, params, scoring = resolve_method_params(args.nms, args.nms_params)
    base = scoring or default_scoring(method)
    scoring = Scoring(args.nms_rank or base.rank, args.nms_score or base.output)
    if method == "soft-oks" and scoring.output != "rank":
        raise CommandError("soft-oks writes its rescored ranking score: --nms-score must be 'rank'")
    evaluator = KeypointAP(args.gt) if args.gt else None
    props = read_proposals(args.proposals, num_joints=evaluator.num_joints if evaluator else None)
    out = apply_nms(props, method, params, scoring)
    results = to_results(props, out, extra=True)
    line = (f"{method} NMS kept {len(results)} of {len(props.poses)} poses on {props.num_images} images "
            f"(rank: {scoring.rank}, score: {scoring.output})")
    if evaluator is not None:
        before = evaluator.stats(to_results(props, no_nms(props)))
        after = evaluator.stats(results)
    write_json(args.output, results, indent=args.indent)
    print(f"{line}; wrote {args.output}")
    if evaluator is not None:
        print(f"COCO keypoint AP: {before['AP']:.4f} before NMS (proposal scores), {after['AP']:.4f} after "
              f"(AP50 {before['AP50']:.4f} -> {after['AP50']:.4f}, AR {before['AR']:.4f} -> {after['AR']:.4f})")
    return 0
