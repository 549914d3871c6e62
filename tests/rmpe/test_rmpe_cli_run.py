"""``rmpe run`` end to end (rmpe.cli.main in a tmp dir), its failures leaving nothing behind, and the main job."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from rmpe import cli
from rmpe.nms.params import make_params, save_params

ROOT = pathlib.Path(__file__).resolve().parents[2]
COCO4 = ROOT / "data" / "coco4"
DETS = COCO4 / "test_coco_det_AP_H_56.json"
GT = COCO4 / "test_coco.json"


@pytest.fixture(scope="module")
def scripted(tiny_torchscript):
    return tiny_torchscript


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in pathlib.Path(folder).rglob("*"))


def test_run_blazepose_end_to_end(tmp_path, capsys):
    pytest.importorskip("ai_edge_litert")
    out, render, pre = tmp_path / "res.json", tmp_path / "render", tmp_path / "pre.json.gz"
    rc = cli.main(["run", str(COCO4), str(DETS), "-o", str(out), "--render", str(render), "--gt", str(GT),
                   "--det-thresh", "0.5", "--threads", "1", "--batch-size", "5", "--frames-per-batch", "3",
                   "--pre-nms", str(pre)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    res = json.loads(out.read_text())
    assert res and {"image_id", "category_id", "keypoints", "score", "det_bbox", "det_score"} <= set(res[0])
    assert all(r["det_score"] >= 0.5 for r in res)
    assert "COCO keypoint AP on the 4 images of this run (of 4 in the ground truth):" in cap.out, cap.out
    assert "before NMS" in cap.out
    ap = float(cap.out.split("in the ground truth):")[1].split()[0])
    assert ap >= 0.3  # measured 0.41 before NMS on the 18 boxes scored >= 0.5
    assert _listing(render) == [f"{i:012d}.jpg" for i in (785, 40083, 196141, 197388)]
    assert _listing(tmp_path) == sorted(["pre.json.gz", "render", "res.json"] +
                                        [f"render/{i:012d}.jpg" for i in (785, 40083, 196141, 197388)])


def test_run_torchscript_model_with_params_file(tmp_path, scripted, capsys):
    params = tmp_path / "nms.json"
    save_params(params, make_params("oks", {"thresh": 0.7}))
    out = tmp_path / "res.json"
    rc = cli.main(["run", str(COCO4), str(DETS), "-o", str(out), "--model", str(scripted), "--input-size", "256",
                   "192", "--nms-params", str(params), "--threads", "1", "--refine", "dark"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "after oks NMS" in cap.out
    res = json.loads(out.read_text())
    assert 4 <= len(res) < 118
    assert {r["image_id"] for r in res} == {785, 40083, 196141, 197388}


def _fails(args, capsys, match):
    rc = cli.main(args)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert match in err, err
    return err


def test_failed_runs_leave_nothing(tmp_path, scripted, capsys):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name in ("000000000785.jpg", "000000040083.jpg"):
        shutil.copy(COCO4 / name, imgs / name)
    out, render = tmp_path / "out" / "res.json", tmp_path / "out" / "render"
    common = ["-o", str(out), "--render", str(render), "--model", str(scripted), "--threads", "1"]

    # detections naming images that are not in the folder
    _fails(["run", str(imgs), str(DETS)] + common, capsys, "not in")
    # an image that does not load, with --strict: found only while running, after the first frames were
    # processed (without --strict it is skipped: tests/rmpe/test_run_media.py)
    (imgs / "000000196141.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    shutil.copy(COCO4 / "000000197388.jpg", imgs / "000000197388.jpg")
    err = _fails(["run", str(imgs), str(DETS), "--frames-per-batch", "1", "--strict", "--quiet"] + common, capsys,
                 "could not be read")
    assert err.count("\n") == 1 and err.startswith("rmpe run: error: ") and "--strict" in err, err
    # a detection without a score
    bad = tmp_path / "dets.json"
    bad.write_text(json.dumps([{"image_id": 785, "bbox": [1, 2, 3, 4]}]))
    _fails(["run", str(imgs), str(bad)] + common, capsys, "record 0: missing field 'score'")
    # ids the ground truth lacks, a conflicting NMS, a bad batch size, a missing model
    gt = tmp_path / "gt.json"
    one = next(a for a in json.loads(GT.read_text())["annotations"] if a["image_id"] == 785)
    gt.write_text(json.dumps({"images": [{"id": 785, "file_name": "000000000785.jpg"}], "annotations": [one]}))
    _fails(["run", str(imgs), str(DETS), "--gt", str(gt)] + common, capsys, "not in the ground truth")
    # a ground truth with nothing to score, as rmpe nms/eval/tune-nms say (before the work)
    gt.write_text(json.dumps({"images": [{"id": 785, "file_name": "000000000785.jpg"}], "annotations": []}))
    _fails(["run", str(imgs), str(DETS), "--gt", str(gt)] + common, capsys, "ground truth has no annotations")
    params = tmp_path / "nms.json"
    save_params(params, make_params("paper"))
    _fails(["run", str(imgs), str(DETS), "--nms", "oks", "--nms-params", str(params)] + common, capsys,
           "is for 'paper'")
    _fails(["run", str(imgs), str(DETS), "--batch-size", "0"] + common, capsys, "--batch-size must be at least 1")
    _fails(["run", str(imgs), str(DETS), "-o", str(out), "--model", str(tmp_path / "none.pt")], capsys,
           "does not exist")
    assert not out.exists() and not render.exists()
    assert not (tmp_path / "out").exists() or _listing(tmp_path / "out") == []


def test_main_job_runs(tmp_path):
    pytest.importorskip("ai_edge_litert")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "main_job.py"), "--repeat", "1", "--out",
                        str(tmp_path / "render")], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    for text in ("none (before)", "alphapose", "soft-oks", "crop (118 x 256x256)", "decode", "pose NMS",
                 "rendered 4 images"):
        assert text in out, out
    if "not importable" not in out:
        assert "keeps the same poses" in out, out
    before = float(out.split("none (before)")[1].split()[1])
    assert before >= 0.40, out  # measured 0.427
    assert len(list((tmp_path / "render").glob("*.jpg"))) == 4


def test_run_torch_model_flags_reach_the_adapter(scripted):
    """--input-size, --mean, --std, --bgr, --joints/--joint-map and --sigmoid set the TorchHeatmapModel's fields."""
    from rmpe.commands.run import _model

    from rmpe_ext.alphapose import ALPHAPOSE_MEAN

    parse = cli.build_parser().parse_args
    base = ["run", str(COCO4), str(DETS), "-o", "x.json", "--model", str(scripted)]
    m = _model(parse(base))
    assert (m.input_size, m.mean, m.std, m.channel_order, m.num_joints, m.joint_map, m.heatmap_activation) == \
        ((256, 192), tuple(ALPHAPOSE_MEAN), (1.0, 1.0, 1.0), "RGB", 17, None, None)
    jm = [16 - j for j in range(17)]
    m = _model(parse(base + ["--input-size", "128", "96", "--mean", "0.1", "0.2", "0.3", "--std", "0.5", "0.5",
                             "0.25", "--bgr", "--joints", "20", "--joint-map", *map(str, jm), "--sigmoid"]))
    assert (m.input_size, m.mean, m.std, m.channel_order, m.num_joints, m.joint_map, m.heatmap_activation) == \
        ((128, 96), (0.1, 0.2, 0.3), (0.5, 0.5, 0.25), "BGR", 20, tuple(jm), "sigmoid")


def test_run_images_json_names_the_files(tmp_path, scripted, capsys):
    """--images-json maps image ids to file names that are not COCO's 12-digit ones."""
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    doc = json.loads(GT.read_text())
    for n, im in enumerate(doc["images"]):
        shutil.copy(COCO4 / im["file_name"], imgs / f"frame{n}.jpg")
        im["file_name"] = f"frame{n}.jpg"
    names = tmp_path / "images.json"
    names.write_text(json.dumps({"images": doc["images"]}))
    out = tmp_path / "res.json"
    args = ["run", str(imgs), str(DETS), "-o", str(out), "--model", str(scripted), "--threads", "1", "--det-thresh",
            "0.9"]
    _fails(args, capsys, "not in")  # 12-digit names by default
    rc = cli.main(args + ["--images-json", str(names)])
    assert rc == 0, capsys.readouterr().err
    assert {r["image_id"] for r in json.loads(out.read_text())} == {im["id"] for im in doc["images"]}
