"""Operator registration: opcheck (schema, fake kernels, autograd, aot dispatch),
torch.compile, and the loader that refuses a binary built for another torch."""
import re

import numpy as np
import pytest
import torch
from conftest import cluster_poses

import rmpe_ext
from rmpe_ext import _loader, ops


def _sample(device="cpu"):
    rng = np.random.default_rng(0)
    poses, scores, boxes = cluster_poses(rng, 3, 4, spread=2.0)
    img = torch.tensor([0, 1] * 6)
    return [t.to(device) for t in (poses, scores, boxes, img)]


def test_opcheck(device):
    poses, scores, boxes, img = _sample(device)
    params = ops.AlphaPoseNMSParams().to_list()
    sig = torch.tensor(ops.COCO_SIGMAS, device=device)
    torch.library.opcheck(torch.ops.rmpe_ext.pose_similarity.default, (poses, scores, boxes, 0, params, None))
    torch.library.opcheck(torch.ops.rmpe_ext.pose_similarity.default,
                          (poses, scores, boxes, 2, ops.OKSNMSParams().to_list(), sig))
    for method in (0, 1):
        torch.library.opcheck(torch.ops.rmpe_ext.pose_nms.default,
                              (poses, scores, boxes, scores.mean(1), img, method, params, None))
    torch.library.opcheck(torch.ops.rmpe_ext.soft_oks_nms.default,
                          (poses, scores, boxes, scores.mean(1), img, ops.OKSNMSParams().to_list(), sig, 20, False))


def test_torch_compile_fullgraph(device):
    poses, scores, boxes, img = _sample(device)

    def f(poses, scores, boxes, img):
        sim, match = ops.pose_similarity(poses, scores, boxes)
        res = ops.pose_nms(poses, scores, boxes, None, img)
        keep, rescored = ops.soft_oks_nms(poses, scores, boxes, scores.mean(1), img)
        return sim.sum() + match.sum(), res.keep, res.poses * 2, keep, rescored

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    for got, want in zip(compiled(poses, scores, boxes, img), f(poses, scores, boxes, img)):
        torch.testing.assert_close(got, want)


def test_build_info():
    assert rmpe_ext.BUILD_INFO["torch"] == torch.__version__
    assert rmpe_ext.BUILD_INFO["with_cuda"] == (torch.version.cuda is not None and rmpe_ext.BUILD_INFO["with_cuda"])
    assert torch.ops.rmpe_ext._build_info().startswith("torch=" + torch.__version__.split("+")[0])


def test_loader_refuses_a_binary_for_another_torch(monkeypatch):
    import rmpe_ext._build_info as info

    monkeypatch.setattr(info, "TORCH_VERSION", "1.13.1")
    expected = rf"built against torch 1\.13\.1, but torch {re.escape(torch.__version__)} is installed"
    with pytest.raises(ImportError, match=expected):
        _loader.load_extension()
    with pytest.raises(ImportError, match="pip install --no-build-isolation"):
        _loader.load_extension()


def test_outputs_carry_no_gradient():
    poses, scores, boxes, img = _sample()
    poses.requires_grad_()
    res = ops.pose_nms(poses, scores, boxes, None, img)
    sim, _ = ops.pose_similarity(poses, scores, boxes)
    _, rescored = ops.soft_oks_nms(poses, scores, boxes, scores.mean(1), img)
    assert not (res.poses.requires_grad or sim.requires_grad or rescored.requires_grad)
    with pytest.raises(RuntimeError, match="does not require grad"):
        res.poses.sum().backward()
    torch.library.opcheck(torch.ops.rmpe_ext.pose_nms.default,
                          (poses, scores, boxes, None, img, 0, ops.AlphaPoseNMSParams().to_list(), None))
