"""rmpe.nms and rmpe.evaluate: the prepared COCO evaluator, scoring, grids and the pair search, on the real dev
proposals."""
import contextlib
import dataclasses
import gzip
import io
import json
import math
import pathlib

import pytest
import torch

from rmpe.coco import read_proposals, subset_proposals
from rmpe.evaluate import STAT_NAMES, KeypointAP, coco_keypoint_eval
from rmpe.nms.params import load_params, save_params
from rmpe.nms.runtime import (OUTPUTS, RANKS, NMSOutput, Scoring, apply_nms, default_scoring, load_params_and_scoring,
                              no_nms, to_results)
from rmpe.nms.search import ParamSpec, tune_nms, tuned_params_path
from rmpe_ext.ops import AlphaPoseNMSParams, PaperNMSParams

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROPOSALS = ROOT / "data" / "blazepose_proposals_pre_nms_dev.json.gz"
GT = ROOT / "data" / "gt_dev.json.gz"


@pytest.fixture(scope="module")
def props():
    torch.set_num_threads(1)
    return read_proposals(PROPOSALS)


@pytest.fixture(scope="module")
def ev():
    return KeypointAP(GT)


def pycocotools_stats(results, image_ids=None):
    """The ten summary numbers of pycocotools' own COCOeval, run plainly (no preparation, no cache): the
    reference rmpe.evaluate must match bit for bit."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with gzip.open(GT, "rt") as f:
        doc = json.load(f)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = doc
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes([dict(r, category_id=1) for r in results]), "keypoints")
        if image_ids is not None:
            ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(STAT_NAMES, (float(s) for s in ev.stats)))


# ------------------------------------------------------------------ evaluator

@pytest.mark.parametrize("case", ["none", "alphapose", "paper-merge", "soft-oks"])
def test_fast_ap_equals_pycocotools_summary(props, ev, case):
    if case == "none":
        out = no_nms(props)
    elif case == "alphapose":
        out = apply_nms(props, "alphapose")  # merged keypoints: poses not in the OKS cache yet
    elif case == "paper-merge":
        out = apply_nms(props, "paper", PaperNMSParams(merge=True), Scoring("box", "alphapose"))
    else:
        out = apply_nms(props, "soft-oks", {"thresh": 0.5})
    res = to_results(props, out)
    ref = pycocotools_stats(res)
    assert ev.ap(res) == ref["AP"]
    assert ev.ap(res) == ref["AP"]  # second call: every OKS row from the cache
    assert ev.stats(res) == dict(ref, n_results=len(res))  # all ten numbers, through the same OKS cache
    assert coco_keypoint_eval(GT, res) == dict(ref, n_results=len(res))  # a fresh evaluator, no cache


def test_fast_ap_on_a_subset_of_images(props):
    ids = sorted(set(props.image_ids.tolist()))[::3]
    sub = subset_proposals(props, ids)
    res = to_results(sub, no_nms(sub))
    ref = pycocotools_stats(res, ids)
    ev_sub = KeypointAP(GT, image_ids=ids)
    assert ev_sub.ap(res) == ref["AP"]
    assert ev_sub.stats(res) == dict(ref, n_results=len(res))
    # results on other images are dropped (pycocotools, given imgIds, ignores them too)
    everything = to_results(props, no_nms(props))
    assert ev_sub.ap(everything) == ref["AP"]
    assert ev_sub.stats(everything) == dict(ref, n_results=len(res))
    assert coco_keypoint_eval(GT, everything, image_ids=ids) == dict(ref, n_results=len(res))


def test_evaluator_errors(props, ev, tmp_path):
    res = to_results(props, no_nms(props))
    with pytest.raises(ValueError, match="image ids that the ground truth lacks"):
        ev.ap([dict(res[0], image_id=123456789)])
    with pytest.raises(ValueError, match="16 joints|51 keypoint numbers|48 keypoint numbers"):
        ev.ap([dict(res[0], keypoints=res[0]["keypoints"][:48])])
    with pytest.raises(ValueError, match="not in the ground truth"):
        KeypointAP(GT, image_ids=[1])
    gt = json.load(gzip.open(GT, "rt"))
    del gt["annotations"][3]["num_keypoints"]
    with pytest.raises(ValueError, match="annotation 3: missing field 'num_keypoints'"):
        KeypointAP(gt)
    assert ev.ap([]) == 0.0


# ------------------------------------------------------------------ scoring and NMS

def test_scoring_choices(props):
    for method in ("paper", "alphapose", "oks"):
        base = apply_nms(props, method, None, Scoring("proposal", "rank"))
        assert torch.equal(base.scores, props.scores[base.keep])
        out = apply_nms(props, method, None, Scoring("proposal", "alphapose"))
        assert torch.equal(out.keep, base.keep)
        js = out.joint_scores
        assert torch.allclose(out.scores, js.mean(1) + props.box_scores[out.keep] + 1.25 * js.amax(1))
        out = apply_nms(props, method, None, Scoring("proposal", "box-joints"))
        assert torch.allclose(out.scores, props.box_scores[out.keep] * out.joint_scores.mean(1))
        out = apply_nms(props, method, None, Scoring("box", "rank"))
        assert torch.equal(out.scores, props.box_scores[out.keep])
    # "joints" ranking is the op's default: AlphaPose's human score
    from rmpe_ext import ops
    ref = ops.pose_nms(props.poses, props.joint_scores, props.boxes, None, props.image_index, "alphapose")
    out = apply_nms(props, "alphapose")  # default scoring: AlphaPose's own
    assert default_scoring("alphapose") == Scoring("joints", "alphapose")
    assert torch.equal(out.keep, ref.keep) and torch.equal(out.poses, ref.poses)
    with pytest.raises(ValueError, match="scoring rank must be one of"):
        Scoring("mean")
    with pytest.raises(ValueError, match="soft-oks rescores"):
        apply_nms(props, "soft-oks", None, Scoring("proposal", "joints"))
    with pytest.raises(ValueError, match="params are for method 'paper'"):
        apply_nms(props, "alphapose", PaperNMSParams())


def test_apply_nms_leaves_inputs_alone(props):
    before = [t.clone() for t in props[:7]]
    apply_nms(props, "alphapose", AlphaPoseNMSParams(), Scoring("joints", "alphapose"))
    apply_nms(props, "soft-oks", {"thresh": 0.5})
    for a, b in zip(before, props[:7]):
        assert torch.equal(a, b)


def test_results_fields(props):
    out = apply_nms(props, "paper")
    res = to_results(props, out, extra=True)
    assert len(res) == len(out.keep)
    r, i = res[0], int(out.keep[0])
    assert r["image_id"] == props.records[i]["image_id"] and r["category_id"] == 1
    assert r["det_bbox"] == pytest.approx(props.records[i]["det_bbox"], abs=1e-3)
    assert r["score"] == pytest.approx(props.records[i]["score"], rel=1e-6)
    assert len(r["keypoints"]) == 51


# ------------------------------------------------------------------ proposals files

def _write(tmp_path, obj, name="p.json"):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def test_read_proposals_errors(props, tmp_path):
    rec = dict(props.records[0])
    cases = [
        ("{not json", "not valid JSON"),
        ([], "holds no proposals"),
        ({"a": 1}, "expected a JSON list"),
        ([1, 2], "record 0 is a int"),
        ([{k: v for k, v in rec.items() if k != "score"}], "record 0: missing field 'score'"),
        ([{k: v for k, v in rec.items() if k not in ("det_bbox", "bbox")}], "4-number xywh box"),
        ([rec, dict(rec, keypoints=rec["keypoints"][:48])], "record 1: 'keypoints' has 48 numbers"),
        ([dict(rec, keypoints=rec["keypoints"][:-1])], "'keypoints' has 50 numbers"),
        ([dict(rec, keypoints=[float("nan")] + rec["keypoints"][1:])], "record 0: non-finite value in 'keypoints'"),
        ([dict(rec, det_bbox=[0, 0, -5, 10])], "negative width"),
        ([dict(rec, keypoints=["a"] * 51)], "proposals file"),
    ]
    for n, (obj, msg) in enumerate(cases):
        path = _write(tmp_path, obj if isinstance(obj, str) else json.dumps(obj), f"p{n}.json")
        with pytest.raises(ValueError, match=msg):
            read_proposals(path)
    with pytest.raises(ValueError, match="expected 48"):
        read_proposals(_write(tmp_path, [rec]), num_joints=16)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_proposals(tmp_path / "absent.json")


def test_subset_proposals(props):
    ids = sorted(set(props.image_ids.tolist()))
    a = subset_proposals(props, ids[0::2])
    b = subset_proposals(props, ids[1::2])
    assert len(a.poses) + len(b.poses) == len(props.poses)
    assert set(a.image_ids.tolist()) == set(ids[0::2])
    assert a.num_images == len(ids[0::2]) and int(a.image_index.min()) == 0


# ------------------------------------------------------------------ grids

def test_param_spec_grids():
    s = ParamSpec("sigma2", "log", 8.0, 1e-2, 1e7)
    g = s.grid(50.0, 7, 0)
    assert len(g) == 7 and 50.0 in g and g[0] == pytest.approx(50 / 8, rel=1e-3) and g[-1] == 400.0
    ratios = [b / a for a, b in zip(g, g[1:])]
    assert all(r == pytest.approx(2.0, rel=1e-3) for r in ratios)  # log-spaced
    g1 = s.grid(50.0, 7, 1)  # refined: half the log span
    assert g1[-1] == pytest.approx(50 * 8 ** 0.5, rel=1e-3)
    lin = ParamSpec("eta", "linear", 6.0, 0.0, 100.0)
    assert lin.grid(2.0, 7, 0) == [0.0, 2.0, 4.0, 6.0, 8.0]  # clipped at 0, duplicates gone
    assert lin.grid(12.0, 5, 1) == [9.0, 10.5, 12.0, 13.5, 15.0]
    i = ParamSpec("match_thresh", "int", 17, 1, 18)
    assert i.grid(5, 7, 0) == [float(v) for v in range(1, 19)]  # every count at the coarsest level
    assert i.grid(5, 7, 2) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    assert 0.123456789 in ParamSpec("x", "log", 4.0).grid(0.123456789, 5, 0)  # current value exact
    with pytest.raises(ValueError, match="span must be"):
        ParamSpec("x", "log", 1.0)
    with pytest.raises(ValueError, match="scale must be"):
        ParamSpec("x", "cubic", 2.0)
    with pytest.raises(ValueError, match="must be > 0"):
        ParamSpec("x", "log", 2.0).grid(0.0, 3, 0)


# ------------------------------------------------------------------ the search on the real proposals

FAST = dict(grid=3, max_rounds=2, refine=0, progress=False)


@pytest.fixture(scope="module")
def paper_run(props, ev):
    return tune_nms(props, ev, method="paper", **FAST)


def test_search_improves_ap_and_reproduces(props, ev, paper_run, tmp_path):
    r = paper_run
    default_ap = ev.ap(to_results(props, apply_nms(props, "paper")))
    assert r.start_ap == default_ap
    assert r.scoring == Scoring("proposal", "rank")  # fixed unless search_scoring
    assert r.ap > r.start_ap + 1e-4  # it finds something on the real data
    assert r.nms_calls > 20 and 0 < r.coco_evals <= r.nms_calls and r.evals_per_second > 0
    # the AP it reports is the AP of its parameters, by the full pycocotools evaluation too
    res = to_results(props, apply_nms(props, "paper", r.params, r.scoring))
    assert ev.ap(res) == r.ap
    assert coco_keypoint_eval(GT, res)["AP"] == pytest.approx(r.ap, abs=1e-12)
    # the written file loads (load_params) and reproduces it
    path = tmp_path / "tuned.json"
    save_params(path, r.params, meta=r.meta())
    method, params = load_params(path)
    assert method == "paper" and params == r.params
    method, params, scoring = load_params_and_scoring(path)
    assert scoring == r.scoring
    assert ev.ap(to_results(props, apply_nms(props, method, params, scoring))) == r.ap
    # history: APs never decrease, every step recorded
    aps = [h["ap"] for h in r.history]
    assert aps == sorted(aps) and aps[-1] == r.ap


def test_search_is_deterministic(props, ev, paper_run):
    again = tune_nms(props, ev, method="paper", **FAST)
    assert again.params == paper_run.params and again.scoring == paper_run.scoring
    assert again.ap == paper_run.ap and again.history == paper_run.history


def test_search_alphapose_one_pair_improves(props, ev):
    start = AlphaPoseNMSParams()
    r = tune_nms(props, ev, method="alphapose", names=["match_thresh", "pck_cap"], flags=[],
                 scoring=Scoring("proposal", "rank"), search_scoring=False, grid=3, max_rounds=1, refine=0,
                 progress=False)
    assert r.start_ap == ev.ap(to_results(props, apply_nms(props, "alphapose", start, Scoring("proposal", "rank"))))
    assert r.ap > r.start_ap
    assert r.scoring == Scoring("proposal", "rank")
    changed = {f.name for f in dataclasses.fields(start) if getattr(start, f.name) != getattr(r.params, f.name)}
    assert changed and changed <= {"match_thresh", "pck_cap"}
    assert isinstance(r.params.match_thresh, int)


def test_search_scoring_choice(props, ev):
    r = tune_nms(props, ev, method="oks", flags=[], search_scoring=True, grid=3, max_rounds=1, refine=0,
                 progress=False)
    steps = [h["step"] for h in r.history]
    assert steps == [["scoring"], ["thresh"]]
    # the scoring step kept the best choice at the starting parameters
    best = max(ev.ap(to_results(props, apply_nms(props, "oks", r.start_params, Scoring(rk, o)))) for rk in RANKS
               for o in OUTPUTS)
    assert r.history[0]["ap"] == best and r.ap >= best > r.start_ap


def test_search_tells_apart_outputs_that_keep_the_same_poses(props, ev):
    """The search scores identical NMS outputs once; identical must mean the whole output. Merging moves the
    kept poses' joints without changing which poses are kept (and here raises AP): the flag step must see
    the merged AP, not the cached AP of the unmerged output with the same kept indices."""
    plain = PaperNMSParams()
    merged = dataclasses.replace(plain, merge=True)
    out_plain, out_merged = apply_nms(props, "paper", plain), apply_nms(props, "paper", merged)
    assert torch.equal(out_plain.keep, out_merged.keep) and not torch.equal(out_plain.poses, out_merged.poses)
    ap_plain, ap_merged = ev.ap(to_results(props, out_plain)), ev.ap(to_results(props, out_merged))
    assert ap_merged > ap_plain  # measured: 0.1669 and 0.1664
    r = tune_nms(props, ev, method="paper", start=plain, names=["eta"], flags=["merge"], grid=3, max_rounds=1,
                 refine=0, progress=False)
    assert r.start_ap == ap_plain
    assert r.history[0] == {"round": 1, "level": 0, "step": ["merge"], "values": {"merge": True}, "ap": ap_merged}
    assert r.params.merge and r.ap >= ap_merged
    assert r.ap == ev.ap(to_results(props, apply_nms(props, "paper", r.params, r.scoring)))


def test_search_errors(props, ev):
    with pytest.raises(ValueError, match="method must be one of"):
        tune_nms(props, ev, method="greedy", progress=False)
    with pytest.raises(ValueError, match="'gamma' is not a paper NMS parameter"):
        tune_nms(props, ev, method="paper", names=["gamma", "eta"], progress=False)
    with pytest.raises(ValueError, match="grid must be an odd number"):
        tune_nms(props, ev, method="paper", grid=4, progress=False)
    with pytest.raises(ValueError, match="flag 'eta' is not a boolean"):
        tune_nms(props, ev, method="paper", flags=["eta"], progress=False)
    with pytest.raises(ValueError, match="no search range known for 'alpha'"):
        tune_nms(props, ev, method="paper", names=["alpha", "eta"], progress=False)
    with pytest.raises(ValueError, match="start params are for method"):
        tune_nms(props, ev, method="paper", start=AlphaPoseNMSParams(), progress=False)


def test_scoring_names_match_the_command_line():
    """The command line keeps its own copy of the choices (building the parser imports no torch): it must be
    the runtime's."""
    from rmpe.commands import NMS_METHODS, NMS_RANKS, NMS_SCORES
    from rmpe.nms.params import METHODS

    assert NMS_RANKS == RANKS and NMS_SCORES == OUTPUTS
    assert set(NMS_METHODS) <= set(METHODS), (NMS_METHODS, METHODS)


