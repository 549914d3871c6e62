"""``rmpe bench``: the kernel benchmarks (pytest-benchmark) with a table of ratios against their baselines.

The benchmarks live in the source tree's ``benchmarks/`` folder (they are not part of an installed wheel):
pose NMS against AlphaPose's ``pose_nms`` (1 thread, as its targets are stated) and the affine kernels
(crops, sampler, decode) against ``F.affine_grid`` + ``F.grid_sample``, a ``cv2.warpAffine`` loop and
AlphaPose's decode loop (2 threads). Each suite's table is also written to ``benchmarks/last_run_<suite>.md``.
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

SUITES = {"pose_nms": ("test_bench_pose_nms.py", 1), "affine": ("test_bench_affine.py", 2)}


def register(sub) -> None:
    p = sub.add_parser("bench", help="run the kernel benchmarks of a source checkout (they are not in the wheel) "
                                     "and print their ratios to the baselines",
                       description=__doc__.split("\n\n")[0] + " They are not in an installed wheel: run this from a "
                       "source checkout of rmpe_ext, or pass --benchmarks-dir CHECKOUT/benchmarks.")
    p.add_argument("suites", nargs="*", metavar="SUITE",
                   help=f"which suites to run (default: all): {', '.join(SUITES)}")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for every suite (default: 1 for pose_nms, 2 for affine)")
    p.add_argument("--quick", action="store_true", help="a few rounds per benchmark (a smoke run, noisy figures)")
    p.add_argument("-k", dest="keyword", default=None, help="only benchmarks matching this pytest -k expression")
    p.add_argument("--benchmarks-dir", default=None,
                   help="the benchmarks folder (default: the source tree's benchmarks/)")
    p.set_defaults(func=run)


def _find_benchmarks(explicit) -> pathlib.Path:
    from ..cli import CommandError

    if explicit:
        path = pathlib.Path(explicit)
    else:
        # python/rmpe/commands/bench.py -> repository root
        path = pathlib.Path(__file__).resolve().parents[3] / "benchmarks"
    if not (path / SUITES["pose_nms"][0]).is_file():
        raise CommandError(f"no benchmarks found in {str(path)!r}: the benchmarks are not part of an installed "
                           "wheel; run from a source checkout of rmpe_ext or pass --benchmarks-dir CHECKOUT/benchmarks")
    return path


def run(args) -> int:
    from ..cli import CommandError
    from . import check_threads

    bench_dir = _find_benchmarks(args.benchmarks_dir)
    suites = args.suites or list(SUITES)
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        raise CommandError(f"unknown suite(s) {unknown}; choose from {list(SUITES)}")
    check_threads(args.threads)
    status = 0
    for suite in suites:
        fname, threads = SUITES[suite]
        report = bench_dir / f"last_run_{suite}.md"
        env = dict(os.environ, RMPE_BENCH_THREADS=str(args.threads or threads), RMPE_BENCH_REPORT=str(report))
        cmd = [sys.executable, "-m", "pytest", str(bench_dir / fname), "-q", "-p", "no:cacheprovider",
               "--benchmark-columns=median,iqr,rounds", "--benchmark-sort=name"]
        if args.quick:
            cmd += ["--benchmark-min-rounds=3", "--benchmark-max-time=0.05", "--benchmark-warmup=off"]
        if args.keyword:
            cmd += ["-k", args.keyword]
        print(f"== {suite}: {' '.join(cmd[2:4])} ({env['RMPE_BENCH_THREADS']} thread(s))", flush=True)
        if report.exists():
            report.unlink()
        proc = subprocess.run(cmd, env=env, cwd=bench_dir.parent, capture_output=True, text=True)
        if proc.returncode not in (0, 5):
            sys.stdout.write(proc.stdout[-4000:])
            sys.stderr.write(proc.stderr[-4000:])
            status = 1
        if report.exists():
            print(report.read_text())
            print(f"(written to {report})\n")
        elif proc.returncode == 0:
            print("no benchmark matched\n")
    return status
