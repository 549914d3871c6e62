"""``rmpe nms``, ``rmpe tune-nms``, ``rmpe eval`` end to end through rmpe.cli.main, in temporary folders.

The expected outputs come from code the commands do not call: the proposals are parsed here with NumPy,
the NMS is rmpe_ext.reference's (NumPy, float64) or AlphaPose's own ``pose_nms`` (alphapose==1.1, for the
alphapose method), the AP is pycocotools' COCOeval run here."""
import contextlib
import dataclasses
import gzip
import io
import json
import pathlib

import numpy as np
import pytest
import torch

from rmpe.cli import main
from rmpe.evaluate import STAT_NAMES
from rmpe.nms.params import load_params
from rmpe_ext import reference
from rmpe_ext.ops import OKSNMSParams

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROPOSALS = str(ROOT / "data" / "blazepose_proposals_pre_nms_dev.json.gz")
GT = str(ROOT / "data" / "gt_dev.json.gz")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def records():
    return json.load(gzip.open(PROPOSALS, "rt"))


def pycoco_stats(gt_path, results, image_ids=None):
    """pycocotools' ten keypoint summary numbers, run here on the COCO fields of ``results``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = json.load(gzip.open(gt_path, "rt"))
        gt.createIndex()
        dt = gt.loadRes([{k: r[k] for k in ("image_id", "category_id", "keypoints", "score")} for r in results])
        ev = COCOeval(gt, dt, "keypoints")
        if image_ids is not None:
            ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(STAT_NAMES, ev.stats.tolist()))


def expected_nms(records, method):
    """What ``rmpe nms --nms METHOD`` must write, computed without rmpe: ``(image_id, keypoints [K, 3],
    score, det_bbox, det_score)`` of each kept pose, images in order of first appearance, picks in order.
    The command's defaults: paper/oks/soft-oks rank by the proposal's score and write it (soft-oks: its
    decayed value), merging off; alphapose is AlphaPose's pose_nms with its final score."""
    kp = np.array([r["keypoints"] for r in records], np.float64).reshape(len(records), -1, 3)
    kp = kp.astype(np.float32).astype(np.float64)  # the command reads float32
    xywh = np.array([r["det_bbox"] for r in records], np.float32).astype(np.float64)
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
    score = np.array([r["score"] for r in records], np.float32).astype(np.float64)
    det_score = np.array([r["det_score"] for r in records], np.float64)
    first = {}
    for r in records:
        first.setdefault(r["image_id"], len(first))
    index = np.array([first[r["image_id"]] for r in records])
    poses, js = kp[..., :2], kp[..., 2]
    out = []

    def add(i, k, s):
        out.append((records[i]["image_id"], k, s, xywh[i].tolist(), det_score[i]))

    if method in ("paper", "oks"):
        keep, mp, ms, _ = reference.pose_nms(poses, js, xyxy, score, index, method=method)
        for i, p, s in zip(keep, mp, ms):
            add(i, np.concatenate([p, s[:, None]], 1), score[i])
    elif method == "soft-oks":
        keep, rescored = reference.soft_oks_nms(poses, js, xyxy, score, index, thresh=0.9, max_dets=20)
        for i, s in zip(keep, rescored):
            add(i, kp[i], s)
    else:
        pPose_nms = pytest.importorskip("alphapose.utils.pPose_nms", reason="pip install --no-deps alphapose==1.1")
        for b in range(len(first)):
            sel = np.flatnonzero(index == b)
            t = lambda x: torch.tensor(x[sel], dtype=torch.float32)  # noqa: E731
            _, _, _, preds, scs, pick = pPose_nms.pose_nms(t(xyxy), t(det_score).reshape(-1, 1),
                                                           torch.tensor(sel, dtype=torch.float32).reshape(-1, 1),
                                                           t(poses), t(js).reshape(len(sel), -1, 1))
            for j, p, s in zip(pick, preds, scs):  # pick: the kept poses, positions in this image's selection
                i, s = int(sel[int(j)]), s.double().flatten()
                add(i, np.concatenate([p.double().numpy(), s[:, None].numpy()], 1),
                    float(s.mean() + det_score[i] + 1.25 * s.max()))
    return out


