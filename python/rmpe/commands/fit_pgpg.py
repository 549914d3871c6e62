"""``rmpe fit-pgpg GT.json DETS.json -o MODEL.npz``: fit the pose-guided proposals generator.

Fits atomic poses (k-means on torso-aligned COCO GT poses) and, per atom, a Gaussian mixture of the
normalized offsets between matched real detections and GT boxes (see :mod:`rmpe.pgpg`), prints a
summary, writes the model (``.npz``) and optionally the Figure-5 style plot, both atomically.
"""
from __future__ import annotations

import argparse
import os


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fit-pgpg", help="fit the pose-guided proposals generator (atomic poses + box-offset mixtures)",
        description="Fit the PGPG of RMPE section 3.3 on COCO person-keypoint GT and real person detections.")
    p.add_argument("gt", metavar="GT.json", help="COCO person-keypoints annotations (.json or .json.gz)")
    p.add_argument("dets", metavar="DETS.json", help="COCO person detections: [{image_id, bbox xywh, score}, ...]")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.npz", help="where to write the fitted model")
    p.add_argument("--atoms", type=int, default=8, metavar="N", help="number of atomic poses (k-means clusters; default 8)")
    p.add_argument("--score-thresh", type=float, default=0.3,
                   help="detections scoring below this are not matched (default 0.3)")
    p.add_argument("--iou-thresh", type=float, default=0.5,
                   help="minimum IoU of a detection matched to a GT person (default 0.5)")
    p.add_argument("--max-components", type=int, default=4,
                   help="largest Gaussian mixture tried per atom, BIC chooses (default 4)")
    p.add_argument("--min-atom-samples", type=int, default=30,
                   help="atoms with fewer matched offsets use the pooled mixture (default 30)")
    p.add_argument("--prior-strength", type=float, default=400.0, metavar="TAU",
                   help="each atom's mixture is n/(n+TAU) its own + TAU/(n+TAU) the pooled one (default 400; 0: none)")
    p.add_argument("--plot", metavar="FIG.png", help="also write the atoms/offset-distribution figure")
    p.add_argument("--cv", type=int, default=0, metavar="FOLDS",
                   help="also run a FOLDS-fold held-out check over images (held-out log-likelihood of the per-atom "
                        "model vs the pooled mixture vs one Gaussian; IoU of sampled vs real boxes)")
    p.add_argument("--seed", type=int, default=0, help="k-means / mixture seed (default 0)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the final summary line")
    p.set_defaults(func=run, outputs=[("-o", "output", "file"), ("--plot", "plot", "file")])


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..cli import CommandError
    from ..io import read_json
    from ..pgpg import PGPG

    if not args.output.endswith(".npz"):
        raise CommandError(f"--output must end in .npz, got {args.output!r}")
    if args.plot is not None and not args.plot.lower().endswith(".png"):
        raise CommandError(f"--plot must end in .png, got {args.plot!r}")
    if args.cv == 1 or args.cv < 0:
        raise CommandError(f"--cv must be 0 (off) or at least 2 folds, got {args.cv}")
    if args.seed < 0:
        raise CommandError(f"--seed must be >= 0, got {args.seed}")
    # read once: the fit and the --cv folds share them
    gt, dets = read_json(args.gt, "ground-truth file"), read_json(args.dets, "detections file")
    if args.cv and isinstance(gt, dict) and isinstance(gt.get("annotations"), list):
        images = {a["image_id"] for a in gt["annotations"]  # the images cross_validate splits into folds
                  if isinstance(a, dict) and isinstance(a.get("image_id"), (int, float, str))}
        if args.cv > len(images):
            raise CommandError(f"--cv {args.cv}: more folds than the {len(images)} images of the ground truth")
    fit_kw = dict(n_atoms=args.atoms, score_thresh=args.score_thresh, iou_thresh=args.iou_thresh,
                  max_components=args.max_components, min_atom_samples=args.min_atom_samples,
                  prior_strength=args.prior_strength)
    model = PGPG.fit(gt, dets, seed=args.seed, progress=not args.quiet, **fit_kw)
    s = model.summary()
    if not args.quiet:
        print(f"offsets (x1, y1, x2, y2) / GT side: mean {np.round(s['offset_mean'], 4).tolist()}, "
              f"std {np.round(s['offset_std'], 4).tolist()}")
        for a in s["atoms"]:
            own = ("pooled mixture" if a["uses_pooled"] else
                   f"{a['own_components']} own component(s) at weight {a['own_weight']:.3f} + pooled")
            print(f"  atom {a['atom']}: {a['n_offsets']} offsets, {own}")
    if args.cv:
        from ..pgpg import cross_validate

        cv = cross_validate(gt, dets, folds=args.cv, seed=args.seed, **fit_kw)
        print(f"held-out ({cv['folds']} folds over images, {cv['n_heldout']} offsets): mean log-likelihood "
              f"per-atom {cv['loglik_atom']:.3f}, pooled mixture {cv['loglik_pooled']:.3f}, "
              f"one Gaussian {cv['loglik_gaussian']:.3f}")
        print(f"IoU with GT, quantiles 10/25/50/75/90%: real detections {cv['iou_real']}, sampled boxes "
              f"(IoU >= {args.iou_thresh}) {cv['iou_sampled']}; sampled below {args.iou_thresh}: "
              f"{cv['sampled_below_iou_thresh']:.3%}; KS statistic {cv['ks_iou']:.3f}")
    model.save(args.output)
    if args.plot:
        try:
            model.plot(args.plot)
        except BaseException:  # the model belongs to a run that failed
            os.remove(args.output)
            raise
    print(f"fit-pgpg: {s['n_offsets']} matched persons with a torso ({s['n_matched_pairs']} matched pairs of "
          f"{s['n_gt_persons']} GT persons), {model.n_atoms} atoms -> {args.output}"
          + (f", figure {args.plot}" if args.plot else ""))
    return 0
