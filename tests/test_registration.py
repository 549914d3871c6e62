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
    if torch.version.cuda is None:  # a CPU torch cannot have given CUDA kernels
        assert not rmpe_ext.BUILD_INFO["with_cuda"]
    so = torch.ops.rmpe_ext._build_info()
    assert so.startswith("torch=" + torch.__version__.split("+")[0])
    assert so.endswith(";cuda=1" if rmpe_ext.BUILD_INFO["with_cuda"] else ";cuda=0")
    # the CUDA kernels are registered exactly when the build says so
    assert torch._C._dispatch_has_kernel_for_dispatch_key("rmpe_ext::pose_nms", "CUDA") == \
        rmpe_ext.BUILD_INFO["with_cuda"]


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


def test_opcheck_affine_ops(device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 12, 10, generator=g).to(device)
    theta = (torch.eye(2, 3) * 0.8 + 0.05 * torch.randn(3, 2, 3, generator=g)).to(device)
    bidx = torch.tensor([0, 1, 1], device=device)
    th_px = ops.normalized_to_pixel_theta(theta, (12, 10), (5, 4))
    for req in (False, True):
        args = (x.clone().requires_grad_(req), th_px.clone().requires_grad_(req), [5, 4], bidx, 2, 0.25)
        torch.library.opcheck(torch.ops.rmpe_ext.affine_sample.default, args)
    frames = torch.randint(0, 256, (2, 12, 10, 3), dtype=torch.uint8, generator=g).to(device)
    crop_args = (frames, th_px.double(), [5, 4], bidx, [0.4, 0.5, 0.6], [1.0, 1.0, 1.0], True, 0.0, 2, torch.float32)
    torch.library.opcheck(torch.ops.rmpe_ext.affine_crop.default, crop_args)
    out = torch.empty(3, 3, 5, 4, device=device)
    torch.library.opcheck(torch.ops.rmpe_ext.affine_crop_into.default,
                          (frames, th_px.double(), bidx, [0.4, 0.5, 0.6], [1.0, 1.0, 1.0], False, 0.0, 0, out))
    torch.library.opcheck(torch.ops.rmpe_ext.affine_inverse.default, (theta.double().requires_grad_(),))
    hms = torch.rand(3, 5, 8, 6, generator=g).to(device)
    torch.library.opcheck(torch.ops.rmpe_ext.heatmap_decode.default, (hms, th_px.double(), True))


def test_torch_compile_affine(device):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 12, 10, generator=g).to(device)
    theta = (torch.eye(2, 3) * 0.8 + 0.05 * torch.randn(3, 2, 3, generator=g)).to(device)
    bidx = torch.tensor([0, 1, 1], device=device)
    hms = torch.rand(3, 5, 8, 6, generator=g).to(device)

    def f(x, theta):
        crops = ops.affine_grid_sample(x, theta, (5, 4), bidx, check=False)
        back = ops.affine_grid_sample(crops, ops.affine_inverse(theta, check=False), (5, 4), check=False)
        coords, scores = ops.heatmap_decode(hms, ops.normalized_to_pixel_theta(theta, (8, 6), (8, 6)))
        return back.square().sum() + coords.sum() * 0

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    x1, t1 = x.clone().requires_grad_(), theta.clone().requires_grad_()
    x2, t2 = x.clone().requires_grad_(), theta.clone().requires_grad_()
    compiled(x1, t1).backward()
    f(x2, t2).backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(t1.grad, t2.grad)


def test_package_exposes_its_modules():
    """`import rmpe_ext` alone gives rmpe_ext.ops, .alphapose and .nn (the README uses
    rmpe_ext.nn.AffineSampler after a bare `import rmpe_ext`)."""
    import subprocess
    import sys

    code = "import rmpe_ext; rmpe_ext.nn.AffineSampler((4, 4)); rmpe_ext.nn.SDTN(); rmpe_ext.ops.pose_nms; " \
           "rmpe_ext.alphapose.pose_nms"
    subprocess.run([sys.executable, "-c", code], check=True)
