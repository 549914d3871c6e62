"""Fixtures shared by the rmpe tests (the repository-wide ones are in tests/conftest.py)."""
import pathlib
import warnings

import pytest
import torch

COCO4 = pathlib.Path(__file__).resolve().parents[2] / "data" / "coco4"


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
