"""The cost of affine_crop's fresh output memory, measured in fresh processes.

Each run is a new Python process that crops N persons (256x192, AlphaPose's boxes) from a 1080p
frame `--calls` times in each mode and reports the per-call times (median, min, max) and what the
kernel's /proc/vmstat counters moved by meanwhile (transparent huge page faults, compaction stalls):

* fresh:   ops.affine_crop(...) allocating its output (the op's own allocator);
* empty:   ops.affine_crop(..., out=torch.empty(...)) (torch's CPU allocator, 4 KiB pages unless
           torch's THP_MEM_ALLOC_ENABLE is set);
* reused:  ops.affine_crop(..., out=batch) into one batch kept across calls (no fresh memory);
* cv2:     AlphaPose's way, a cv2.warpAffine loop into a fresh float batch.

    python tools/measure_crop_fresh_output.py --runs 5 --crops 128 --threads 2

The THP settings (/sys/kernel/mm/transparent_hugepage/{enabled,defrag}) are printed with the
results: they decide what a huge-page hint costs.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

VMSTAT_KEYS = ("thp_fault_alloc", "thp_fault_fallback", "compact_stall", "compact_success", "compact_fail",
               "compact_migrate_scanned", "compact_free_scanned")


def vmstat():
    out = {}
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                k, v = line.split()
                if k in VMSTAT_KEYS:
                    out[k] = int(v)
    except OSError:
        pass
    return out


def one_run(crops, calls, threads, modes):
    import numpy as np
    import torch

    from rmpe_ext import ops
    from rmpe_ext.alphapose import ALPHAPOSE_MEAN
    from rmpe_ext.presets import alphapose_crop_theta

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    frame_np = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    frame = torch.from_numpy(frame_np)
    x, y = rng.uniform(0, 1700, crops), rng.uniform(0, 700, crops)
    w, h = rng.uniform(80, 300, crops), rng.uniform(200, 500, crops)
    boxes = torch.tensor(np.stack([x, y, x + w, y + h], 1), dtype=torch.float32)
    theta, _ = alphapose_crop_theta(boxes)
    bidx = torch.zeros(crops, dtype=torch.long)
    size = (256, 192)
    batch = torch.empty(crops, 3, *size)

    def crop(out=None):
        return ops.affine_crop(frame, theta, size, bidx, ALPHAPOSE_MEAN, check=False, out=out)

    def cv2_loop():
        import cv2

        mats = [cv2.invertAffineTransform(t) for t in theta.numpy()]
        out = torch.empty(crops, 3, *size)
        mean = torch.tensor(ALPHAPOSE_MEAN).view(3, 1, 1)
        for k in range(crops):
            c = cv2.warpAffine(frame_np, mats[k], size[::-1], flags=cv2.INTER_LINEAR)
            out[k] = torch.from_numpy(c).permute(2, 0, 1).float().div_(255).sub_(mean)
        return out

    fns = {"fresh": lambda: crop(), "empty": lambda: crop(torch.empty(crops, 3, *size)),
           "reused": lambda: crop(batch), "cv2": cv2_loop}
    result = {}
    for mode in modes:
        fns[mode]()  # warm-up: code, tables, the frame's pages
        before = vmstat()
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            out = fns[mode]()
            times.append((time.perf_counter() - t0) * 1e3)
            del out
        after = vmstat()
        result[mode] = {"ms": times, "vmstat": {k: after.get(k, 0) - before.get(k, 0) for k in before}}
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="fresh processes (default 5)")
    ap.add_argument("--calls", type=int, default=10, help="calls per mode and process (default 10)")
    ap.add_argument("--crops", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--modes", default="fresh,empty,reused,cv2")
    ap.add_argument("--json", help="also write every time to this file")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    modes = a.modes.split(",")
    if a.child:
        print(json.dumps(one_run(a.crops, a.calls, a.threads, modes)))
        return 0
    thp = {}
    for k in ("enabled", "defrag"):
        try:
            thp[k] = open(f"/sys/kernel/mm/transparent_hugepage/{k}").read().strip()
        except OSError:
            thp[k] = "n/a"
    print(f"THP enabled: {thp['enabled']}; defrag: {thp['defrag']}; {a.crops} crops 256x192, {a.threads} threads, "
          f"{a.runs} processes x {a.calls} calls per mode")
    runs = []
    for r in range(a.runs):
        out = subprocess.run([sys.executable, __file__, "--child", "--crops", str(a.crops), "--calls", str(a.calls),
                              "--threads", str(a.threads), "--modes", a.modes], check=True, capture_output=True,
                             text=True, env=dict(os.environ))
        res = json.loads(out.stdout.strip().splitlines()[-1])
        runs.append(res)
        cells = []
        for m in modes:
            t = res[m]["ms"]
            v = res[m]["vmstat"]
            cells.append(f"{m} {statistics.median(t):6.1f} ms [{min(t):.1f}-{max(t):.1f}] "
                         f"thp {v.get('thp_fault_alloc', 0)} stalls {v.get('compact_stall', 0)}")
        print(f"run {r}: " + " | ".join(cells))
    for m in modes:
        meds = [statistics.median(run[m]["ms"]) for run in runs]
        print(f"{m:>7}: medians of the runs {', '.join(f'{x:.1f}' for x in meds)} ms")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"thp": thp, "crops": a.crops, "threads": a.threads, "runs": runs}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