def fails_cleanly(capsys, argv, match, folder, output):
    """Exit 2, one line on stderr naming the problem, no output file, no temporary left behind."""
    before = set(pathlib.Path(folder).iterdir())
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"rmpe {argv[0]}: error: "), err
    assert match in err, err
    assert not pathlib.Path(output).exists()
    assert set(pathlib.Path(folder).iterdir()) == before


def writer(folder):
    """``write(name, obj)`` -> the path of ``folder / name`` holding ``obj`` (a str as is, else as JSON)."""
    def write(name, obj):
        p = folder / name
        p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
        return str(p)
    return write


# ------------------------------------------------------------------ rmpe nms

@pytest.mark.parametrize("method", ["paper", "alphapose", "oks", "soft-oks"])
def test_nms_end_to_end(tmp_path, capsys, method, records):
    out = tmp_path / "kept.json"
    assert main(["nms", PROPOSALS, "-o", str(out), "--nms", method, "--gt", GT]) == 0
    text = capsys.readouterr().out
    results = json.loads(out.read_text())
    assert f"kept {len(results)} of 413 poses on 12 images" in text
    expected = expected_nms(records, method)
    assert len(results) == len(expected) < 413
    for r, (image_id, kp, score, box, det_score) in zip(results, expected):
        assert set(r) == {"image_id", "category_id", "keypoints", "score", "det_bbox", "det_score"}
        assert (r["image_id"], r["category_id"]) == (image_id, 1)
        assert r["keypoints"] == pytest.approx(kp.ravel().tolist(), rel=1e-5, abs=1e-4)
        assert r["score"] == pytest.approx(score, rel=1e-5)
        assert r["det_bbox"] == pytest.approx(box, abs=1e-3) and r["det_score"] == pytest.approx(det_score)
    ap = pycoco_stats(GT, results)["AP"]
    assert f"{ap:.4f} after" in text
    assert f"{pycoco_stats(GT, records)['AP']:.4f} before" in text
    # the output is again a proposals file
    assert main(["nms", str(out), "-o", str(tmp_path / "again.json"), "--nms", method]) == 0


def test_nms_with_a_parameters_file(tmp_path, capsys):
    out = tmp_path / "kept.json"
    assert main(["nms", PROPOSALS, "-o", str(out), "--nms-params", "tuned", "--nms", "paper", "--gt", GT]) == 0
    text = capsys.readouterr().out
    from rmpe.nms.search import tuned_params_path
    meta = json.load(open(tuned_params_path("paper")))["meta"]
    assert f"{meta['ap']:.4f} after" in text
    assert f"rank: {meta['scoring']['rank']}, score: {meta['scoring']['output']}" in text
    # --score overrides the file's
    assert main(["nms", PROPOSALS, "-o", str(out), "--nms-params", tuned_params_path("paper"),
                 "--nms-score", "proposal"]) == 0
    assert "score: proposal" in capsys.readouterr().out
    # without --nms: the default method's (oks, as rmpe run) shipped file; without any: oks' defaults
    assert main(["nms", PROPOSALS, "-o", str(out), "--nms-params", "tuned"]) == 0
    assert capsys.readouterr().out.startswith("oks NMS kept")
    assert main(["nms", PROPOSALS, "-o", str(out)]) == 0
    assert capsys.readouterr().out.startswith("oks NMS kept")


