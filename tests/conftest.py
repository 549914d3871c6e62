import os
import pathlib
import warnings

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


# ------------------------------------------------------------------ fixtures of the rmpe tests

COCO4 = DATA / "coco4"


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): figures
    compared bit for bit, or timings of one core; the previous count is restored after the module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def coco4():
    """data/coco4 as the pipeline takes it: (frames, per-frame AP_H_56 boxes, image ids), 4 images, 118 boxes."""
    from rmpe.pipeline.detections import image_files, load_detections, load_image

    dets = load_detections(COCO4 / "test_coco_det_AP_H_56.json")
    ids = list(dets)
    files = image_files(COCO4, ids, COCO4 / "test_coco.json")
    return [load_image(files[i]) for i in ids], [dets[i] for i in ids], ids


class TinyHeatmapNet(torch.nn.Module):
    """A fixed random 17-joint heatmap model: [n, 3, 256, 192] -> [n, 17, 64, 48], non-negative."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.conv = torch.nn.Conv2d(3, 17, 5, stride=4, padding=2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.1)

    def forward(self, x):
        return torch.relu(self.conv(x)) ** 2


@pytest.fixture(scope="module")
def tiny_torchscript(tmp_path_factory):
    """TinyHeatmapNet traced and saved as TorchScript: the path of a model file for ``rmpe run --model``."""
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.*: deprecated, still what many ship
        torch.jit.save(torch.jit.trace(TinyHeatmapNet().eval(), torch.zeros(1, 3, 256, 192)), str(path))
    return path


class AdapterRecorder:
    """Wraps a pipeline adapter, keeping every crop batch and heatmap batch it saw (copies)."""

    def __init__(self, model):
        from rmpe.pipeline.models import ADAPTER_ATTRS

        self.model, self.crops, self.heatmaps = model, [], []
        for a in ADAPTER_ATTRS:
            setattr(self, a, getattr(model, a))

    def __call__(self, crops):
        self.crops.append(crops.clone())
        out = self.model(crops)
        self.heatmaps.append(out.clone())
        return out
