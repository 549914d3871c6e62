"""The CPU kernels' AVX2 paths give the same bits as their scalar paths, and the
axis-aligned crop path the same bits as the general AVX2 path (each run in a
subprocess: RMPE_EXT_NO_SIMD=1 turns every AVX2 path off, RMPE_EXT_NO_AXIS_PATH=1
the axis-aligned one).

Which paths a run took is read back from the extension itself:
torch.ops.rmpe_ext._cpu_paths() asks the functions the kernels ask
(rmpe::avx2::cpu_has_avx2() / cpu_has_axis_path(), csrc/cpu/simd_avx2.h). On a
CPU without AVX2 (or F16C) there is no
vector path to compare, and the tests skip saying so."""
import functools
import os
import pathlib
import subprocess
import sys

import pytest
import torch

# Part of SCRIPT: the vector paths the kernels take in this process, {name: on}.
PATHS = r'''
import torch
def paths():
    return {k: v == "1" for k, v in (kv.split("=") for kv in torch.ops.rmpe_ext._cpu_paths().split(";"))}
'''

SCRIPT = PATHS + r'''
import sys, torch
from rmpe_ext import ops
from rmpe_ext.presets import alphapose_crop_theta
g = torch.Generator().manual_seed(0)
frames = torch.randint(0, 256, (2, 90, 120, 3), generator=g, dtype=torch.uint8)
theta = torch.tensor([[[0.9, 0.2, -30.0], [-0.1, 1.1, 5.0]], [[2.0, 0.0, 20.0], [0.0, 2.0, -40.0]],
                      [[0.5, 0.0, 100.0], [0.0, 0.5, 60.0]], [[0.31, 0.0, -200.0], [0.0, 0.29, 45.0]],
                      # taps in the last frame column and row, of the last frame of the buffer (index 1)
                      [[1.0, 0.0, 64.25], [0.0, 1.0, 26.5]], [[0.75, 0.0, 59.0], [0.0, 1.25, 10.0]],
                      # off-diagonal terms ~1e-15 (get_affine_transform's inverse) and large enough to matter
                      [[0.9, 3e-15, 7.5], [-2e-15, 0.9, 3.25]], [[0.9, 1e-9, 7.5], [1e-7, 0.9, 3.25]]],
                     dtype=torch.float64)
bidx = torch.tensor([1, 0, 1, 0, 1, 1, 0, 1])
outs = {}
for interp in ("bilinear", "bilinear-u8", "opencv4"):
    for value in (0.0, 17.0):
        for dtype in (torch.float32, torch.float16):
            outs[(interp, value, dtype)] = ops.affine_crop(frames, theta, (61, 56), bidx, (0.4, 0.5, 0.6),
                                                           (0.2, 0.3, 0.4), True, value, dtype, interp)
# AlphaPose's crops of random boxes, partly outside the frame
boxes = torch.rand(40, 2, generator=g) * torch.tensor([150.0, 100.0]) - 20
boxes = torch.cat([boxes, boxes + 10 + torch.rand(40, 2, generator=g) * 80], 1)
th, _ = alphapose_crop_theta(boxes, (64, 48))
assert 0 < th[:, 0, 1].abs().max() < 1e-12  # not exactly axis-aligned, as get_affine_transform's inverse
for interp in ("bilinear", "bilinear-u8", "opencv4"):
    for dtype in (torch.float32, torch.float16):
        outs[("boxes", interp, dtype)] = ops.affine_crop(frames[1], th, (64, 48), torch.zeros(40, dtype=torch.long),
                                                         (0.406, 0.457, 0.48), dtype=dtype, interpolation=interp)
hms = torch.rand(5, 17, 64, 48, generator=g)
hms[1, 3, 10, 10] = 7.0
hms[2, 5] = 0.5  # all equal: the first
hms[2, 6, 40, 7] = hms[2, 6, 3, 1] = hms[2, 6, 63, 47] = 2.0  # ties: the first
hms[2, 7, 63, 47] = 3.0  # in the tail after the last 32-float chunk (3072 = 96 x 32: none) / last element
hms[3, 0, 5, 5] = float("nan")
hms[3, 1, 0, 0] = float("inf")
hms[3, 2] = -float("inf")
hms[3, 3, 20, :] = -0.0
hms[3, 3] -= 1
hms[3, 3, 20, :] = 0.0
outs["decode"] = ops.heatmap_decode(hms, torch.eye(2, 3, dtype=torch.float64).expand(5, 2, 3))
odd = torch.rand(3, 4, 7, 9, generator=g)  # 63 values: one chunk and a tail
odd[1, 2, 6, 8] = 5.0
odd[2, 1, 1, 1] = 5.0
outs["decode odd"] = ops.heatmap_decode(odd, torch.eye(2, 3, dtype=torch.float64).expand(3, 2, 3))
outs["paths"] = paths()
torch.save(outs, sys.argv[1])
'''


@functools.lru_cache(None)
def cpu_flags():
    """The CPU's instruction-set flags (/proc/cpuinfo; elsewhere what torch's dispatch reports)."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    cap = torch.backends.cpu.get_cpu_capability()
    return frozenset({"avx2", "f16c"} if cap in ("AVX2", "AVX512") else ())


needs_avx2 = pytest.mark.skipif(not {"avx2", "f16c"} <= cpu_flags(),
                                reason="the CPU lacks AVX2 or F16C: the kernels have no vector path to compare "
                                       "with the scalar one here")


def _run(tmp_path, name, env_set):
    env = dict(os.environ)
    env.pop("RMPE_EXT_NO_SIMD", None)
    env.pop("RMPE_EXT_NO_AXIS_PATH", None)
    env.update(env_set)
    out = tmp_path / f"{name}.pt"
    subprocess.run([sys.executable, "-c", SCRIPT, str(out)], check=True, env=env,
                   cwd=pathlib.Path(__file__).resolve().parents[1])
    return torch.load(out)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("simd")
    return {"simd": _run(tmp, "simd", {}), "general": _run(tmp, "general", {"RMPE_EXT_NO_AXIS_PATH": "1"}),
            "scalar": _run(tmp, "scalar", {"RMPE_EXT_NO_SIMD": "1"})}


@needs_avx2
def test_each_run_took_the_paths_it_names(runs):
    """The comparison below compares what it says: the AVX2 and axis-aligned paths were on in the first
    run, the axis path off in the second, every vector path off in the third."""
    got = {name: r["paths"] for name, r in runs.items()}
    assert got == {"simd": {"avx2": True, "axis": True}, "general": {"avx2": True, "axis": False},
                   "scalar": {"avx2": False, "axis": False}}


@needs_avx2
def test_avx2_and_scalar_paths_agree_bit_for_bit(runs):
    simd, general, scalar = runs["simd"], runs["general"], runs["scalar"]
    for key in simd:
        if key == "paths":
            continue
        for other in (general, scalar):
            a, b = simd[key], other[key]
            for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
                same_nan = torch.equal(x.isnan(), y.isnan())
                assert same_nan and torch.equal(x.nan_to_num(0.0), y.nan_to_num(0.0)), key