def test_nms_bad_input(tmp_path, capsys, records):
    out = tmp_path / "out.json"
    rec = records[0]
    write = writer(tmp_path)

    cases = [
        (write("a.json", "not json"), "not valid JSON"),
        (write("b.json", []), "holds no proposals"),
        (write("c.json", [{k: v for k, v in rec.items() if k != "keypoints"}]), "missing field 'keypoints'"),
        (write("d.json", [rec, dict(rec, keypoints=rec["keypoints"][:45])]), "'keypoints' has 45 numbers"),
        (write("e.json", [dict(rec, score=float("nan"))]), "non-finite value in 'score'"),
        (write("f.json", {"image_id": 1}), "expected a JSON list"),
        (str(tmp_path / "absent.json"), "does not exist"),
    ]
    for path, match in cases:
        fails_cleanly(capsys, ["nms", path, "-o", str(out)], match, tmp_path, out)
    # 16 joints against a 17-joint ground truth
    short = [dict(r, keypoints=r["keypoints"][:48]) for r in records[:5]]
    fails_cleanly(capsys, ["nms", write("g.json", short), "-o", str(out), "--gt", GT], "expected 51",
                  tmp_path, out)
    # a parameters file for another method, a broken one
    p = write("p.json", {"method": "alphapose", "params": {}})
    fails_cleanly(capsys, ["nms", PROPOSALS, "-o", str(out), "--nms", "paper", "--nms-params", p],
                  "is for 'alphapose'", tmp_path, out)
    p = write("q.json", {"method": "paper", "params": {"gamma": 3}})
    fails_cleanly(capsys, ["nms", PROPOSALS, "-o", str(out), "--nms-params", p], "unknown paper NMS parameter",
                  tmp_path, out)
    fails_cleanly(capsys, ["nms", PROPOSALS, "-o", str(out), "--nms", "soft-oks", "--nms-score", "joints"],
                  "--nms-score must be 'rank'", tmp_path, out)


# ------------------------------------------------------------------ rmpe tune-nms

