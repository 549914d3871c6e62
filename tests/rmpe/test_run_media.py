"""``rmpe run`` on a user's media: each input kind, AlphaPose's detection and results formats, frames without
persons, corrupt images, empty detections, tracking, --save-video, and --gt / rmpe eval scoring only the
images a run covered."""
import json
import pathlib
import re
import shutil

import cv2
import numpy as np
import pytest

from rmpe import cli
from rmpe.evaluate import coco_keypoint_eval

from test_sources import make_clip

ROOT = pathlib.Path(__file__).resolve().parents[2]
COCO4 = ROOT / "data" / "coco4"
DETS = COCO4 / "test_coco_det_AP_H_56.json"
GT = COCO4 / "test_coco.json"
IDS = (785, 40083, 196141, 197388)


@pytest.fixture(scope="module")
def model(tiny_torchscript):
    return ["--model", str(tiny_torchscript), "--threads", "1", "--quiet"]


def coco_dets():
    return json.loads(DETS.read_text())


def as_alphapose_detfile(records, names):
    """AlphaPose's detection file: image_id the file name (here with a folder, as AlphaPose writes it), idx."""
    return [{"image_id": f"some/folder/{names[r['image_id']]}", "bbox": r["bbox"], "score": r["score"],
             "category_id": 1, "idx": 0} for r in records]


