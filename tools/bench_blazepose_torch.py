"""Timing of the BlazePose landmark model: rmpe.pipeline.models.BlazePoseTorch (torch, batched) against LiteRT (one crop per
call, as rmpe.pipeline.models.BlazePoseModel runs it), on one batch of real crops (data/coco4's best-scored boxes).

    .venv/bin/python tools/bench_blazepose_torch.py [--batch 32] [--threads 2] [--repeat 5]

Prints the median seconds per batch of each variant (after one warm-up run) and the machine's load
(``os.getloadavg``): on a shared machine the figures move with the others' work, so compare rows of one run.
Variants: LiteRT (``batch`` interpreter calls); torch forward of the heatmap only, of all outputs but the
segmentation mask (the default), of all five; forward + backward (gradients to the input only, weights
frozen; and to the weights too) without the mask.

Measured on a 2-CPU x86-64 machine shared with other work (load average 3.5-4 throughout), torch 2.13.0 CPU,
ai-edge-litert 2.3.0, batch 32, median of 5, seconds:

    threads                                          2        1
    LiteRT, 32 calls                               0.58     0.53
    torch forward, heatmap only                    1.78     0.66
    torch forward, all but the mask (default)      3.48     0.69
    torch forward, all 5 outputs                   2.96     1.01
    torch fwd + bwd, no mask, input grads only     5.45     1.74
    torch fwd + bwd, no mask, + weight grads       8.36     2.22

With the machine that loaded, torch's two threads waited for each other (the 2-thread rows are slower than
the 1-thread ones and not even in order); the 1-thread rows are the comparison to read.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

from rmpe.pipeline.detections import load_image  # noqa: E402
from rmpe.pipeline.models import BlazePoseTorch, default_blazepose_path  # noqa: E402
from rmpe_ext import ops  # noqa: E402
from rmpe_ext.presets import cv2_inverse_map  # noqa: E402

ALL = ("landmarks", "pose_flag", "segmentation", "heatmap", "world_landmarks")


def real_crops(n: int) -> torch.Tensor:
    """``n`` crops ``[n, 3, 256, 256]`` RGB in [0, 1] of data/coco4's best-scored boxes (cycled if n > 118)."""
    coco4 = ROOT / "data" / "coco4"
    dets = sorted(json.loads((coco4 / "test_coco_det_AP_H_56.json").read_text()), key=lambda d: -d["score"])
    crops = []
    for i in range(n):
        d = dets[i % len(dets)]
        x, y, w, h = d["bbox"]
        s = max(w, h) * 1.25
        m = np.array([[[256 / s, 0, 128 - (x + w / 2) * 256 / s], [0, 256 / s, 128 - (y + h / 2) * 256 / s]]])
        frame = torch.from_numpy(load_image(coco4 / f"{d['image_id']:012d}.jpg"))
        crops.append(ops.affine_crop(frame, torch.from_numpy(cv2_inverse_map(m.astype(np.float32).astype(np.float64))),
                                     (256, 256), reverse_channels=True, interpolation="opencv4"))
    return torch.cat(crops)


def median_time(fn, repeat: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads and LiteRT's num_threads")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    x = real_crops(args.batch)
    rows = []
    load_before = os.getloadavg()

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = None
    if Interpreter is not None:
        it = Interpreter(model_path=str(default_blazepose_path()), num_threads=args.threads)
        it.allocate_tensors()
        inp = it.get_input_details()[0]["index"]
        xs = x.permute(0, 2, 3, 1).contiguous().numpy()[:, None]

        def litert():
            for c in xs:
                it.set_tensor(inp, c)
                it.invoke()
        rows.append((f"LiteRT, {args.batch} calls of 1 crop (all outputs)", median_time(litert, args.repeat)))
    else:
        rows.append(("LiteRT: ai-edge-litert is not installed", float("nan")))

    for name, outs in (("heatmap only", ("heatmap",)), ("all but the mask (default)", None), ("all 5 outputs", ALL)):
        m = (BlazePoseTorch() if outs is None else BlazePoseTorch(outputs=outs)).requires_grad_(False)

        def fwd(m=m):
            with torch.inference_mode():
                m(x)
        rows.append((f"torch forward, {name}", median_time(fwd, args.repeat)))

    for name, weights in (("input grads, weights frozen", False), ("input + weight grads", True)):
        m = BlazePoseTorch().requires_grad_(weights)

        def fwd_bwd(m=m):
            xi = x.clone().requires_grad_(True)
            out = m(xi)
            sum(v.float().sum() for v in out.values()).backward()
            m.zero_grad(set_to_none=True)
        rows.append((f"torch forward + backward, all but the mask, {name}", median_time(fwd_bwd, args.repeat)))

    print(f"batch {args.batch}, {args.threads} threads, median of {args.repeat}; torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"load average (1, 5, 15 min) before: {tuple(round(v, 2) for v in load_before)}, after: "
          f"{tuple(round(v, 2) for v in os.getloadavg())}")
    for name, t in rows:
        print(f"  {t:7.3f} s  {name}")


if __name__ == "__main__":
    main()
