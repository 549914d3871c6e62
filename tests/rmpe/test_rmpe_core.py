"""The rmpe package's shared pieces: command-line dispatch, atomic writes, COCO evaluation, NMS parameter files."""
import copy
import gzip
import json
import math
import os
import pathlib

import pytest

from rmpe import cli
from rmpe.coco import load_gt
from rmpe.evaluate import STAT_NAMES, coco_keypoint_eval
from rmpe.io import atomic_path, read_json, write_json
from rmpe.nms.params import load_params, make_params, save_params
from rmpe_ext.ops import PaperNMSParams

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = ROOT / "data"


@pytest.fixture(scope="module")
def dev():
    with gzip.open(DATA / "blazepose_proposals_pre_nms_dev.json.gz", "rt") as f:
        proposals = json.load(f)
    return proposals, load_gt(DATA / "gt_dev.json.gz")


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "bench" in out


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            pathlib.Path(tmp).write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    write_json(target, {"a": 1})
    assert read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would make it, not mkstemp's 0600


def test_read_json_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="results file .*nope.json"):
        read_json(tmp_path / "nope.json", "results file")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json.* not valid JSON"):
        read_json(bad)


def test_eval_on_real_proposals(dev):
    proposals, gt = dev
    before = copy.deepcopy(proposals)
    stats = coco_keypoint_eval(gt, proposals)
    assert proposals == before  # the caller's dicts are left alone
    assert set(STAT_NAMES) <= set(stats) and stats["n_results"] == len(proposals)
    # the real pre-NMS BlazePose proposals: weak, but far from 0 (data README: about 0.17)
    assert 0.12 < stats["AP"] < 0.25 and stats["AP50"] > stats["AP"]
    # perfect results from the GT itself score 1
    perfect = [dict(image_id=a["image_id"], keypoints=a["keypoints"], score=1.0)
               for a in gt.dataset["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]]
    assert coco_keypoint_eval(gt, perfect)["AP"] == pytest.approx(1.0)


def test_eval_bad_input(dev):
    proposals, gt = dev
    assert coco_keypoint_eval(gt, [])["AP"] == 0.0
    with pytest.raises(ValueError, match="result 0: missing field 'score'"):
        coco_keypoint_eval(gt, [{"image_id": 1, "keypoints": [0] * 51}])
    with pytest.raises(ValueError, match="image ids that the ground truth lacks"):
        coco_keypoint_eval(gt, [dict(proposals[0], image_id=-5)])
    with pytest.raises(ValueError, match="non-finite"):
        coco_keypoint_eval(gt, [dict(proposals[0], score=math.nan)])
    with pytest.raises(ValueError, match="multiple of 3"):
        coco_keypoint_eval(gt, [dict(proposals[0], keypoints=[1, 2])])


def test_nms_params_round_trip(tmp_path):
    p = make_params("paper", {"eta": 7.5, "sigma2": 30.0})
    assert isinstance(p, PaperNMSParams) and p.eta == 7.5 and p.lam == PaperNMSParams().lam
    f = tmp_path / "p.json"
    save_params(f, p, {"AP": 0.2})
    assert load_params(f) == ("paper", p)  # -inf thresholds survive JSON
    assert json.loads(f.read_text())["meta"] == {"AP": 0.2}
    q = make_params("oks", {"sigmas": [0.1] * 17})
    save_params(f, q)
    assert load_params(f)[1] == q


def test_nms_params_errors(tmp_path):
    with pytest.raises(ValueError, match="method must be one of"):
        make_params("greedy")
    with pytest.raises(ValueError, match=r"unknown paper NMS parameter\(s\) \['gamma'\]"):
        make_params("paper", {"gamma": 1})
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"params": {}}))
    with pytest.raises(ValueError, match="needs a JSON object with a 'method' field"):
        load_params(f)
    f.write_text(json.dumps({"method": "alphapose", "params": {"mu": float("nan")}}))
    with pytest.raises(ValueError, match="'mu' is NaN"):
        load_params(f)


def test_bench_command_prints_ratios(capsys):
    rc = cli.main(["bench", "pose_nms", "--quick", "-k", "test_rmpe_op and 50 or test_baseline_alphapose and 50"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "x vs alphapose[50]" in out


def test_bench_command_bad_suite(capsys):
    assert cli.main(["bench", "nope"]) == 2
    assert "unknown suite(s) ['nope']" in capsys.readouterr().err