def run(args, capsys):
    rc = cli.main(["run"] + [str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in pathlib.Path(folder).rglob("*"))


# ------------------------------------------------------------------ inputs


def test_folder_with_any_names_and_alphapose_files(tmp_path, model, capsys):
    """kitchen.jpg / IMG_0042.jpg, boxes from an AlphaPose detection file keyed by file name; one image has
    no box: it is still in the per-frame output and the summary. AlphaPose's results format."""
    imgs = tmp_path / "photos"
    imgs.mkdir()
    names = dict(zip(IDS, ("kitchen.jpg", "IMG_0042.jpg", "beach.png", "street.jpeg")))
    for i, n in names.items():
        if n.endswith(".png"):
            cv2.imwrite(str(imgs / n), cv2.imread(str(COCO4 / f"{i:012d}.jpg")))
        else:
            shutil.copy(COCO4 / f"{i:012d}.jpg", imgs / n)
    recs = [r for r in coco_dets() if r["score"] >= 0.5 and r["image_id"] != 197388]  # street.jpeg: no box
    det = tmp_path / "alphapose-dets.json"
    det.write_text(json.dumps(as_alphapose_detfile(recs, names)))
    out, frames, summary = tmp_path / "res.json", tmp_path / "frames.json", tmp_path / "summary.json"
    rc, stdout, err = run([imgs, "--detector", det, "-o", out, "--format", "alphapose", "--frames", frames,
                           "--summary", summary] + model, capsys)
    assert rc == 0, err
    res = json.loads(out.read_text())
    assert res and all(set(r) == {"image_id", "category_id", "keypoints", "score", "box", "idx"} for r in res)
    assert {r["image_id"] for r in res} == {"kitchen.jpg", "IMG_0042.jpg", "beach.png"}
    fr = json.loads(frames.read_text())
    assert [f["file"].split("/")[-1] for f in fr] == sorted(names.values())  # every frame, in folder order
    street = next(f for f in fr if f["image_id"] == "street.jpeg")
    assert street["status"] == "ok" and street["boxes"] == 0 and street["poses"] == []
    assert sum(len(f["poses"]) for f in fr) == len(res)
    for f in fr:
        assert f["boxes"] == sum(1 for r in recs if names[r["image_id"]] == f["image_id"])
    s = json.loads(summary.read_text())
    assert (s["kind"], s["frames"], s["frames_read"], s["frames_without_persons"], s["unreadable"]) == \
        ("folder", 4, 4, 1, [])
    assert [p["image_id"] for p in s["per_frame"]] == [f["image_id"] for f in fr]
    assert "4 frames (folder): 3 with persons, 1 without, 0 unreadable" in stdout
    assert "frames/s" in stdout and "sppe" in stdout


def test_single_image_and_list_file(tmp_path, model, capsys):
    shutil.copy(COCO4 / "000000000785.jpg", tmp_path / "me.jpg")
    det = tmp_path / "d.json"
    det.write_text(json.dumps([{"image_id": "me.jpg", "bbox": [280.8, 44.7, 218.7, 346.7], "score": 0.99}]))
    out = tmp_path / "one.json"
    rc, stdout, err = run([tmp_path / "me.jpg", det, "-o", out] + model, capsys)
    assert rc == 0, err
    res = json.loads(out.read_text())
    assert len(res) == 1 and res[0]["image_id"] == "me.jpg" and res[0]["det_bbox"] == pytest.approx(
        [280.8, 44.7, 218.7, 346.7])
    # a list of images (COCO names: the ids are numbers), in the list's order
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{COCO4 / f'{i:012d}.jpg'}\n" for i in (196141, 785)))
    out2 = tmp_path / "two.json"
    rc, stdout, err = run([lst, DETS, "-o", out2, "--det-thresh", "0.9"] + model, capsys)
    assert rc == 2 and "not in" in err  # DETS names two more images than the list holds
    sub = tmp_path / "sub.json"
    sub.write_text(json.dumps([r for r in coco_dets() if r["image_id"] in (785, 196141)]))
    rc, stdout, err = run([lst, sub, "-o", out2, "--det-thresh", "0.9", "--frames", tmp_path / "f.json"] + model,
                          capsys)
    assert rc == 0, err
    assert [f["image_id"] for f in json.loads((tmp_path / "f.json").read_text())] == [196141, 785]
    assert {r["image_id"] for r in json.loads(out2.read_text())} == {785, 196141}


def shifted_dets(n, dx=4, dy=2, image_id=40083):
    """The AP_H_56 boxes of COCO 40083 moved with make_clip's window, keyed by frame number."""
    out = []
    for t in range(n):
        for r in coco_dets():
            if r["image_id"] == image_id and r["score"] >= 0.5:
                x, y, w, h = r["bbox"]
                out.append({"image_id": t, "bbox": [x - dx * t, y - dy * t, w, h], "score": r["score"]})
    return out


def test_video_with_tracking_and_saved_video(tmp_path, model, capsys):
    clip = tmp_path / "clip.mp4"
    make_clip(clip, n=8, size=(400, 300))
    det = tmp_path / "d.json"
    det.write_text(json.dumps([d for d in shifted_dets(8) if d["image_id"] != 3]))  # frame 3: nobody
    out, frames, video = tmp_path / "res.json", tmp_path / "frames.json", tmp_path / "out" / "drawn.mp4"
    rc, stdout, err = run([clip, "--detector", det, "-o", out, "--frames", frames, "--save-video", video, "--track",
                           "--frames-per-batch", "3", "--draw-box-thresh", "0"] + model, capsys)
    assert rc == 0, err
    fr = json.loads(frames.read_text())
    assert [f["image_id"] for f in fr] == list(range(8)) and all(f["file"] == f"frame {f['frame']}" for f in fr)
    res = json.loads(out.read_text())
    assert all("track_id" in r for r in res)
    per_frame = [len(f["poses"]) for f in fr]
    assert per_frame[3] == 0 and fr[3]["status"] == "ok" and min(per_frame[:3] + per_frame[4:]) >= 1
    cap = cv2.VideoCapture(str(video))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 8 and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (400, 300)
    cap.release()
    assert listing(tmp_path / "out") == ["drawn.mp4"]  # no temporary left
    assert "8 frames (video)" in stdout and "tracks" in stdout
    # AlphaPose's names for video frames: "<frame>.jpg"; idx is the track id
    out2 = tmp_path / "ap.json"
    rc, _, err = run([clip, "--detector", det, "-o", out2, "--format", "alphapose", "--track"] + model, capsys)
    assert rc == 0, err
    ap = json.loads(out2.read_text())
    assert [r["image_id"] for r in ap] == [f"{r['image_id']}.jpg" for r in res]
    assert [r["idx"] for r in ap] == [r["track_id"] for r in res]


def test_camera_index_through_videocapture(tmp_path, model, capsys, monkeypatch):
    """``rmpe run 0``: the camera path, with cv2.VideoCapture(0) answering from a video file."""
    clip = tmp_path / "clip.avi"
    make_clip(clip, n=4, size=(400, 300), fourcc="MJPG")
    real = cv2.VideoCapture
    asked = []
    monkeypatch.setattr(cv2, "VideoCapture", lambda arg: (asked.append(arg), real(str(clip)))[1])
    det = tmp_path / "d.json"
    det.write_text(json.dumps(shifted_dets(4)))
    rc, stdout, err = run(["0", det, "--summary", tmp_path / "s.json"] + model, capsys)
    assert rc == 0, err
    assert asked == [0]
    s = json.loads((tmp_path / "s.json").read_text())
    assert (s["kind"], s["frames"]) == ("camera", 4)
    # a camera runs until it ends: --max-frames stops it
    rc, stdout, err = run(["0", det, "--summary", tmp_path / "s.json", "--max-frames", "3"] + model, capsys)
    assert rc == 0, err
    assert json.loads((tmp_path / "s.json").read_text())["frames"] == 3


# ------------------------------------------------------------------ faults


def test_corrupt_image_is_skipped_listed_and_exits_1(tmp_path, model, capsys):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in IDS:
        shutil.copy(COCO4 / f"{i:012d}.jpg", imgs / f"{i:012d}.jpg")
    (imgs / "000000196141.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out, frames, summary, render = (tmp_path / n for n in ("res.json", "frames.json", "summary.json", "render"))
    rc, stdout, err = run([imgs, DETS, "-o", out, "--frames", frames, "--summary", summary, "--render", render,
                           "--frames-per-batch", "1", "--det-thresh", "0.5"] + model, capsys)
    assert rc == 1, err
    assert "1 of 4 frames could not be read and were skipped" in err and "000000196141.jpg" in err
    assert {r["image_id"] for r in json.loads(out.read_text())} == {785, 40083, 197388}
    fr = json.loads(frames.read_text())
    assert [(f["image_id"], f["status"]) for f in fr] == [(785, "ok"), (40083, "ok"), (196141, "unreadable"),
                                                          (197388, "ok")]
    assert "could not be read" in fr[2]["error"]
    s = json.loads(summary.read_text())
    assert [(u["frame"], pathlib.Path(u["file"]).name) for u in s["unreadable"]] == [(2, "000000196141.jpg")]
    assert listing(render) == ["000000000785.jpg", "000000040083.jpg", "000000197388.jpg"]
    # --strict: exit 2 with one line at the first, and nothing written
    for p in (out, frames, summary):
        p.unlink()
    shutil.rmtree(render)
    rc, _, err = run([imgs, DETS, "-o", out, "--frames", frames, "--render", render, "--strict", "--save-video",
                      tmp_path / "v.mp4", "--frames-per-batch", "1"] + model, capsys)
    assert rc == 2 and err.count("\n") == 1 and "could not be read" in err, err
    assert listing(tmp_path) == ["imgs"] + [f"imgs/{i:012d}.jpg" for i in IDS]


def test_empty_detections_file_gives_empty_results(tmp_path, model, capsys):
    det = tmp_path / "none.json"
    det.write_text("[]")
    out, frames = tmp_path / "res.json", tmp_path / "frames.json"
    rc, stdout, err = run([COCO4, det, "-o", out, "--frames", frames] + model, capsys)
    assert rc == 0, err
    assert json.loads(out.read_text()) == []
    fr = json.loads(frames.read_text())
    assert [(f["image_id"], f["boxes"], f["poses"]) for f in fr] == [(i, 0, []) for i in IDS]
    assert "4 frames (folder): 0 with persons, 4 without" in stdout


# ------------------------------------------------------------------ scoring only the covered images


BLAZEPOSE = ["--threads", "1", "--quiet", "--det-thresh", "0.5"]  # the shipped model: real poses, real AP


def test_gt_scores_only_the_images_of_the_run(tmp_path, capsys):
    """Two of the four images with the four-image ground truth: the AP is the AP on those two (before, every
    image of the ground truth was scored, so the two images without results counted as misses)."""
    pytest.importorskip("ai_edge_litert")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in (785, 197388):
        shutil.copy(COCO4 / f"{i:012d}.jpg", imgs / f"{i:012d}.jpg")
    sub = tmp_path / "d.json"
    sub.write_text(json.dumps([r for r in coco_dets() if r["image_id"] in (785, 197388)]))
    out = tmp_path / "res.json"
    rc, stdout, err = run([imgs, sub, "-o", out, "--gt", GT, "--nms", "oks"] + BLAZEPOSE, capsys)
    assert rc == 0, err
    m = re.search(r"COCO keypoint AP on the 2 images of this run \(of 4 in the ground truth\): ([0-9.]+) before "
                  r"NMS, ([0-9.]+) after", stdout)
    assert m, stdout
    ap = float(m.group(2))
    res = json.loads(out.read_text())
    on_two = coco_keypoint_eval(str(GT), res, image_ids=[785, 197388])["AP"]
    on_all = coco_keypoint_eval(str(GT), res)["AP"]
    assert ap == pytest.approx(on_two, abs=5e-4)
    assert on_all < on_two - 0.01  # what the old behaviour printed: the two unseen images count as misses


def test_eval_scores_the_covered_images(tmp_path, capsys):
    pytest.importorskip("ai_edge_litert")
    out, frames = tmp_path / "res.json", tmp_path / "frames.json"
    recs = [r for r in coco_dets() if r["image_id"] != 40083]  # the run finds nobody on 40083
    det = tmp_path / "d.json"
    det.write_text(json.dumps(recs))
    rc, _, err = run([COCO4, det, "-o", out, "--frames", frames] + BLAZEPOSE, capsys)
    assert rc == 0, err
    res = json.loads(out.read_text())

    def ev(*extra):
        assert cli.main(["eval", str(out), str(GT), "--json", *extra]) == 0
        return json.loads(capsys.readouterr().out)

    named, covered, every = ev(), ev("--frames", str(frames)), ev("--all-images")
    assert named["n_images"] == 3 and covered["n_images"] == 4 and every["n_images"] == 4
    assert named["AP"] == pytest.approx(coco_keypoint_eval(str(GT), res, image_ids=[785, 196141, 197388])["AP"])
    assert covered["AP"] == pytest.approx(coco_keypoint_eval(str(GT), res)["AP"])
    assert covered["AP"] < named["AP"]  # 40083's persons were missed, and that counts once --frames says so
    # the per-frame file itself is a results file; --gt works as in run and nms
    assert cli.main(["eval", str(frames), "--gt", str(GT), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == covered
    assert cli.main(["eval", str(out), str(GT)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{len(res)} results on 3 of the 4 images of the ground truth (the images the results name")


# ------------------------------------------------------------------ the done-means run


def test_video_from_real_frames_with_the_default_detector_and_model(tmp_path, capsys):
    """``rmpe run clip.mp4 --save-video out.mp4 -o res.json``: the shipped person detector and BlazePose,
    a progress bar with frames/s on stderr, skeletons drawn on the person in every frame."""
    pytest.importorskip("ai_edge_litert")
    clip = tmp_path / "clip.mp4"
    src = make_clip(clip, n=6, size=(420, 290))
    out, video = tmp_path / "res.json", tmp_path / "out.mp4"
    rc, stdout, err = run([clip, "--save-video", video, "-o", out, "--threads", "1"], capsys)
    assert rc == 0, err
    assert "frame/s" in err and "person detector: blazepose" in err  # the bar, and the detector's caveat
    res = json.loads(out.read_text())
    assert sorted({r["image_id"] for r in res}) == list(range(6))
    cap = cv2.VideoCapture(str(video))
    drawn = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        drawn.append(f)
    assert len(drawn) == 6
    for t, (a, b) in enumerate(zip(src, drawn)):
        # at each confident joint of the frame's best pose the drawing differs from the source frame
        best = max((r for r in res if r["image_id"] == t), key=lambda r: r["score"])
        kp = np.array(best["keypoints"]).reshape(17, 3)
        diffs = [np.abs(a[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2].astype(int)
                        - b[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2]).mean()
                 for x, y, s in kp if s >= 0.5 and 2 <= x < a.shape[1] - 2 and 2 <= y < a.shape[0] - 2]
        assert len(diffs) >= 5 and np.median(diffs) > 30, (t, diffs)


def test_make_clip_example(tmp_path):
    """examples/make_clip.py (the README's first command) writes the frames it says, of real images."""
    import subprocess
    import sys

    out = tmp_path / "clip.mp4"
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "make_clip.py"), str(COCO4 / "000000197388.jpg"),
                        str(COCO4 / "000000040083.jpg"), "-o", str(out), "--frames", "5"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "wrote" in p.stdout and "10 frames of 576x352 at 25 fps" in p.stdout
    cap = cv2.VideoCapture(str(out))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 10
    ok, first = cap.read()
    cap.release()
    src = cv2.imread(str(COCO4 / "000000197388.jpg"))[:352, :576]
    assert ok and np.abs(first.astype(int) - src).mean() < 12  # the window at (0, 0), through a lossy codec


def test_detector_spec_reaches_make_detector(tmp_path, model, capsys, monkeypatch):
    """--detector SPEC: make_detector(spec, device=..., score_thresh=--det-thresh), called once per readable frame
    (a fixed-output stand-in here; the adapters themselves: test_detectors)."""
    from rmpe.pipeline import detectors

    calls = []

    def fake(spec, *, device="cpu", score_thresh=0.0):
        calls.append((spec, str(device), score_thresh))

        def detect(frame):
            calls.append(frame.shape)
            h, w = frame.shape[:2]
            return np.array([[w * 0.25, h * 0.1, w * 0.75, h * 0.9]]), np.array([0.8])
        return detect

    monkeypatch.setattr(detectors, "make_detector", fake)
    out = tmp_path / "res.json"
    rc, _, err = run([COCO4, "--detector", "yolo:my.pt", "--det-thresh", "0.3", "-o", out] + model, capsys)
    assert rc == 0, err
    assert calls[0] == ("yolo:my.pt", "cpu", 0.3) and len(calls) == 5
    assert [r["image_id"] for r in json.loads(out.read_text())] == list(IDS)
    assert "person detector: blazepose" not in err  # the caveat is for the default only


# ------------------------------------------------------------------ writers and drawing


def test_json_list_writer_and_video_writer_are_atomic(tmp_path):
    import gzip

    from rmpe.pipeline.writers import JsonListWriter, VideoWriter, format_results

    with JsonListWriter(tmp_path / "a.json.gz") as w:
        for i in range(3):
            w.write({"i": i})
        assert listing(tmp_path) != ["a.json.gz"]  # still a temporary file
    assert json.loads(gzip.open(tmp_path / "a.json.gz", "rt").read()) == [{"i": 0}, {"i": 1}, {"i": 2}]
    with pytest.raises(RuntimeError):
        with JsonListWriter(tmp_path / "b.json") as w:
            w.write({"i": 0})
            raise RuntimeError("the run failed")
    with JsonListWriter(tmp_path / "empty.json"):
        pass
    assert json.loads((tmp_path / "empty.json").read_text()) == []
    assert listing(tmp_path) == ["a.json.gz", "empty.json"]
    # frames of another size are letterboxed into the first one's
    v = VideoWriter(tmp_path / "v.avi", 5)
    v.write(np.full((40, 60, 3), 200, np.uint8))
    v.write(np.full((60, 30, 3), 200, np.uint8))
    v.commit()
    cap = cv2.VideoCapture(str(tmp_path / "v.avi"))
    assert (cap.get(cv2.CAP_PROP_FRAME_COUNT), cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == (2, 60)
    cap.read()
    ok, second = cap.read()
    assert ok and second[:, :15].mean() < 20 and second[:, 25:35].mean() > 150  # black bars, the image centred
    v = VideoWriter(tmp_path / "w.mp4", 5)
    v.write(np.zeros((40, 60, 3), np.uint8))
    v.abort()
    assert listing(tmp_path) == ["a.json.gz", "empty.json", "v.avi"]
    for bad, match in (((tmp_path / "x.gif", 5), "extension"), ((tmp_path / "x.mp4", 0), "frame rate"),
                       ((tmp_path / "x.mp4", float("nan")), "frame rate")):
        with pytest.raises(ValueError, match=match):
            VideoWriter(*bad)
    with pytest.raises(ValueError, match="format must be one of"):
        format_results([], "openpose")


def test_draw_thresholds_and_track_colours():
    from rmpe.pipeline.draw import draw_results

    img = np.zeros((120, 160, 3), np.uint8)
    kp = np.zeros((17, 3))
    kp[:, 0], kp[:, 1], kp[:, 2] = np.linspace(20, 140, 17), 60, 0.9
    kp[0, 2] = 0.1  # a joint below --draw-kp-thresh
    a = {"keypoints": kp.ravel().tolist(), "score": 0.5, "det_bbox": [10, 10, 140, 100], "det_score": 0.9}
    low = dict(a, det_score=0.2)
    assert np.array_equal(draw_results(img, [low], box_thresh=0.5), img)  # below the box threshold: not drawn
    drawn = draw_results(img, [a], box_thresh=0.5)
    assert drawn.any() and not drawn[58:63, 18:23].any()  # joint 0 (x 20) left out, its neighbours drawn
    assert drawn[58:63, 25:30].any()
    # a track keeps its colour whatever its position in the frame's list
    t3 = dict(a, track_id=3)
    alone = draw_results(img, [t3], draw_boxes=False)
    second = draw_results(img, [dict(a, track_id=0, keypoints=(kp + [0, 200, 0]).ravel().tolist()), t3],
                          draw_boxes=False)
    assert np.array_equal(alone, second)
    ap_style = {"keypoints": a["keypoints"], "score": 0.5, "box": a["det_bbox"]}  # AlphaPose's results
    assert np.array_equal(draw_results(img, [ap_style]), draw_results(img, [dict(a, det_score=0.5)]))
    with pytest.raises(ValueError, match="box_thresh"):
        draw_results(img, [a], box_thresh=float("nan"))


@pytest.mark.slow
def test_the_default_nms_is_the_held_out_winner(shared_data, tmp_path):
    """examples/choose_default_nms.py (BlazePose on 23 COCO images, two disjoint parts): the candidate with
    the best AP on part A is the pipeline's default NMS with its default ranking, and it beats AlphaPose's
    exact behaviour on the held-out part B."""
    pytest.importorskip("ai_edge_litert")
    import os
    import subprocess
    import sys

    from rmpe.nms.runtime import default_scoring
    from rmpe.pipeline.core import DEFAULT_NMS

    env = dict(os.environ, OMP_NUM_THREADS="1", RMPE_SHARED_DATA=str(shared_data))
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "choose_default_nms.py"), "--threads", "1", "--out",
                        str(tmp_path)], capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    t = json.loads((tmp_path / "table.json").read_text())
    chosen = t["candidates"][t["chosen_on_A"]]
    assert (chosen["method"], chosen["rank"], chosen["score"]) == (DEFAULT_NMS, default_scoring(DEFAULT_NMS).rank,
                                                                   default_scoring(DEFAULT_NMS).output)
    exact = next(k for k, c in t["candidates"].items() if c["method"] == "alphapose" and c["score"] == "alphapose")
    assert t["ap"][t["chosen_on_A"]]["B"] > t["ap"][exact]["B"] + 0.05  # measured +0.097
    assert len(set(t["A"]) & set(t["B"])) == 0 and len(t["A"]) == 12 and len(t["B"]) == 11
