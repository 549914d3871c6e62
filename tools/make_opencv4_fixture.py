"""Writes tests/data/opencv4_warpaffine.npz: cv2.warpAffine(INTER_LINEAR) outputs of
OpenCV 4 (fixed-point interpolation) for random images and matrices, the oracle of
rmpe_ext.ops.affine_crop(..., interpolation="opencv4").

Needs OpenCV 4 (the tests may run with OpenCV 5, whose warpAffine differs):
    python -m venv /tmp/cv4 && /tmp/cv4/bin/pip install numpy "opencv-python-headless<5"
    /tmp/cv4/bin/python tools/make_opencv4_fixture.py
"""
import pathlib

import cv2
import numpy as np

assert int(cv2.__version__.split(".")[0]) == 4, f"needs OpenCV 4, got {cv2.__version__}"
rng = np.random.default_rng(2026)
noise = rng.integers(0, 256, (61, 83, 3), dtype=np.uint8)
yy, xx = np.mgrid[0:61, 0:83]
smooth = np.stack([(xx * 3) % 256, (yy * 4) % 256, ((xx + yy) * 2) % 256], -1).astype(np.uint8)
mats, outs, which = [], [], []
for k in range(24):
    ang = rng.uniform(-0.8, 0.8)
    sc = rng.uniform(0.3, 3.0, 2)
    A = np.array([[np.cos(ang) * sc[0], -np.sin(ang) * sc[1]], [np.sin(ang) * sc[0], np.cos(ang) * sc[1]]])
    A += rng.normal(0, 0.1, (2, 2))
    t = rng.uniform(-60, 60, 2)
    M = np.concatenate([A, t[:, None]], 1)  # image -> crop, as warpAffine takes it
    img = noise if k % 2 == 0 else smooth
    outs.append(cv2.warpAffine(img, M, (30, 40), flags=cv2.INTER_LINEAR))
    mats.append(M)
    which.append(k % 2)
out = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "opencv4_warpaffine.npz"
np.savez_compressed(out, noise=noise, smooth=smooth, mats=np.array(mats), outs=np.array(outs),
                    which=np.array(which), version=cv2.__version__)
print(f"wrote {out} (OpenCV {cv2.__version__})")