def test_tune_nms_end_to_end(tmp_path, capsys):
    out = tmp_path / "params.json"
    argv = ["tune-nms", PROPOSALS, GT, "-o", str(out), "--nms", "paper", "--max-rounds", "1", "--grid", "3",
            "--refine", "0", "--quiet"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    method, params = load_params(out)
    assert method == "paper"
    meta = json.loads(out.read_text())["meta"]
    assert meta["ap"] > meta["start_ap"] and meta["rounds"] == 1
    assert f"{meta['ap_no_nms']:.4f} without NMS, {meta['start_ap']:.4f} at the start, {meta['ap']:.4f} tuned" in text
    assert f"wrote {out}" in text
    # the file reproduces the AP it claims, through rmpe nms
    kept = tmp_path / "kept.json"
    assert main(["nms", PROPOSALS, "-o", str(kept), "--nms-params", str(out)]) == 0
    assert pycoco_stats(GT, json.loads(kept.read_text()))["AP"] == pytest.approx(meta["ap"], abs=1e-12)
    # starting from it, a further round cannot lose AP
    out2 = tmp_path / "params2.json"
    assert main(argv[:4] + [str(out2)] + argv[5:] + ["--start", str(out)]) == 0
    assert json.loads(out2.read_text())["meta"]["ap"] >= meta["ap"]


def test_tune_nms_prints_what_changed(tmp_path, capsys):
    out = tmp_path / "params.json"
    assert main(["tune-nms", PROPOSALS, GT, "-o", str(out), "--nms", "oks", "--max-rounds", "1", "--grid", "3",
                 "--refine", "0", "--quiet"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("tuned: "))
    _, params = load_params(out)
    start = OKSNMSParams()
    changed = [f"{f.name}={getattr(params, f.name)}" for f in dataclasses.fields(params)
               if getattr(params, f.name) != getattr(start, f.name)]
    assert changed and line == "tuned: " + ", ".join(changed) + ", rank=proposal, score=rank"


def test_tune_nms_on_some_images(tmp_path, capsys):
    ids = sorted({r["image_id"] for r in json.load(gzip.open(PROPOSALS, "rt"))})[:4]
    out = tmp_path / "params.json"
    assert main(["tune-nms", PROPOSALS, GT, "-o", str(out), "--nms", "oks", "--images",
                 ",".join(map(str, ids)), "--max-rounds", "1", "--quiet", "--nms-rank", "box", "--nms-score", "joints"]) == 0
    doc = json.loads(out.read_text())
    meta = doc["meta"]
    assert meta["tuned_on_image_ids"] == ids and meta["num_images"] == 4
    assert doc["method"] == "oks" and meta["scoring"] == {"rank": "box", "output": "joints"}
    # the AP it claims: rmpe nms with the file on those images' proposals, scored by pycocotools on them
    sub = tmp_path / "sub.json"
    sub.write_text(json.dumps([r for r in json.load(gzip.open(PROPOSALS, "rt")) if r["image_id"] in ids]))
    kept = tmp_path / "kept.json"
    assert main(["nms", str(sub), "-o", str(kept), "--nms-params", str(out)]) == 0
    assert pycoco_stats(GT, json.loads(kept.read_text()), image_ids=ids)["AP"] == pytest.approx(meta["ap"], abs=1e-12)


def test_tune_nms_bad_input(tmp_path, capsys):
    out = tmp_path / "params.json"
    bad = tmp_path / "bad.json"
    bad.write_text("[")
    base = ["-o", str(out), "--quiet", "--max-rounds", "1"]
    fails_cleanly(capsys, ["tune-nms", PROPOSALS, str(bad)] + base, "ground-truth file", tmp_path, out)
    fails_cleanly(capsys, ["tune-nms", str(bad), GT] + base, "proposals file", tmp_path, out)
    fails_cleanly(capsys, ["tune-nms", PROPOSALS, GT, "--grid", "4"] + base, "--grid must be an odd", tmp_path, out)
    fails_cleanly(capsys, ["tune-nms", PROPOSALS, GT, "--names", "eta,gamma"] + base,
                  "'gamma' is not a paper NMS parameter", tmp_path, out)
    fails_cleanly(capsys, ["tune-nms", PROPOSALS, GT, "--images", "1,x"] + base, "comma-separated integers",
                  tmp_path, out)
    gt = json.load(gzip.open(GT, "rt"))
    gt["images"] = gt["images"][:3]
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in {i["id"] for i in gt["images"]}]
    small = tmp_path / "gt3.json"
    small.write_text(json.dumps(gt))
    fails_cleanly(capsys, ["tune-nms", PROPOSALS, str(small)] + base, "not in the ground truth", tmp_path, out)


# ------------------------------------------------------------------ rmpe eval

def test_eval_table_and_json(tmp_path, capsys, records):
    res = tmp_path / "res.json"
    res.write_text(json.dumps(records))
    expected = pycoco_stats(GT, records)
    assert main(["eval", str(res), GT]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("413 results on 12 of the 12 images of the ground truth (the images the results name"), lines[0]
    table = {ln.split()[0]: float(ln.split()[1]) for ln in lines[1:]}
    assert list(table) == list(STAT_NAMES)
    for k in STAT_NAMES:
        assert table[k] == pytest.approx(expected[k], abs=5e-5)
    assert main(["eval", str(res), GT, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got == {**{k: expected[k] for k in STAT_NAMES}, "n_results": 413, "n_images": 12}


def test_eval_bad_input(tmp_path, capsys, records):
    write = writer(tmp_path)
    cases = [
        (write("a.json", "{"), "not valid JSON"),
        (write("b.json", {"x": 1}), "expected a JSON list"),
        (write("c.json", [{k: v for k, v in records[0].items() if k != "score"}]), "missing field 'score'"),
        (write("d.json", [dict(records[0], image_id=5)]), "ground truth lacks"),
        (write("e.json", [dict(records[0], keypoints=records[0]["keypoints"][:48])]), "17 joints"),
        (write("f.json", ["x"]), "result 0 is a str"),
    ]
    for path, match in cases:
        assert main(["eval", path, GT]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("rmpe eval: error: ") and match in err, err
    assert main(["eval", write("g.json", records), write("gt.json", {"images": []})]) == 2
    assert "ground truth must be a COCO annotation dict" in capsys.readouterr().err
