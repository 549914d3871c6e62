"""rmpe_ext.ops.pose_similarity against the NumPy reference, all three formulations."""
import math

import numpy as np
import pytest
import torch
from conftest import cluster_poses

from rmpe_ext import ops, reference

METHODS = {
    "alphapose": ops.AlphaPoseNMSParams(),
    "paper": ops.PaperNMSParams(sigma1=0.5, sigma2=30.0, lam=1.2, eta=10.0),
    "oks": ops.OKSNMSParams(thresh=0.8),
    "oks-vis": ops.OKSNMSParams(thresh=0.8, vis_thresh=0.4),
}


def _method(name):
    return name.split("-")[0], METHODS[name]


@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("contiguous", [True, False])
def test_matches_reference(name, dtype, contiguous, device):
    method, params = _method(name)
    rng = np.random.default_rng(0)
    poses, scores, boxes = cluster_poses(rng, persons=4, per_person=5, spread=2.0)
    scores[::4, :3] = 0
    poses, scores, boxes = poses.to(device, dtype), scores.to(device, dtype), boxes.to(device, dtype)
    if not contiguous:  # same values, other strides
        poses = poses.transpose(1, 2).contiguous().transpose(1, 2)
        scores = scores.t().contiguous().t()
        assert not poses.is_contiguous()
    sim, match = ops.pose_similarity(poses, scores, boxes, method, params)
    ref_sim, ref_match = reference.pose_similarity(poses, scores, boxes, method, params)
    assert sim.dtype == dtype and match.dtype == torch.int32 and sim.device == poses.device
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(sim.cpu().numpy(), ref_sim, rtol=tol, atol=tol)
    np.testing.assert_array_equal(match.cpu().numpy(), ref_match)


def test_alphapose_terms_at_their_thresholds():
    # a joint exactly 1 px away is inside the KSim window (d <= 1); a joint at
    # exactly min(ref_dist, 7) counts for PCK (d / r <= 1)
    K = 3
    a = torch.tensor([[[0.0, 0.0], [100.0, 0.0], [200.0, 0.0]]])
    b = a + torch.tensor([[[1.0, 0.0], [0.0, 7.0], [7.0 + 1e-3, 0.0]]])
    poses = torch.cat([a, b])
    scores = torch.full((2, K), 0.5)
    boxes = torch.tensor([[0.0, 0.0, 200.0, 10.0]]).repeat(2, 1)  # ref = 0.1 * 200 = 20 -> r = 7
    sim, match = ops.pose_similarity(poses, scores, boxes)
    d = torch.tensor([1.0, 7.0, 7.001])
    expect = math.tanh(0.5) ** 2 + 1.7 * torch.exp(-d / 2.65).sum().item()
    assert match[0, 1] == 2
    assert sim[0, 1].item() == pytest.approx(expect, rel=1e-6)


def test_paper_window_uses_the_reference_box():
    # KSim's window is 1/10 of the *reference's* box: the relation is asymmetric
    poses = torch.tensor([[[0.0, 0.0]], [[4.0, 0.0]]])
    scores = torch.ones(2, 1)
    boxes = torch.tensor([[0.0, 0.0, 100.0, 100.0], [0.0, 0.0, 50.0, 50.0]])  # half windows 5 and 2.5
    _, match = ops.pose_similarity(poses, scores, boxes, "paper")
    assert match.tolist() == [[1, 1], [0, 1]]


def test_empty_and_errors():
    sim, match = ops.pose_similarity(torch.zeros(0, 17, 2), torch.zeros(0, 17), torch.zeros(0, 4))
    assert sim.shape == (0, 0) and match.shape == (0, 0)
    p, s, b = torch.rand(3, 17, 2), torch.rand(3, 17), torch.tensor([[0.0, 0, 1, 1]]).repeat(3, 1)
    with pytest.raises(RuntimeError, match=r"poses must have shape \[N, K, 2\], got 2-D"):
        ops.pose_similarity(p[:, :, 0], s, b)
    with pytest.raises(RuntimeError, match=r"joint_scores must have shape \[N, K\] = \[3, 17\]"):
        ops.pose_similarity(p, s[:2], b)
    with pytest.raises(RuntimeError, match="boxes must have the dtype of poses"):
        ops.pose_similarity(p, s, b.double())
    with pytest.raises(RuntimeError, match="at least one joint"):
        ops.pose_similarity(p[:, :0], s[:, :0], b)
    with pytest.raises(RuntimeError, match="poses must be float32 or float64"):
        ops.pose_similarity(p.half(), s.half(), b.half())
    with pytest.raises(ValueError, match="default COCO sigmas are for K = 17"):
        ops.pose_similarity(p[:, :5], s[:, :5], b, "oks")
    with pytest.raises(ValueError, match="method must be one of"):
        ops.pose_similarity(p, s, b, "iou")
    with pytest.raises(TypeError, match="params must be a PaperNMSParams"):
        ops.pose_similarity(p, s, b, "paper", ops.AlphaPoseNMSParams())
    bad = s.clone()
    bad[1, 3] = math.inf
    with pytest.raises(RuntimeError, match="joint_scores contains NaN or infinite"):
        ops.pose_similarity(p, bad, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_oks_visibility_threshold_is_strict(dtype, device):
    # a joint counts when both its scores exceed vis_thresh: a score exactly vis_thresh does not count
    t = lambda v: torch.tensor(v, dtype=dtype, device=device)
    poses = t([[[10.0, 10.0], [20.0, 10.0], [30.0, 10.0]]] * 2)
    boxes = t([[0.0, 0.0, 40.0, 40.0]] * 2)
    p = ops.OKSNMSParams(vis_thresh=0.25, sigmas=(0.05, 0.05, 0.05))
    _, match = ops.pose_similarity(poses, t([[0.25, 0.5, 0.75], [0.5, 0.25, 0.75]]), boxes, "oks", p)
    assert match.tolist() == [[2, 1], [1, 2]]
    step = float(np.nextafter(np.float32(0.25) if dtype == torch.float32 else 0.25, np.inf))
    _, match = ops.pose_similarity(poses, t([[step, 0.5, 0.75], [0.5, step, 0.75]]), boxes, "oks", p)
    assert match.tolist() == [[3, 3], [3, 3]]