# ------------------------------------------------------------------ the shipped tuned files

@pytest.mark.parametrize("method", ["paper", "alphapose", "oks"])
def test_shipped_tuned_files_reproduce_their_ap(props, ev, method):
    path = tuned_params_path(method)
    doc = json.load(open(path))
    m, params, scoring = load_params_and_scoring(path)
    assert m == method
    res = to_results(props, apply_nms(props, m, params, scoring))
    ap = ev.ap(res)
    assert ap == pytest.approx(doc["meta"]["ap"], abs=1e-12)
    assert ap == pytest.approx(doc["meta"]["stats"]["AP"], abs=1e-12)
    assert ap > doc["meta"]["start_ap"]
    start_scoring = Scoring(**doc["meta"]["start_scoring"])
    start = ev.ap(to_results(props, apply_nms(props, m, None, start_scoring)))
    assert doc["meta"]["start_ap"] == pytest.approx(start, abs=1e-12)
    assert doc["meta"]["ap_no_nms"] == pytest.approx(ev.ap(to_results(props, no_nms(props))), abs=1e-12)
    assert not math.isnan(doc["meta"]["two_fold_check"]["tune_A_test_B"]["test_tuned_ap"])
    with pytest.raises(FileNotFoundError, match="no tuned NMS parameters"):
        tuned_params_path(method, "other_data")


def test_to_results_of_nothing_kept(props):
    """An NMS that keeps no pose gives no records (an empty keypoint array must not be reshaped)."""
    none = torch.zeros(0, dtype=torch.long)
    out = NMSOutput(none, props.poses[none], props.joint_scores[none], props.scores[none])
    assert to_results(props, out) == [] and to_results(props, out, extra=True) == []
