"""rmpe_ext.alphapose.pose_nms against AlphaPose's own pose_nms (alphapose==1.1)."""
import math

import numpy as np
import pytest
import torch
from conftest import cluster_poses

import rmpe_ext.alphapose as ours

pPose_nms = pytest.importorskip("alphapose.utils.pPose_nms", reason="pip install --no-deps alphapose==1.1")


def _inputs(poses, joint_scores, boxes, box_scores=None, ids=None):
    n = poses.shape[0]
    box_scores = torch.rand(n, 1) if box_scores is None else box_scores.reshape(n, 1).float()
    ids = torch.arange(n, dtype=torch.float32).reshape(n, 1) if ids is None else ids
    return boxes, box_scores, ids, poses, joint_scores.reshape(n, -1, 1)


def assert_same(inputs, area=0, device="cpu"):
    """Runs AlphaPose (on copies: it writes into pose_scores) and ours; asserts the
    six outputs agree and that ours left its inputs untouched."""
    theirs = pPose_nms.pose_nms(*[t.clone() for t in inputs], areaThres=area)
    mine_in = [t.to(device) for t in inputs]
    before = [t.clone() for t in mine_in]
    mine = ours.pose_nms(*mine_in, areaThres=area)
    for a, b in zip(before, mine_in):
        assert torch.equal(a, b), "pose_nms modified its input"
    assert len(mine) == 6
    bxs, bsc, ids, pp, ps, pick = mine
    assert [int(i) for i in pick] == [int(i) for i in theirs[5]], "kept poses or their order differ"
    assert all(type(i) is np.int64 for i in pick)
    assert bxs == theirs[0]
    assert ids == theirs[2]
    for x, y in zip(bsc, theirs[1]):
        assert torch.equal(x.cpu(), y)
    for x, y in zip(pp, theirs[3]):
        assert x.shape == y.shape and x.dtype == y.dtype and x.device.type == device
        torch.testing.assert_close(x.cpu(), y, rtol=1e-6, atol=1e-5, equal_nan=True)
    for x, y in zip(ps, theirs[4]):
        assert x.shape == y.shape and x.dtype == y.dtype
        torch.testing.assert_close(x.cpu(), y, rtol=1e-6, atol=1e-6, equal_nan=True)
    return theirs


def test_real_proposals_every_image(dev_proposals, device):
    kept_total = 0
    for b in range(dev_proposals.num_images):
        p = dev_proposals.image(b)
        theirs = assert_same(_inputs(p.poses, p.joint_scores, p.boxes, p.box_scores), device=device.type)
        kept_total += len(theirs[5])
    assert kept_total > 100  # 12 images, 413 proposals: NMS keeps a few hundred, not all, not none


def test_real_proposals_area_threshold(dev_proposals):
    p = dev_proposals.image(2)
    assert_same(_inputs(p.poses, p.joint_scores, p.boxes, p.box_scores), area=40 * 40.5)


@pytest.mark.parametrize("K", [16, 17, 26])
@pytest.mark.parametrize("seed", range(4))
def test_generated_clusters(K, seed, device):
    rng = np.random.default_rng(seed)
    poses, scores, boxes = cluster_poses(rng, persons=6, per_person=8, K=K, spread=rng.uniform(0.3, 6))
    assert_same(_inputs(poses, scores, boxes), device=device.type)


def test_tied_and_zero_scores():
    rng = np.random.default_rng(7)
    poses, scores, boxes = cluster_poses(rng, persons=4, per_person=6)
    scores[:] = scores[0]  # every pose has the same joint scores: ties everywhere
    scores[::3, :5] = 0  # zeros: AlphaPose reads them as 1e-5 (and writes that into its input)
    assert_same(_inputs(poses, scores, boxes))
    scores.zero_()
    assert_same(_inputs(poses, scores, boxes))


def test_one_pose_and_identical_poses():
    rng = np.random.default_rng(1)
    poses, scores, boxes = cluster_poses(rng, persons=1, per_person=1)
    assert_same(_inputs(poses, scores, boxes))
    n = 5
    assert_same(_inputs(poses.repeat(n, 1, 1), scores.repeat(n, 1), boxes.repeat(n, 1)))


