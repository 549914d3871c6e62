"""``rmpe run``: a user's photos or video -> person boxes -> poses (crops, SPPE, decode, pose NMS) -> results, renders, video.

    rmpe run photo.jpg -o res.json                                  # one image, the built-in person detector
    rmpe run photos/ --detector dets.json -o res.json --render out/ # a folder (any file names), given boxes
    rmpe run clip.mp4 --save-video out.mp4 -o res.json --track      # a video, skeletons drawn, track ids
    rmpe run 0 --save-video cam.mp4                                 # camera 0 (or rtsp://..., http://...)
    rmpe run data/coco4 data/coco4/test_coco_det_AP_H_56.json -o res.json --gt data/coco4/test_coco.json

SOURCE: an image, a folder of images, a text file listing images (one per line), a video file, a camera
index or a stream URL (:mod:`rmpe.pipeline.sources`). Frames are decoded by a background thread into a
bounded queue and processed ``--frames-per-batch`` at a time; a progress bar on stderr shows frames/s.

Person boxes (``--detector``, or the second positional argument): a detections file (COCO detection results
keyed by COCO ids or file names, or AlphaPose's detection file; an empty list is valid: no persons), or a
detector: ``blazepose`` (the default: MediaPipe's person detector shipped with the BlazePose model, made for
one prominent person: weak on crowds), ``torchvision:<arch>[:weights]``, ``yolo:<model file>``
(:func:`rmpe.pipeline.detectors.make_detector`).

Image ids: an image's file name, or its COCO id through ``--gt``/``--images-json`` (``images[].file_name``)
or a COCO-style numeric file name (``000000000785.jpg`` is 785); a video frame's number (0-based).

Outputs (all optional, all written atomically; nothing is left behind by a failed run): ``-o`` the poses
after NMS (``--format coco``, the default, or ``alphapose``: AlphaPose's results file), ``--frames`` one
record per input frame (also frames without persons or unreadable), ``--summary`` the run's summary,
``--render`` drawn images, ``--save-video`` a drawn video, ``--pre-nms`` every pose before NMS.

An image that cannot be read is reported, skipped and listed in the summary; the run goes on and exits with
status 1 at the end (``--strict``: stop at the first, status 2).
"""
from __future__ import annotations

import math
import os

_DESC = __doc__.split("\n\n")[0]

DEFAULT_DETECTOR = "blazepose"


