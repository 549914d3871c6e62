"""The CPU kernels' AVX2 paths give the same bits as their scalar paths (run with
RMPE_EXT_NO_SIMD=1 in a subprocess)."""
import os
import pathlib
import subprocess
import sys

import torch

SCRIPT = r'''
import sys, torch
from rmpe_ext import ops
g = torch.Generator().manual_seed(0)
frames = torch.randint(0, 256, (2, 90, 120, 3), generator=g, dtype=torch.uint8)
theta = torch.tensor([[[0.9, 0.2, -30.0], [-0.1, 1.1, 5.0]], [[2.0, 0.0, 20.0], [0.0, 2.0, -40.0]],
                      [[0.5, 0.0, 100.0], [0.0, 0.5, 60.0]], [[0.31, 0.0, -200.0], [0.0, 0.29, 45.0]]],
                     dtype=torch.float64)
bidx = torch.tensor([1, 0, 1, 0])
outs = {}
for interp in ("bilinear", "bilinear-u8", "opencv4"):
    for value in (0.0, 17.0):
        outs[(interp, value)] = ops.affine_crop(frames, theta, (61, 45), bidx, (0.4, 0.5, 0.6), (0.2, 0.3, 0.4),
                                                True, value, interpolation=interp)
hms = torch.rand(5, 17, 64, 48, generator=g)
hms[1, 3, 10, 10] = 7.0
outs["decode"] = ops.heatmap_decode(hms, torch.eye(2, 3, dtype=torch.float64).expand(5, 2, 3))
torch.save(outs, sys.argv[1])
'''


def test_avx2_and_scalar_paths_agree_bit_for_bit(tmp_path):
    results = []
    for no_simd in (False, True):
        env = dict(os.environ)
        env.pop("RMPE_EXT_NO_SIMD", None)
        if no_simd:
            env["RMPE_EXT_NO_SIMD"] = "1"
        out = tmp_path / f"out{int(no_simd)}.pt"
        subprocess.run([sys.executable, "-c", SCRIPT, str(out)], check=True, env=env,
                       cwd=pathlib.Path(__file__).resolve().parents[1])
        results.append(torch.load(out))
    simd, scalar = results
    for key in simd:
        a, b = simd[key], scalar[key]
        for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert torch.equal(x, y), key
