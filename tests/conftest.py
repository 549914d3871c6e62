import os
import pathlib

import numpy as np
import pytest
import torch

import rmpe_ext
from rmpe_ext.proposals import load_proposals

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
SHARED = pathlib.Path(os.environ.get("RMPE_SHARED_DATA", ROOT.parent / "shared" / "data"))

# CUDA runs wherever torch sees a GPU; an extension built without CUDA then
# fails these tests loudly instead of skipping them. With RMPE_CUDA_EMU=1
# (make test-cuda-emu), "cuda" is the CUDA emulation: csrc/cuda's kernels
# compiled for the host, run on CPU tensors that say they are on cuda
# (tests/cuda_emu/device.py); only the tests that use "cuda" are collected.
CUDA_EMU = os.environ.get("RMPE_CUDA_EMU") == "1"
if CUDA_EMU:
    from cuda_emu.device import install, pytest_collection_modifyitems, pytest_runtest_setup  # noqa: F401 (hooks)

    install()
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() or CUDA_EMU else [])


# Hypothesis profiles (tests/test_properties.py and the other property tests): "ci", the default,
# a few hundred examples in all; "long" for local fuzzing runs: pytest --hypothesis-profile=long.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", max_examples=50, deadline=None, derandomize=False)
settings.register_profile("long", max_examples=10_000, deadline=None)
settings.load_profile("ci")


def pytest_report_header(config):
    return f"rmpe_ext build: {rmpe_ext.BUILD_INFO}; devices: {DEVICES}{' (cuda emulated)' if CUDA_EMU else ''}; shared data: {SHARED if SHARED.exists() else 'absent'}"


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param, 0) if request.param == "cuda" else torch.device(request.param)


@pytest.fixture(scope="session")
def dev_proposals():
    """The 413 real pre-NMS BlazePose proposals shipped in data/ (12 COCO images)."""
    return load_proposals(DATA / "blazepose_proposals_pre_nms_dev.json.gz")


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED.exists():
        pytest.skip(f"shared data not found at {SHARED} (set RMPE_SHARED_DATA)")
    return SHARED


def cluster_poses(rng, persons, per_person, K=17, spread=3.0, size=(640, 480), person_scale=(40, 160)):
    """Redundant proposals as a detector + pose estimator give them: for each of
    `persons` people at random places, `per_person` noisy copies of its pose.
    Returns float32 tensors (poses [N,K,2], joint scores [N,K], boxes [N,4] xyxy)."""
    poses, scores, boxes = [], [], []
    for _ in range(persons):
        scale = rng.uniform(*person_scale)
        centre = rng.uniform([0, 0], size)
        template = centre + rng.normal(0, 0.3, (K, 2)) * scale
        base_s = rng.uniform(0.05, 1.0, K)
        for _ in range(per_person):
            p = template + rng.normal(0, spread, (K, 2))
            s = np.clip(base_s + rng.normal(0, 0.1, K), 0, 1)
            lo, hi = p.min(0), p.max(0)
            pad = rng.uniform(0, 0.2) * (hi - lo)
            poses.append(p)
            scores.append(s)
            boxes.append(np.concatenate([lo - pad, hi + pad]))
    t = lambda a: torch.tensor(np.array(a), dtype=torch.float32)
    return t(poses).reshape(-1, K, 2), t(scores).reshape(-1, K), t(boxes).reshape(-1, 4)