def register(sub) -> None:
    from . import add_nms_flags

    p = sub.add_parser("run", help="photos, videos, cameras -> pose results (the RMPE pipeline)", description=_DESC)
    p.add_argument("source", metavar="SOURCE",
                   help="an image, a folder of images, a text file listing images, a video, a camera index or a "
                        "stream URL")
    p.add_argument("detections", metavar="DETECTIONS.json", nargs="?", default=None,
                   help="person detections file (same as --detector FILE)")
    o = p.add_argument_group("outputs")
    o.add_argument("-o", "--output", default=None, metavar="RESULTS.json",
                   help="the poses after NMS (.json or .json.gz)")
    o.add_argument("--format", default="coco", choices=["coco", "alphapose"],
                   help="results format: coco (image_id, keypoints, score, det_bbox, det_score) or alphapose "
                        "(image_id = file name, keypoints, score, box, idx) (default: coco)")
    o.add_argument("--frames", default=None, metavar="FRAMES.json",
                   help="one record per input frame: id, file, status, box count, its poses")
    o.add_argument("--summary", default=None, metavar="SUMMARY.json",
                   help="the run's summary: counts, unreadable frames, timings, every frame's status")
    o.add_argument("--render", metavar="OUT_DIR", default=None, help="draw skeletons and boxes into this folder")
    o.add_argument("--save-video", metavar="OUT.mp4", default=None,
                   help="draw skeletons and boxes into a video (.mp4, .m4v, .mov, .avi, .mkv)")
    o.add_argument("--fps", type=float, default=None,
                   help="frame rate of --save-video (default: the source video's, 25 for images)")
    o.add_argument("--draw-kp-thresh", type=float, default=0.2,
                   help="joints scored below this are not drawn (default: 0.2)")
    o.add_argument("--draw-box-thresh", type=float, default=0.5,
                   help="persons whose detector score is below this are not drawn (default: 0.5)")
    o.add_argument("--pre-nms", metavar="FILE", default=None, help="also write every pose before NMS to FILE")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    o.add_argument("--strict", action="store_true",
                   help="stop at the first unreadable image (exit status 2) instead of skipping it")
    d = p.add_argument_group("person detection")
    d.add_argument("--detector", default=None, metavar="FILE|SPEC",
                   help="a detections file (.json or .json.gz: COCO results or AlphaPose's detection file), or a "
                        "detector: blazepose "
                        "(the default: single-person, weak on crowds), torchvision:<arch>[:<weights>], "
                        "yolo:<model file>")
    d.add_argument("--det-thresh", type=float, default=0.0, help="drop boxes scored below this (default: 0)")
    m = p.add_argument_group("model")
    m.add_argument("--model", default="blazepose",
                   help="'blazepose' (the shipped BlazePose model, LiteRT), 'blazepose-torch' (the same in torch), "
                        "a .tflite BlazePose landmark model, a TorchScript (.pt) / torch.export (.pt2) heatmap "
                        "model (with the flags below), an rmpe train checkpoint or an AlphaPose FastPose "
                        "checkpoint (default: blazepose)")
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
    add_nms_flags(s, "default: oks, the best held-out AP, see the README", none=True)
    s.add_argument("--batch-size", type=int, default=64, help="crops per SPPE call (default: 64)")
    s.add_argument("--frames-per-batch", type=int, default=8,
                   help="frames whose persons are batched together (default: 8)")
    s.add_argument("--max-frames", type=int, default=None,
                   help="stop after this many frames (a camera or stream otherwise runs until it ends; Ctrl-C "
                        "discards the run's outputs)")
    s.add_argument("--queue-size", type=int, default=32,
                   help="frames decoded ahead by the reader thread, at most (default: 32)")
    s.add_argument("--device", default="cpu", help="torch device for crops, decode and NMS (default: cpu)")
    s.add_argument("--refine", default="quarter", choices=["quarter", "none", "dark", "soft-argmax"],
                   help="heatmap decode (default: quarter)")
    s.add_argument("--box-preset", default=None, choices=["alphapose", "paper"],
                   help="box-to-crop map (default: the model's: alphapose)")
    s.add_argument("--threads", type=int, default=None, help="CPU threads for torch and the BlazePose interpreter")
    t = p.add_argument_group("tracking")
    t.add_argument("--track", action="store_true", help="a track id per person across frames (track_id / idx)")
    t.add_argument("--track-by", default="oks", choices=["oks", "iou"],
                   help="frame-to-frame similarity: OKS of the poses (box IoU when too few joints) or box IoU")
    t.add_argument("--track-min-similarity", type=float, default=0.3,
                   help="a pair below this similarity is not the same person (default: 0.3)")
    t.add_argument("--track-max-age", type=int, default=30,
                   help="frames a track survives without its person (default: 30)")
    e = p.add_argument_group("inputs and evaluation")
    e.add_argument("--gt", default=None, metavar="GT.json",
                   help="COCO keypoint ground truth: print AP before/after NMS on the images of this run")
    e.add_argument("--images-json", default=None, metavar="FILE",
                   help="a COCO file whose images[] map file names to image ids (default: --gt's)")
    p.set_defaults(func=run, outputs=[("-o", "output", "file"), ("--pre-nms", "pre_nms", "file"),
                                      ("--frames", "frames", "file"), ("--summary", "summary", "file"),
                                      ("--save-video", "save_video", "file"), ("--render", "render", "folder")])


_TORCH_FLAG_DEFAULTS = {"input_size": (256, 192), "mean": None, "std": (1.0, 1.0, 1.0), "bgr": False, "joints": 17,
                        "joint_map": None, "sigmoid": False}


