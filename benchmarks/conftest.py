"""Shared inputs and the ratio report of the benchmarks.

Inputs are real: the 413 BlazePose proposals before NMS shipped in data/ (12
COCO images). A frame of n proposals places whole real images side by side on
one canvas (1000 px apart) until it holds n, so its structure is that of a
busy real frame: redundant proposals around each person, most pairs far apart.
"""
import datetime
import os
import pathlib
import platform
import subprocess

import pytest
import torch

from rmpe_ext.proposals import load_proposals

ROOT = pathlib.Path(__file__).resolve().parents[1]
HAS_CUDA = torch.cuda.is_available()


def pytest_configure(config):
    # one CPU core for both sides, as the targets are stated
    torch.set_num_threads(int(os.environ.get("RMPE_BENCH_THREADS", "1")))


@pytest.fixture(scope="session")
def dev_images():
    p = load_proposals(ROOT / "data" / "blazepose_proposals_pre_nms_dev.json.gz")
    return [p.image(b) for b in range(p.num_images)]


def composite_frame(images, n, start=0):
    """n real proposals on one canvas: whole images, each shifted to its own
    1000 px cell, taken from images[start:] cyclically; the last one cut short."""
    poses, scores, boxes, box_scores, taken, cell = [], [], [], [], 0, 0
    while taken < n:
        img = images[(start + cell) % len(images)]
        m = min(n - taken, len(img.poses))
        shift = torch.tensor([(cell % 8) * 1000.0, (cell // 8) * 1000.0])
        poses.append(img.poses[:m] + shift)
        boxes.append(img.boxes[:m] + shift.repeat(2))
        scores.append(img.joint_scores[:m])
        box_scores.append(img.box_scores[:m])
        taken += m
        cell += 1
    return torch.cat(poses), torch.cat(scores), torch.cat(boxes), torch.cat(box_scores)


def alphapose_args(poses, scores, boxes, box_scores):
    n = poses.shape[0]
    return boxes, box_scores.reshape(n, 1), torch.zeros(n, 1), poses, scores.reshape(n, -1, 1)


def _machine():
    cpu = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        cpu = next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name"))
    except Exception:
        pass
    gpu = torch.cuda.get_device_name(0) if HAS_CUDA else "no GPU"
    return (f"{cpu}, {os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch thread(s); {gpu}; "
            f"torch {torch.__version__}; {datetime.date.today().isoformat()}")


def pytest_terminal_summary(terminalreporter, config):
    """Prints, and writes to $RMPE_BENCH_REPORT (default benchmarks/last_run.md), each benchmark's median and
    its ratio to every baseline of its group (the benchmarks named
    ``test_baseline_*``), all measured in this run."""
    bs = getattr(config, "_benchmarksession", None)
    if bs is None or not bs.benchmarks or bs.disabled:
        return
    groups = {}
    for b in bs.benchmarks:
        groups.setdefault(b.group, []).append(b)
    fmt = lambda s: f"{s * 1e3:.3f} ms" if s >= 1e-3 else f"{s * 1e6:.1f} µs"
    lines = [f"Machine: {_machine()}", "", "| group | benchmark | median | baseline median / this |", "|---|---|---|---|"]
    for g, items in sorted(groups.items(), key=lambda kv: str(kv[0])):
        bases = [b for b in items if b.name.startswith("test_baseline")]
        for b in sorted(items, key=lambda b: b.stats.median):
            ratios = ", ".join(f"{base.stats.median / b.stats.median:.1f}x vs {base.name[len('test_baseline_'):]}"
                               for base in bases if base is not b)
            lines.append(f"| {g} | {b.name} | {fmt(b.stats.median)} | {ratios or '-'} |")
    text = "\n".join(lines) + "\n"
    terminalreporter.write_sep("=", "rmpe_ext benchmark ratios (same run)")
    terminalreporter.write(text)
    report = pathlib.Path(os.environ.get("RMPE_BENCH_REPORT", ROOT / "benchmarks" / "last_run.md"))
    (report if report.is_absolute() else ROOT / report).write_text(text)
