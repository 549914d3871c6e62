"""``rmpe run``: a folder of images + person detections -> COCO keypoint results (crops, SPPE, decode, pose NMS).

    rmpe run data/coco4 data/coco4/test_coco_det_AP_H_56.json -o out/results.json \\
        --gt data/coco4/test_coco.json --render out/render

Detections are COCO detection results (``image_id``, ``bbox`` xywh, ``score``, optional ``category_id``);
``image_id`` is mapped to a file of IMAGES_DIR through ``images[].file_name`` of ``--images-json`` or
``--gt``, else by COCO's ``{image_id:012d}.jpg``. The model is the shipped BlazePose (default) or a
TorchScript / ``torch.export`` heatmap model file. Nothing is written when the run fails.
"""
from __future__ import annotations

import math
import os

_DESC = __doc__.split("\n\n")[0]


def register(sub) -> None:
    p = sub.add_parser("run", help="images + detections -> pose results (the RMPE pipeline)", description=_DESC)
    p.add_argument("images_dir", metavar="IMAGES_DIR", help="folder of the images")
    p.add_argument("detections", metavar="DETECTIONS.json", help="COCO-style person detections (.json or .json.gz)")
    p.add_argument("-o", "--output", required=True, metavar="RESULTS.json",
                   help="where to write the COCO keypoint results (after NMS)")
    p.add_argument("--render", metavar="OUT_DIR", default=None, help="draw skeletons and boxes into this folder")
    p.add_argument("--pre-nms", metavar="FILE", default=None, help="also write every pose before NMS to FILE")
    m = p.add_argument_group("model")
    m.add_argument("--model", default="blazepose",
                   help="'blazepose' (the shipped BlazePose model), a .tflite BlazePose landmark model file, or "
                        "a TorchScript (.pt) / torch.export (.pt2) heatmap model file (default: blazepose)")
    m.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=(256, 192),
                   help="crop size of a torch model (default: 256 192)")
    m.add_argument("--mean", type=float, nargs=3, default=None, metavar="M",
                   help="per-channel mean (after /255) of a torch model's input (default: AlphaPose's)")
    m.add_argument("--std", type=float, nargs=3, default=(1.0, 1.0, 1.0), metavar="S",
                   help="per-channel std (after /255) of a torch model's input (default: 1 1 1)")
    m.add_argument("--bgr", action="store_true", help="a torch model wants BGR crops (default: RGB)")
    m.add_argument("--joints", type=int, default=17, help="heatmaps a torch model outputs (default: 17)")
    m.add_argument("--joint-map", type=int, nargs=17, default=None, metavar="J",
                   help="17 heatmap indices of a torch model, in COCO-17 order (needed when --joints is not 17)")
    m.add_argument("--sigmoid", action="store_true", help="a torch model's heatmaps are logits")
    s = p.add_argument_group("pipeline")
    s.add_argument("--nms", default=None, choices=["alphapose", "paper", "oks", "soft-oks", "none"],
                   help="pose NMS (default: alphapose, or the method of --nms-params)")
    s.add_argument("--nms-params", default=None, metavar="FILE", help="an NMS parameters file (rmpe tune-nms)")
    s.add_argument("--nms-rank", default="method", choices=["method", "pose"],
                   help="pose order of the NMS: the method's own (AlphaPose's mean joint score for alphapose) or "
                        "the pose score det_score x mean confident joint score (default: method)")
    s.add_argument("--det-thresh", type=float, default=0.0, help="drop boxes scored below this (default: 0)")
    s.add_argument("--batch-size", type=int, default=64, help="crops per SPPE call (default: 64)")
    s.add_argument("--frames-per-batch", type=int, default=8,
                   help="frames whose persons are batched together (default: 8)")
    s.add_argument("--device", default="cpu", help="torch device for crops, decode and NMS (default: cpu)")
    s.add_argument("--refine", default="quarter", choices=["quarter", "none", "dark", "soft-argmax"],
                   help="heatmap decode (default: quarter)")
    s.add_argument("--box-preset", default=None, choices=["alphapose", "paper"],
                   help="box-to-crop map (default: the model's: alphapose)")
    s.add_argument("--threads", type=int, default=None, help="CPU threads for torch and the BlazePose interpreter")
    e = p.add_argument_group("inputs and evaluation")
    e.add_argument("--gt", default=None, metavar="GT.json",
                   help="COCO keypoint ground truth: print AP before/after NMS")
    e.add_argument("--images-json", default=None, metavar="FILE",
                   help="a COCO file whose images[] map image ids to file names (default: --gt's, else 12-digit names)")
    p.set_defaults(func=run, outputs=[("-o", "output", "file"), ("--pre-nms", "pre_nms", "file"),
                                      ("--render", "render", "folder")])


def _model(args):
    import torch

    from ..cli import CommandError
    from ..pipeline.models import BlazePoseModel, load_torch_model

    threads = args.threads or torch.get_num_threads()
    if args.model == "blazepose" or args.model.endswith(".tflite"):
        path = None if args.model == "blazepose" else args.model
        try:
            return BlazePoseModel(path, num_threads=threads)
        except ImportError as e:
            raise CommandError(str(e)) from None
    if not os.path.isfile(args.model):
        raise CommandError(f"--model {args.model!r}: not 'blazepose' and no such model file")
    kwargs = dict(input_size=tuple(args.input_size), std=tuple(args.std), channel_order="BGR" if args.bgr else "RGB",
                  num_joints=args.joints, joint_map=args.joint_map,
                  heatmap_activation="sigmoid" if args.sigmoid else None)
    if args.mean is not None:
        kwargs["mean"] = tuple(args.mean)
    return load_torch_model(args.model, device=args.device, **kwargs)