def _model(args):
    """The SPPE adapter of ``--model`` (:func:`rmpe.pipeline.models.load_pose_model`): the shipped BlazePose
    (LiteRT, or ``blazepose-torch``), a ``.tflite``, a TorchScript / ``torch.export`` heatmap model (with the
    preprocessing flags), an ``rmpe train`` checkpoint or an AlphaPose FastPose checkpoint."""
    import torch

    from ..cli import CommandError
    from ..pipeline.models import load_pose_model
    from ..pipeline.models.loading import _is_tflite, _is_torchscript

    spec = args.model
    is_file = os.path.isfile(spec)
    torch_file = is_file and (spec.endswith(".pt2") or _is_torchscript(spec))
    if spec == "blazepose" or (is_file and _is_tflite(spec)):
        kwargs = {"num_threads": args.threads or torch.get_num_threads()}
    elif torch_file:
        kwargs = dict(input_size=tuple(args.input_size), std=tuple(args.std),
                      channel_order="BGR" if args.bgr else "RGB", num_joints=args.joints, joint_map=args.joint_map,
                      heatmap_activation="sigmoid" if args.sigmoid else None, device=args.device)
        if args.mean is not None:
            kwargs["mean"] = tuple(args.mean)
    else:  # blazepose-torch, rmpe train and FastPose checkpoints: their preprocessing is their own
        kwargs = {"device": args.device}
    if not torch_file:
        given = [k for k, v in _TORCH_FLAG_DEFAULTS.items()
                 if (tuple(getattr(args, k)) if isinstance(v, tuple) else getattr(args, k)) != v]
        if given:
            raise CommandError(f"--{given[0].replace('_', '-')} applies to TorchScript / torch.export models only; "
                               f"--model {spec!r} brings its own preprocessing")
    try:
        return load_pose_model(spec, **kwargs)
    except ImportError as e:
        raise CommandError(f"--model {spec!r}: {e}") from None


def _is_detections_file(spec: str) -> bool:
    """A ``--detector`` that names a detections file (``.json`` / ``.json.gz``) rather than a detector."""
    return spec.lower().endswith((".json", ".json.gz"))


def _detector(args, device):
    """-> (description, detections dict or None, detector callable or None)."""
    from ..cli import CommandError
    from ..pipeline.detections import load_detections

    if args.detections is not None and args.detector is not None:
        raise CommandError("give the detections either as DETECTIONS.json or as --detector, not both")
    spec = args.detections if args.detections is not None else args.detector
    if spec is None:
        spec = DEFAULT_DETECTOR
    if _is_detections_file(spec):
        return f"detections file {spec}", load_detections(spec, det_thresh=args.det_thresh), None
    from ..pipeline.detectors import make_detector

    try:
        det = make_detector(spec, device=device, score_thresh=args.det_thresh)
    except ImportError as e:
        raise CommandError(f"--detector {spec!r}: {e}") from None
    except ValueError as e:
        hint = " (a detections file must end in .json or .json.gz)" if os.path.isfile(spec) else ""
        raise CommandError(f"--detector: {e}{hint}") from None
    return spec, None, det


def _coco_ids(args, gt_doc):
    """file base name -> COCO image id from --images-json (or the ground truth), or None."""
    from ..io import json_int, read_json

    if args.images_json is None and gt_doc is None:
        return None, None
    src = f"images file {args.images_json!r}" if args.images_json else f"ground truth {args.gt!r}"
    doc = read_json(args.images_json, "images file") if args.images_json else gt_doc
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise ValueError(f"{src} needs an 'images' list of {{id, file_name}}")
    names = {}
    for n, im in enumerate(doc["images"]):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise ValueError(f"{src}: images[{n}] needs the fields 'id' and 'file_name'")
        names[os.path.basename(str(im["file_name"]))] = json_int(im["id"], f"{src}: images[{n}]: 'id'")
    return names, src


def _numeric_id(name: str):
    stem = os.path.splitext(name)[0]
    return int(stem) if stem.isdigit() and len(stem) <= 18 else None


