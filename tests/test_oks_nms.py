"""OKS-NMS and soft-OKS-NMS against the mmpose implementations (as shipped in
alphapose==1.1's pPose_nms) and the NumPy reference."""
import numpy as np
import pytest
import torch
from conftest import cluster_poses

from rmpe_ext import ops, reference

pPose_nms = pytest.importorskip("alphapose.utils.pPose_nms", reason="pip install --no-deps alphapose==1.1")


def _untied(p):
    """The proposals' scores (float64) made distinct: mmpose orders with an
    unstable argsort, so its order of tied scores is arbitrary."""
    return p.scores.double() + torch.arange(len(p.scores), dtype=torch.float64) * 1e-9


def _db(p):
    """mmpose's kpts_db: keypoints (x, y, score) flattened, score, area = box area."""
    kp = torch.cat([p.poses, p.joint_scores[:, :, None]], 2).double().numpy()
    area = ((p.boxes[:, 2] - p.boxes[:, 0]) * (p.boxes[:, 3] - p.boxes[:, 1])).double().numpy()
    scores = _untied(p)
    return [dict(keypoints=kp[i].reshape(-1), score=float(scores[i]), area=float(area[i])) for i in range(len(kp))]


@pytest.mark.parametrize("thresh", [0.3, 0.5, 0.9])
def test_oks_nms_matches_mmpose_on_real_proposals(dev_proposals, thresh, device):
    total = 0
    for b in range(dev_proposals.num_images):
        p = dev_proposals.image(b)
        theirs = pPose_nms.oks_nms(_db(p), thresh).tolist()
        ours = ops.oks_nms(p.poses.double().to(device), p.joint_scores.double().to(device),
                           p.boxes.double().to(device), _untied(p).to(device), thresh=thresh)
        assert ours.tolist() == theirs
        total += len(theirs)
    assert 0 < total < len(dev_proposals.poses)


@pytest.mark.parametrize("thresh", [0.5, 0.9])
def test_soft_oks_nms_matches_mmpose_on_real_proposals(dev_proposals, thresh, device):
    for b in range(dev_proposals.num_images):
        p = dev_proposals.image(b)
        theirs = pPose_nms.soft_oks_nms(_db(p), thresh).tolist()
        args = [t.double().to(device) for t in (p.poses, p.joint_scores, p.boxes, _untied(p))]
        keep, rescored = ops.soft_oks_nms(*args, thresh=thresh)
        assert keep.tolist() == theirs
        assert torch.all(rescored[1:] <= rescored[:-1] + 1e-12)  # taken in descending (rescored) order


def test_batched_oks_and_float32(dev_proposals):
    p = dev_proposals
    keep = ops.oks_nms(p.poses, p.joint_scores, p.boxes, p.scores, p.image_index, thresh=0.5)
    ref = reference.pose_nms(p.poses, p.joint_scores, p.boxes, p.scores, p.image_index, "oks",
                             ops.OKSNMSParams(thresh=0.5))[0]
    assert keep.tolist() == ref.tolist()


@pytest.mark.parametrize("linear", [False, True])
@pytest.mark.parametrize("vis", [None, 0.4])
def test_soft_oks_matches_reference(linear, vis, device):
    rng = np.random.default_rng(2)
    parts = [cluster_poses(rng, 3, 6, spread=4.0) for _ in range(3)]
    poses, scores, boxes = (torch.cat([q[i] for q in parts]).double() for i in range(3))
    img = torch.repeat_interleave(torch.arange(3), 18)
    rank = scores.mean(1)
    keep, rescored = ops.soft_oks_nms(poses.to(device), scores.to(device), boxes.to(device), rank.to(device),
                                      img.to(device), thresh=0.6, vis_thresh=vis, max_dets=7, linear=linear)
    rk, rs = reference.soft_oks_nms(poses, scores, boxes, rank, img, thresh=0.6, vis_thresh=vis, max_dets=7,
                                    linear=linear)
    assert keep.tolist() == rk.tolist() and len(rk) == 21
    np.testing.assert_allclose(rescored.cpu().numpy(), rs, rtol=1e-12)
    keep_all, _ = ops.soft_oks_nms(poses, scores, boxes, rank, img, max_dets=-1)
    assert sorted(keep_all.tolist()) == list(range(len(img)))  # soft NMS never drops, it rescores


def test_custom_sigmas_and_errors():
    rng = np.random.default_rng(4)
    poses, scores, boxes = cluster_poses(rng, 3, 4, K=5, spread=5.0)
    sig = (0.05, 0.06, 0.07, 0.08, 0.09)
    keep = ops.oks_nms(poses, scores, boxes, thresh=0.5, sigmas=sig)
    ref = reference.pose_nms(poses, scores, boxes, None, None, "oks", ops.OKSNMSParams(thresh=0.5, sigmas=sig))[0]
    assert keep.tolist() == ref.tolist()
    with pytest.raises(ValueError, match="OKS needs per-joint sigmas for K = 5"):
        ops.oks_nms(poses, scores, boxes)
    with pytest.raises(RuntimeError, match="max_dets must be >= 0"):
        ops.soft_oks_nms(poses, scores, boxes, scores.mean(1), sigmas=sig, max_dets=-5)
    with pytest.raises(RuntimeError, match=r"scores must have shape \[N\]"):
        ops.soft_oks_nms(poses, scores, boxes, scores, sigmas=sig)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_oks_exactly_on_the_threshold(dtype, device):
    # joint 0 on the reference's (exp(0) = 1), joint 1 thousands of px away (exp(-e) = 0): OKS = 0.5 exactly.
    # Hard NMS removes at OKS > thresh (so not at 0.5); linear soft-OKS rescales at OKS >= thresh (so at 0.5).
    t = lambda v: torch.tensor(v, dtype=dtype, device=device)
    sig = (0.05, 0.05)
    poses = t([[[100.0, 100.0], [120.0, 100.0]], [[100.0, 100.0], [3120.0, 100.0]]])
    js, boxes, rank = t([[0.9, 0.9], [0.8, 0.8]]), t([[90.0, 90.0, 130.0, 130.0]] * 2), t([1.0, 0.5])
    sim, _ = ops.pose_similarity(poses, js, boxes, "oks", ops.OKSNMSParams(sigmas=sig))
    assert sim[0, 1].item() == 0.5
    above = float(np.nextafter(np.float32(0.5) if dtype == torch.float32 else 0.5, np.inf))
    below = float(np.nextafter(np.float32(0.5) if dtype == torch.float32 else 0.5, -np.inf))
    assert ops.oks_nms(poses, js, boxes, rank, thresh=0.5, sigmas=sig).tolist() == [0, 1]
    assert ops.oks_nms(poses, js, boxes, rank, thresh=below, sigmas=sig).tolist() == [0]
    for thresh, expect in ((0.5, 0.25), (above, 0.5)):  # 0.5 * (1 - 0.5) at the threshold, untouched above it
        keep, rescored = ops.soft_oks_nms(poses, js, boxes, rank, thresh=thresh, sigmas=sig, linear=True)
        assert keep.tolist() == [0, 1] and rescored.tolist() == [1.0, expect]