def _render_name(path) -> str:
    from ..pipeline.draw import IMAGE_FORMATS

    base, ext = os.path.splitext(os.path.basename(path))
    return base + (ext if ext.lower() in IMAGE_FORMATS else ".jpg")


def run(args) -> int:
    import shutil
    import sys
    import tempfile

    import torch
    from tqdm import tqdm

    from ..cli import CommandError
    from ..pipeline.detections import image_files, load_detections, load_image
    from ..pipeline.draw import draw_results, save_image
    from ..evaluate import KeypointAP
    from ..io import write_json
    from ..pipeline import Pipeline, PipelineResult
    from . import check_input_size, check_threads

    for name in ("batch_size", "frames_per_batch"):
        if getattr(args, name) < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    check_threads(args.threads)
    check_input_size(args.input_size)
    for name in ("mean", "std"):
        if getattr(args, name) is not None and not all(math.isfinite(v) for v in getattr(args, name)):
            raise CommandError(f"--{name} must be finite, got {' '.join(map(str, getattr(args, name)))}")
    if math.isnan(args.det_thresh):
        raise CommandError(f"--det-thresh must be a number, got {args.det_thresh}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        raise CommandError(f"--device {args.device!r}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CommandError(f"--device {args.device!r}: torch sees no CUDA device")

    dets = load_detections(args.detections, det_thresh=args.det_thresh)
    if not dets:
        raise CommandError(f"detections file {args.detections!r} holds no detections")
    gt = evaluator = None
    if args.gt:
        evaluator = KeypointAP(args.gt)  # checks the ground truth for keypoint evaluation
        gt = evaluator.coco
        missing = sorted(set(dets) - set(gt.getImgIds()))
        if missing:
            raise CommandError(f"{len(missing)} image id(s) of the detections are not in the ground truth "
                               f"{args.gt!r}, e.g. {missing[0]}")
    images_json = args.images_json or (gt.dataset if gt else None)
    ids = list(dets)
    files = image_files(args.images_dir, ids, images_json)
    model = _model(args)
    pipe = Pipeline(model, nms=args.nms, nms_params=args.nms_params, box_preset=args.box_preset,
                    refine=args.refine, batch_size=args.batch_size, device=device, nms_rank=args.nms_rank)

    parts = []
    render_tmp = None
    wrote_pre = False
    try:
        if args.render:
            parent = os.path.dirname(os.path.abspath(args.render))
            os.makedirs(parent, exist_ok=True)
            render_tmp = tempfile.mkdtemp(dir=parent, prefix="." + os.path.basename(os.path.abspath(args.render)) + ".")
        with tqdm(total=len(ids), unit="img", desc="rmpe run", file=sys.stderr, disable=None) as bar:
            for s in range(0, len(ids), args.frames_per_batch):
                chunk = ids[s:s + args.frames_per_batch]
                frames = [load_image(files[i]) for i in chunk]
                res = pipe(frames, [dets[i] for i in chunk], chunk)
                parts.append(res)
                if render_tmp:
                    by_image = {i: [] for i in chunk}
                    for r in res.results:
                        by_image[r["image_id"]].append(r)
                    for i, f in zip(chunk, frames):
                        save_image(os.path.join(render_tmp, _render_name(files[i])), draw_results(f, by_image[i]))
                bar.update(len(chunk))
        result = PipelineResult.merge(parts)
        stats = stats_pre = None
        if evaluator is not None:
            stats_pre = evaluator.stats(result.pre_nms_results())
            stats = evaluator.stats(result.results)
        if args.pre_nms:
            write_json(args.pre_nms, result.pre_nms_results())
            wrote_pre = True
        write_json(args.output, result.results)
        if render_tmp:
            os.makedirs(args.render, exist_ok=True)
            for name in sorted(os.listdir(render_tmp)):
                os.replace(os.path.join(render_tmp, name), os.path.join(args.render, name))
    except BaseException:
        if wrote_pre:  # complete, but it belongs to a run that failed
            os.remove(args.pre_nms)
        raise
    finally:
        if render_tmp:
            shutil.rmtree(render_tmp, ignore_errors=True)

    t = result.timings
    print(f"{len(ids)} images, {result.num_proposals} persons -> {len(result.results)} poses after "
          f"{pipe.nms} NMS; wrote {args.output}" + (f" and {args.render}/" if args.render else ""))
    print("time (ms): " + ", ".join(f"{k} {1000 * t[k]:.1f}" for k in ("crop", "sppe", "decode", "nms", "total")))
    if stats is not None:
        print(f"COCO keypoint AP: {stats_pre['AP']:.3f} before NMS, {stats['AP']:.3f} after "
              f"(AP50 {stats_pre['AP50']:.3f} -> {stats['AP50']:.3f})")
    return 0