class _Frames:
    """How the frames of a source are named: the id written in the results (COCO id, file name or frame
    number) and the keys a detections file may use for them."""

    def __init__(self, src, names):
        self.video = src.kind in ("video", "camera", "stream")
        self.names = names

    def image_id(self, frame):
        if self.video:
            return frame.index
        if self.names is not None and frame.name in self.names:
            return self.names[frame.name]
        num = _numeric_id(frame.name)
        return num if num is not None else frame.name

    def keys(self, frame):
        if self.video:
            return (frame.index, f"{frame.index}.jpg")
        out = [frame.name]
        if self.names is not None and frame.name in self.names:
            out.append(self.names[frame.name])
        num = _numeric_id(frame.name)
        if num is not None:
            out.append(num)
        return tuple(out)


def _render_name(frame, video: bool, taken: set) -> str:
    from ..pipeline.draw import IMAGE_FORMATS

    if video:
        name = f"{frame.index:06d}.jpg"
    else:
        base, ext = os.path.splitext(frame.name)
        name = base + (ext if ext.lower() in IMAGE_FORMATS else ".jpg")
        if name in taken:
            name = f"{base}_{frame.index}{os.path.splitext(name)[1]}"
    taken.add(name)
    return name


def _check_flags(args) -> None:
    from ..cli import CommandError
    from . import check_input_size, check_threads

    for name in ("batch_size", "frames_per_batch", "queue_size", "max_frames"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    check_threads(args.threads)
    check_input_size(args.input_size)
    for name in ("mean", "std"):
        if getattr(args, name) is not None and not all(math.isfinite(v) for v in getattr(args, name)):
            raise CommandError(f"--{name} must be finite, got {' '.join(map(str, getattr(args, name)))}")
    for name in ("det_thresh", "draw_kp_thresh", "draw_box_thresh"):
        if math.isnan(getattr(args, name)):
            raise CommandError(f"--{name.replace('_', '-')} must be a number, got {getattr(args, name)}")
    if args.fps is not None and not (math.isfinite(args.fps) and 0 < args.fps <= 1000):
        raise CommandError(f"--fps must be a positive number of at most 1000, got {args.fps}")
    if not 0.0 <= args.track_min_similarity <= 1.0:  # NaN fails too
        raise CommandError(f"--track-min-similarity must be in [0, 1], got {args.track_min_similarity}")
    if args.track_max_age < 0:
        raise CommandError(f"--track-max-age must be at least 0, got {args.track_max_age}")
    if args.save_video is not None:
        from ..pipeline.writers import VIDEO_CODECS

        if os.path.splitext(args.save_video)[1].lower() not in VIDEO_CODECS:
            raise CommandError(f"--save-video {args.save_video!r}: the extension must be one of "
                               f"{', '.join(sorted(VIDEO_CODECS))}")
    if args.nms == "soft-oks" and args.nms_score not in (None, "rank"):
        raise CommandError("soft-oks writes its rescored ranking score: --nms-score must be 'rank'")


def _nms_setup(args):
    """(nms, nms_params, nms_rank, nms_score) for the Pipeline from the NMS flags."""
    params = args.nms_params
    if params == "tuned":
        if args.nms == "none":
            raise ValueError("--nms-params tuned needs a method with tuned parameters, not --nms none")
        from ..nms.search import tuned_params_path

        from ..pipeline.core import DEFAULT_NMS

        params = tuned_params_path(args.nms or DEFAULT_NMS)
    return args.nms, params, args.nms_rank or "method", args.nms_score


def run(args) -> int:
    """``rmpe run``; under ``torchrun --nproc_per_node=N`` (``WORLD_SIZE`` > 1) each process runs
    :func:`run_one` on its shard of the images (:func:`rmpe.distributed.run_sharded`)."""
    from ..distributed import launched_distributed

    if launched_distributed():
        from ..distributed import run_sharded

        return run_sharded(args, run_one)
    return run_one(args)


def run_one(args) -> int:
    """The command in one process (see the module docstring)."""
    import shutil
    import sys
    import tempfile
    import time

    import torch
    from tqdm import tqdm

    from ..cli import CommandError
    from ..io import write_json
    from ..pipeline import Pipeline
    from ..pipeline.draw import draw_results, save_image
    from ..pipeline.sources import open_source
    from ..pipeline.writers import JsonListWriter, VideoWriter, format_results, frame_record

    from . import check_renamed

    check_renamed(args)
    _check_flags(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        raise CommandError(f"--device {args.device!r}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CommandError(f"--device {args.device!r}: torch sees no CUDA device")

    # --- everything that can be checked before the work
    evaluator = None
    gt_doc = None
    if args.gt:
        from ..evaluate import KeypointAP

        evaluator = KeypointAP(args.gt)  # checks the ground truth for keypoint evaluation
        gt_doc = evaluator.coco.dataset
    names, names_src = _coco_ids(args, gt_doc)
    src = open_source(args.source, names)
    naming = _Frames(src, names)
    det_desc, dets, detector = _detector(args, device)
    if src.files is not None:
        from types import SimpleNamespace

        frames0 = [SimpleNamespace(index=n, name=os.path.basename(f)) for n, f in enumerate(src.files)]
        if names is not None and args.images_json:
            unlisted = [f.name for f in frames0 if f.name not in names]
            if unlisted:
                raise FileNotFoundError(f"{len(unlisted)} image(s) of {args.source!r} are not listed in the {names_src}: "
                                        + ", ".join(unlisted[:5]) + (", ..." if len(unlisted) > 5 else ""))
        if dets:
            known = {k for f in frames0 for k in naming.keys(f)}
            stray = [k for k in dets if k not in known]
            if stray:
                raise FileNotFoundError(f"{len(stray)} image(s) named by the detections are not in {args.source!r}: "
                                        + ", ".join(map(str, stray[:5])) + (", ..." if len(stray) > 5 else ""))
        if evaluator is not None:
            ids = [naming.image_id(f) for f in frames0]
            lacking = [i for i in ids if i not in evaluator._known]
            if lacking:
                raise ValueError(f"{len(lacking)} image(s) of {args.source!r} are not in the ground truth "
                                 f"{args.gt!r}, e.g. {lacking[0]!r}")
    elif evaluator is not None:
        raise CommandError("--gt scores images named by COCO ids: give an image, a folder or a list of images")
    model = _model(args)
    nms, nms_params, nms_rank, nms_score = _nms_setup(args)
    pipe = Pipeline(model, nms=nms, nms_params=nms_params, box_preset=args.box_preset, refine=args.refine,
                    batch_size=args.batch_size, device=device, nms_rank=nms_rank, nms_score=nms_score)
    tracker = None
    if args.track:
        from ..pipeline.tracking import PoseTracker

        tracker = PoseTracker(args.track_by, args.track_min_similarity, args.track_max_age)
    if det_desc == DEFAULT_DETECTOR and args.detector is None and args.detections is None:
        print("rmpe run: person detector: blazepose (MediaPipe's single-person detector, weak on crowds; for scenes "
              "with several persons pass --detector torchvision:<arch>:<weights>, yolo:<file> or a detections file)",
              file=sys.stderr)

    # --- the run
    writers, render_tmp = [], None
    failures, per_frame, stages = [], [], dict.fromkeys(("read", "detect", "crop", "sppe", "decode", "nms",
                                                         "track", "output"), 0.0)
    keep_eval = [] if evaluator is not None else None
    keep_pre = [] if evaluator is not None else None
    covered = []
    n_boxes = n_poses = 0
    video_fps = args.fps or src.fps or 25.0
    t_start = time.perf_counter()
    try:
        out_w = JsonListWriter(args.output) if args.output else None
        writers.append(out_w)
        frames_w = JsonListWriter(args.frames) if args.frames else None
        writers.append(frames_w)
        pre_w = JsonListWriter(args.pre_nms) if args.pre_nms else None
        writers.append(pre_w)
        video_w = VideoWriter(args.save_video, video_fps) if args.save_video else None
        writers.append(video_w)
        if args.render:
            parent = os.path.dirname(os.path.abspath(args.render))
            os.makedirs(parent, exist_ok=True)
            render_tmp = tempfile.mkdtemp(dir=parent, prefix="." + os.path.basename(os.path.abspath(args.render)) + ".")
        taken: set = set()

        def flush(batch):
            nonlocal n_boxes, n_poses
            ok = [f for f in batch if f.image is not None]
            t0 = time.perf_counter()
            if detector is not None:
                boxes = [detector(f.image) for f in ok]
            else:
                boxes = [next((dets[k] for k in naming.keys(f) if k in dets), []) for f in ok]
            stages["detect"] += time.perf_counter() - t0
            by_pos = [[] for _ in ok]
            pre_by_pos = [[] for _ in ok]
            counts = [0] * len(ok)
            if ok:
                res = pipe([f.image for f in ok], boxes, list(range(len(ok))))
                for k in ("crop", "sppe", "decode", "nms"):
                    stages[k] += res.timings[k]
                for r in res.results:
                    by_pos[r["image_id"]].append(r)
                if pre_w is not None or keep_pre is not None:
                    for r in res.pre_nms_results():
                        pre_by_pos[r["image_id"]].append(r)
                for i in res.proposals.image_index.tolist():
                    counts[i] += 1
            pos = {id(f): n for n, f in enumerate(ok)}
            for f in batch:
                iid = naming.image_id(f)
                if f.image is None:
                    failures.append({"frame": f.index, "file": f.path, "error": f.error})
                    rec_poses, nb = [], 0
                    if tracker is not None:
                        tracker.update([], [])
                    if frames_w is not None:
                        frames_w.write(frame_record(f.index, iid, f.path or f.name, [], 0, f.error))
                    per_frame.append({"frame": f.index, "image_id": iid, "file": f.path or f.name,
                                      "status": "unreadable", "boxes": 0, "poses": 0})
                    continue
                n = pos[id(f)]
                results, nb = by_pos[n], counts[n]
                t0 = time.perf_counter()
                track_ids = None
                if tracker is not None:
                    import numpy as np

                    kp = np.array([r["keypoints"] for r in results], dtype=np.float64).reshape(len(results), 17, 3)
                    bx = np.array([r["det_bbox"] for r in results], dtype=np.float64).reshape(len(results), 4)
                    bx[:, 2:] += bx[:, :2]
                    track_ids = tracker.update(kp, bx).tolist()
                stages["track"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                rec_poses = format_results(results, args.format, iid, f.name, naming.video, track_ids)
                n_boxes += nb
                n_poses += len(results)
                covered.append(iid)
                if out_w is not None:
                    for r in rec_poses:
                        out_w.write(r)
                if frames_w is not None:
                    frames_w.write(frame_record(f.index, iid, f.path or f.name, rec_poses, nb))
                coco = format_results(results, "coco", iid, track_ids=track_ids)
                if pre_w is not None or keep_pre is not None:
                    pre = format_results(pre_by_pos[n], "coco", iid)
                    if pre_w is not None:
                        for r in pre:
                            pre_w.write(r)
                    if keep_pre is not None:
                        keep_pre.extend(pre)
                if keep_eval is not None:
                    keep_eval.extend(coco)
                if render_tmp or video_w is not None:
                    drawn = draw_results(f.image, coco, kp_thresh=args.draw_kp_thresh,
                                         box_thresh=args.draw_box_thresh)
                    if render_tmp:
                        save_image(os.path.join(render_tmp, _render_name(f, naming.video, taken)), drawn)
                    if video_w is not None:
                        video_w.write(drawn)
                per_frame.append({"frame": f.index, "image_id": iid, "file": f.path or f.name, "status": "ok",
                                  "boxes": nb, "poses": len(results)})
                stages["output"] += time.perf_counter() - t0

        reader = src.reader(queue_size=args.queue_size)
        total = src.frame_count if args.max_frames is None else min(src.frame_count or args.max_frames,
                                                                     args.max_frames)
        with reader, tqdm(total=total, unit="frame", desc="rmpe run", file=sys.stderr,
                          disable=args.quiet, mininterval=0.5) as bar:
            batch, readable, seen = [], 0, 0
            for f in reader:
                if args.max_frames is not None and seen >= args.max_frames:
                    break
                seen += 1
                if f.image is None and args.strict:
                    raise CommandError(f"{f.error} (--strict stops at the first unreadable image)")
                batch.append(f)
                readable += f.image is not None
                if readable >= args.frames_per_batch:
                    flush(batch)
                    bar.update(len(batch))
                    batch, readable = [], 0
            if batch:
                flush(batch)
                bar.update(len(batch))
            stages["read"] = reader.wait_seconds
        wall = time.perf_counter() - t_start

        # --- evaluation on the frames this run covered
        stats = stats_pre = None
        if evaluator is not None:
            from ..evaluate import KeypointAP

            scored = sorted(set(covered))
            ev = KeypointAP(evaluator.coco, image_ids=scored) if scored else None
            if ev is not None:
                stats_pre, stats = ev.stats(keep_pre), ev.stats(keep_eval)
        summary = {
            "source": str(args.source), "kind": src.kind, "frames": len(per_frame),
            "frames_read": len(per_frame) - len(failures),
            "frames_without_persons": sum(1 for r in per_frame if r["status"] == "ok" and r["poses"] == 0),
            "unreadable": failures, "person_boxes": n_boxes, "poses": n_poses,
            "tracks": tracker.next_id if tracker is not None else None,
            "detector": det_desc, "model": args.model, "nms": pipe.nms, "nms_rank": nms_rank,
            "seconds": {**{k: round(v, 4) for k, v in stages.items()}, "total": round(wall, 4)},
            "frames_per_second": round(len(per_frame) / wall, 3) if wall > 0 else None,
            "per_frame": per_frame,
        }
        if stats is not None:
            summary["eval"] = {"ground_truth": args.gt, "images_scored": len(set(covered)),
                               "images_in_ground_truth": len(evaluator.image_ids), "before_nms": stats_pre,
                               "after_nms": stats}
        # --- commit every output
        committed = []
        try:
            for w in writers:
                if w is not None:
                    w.commit()
                    committed.append(w.path)
            if args.summary:
                write_json(args.summary, summary, indent=1)
                committed.append(args.summary)
            if render_tmp:
                os.makedirs(args.render, exist_ok=True)
                for name in sorted(os.listdir(render_tmp)):
                    os.replace(os.path.join(render_tmp, name), os.path.join(args.render, name))
        except BaseException:
            for path in committed:  # complete, but they belong to a run that failed
                if os.path.isfile(path):
                    os.remove(path)
            raise
    except BaseException:
        for w in writers:
            if w is not None:
                w.abort()
        raise
    finally:
        if render_tmp:
            shutil.rmtree(render_tmp, ignore_errors=True)

    # --- report
    n = len(per_frame)
    wrote = [p for p in (args.output, args.frames, args.pre_nms, args.summary, args.save_video) if p]
    wrote += [args.render + "/"] if args.render else []
    print(f"{n} frames ({src.kind}): {summary['frames_read'] - summary['frames_without_persons']} with persons, "
          f"{summary['frames_without_persons']} without, {len(failures)} unreadable; {n_boxes} person boxes -> "
          f"{n_poses} poses after {pipe.nms} NMS" + (f", {tracker.next_id} tracks" if tracker is not None else "")
          + (f"; wrote {', '.join(wrote)}" if wrote else ""))
    per = 1000.0 / max(n, 1)
    print(f"{n / wall if wall > 0 else 0:.2f} frames/s ({wall:.2f} s); ms per frame: "
          + ", ".join(f"{k} {per * v:.1f}" for k, v in stages.items()))
    if stats is not None:
        print(f"COCO keypoint AP on the {len(set(covered))} images of this run (of {len(evaluator.image_ids)} in the "
              f"ground truth): {stats_pre['AP']:.3f} before NMS, {stats['AP']:.3f} after "
              f"(AP50 {stats_pre['AP50']:.3f} -> {stats['AP50']:.3f})")
    elif evaluator is not None:
        print("COCO keypoint AP: no image of this run could be read; nothing scored")
    if failures:
        listed = "; ".join(x["error"] for x in failures[:3]) + ("; ..." if len(failures) > 3 else "")
        print(f"rmpe run: {len(failures)} of {n} frames could not be read and were skipped ({listed})",
              file=sys.stderr)
        return 1
    return 0
