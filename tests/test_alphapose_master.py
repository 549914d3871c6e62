"""The AlphaPose drop-in against AlphaPose master's own pose_nms (commit c60106d), on the 164 calls
recorded in ../shared/data/alphapose_master (its README): the 413 real proposals (K = 17, both
use_heatmap_loss values, area thresholds 0 and 1620, regression and heatmap-argmax keypoints),
Halpe-26, COCO-WholeBody-133 and Halpe-136 scenes, edge cases, and six calls made in sequence in
one AlphaPose process. Same kept poses in the same order, the same ragged ids, the same boxes and
box scores; merged values to float32 rounding. Skips without ../shared."""
import json

import numpy as np
import pytest
import torch

from rmpe_ext import ops
from rmpe_ext.alphapose import pose_nms

NAMES = ("bboxes", "bbox_scores", "bbox_ids", "pose_preds", "pose_scores")
# merged joints and scores: AlphaPose sums a group with torch's vectorized reductions, the kernels in
# ascending member order; measured on these cases: up to 1.8e-4 px at coordinates below 1000 (2-3
# float32 steps) and 1.8e-7 in scores
RTOL, ATOL = 1e-6, 1e-6


@pytest.fixture(scope="module")
def fixture(shared_data):
    root = shared_data / "alphapose_master"
    if not (root / "pose_nms_index.json").exists():
        pytest.skip(f"AlphaPose master fixtures not found in {root}")
    index = json.loads((root / "pose_nms_index.json").read_text())
    return index, np.load(root / "pose_nms_cases.npz")


def _inputs(z, case, device):
    return [torch.from_numpy(z[f"{case}_in_{k}"].copy()).to(device) for k in NAMES]