@pytest.mark.parametrize("K", [2, 3, 4])
def test_fewer_joints_than_match_threshold(K):
    # With K < 5 joints neither criterion can fire (nmatch <= K < 5 and
    # simi <= K + 1.7 K < 22.48): every pose is picked alone (a one-pose group's
    # ids come as one flat list); the score test drops a few.
    rng = np.random.default_rng(K)
    poses, scores, boxes = cluster_poses(rng, persons=3, per_person=4, K=K, spread=0.3)
    theirs = assert_same(_inputs(poses, scores, boxes))
    assert all(not isinstance(ids[0], list) for ids in theirs[2]) and len(theirs[5]) > poses.shape[0] // 2


def test_pick_that_does_not_remove_itself():
    # A zero-size box makes ref_dist 0, so the PCK count is 0 (0/0 is NaN); with
    # K = 13 the pick's similarity to itself, 1.7 * 13 + sum tanh(s)^2 = 22.447,
    # stays below gamma while a pose on top of it with one more confident joint
    # reaches 22.56: AlphaPose removes that pose but keeps the pick, picks it
    # again, and reports it twice: first with the group it removed (pose 1
    # alone, merged onto it), then alone.
    K = 13
    base = torch.arange(K * 2, dtype=torch.float32).reshape(K, 2) * 10
    poses = torch.stack([base, base, base + 500])
    scores = torch.tensor([[0.6] + [0.07] * 12, [1.3] + [0.0] * 12, [0.9] * 13])
    boxes = torch.tensor([[5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 300.0, 300.0], [500.0, 500.0, 800.0, 800.0]])
    theirs = assert_same(_inputs(poses, scores, boxes))
    assert [int(i) for i in theirs[5]] == [2, 0, 0]
    assert theirs[2][1:] == [[1.0], [0.0]]


def test_far_apart_and_on_top_of_each_other():
    rng = np.random.default_rng(3)
    far = cluster_poses(rng, persons=10, per_person=1, size=(20000, 20000), person_scale=(30, 60))
    assert_same(_inputs(*far))
    near = cluster_poses(rng, persons=1, per_person=12, spread=0.05)
    assert_same(_inputs(*near))


def test_degenerate_boxes():
    # zero-size boxes make AlphaPose's ref_dist 0: its PCK test divides 0 by 0
    rng = np.random.default_rng(5)
    poses, scores, boxes = cluster_poses(rng, persons=3, per_person=3)
    boxes[:, 2:] = boxes[:, :2]
    assert_same(_inputs(poses, scores, boxes))


def test_exactly_at_thresholds():
    # joint distances exactly 1 px (the KSim window) and exactly the PCK radius
    K = 17
    base = torch.arange(K * 2, dtype=torch.float32).reshape(K, 2) * 10
    poses = torch.stack([base, base + torch.tensor([1.0, 0.0]), base + torch.tensor([0.0, 7.0]),
                         base + torch.tensor([7.0, 0.0]), base + torch.tensor([0.0, 1.0])])
    scores = torch.full((5, K), 0.8)
    scores[:, 0] = torch.tensor([0.9, 0.85, 0.8, 0.7, 0.6])
    boxes = torch.tensor([[0.0, 0.0, 100.0, 400.0]]).repeat(5, 1)  # ref_dist = 0.1 * 400 -> min(40, 7) = 7
    assert_same(_inputs(poses, scores, boxes))


def test_empty_and_bad_input():
    assert ours.pose_nms(torch.zeros(0, 4), torch.zeros(0, 1), torch.zeros(0, 1), torch.zeros(0, 17, 2),
                         torch.zeros(0, 17, 1)) == ([], [], [], [], [], [])
    rng = np.random.default_rng(0)
    poses, scores, boxes = cluster_poses(rng, persons=2, per_person=2)
    args = list(_inputs(poses, scores, boxes))
    bad = [t.clone() for t in args]
    bad[3][1, 2, 0] = math.nan
    with pytest.raises(ValueError, match="pose_nms: pose_preds contains NaN"):
        ours.pose_nms(*bad)
    bad = [t.clone() for t in args]
    bad[4] = bad[4][:, :5]
    with pytest.raises(ValueError, match="pose_scores must have shape"):
        ours.pose_nms(*bad)
    bad = [t.clone() for t in args]
    bad[0] = bad[0][:2]
    with pytest.raises(ValueError, match="bboxes must have shape"):
        ours.pose_nms(*bad)