def _check(out, z, c):
    """Our six outputs against AlphaPose's recorded ones for case c."""
    case, K = c["case"], c["K"]
    res_bboxes, res_bbox_scores, res_bbox_ids, res_pose_preds, res_pose_scores, res_pick_ids = out
    assert [int(p) for p in res_pick_ids] == c["res_pick_ids"]
    assert all(isinstance(p, np.int64) for p in res_pick_ids)
    assert res_bbox_ids == c["res_bbox_ids_raw"]  # the ragged structure, one-row groups flat
    m = len(res_pick_ids)
    np.testing.assert_array_equal(np.array(res_bboxes, np.float32).reshape(m, 4), z[f"{case}_out_res_bboxes"])
    np.testing.assert_array_equal(np.array([t.cpu().numpy() for t in res_bbox_scores]).reshape(m, 1),
                                  z[f"{case}_out_res_bbox_scores"])
    preds = np.array([t.cpu().numpy() for t in res_pose_preds]).reshape(m, K, 2)
    scores = np.array([t.cpu().numpy() for t in res_pose_scores]).reshape(m, K, 1)
    np.testing.assert_allclose(preds, z[f"{case}_out_res_pose_preds"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(scores, z[f"{case}_out_res_pose_scores"], rtol=RTOL, atol=ATOL)


def test_every_fresh_case_matches_master(fixture, device):
    """All 158 calls made in a fresh AlphaPose module: each one equals master's outputs, whatever the
    keypoint count (17, 26, 133, 136) and flag; the inputs are left as they were (AlphaPose writes 1e-5
    over zero scores in place)."""
    index, z = fixture
    fresh = [c for c in index if c["module_state"] == "fresh"]
    assert len(fresh) == 158 and {c["K"] for c in fresh} == {17, 26, 133, 136}
    for c in fresh:
        args = _inputs(z, c["case"], device)
        before = [a.clone() for a in args]
        if c["case"] in ("c000", "c001"):  # validate.py passes the flag as a 7th positional argument
            out = pose_nms(*args, c["areaThres"], c["use_heatmap_loss"])
        else:  # writer.py / demo_api.py as a keyword
            out = pose_nms(*args, areaThres=c["areaThres"], use_heatmap_loss=c["use_heatmap_loss"])
        for a, b in zip(args, before):
            assert torch.equal(a, b)
        try:
            _check(out, z, c)
        except AssertionError as e:
            raise AssertionError(f"case {c['case']} ({c['group']}, K = {c['K']}): {e}") from None


def test_alphapose_1_1_callers_keep_working(fixture):
    """Without the new argument the drop-in is alphapose==1.1's function: its outputs for K = 17 equal
    master's (master's body criterion is 1.1's)."""
    index, z = fixture
    c = next(c for c in index if c["case"] == "c008")  # image 57597, 73 proposals
    _check(pose_nms(*_inputs(z, "c008", "cpu")), z, c)


def _params_of(constants, K, area):
    """The params objects of AlphaPose's module constants (pck_cap 7 and merge_cap 15 are literals)."""
    common = dict(delta1=constants["delta1"], mu=constants["mu"], delta2=constants["delta2"],
                  gamma=constants["gamma"], match_thresh=constants["matchThreds"], alpha=constants["alpha"],
                  score_thresh=constants["scoreThreds"], area_thresh=area)
    if K in (133, 136):
        return "wholebody", ops.WholeBodyNMSParams(
            face_factor=constants["face_factor"], hand_factor=constants["hand_factor"],
            face_weight_score=constants["face_weight_score"], hand_weight_score=constants["hand_weight_score"],
            face_weight_dist=constants["face_weight_dist"], hand_weight_dist=constants["hand_weight_dist"], **common)
    return "alphapose", ops.AlphaPoseNMSParams(**common)


def test_master_constant_leak_is_not_reproduced(fixture):
    """Master's whole-body call with use_heatmap_loss=False overwrites its module constants for good. In
    the six calls made in sequence in one AlphaPose process, every call after it used the leaked constants
    (image 57597, K = 17: 27 poses instead of the fresh module's 41). Ours: each call uses its own
    arguments' constants, so a call equals the same call made fresh; and the difference from master is
    exactly the leak: the op with the constants master used gives master's outputs."""
    index, z = fixture
    seq = sorted((c for c in index if c["group"] == "sequence_same_module"), key=lambda c: c["sequence_step"])
    assert [c["K"] for c in seq] == [136, 136, 136, 133, 17, 26]
    leaked = 0
    for c in seq:
        args = _inputs(z, c["case"], "cpu")
        ours = pose_nms(*args, c["areaThres"], c["use_heatmap_loss"])
        # a whole-body call first, then a 17-joint one in the same process: unchanged by it
        fresh = pose_nms(*_inputs(z, c["case"], "cpu"), c["areaThres"], c["use_heatmap_loss"])
        assert [int(p) for p in ours[5]] == [int(p) for p in fresh[5]] and ours[2] == fresh[2]
        default = c["use_heatmap_loss"] or c["K"] not in (133, 136)
        own = dict(c["constants_used"], **({"delta1": 1, "mu": 1.7, "delta2": 2.65, "gamma": 22.48,
                                            "scoreThreds": 0.3, "matchThreds": 5, "alpha": 0.1} if default else {}))
        method, params = _params_of(own, c["K"], float(c["areaThres"]))
        mine = ops.pose_nms(args[3], args[4][..., 0], args[0], method=method, params=params)
        assert [int(p) for p in ours[5]] == mine.keep.tolist()
        method, params = _params_of(c["constants_used"], c["K"], float(c["areaThres"]))
        masters = ops.pose_nms(args[3], args[4][..., 0], args[0], method=method, params=params)
        assert masters.keep.tolist() == c["res_pick_ids"]  # master = the op with the leaked constants
        if c["constants_used"] != own:
            leaked += 1
            assert [int(p) for p in ours[5]] != c["res_pick_ids"]
    assert leaked == 4  # steps 2-5 ran on the leaked constants
    step4 = seq[4]
    assert len(step4["res_pick_ids"]) == 27
    c008 = next(c for c in index if c["case"] == "c008")
    assert len(pose_nms(*_inputs(z, step4["case"], "cpu"), 0, True)[5]) == len(c008["res_pick_ids"]) == 41
