"""rmpe.pipeline end to end: real BlazePose on the shipped COCO sample, a torch heatmap model checked against
AlphaPose's own crop/decode/NMS, batching over frames, bad inputs, drawing."""
import gzip
import json
import pathlib

import numpy as np
import pytest
import torch

from rmpe.pipeline.detections import FrameBoxes, as_frame_boxes, detections_from_records, image_files, load_detections, \
    load_image
from rmpe.pipeline.draw import draw_results, save_image
from rmpe.evaluate import coco_keypoint_eval
from conftest import AdapterRecorder as Recorder
from rmpe.pipeline.models import TorchHeatmapModel, check_model
from rmpe.nms.params import make_params, save_params
from rmpe.pipeline import Pipeline, PipelineResult, crop_theta, heatmap_to_image, pose_scores, run_nms

ROOT = pathlib.Path(__file__).resolve().parents[2]
COCO4 = ROOT / "data" / "coco4"
GT = COCO4 / "test_coco.json"

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def coco4():
    """The 4 shipped COCO images (BGR uint8), their 118 real boxes per image, the ids."""
    dets = load_detections(COCO4 / "test_coco_det_AP_H_56.json")
    ids = list(dets)
    files = image_files(COCO4, ids, GT)
    return [load_image(files[i]) for i in ids], [dets[i] for i in ids], ids


class Tiny(torch.nn.Module):
    """A deterministic heatmap 'SPPE': 256x192 crops -> [N, K, 64, 48], smooth maps with distinct peaks."""

    def __init__(self, k=17, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, k, 5, stride=4, padding=2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.1)
            self.conv.bias.copy_(torch.randn(k, generator=g) * 0.1)

    def forward(self, x):
        return torch.relu(self.conv(x)) ** 2


# ------------------------------------------------------------------ BlazePose on real data


@pytest.fixture(scope="module")
def blazepose_run(coco4):
    pytest.importorskip("ai_edge_litert")
    from rmpe.pipeline.models import BlazePoseModel

    frames, per_frame, ids = coco4
    # opencv4 crops: the shipped proposals were made with OpenCV 4's warpAffine (see the agreement test)
    pipe = Pipeline(BlazePoseModel(num_threads=1), nms="alphapose", refine="none", interpolation="opencv4",
                    batch_size=64)
    return pipe, pipe(frames, per_frame, ids)


def test_blazepose_sample_ap_and_nms(blazepose_run):
    pipe, res = blazepose_run
    assert res.num_proposals == 118 and len(res.pre_nms_results()) == 118
    pre = coco_keypoint_eval(GT, res.pre_nms_results())["AP"]
    post = coco_keypoint_eval(GT, res.results)["AP"]
    oks = pipe.renms(res, "oks")
    # measured (refine none, opencv4 crops): 0.433 before NMS, 0.343 after AlphaPose's NMS (51 poses), 0.434
    # after OKS-NMS (90 poses)
    assert pre >= 0.40
    assert post >= 0.27
    assert coco_keypoint_eval(GT, oks)["AP"] >= 0.40
    assert 14 <= len(res.results) < 118 and len(oks) < 118
    for r in res.results:
        assert r["category_id"] == 1 and len(r["keypoints"]) == 51 and np.isfinite(r["keypoints"]).all()
        assert len(r["det_bbox"]) == 4 and 0 <= r["det_score"] <= 1
    t = res.timings
    assert set(t) == {"crop", "sppe", "decode", "nms", "total"}
    assert all(v >= 0 for v in t.values()) and t["total"] >= t["crop"] + t["sppe"] + t["decode"] + t["nms"]


def test_blazepose_agrees_with_the_shipped_proposals(blazepose_run):
    """The team's proposals (make_blazepose_proposals.py: cv2.warpAffine crops, argmax at the cell centre,
    sigmoid of the peak) hold 81 of the 118 boxes: same keypoints, from independent code."""
    _, res = blazepose_run
    with gzip.open(ROOT / "data" / "blazepose_proposals_pre_nms_dev.json.gz", "rt") as f:
        ref = json.load(f)
    pos, score = [], []
    ours = res.pre_nms_results()
    for r in ref:  # the same box: same image, xywh equal to float32 rounding
        same = [o for o in ours if o["image_id"] == r["image_id"] and np.abs(np.subtract(o["det_bbox"],
                                                                                       r["det_bbox"])).max() < 1e-3]
        if not same:
            continue
        assert len(same) == 1
        a, b = np.array(same[0]["keypoints"]).reshape(17, 3), np.array(r["keypoints_heatmap_argmax"]).reshape(17, 3)
        pos.append(np.abs(a[:, :2] - b[:, :2]).max(1))
        score.append(np.abs(a[:, 2] - b[:, 2]))
    assert len(pos) == 81
    pos, score = np.concatenate(pos), np.concatenate(score)
    # measured: 99.8% of the 1377 joints within 1e-3 px, all within 0.09 px, scores within 0.013 (a few crop
    # pixels differ: the reference's float32 crop matrix against our float64 theta)
    assert (pos < 1e-3).mean() >= 0.99
    assert pos.max() < 0.5
    assert score.max() < 0.05


@pytest.mark.slow
def test_blazepose_agrees_on_coco_mini(shared_data):
    """The same agreement on coco_mini images of the shared proposals (the images with the fewest boxes,
    up to 100 boxes in all, to keep it short)."""
    pytest.importorskip("ai_edge_litert")
    from rmpe.pipeline.models import BlazePoseModel

    ref = json.loads((shared_data / "generated" / "blazepose_proposals_pre_nms_dev.json").read_text())
    folder = shared_data / "coco_mini" / "val2017"
    ref = [r for r in ref if (folder / f"{r['image_id']:012d}.jpg").is_file() and r["image_id"] not in (785, 40083,
                                                                                                        196141)]
    counts = {}
    for r in ref:
        counts[r["image_id"]] = counts.get(r["image_id"], 0) + 1
    ids, total = [], 0
    for i in sorted(counts, key=lambda i: (counts[i], i)):
        if total + counts[i] > 100:
            break
        ids.append(i)
        total += counts[i]
    ref = [r for r in ref if r["image_id"] in ids]
    assert len(ids) >= 3 and len(ref) >= 30
    dets = detections_from_records([{"image_id": r["image_id"], "bbox": r["det_bbox"], "score": r["det_score"]}
                                    for r in ref])
    files = image_files(folder, ids)
    pipe = Pipeline(BlazePoseModel(num_threads=1), nms="none", refine="none", interpolation="opencv4")
    res = pipe([load_image(files[i]) for i in ids], [dets[i] for i in ids], ids)
    ours = np.array([r["keypoints"] for r in res.pre_nms_results()]).reshape(-1, 17, 3)
    order = {i: n for n, i in enumerate(ids)}
    ref.sort(key=lambda r: order[r["image_id"]])  # stable: file order within an image, as the pipeline
    theirs = np.array([r["keypoints_heatmap_argmax"] for r in ref]).reshape(-1, 17, 3)
    pos = np.abs(ours[..., :2] - theirs[..., :2]).max(-1)
    assert (pos < 1e-3).mean() >= 0.99
    assert np.abs(ours[..., 2] - theirs[..., 2]).max() < 0.05


# ------------------------------------------------------------------ a torch model against AlphaPose's code


def alphapose_test_transform(monkeypatch):
    """AlphaPose's own ``SimpleTransform(...).test_transform`` (alphapose.utils.presets), built as AlphaPose's
    DetectionLoader builds it for inference. Its module imports a compiled CUDA op (RoIAlign, for
    ``align_transform``) that a CPU install lacks; test_transform never uses it, so where that import fails
    a stand-in module takes its place while the module is imported."""
    import importlib
    import sys
    import types

    try:
        simple_transform = importlib.import_module("alphapose.utils.presets.simple_transform")
    except ImportError:
        stub = types.ModuleType("alphapose.utils.roi_align")
        stub.RoIAlign = lambda *args, **kwargs: None
        monkeypatch.setitem(sys.modules, "alphapose.utils.roi_align", stub)
        simple_transform = importlib.import_module("alphapose.utils.presets.simple_transform")
    dataset = types.SimpleNamespace(joint_pairs=[[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12], [13, 14],
                                                 [15, 16]])
    t = simple_transform.SimpleTransform(dataset, scale_factor=0, add_dpg=False, input_size=(256, 192),
                                         output_size=(64, 48), rot=0, sigma=2, train=False)
    return t.test_transform


def test_torch_model_matches_alphapose_crop_decode_nms(coco4, monkeypatch):
    """Crops = AlphaPose's SimpleTransform.test_transform crops (on the frame in RGB, as AlphaPose's loader
    hands it over) to one uint8 step; keypoints = AlphaPose's heatmap_to_coord_simple on the same heatmaps
    and test_transform's crop boxes; kept poses = AlphaPose's pose_nms."""
    pytest.importorskip("alphapose")
    from alphapose.utils.pPose_nms import pose_nms as ap_pose_nms
    from alphapose.utils.transforms import heatmap_to_coord_simple

    test_transform = alphapose_test_transform(monkeypatch)
    frames, per_frame, ids = coco4
    frames, per_frame, ids = frames[:2], per_frame[:2], ids[:2]
    rec = Recorder(TorchHeatmapModel(Tiny()))
    res = Pipeline(rec, nms="alphapose", batch_size=16)(frames, per_frame, ids)
    crops = torch.cat(rec.crops)
    heatmaps = torch.cat(rec.heatmaps)
    assert heatmaps.shape == (len(crops), 17, 64, 48)
    theirs, crop_boxes = [], []
    for f, fb in zip(frames, per_frame):
        rgb = np.ascontiguousarray(f[:, :, ::-1])
        for box in fb.boxes:  # a float32 tensor row, as AlphaPose's detector output
            img, crop_box = test_transform(rgb, box)
            theirs.append(img)
            crop_boxes.append([float(v) for v in crop_box])
    theirs = torch.stack(theirs)
    assert theirs.shape == crops.shape
    diff = (crops - theirs).abs()
    # OpenCV 4: bit for bit; OpenCV 5 rounds an exact bilinear sample, one uint8 step on ~3e-5 of the values
    assert diff.max() <= 1 / 255 + 1e-6 and (diff > 1e-6).float().mean() < 1e-3

    boxes = torch.cat([fb.boxes for fb in per_frame])
    ref = np.stack([heatmap_to_coord_simple(heatmaps[i].numpy(), crop_boxes[i])[0] for i in range(len(heatmaps))])
    assert np.abs(res.proposals.poses.numpy() - ref).max() < 2e-3
    assert torch.equal(res.proposals.joint_scores, heatmaps.flatten(2).amax(2))

    start, kept = 0, []
    for fb in per_frame:
        n = len(fb)
        out = ap_pose_nms(fb.boxes.clone(), fb.scores.view(-1, 1).clone(), torch.arange(n).view(-1, 1),
                          res.proposals.poses[start:start + n].clone(),
                          res.proposals.joint_scores[start:start + n].unsqueeze(-1).clone(), 0)
        kept += [int(k) + start for k in out[5]]
        start += n
    assert res.keep.tolist() == kept
    assert 0 < len(res.results) < len(boxes)


def test_torch_model_on_device_equals_cpu(coco4, device):
    if device.type == "cpu":
        pytest.skip("compares a run on an accelerator with the CPU run")
    frames, per_frame, ids = coco4
    frames, per_frame, ids = frames[:2], per_frame[:2], ids[:2]
    cpu = Pipeline(TorchHeatmapModel(Tiny()), nms="oks")(frames, per_frame, ids)
    dev = Pipeline(TorchHeatmapModel(Tiny(), device=device), nms="oks")(frames, per_frame, ids)
    assert dev.proposals.poses.device.type == device.type
    torch.testing.assert_close(dev.proposals.poses.cpu(), cpu.proposals.poses, atol=1e-3, rtol=0)
    assert dev.keep.tolist() == cpu.keep.tolist()


def test_batched_over_frames_equals_frame_by_frame(coco4):
    frames, per_frame, ids = coco4
    for nms in ("alphapose", "soft-oks"):
        pipe = Pipeline(TorchHeatmapModel(Tiny()), nms=nms, batch_size=7)  # batches cross frame boundaries
        whole = pipe(frames, per_frame, ids)
        single = Pipeline(TorchHeatmapModel(Tiny()), nms=nms, batch_size=64)
        parts = [single([f], [fb], [i]) for f, fb, i in zip(frames, per_frame, ids)]
        merged = PipelineResult.merge(parts)
        assert [r["image_id"] for r in whole.results] == [r["image_id"] for r in merged.results]
        a = np.array([r["keypoints"] for r in whole.results])
        b = np.array([r["keypoints"] for r in merged.results])
        np.testing.assert_allclose(a, b, atol=1e-4)
        np.testing.assert_allclose([r["score"] for r in whole.results], [r["score"] for r in merged.results],
                                   rtol=1e-5)
        assert whole.keep.tolist() == merged.keep.tolist()


def test_inputs_are_not_modified_and_detector_callable(coco4):
    frames, per_frame, ids = coco4
    frames, per_frame, ids = frames[:2], per_frame[:2], ids[:2]
    before = [f.copy() for f in frames], [fb.boxes.clone() for fb in per_frame]
    pipe = Pipeline(TorchHeatmapModel(Tiny()), nms="paper")
    given = pipe(frames, per_frame, ids)
    table = {id(f): fb for f, fb in zip(frames, per_frame)}
    called = pipe(frames, lambda f: (table[id(f)].boxes.numpy(), table[id(f)].scores.numpy()), ids)
    assert given.results == called.results
    for f, g in zip(frames, before[0]):
        assert np.array_equal(f, g)
    for fb, b in zip(per_frame, before[1]):
        assert torch.equal(fb.boxes, b)


def test_det_thresh_and_empty_frames(coco4):
    frames, per_frame, ids = coco4
    pipe = Pipeline(TorchHeatmapModel(Tiny()), det_thresh=0.9)
    res = pipe(frames, per_frame, ids)
    assert res.num_proposals == sum(int((fb.scores >= 0.9).sum()) for fb in per_frame)
    assert (res.proposals.box_scores >= 0.9).all()
    rec = Recorder(TorchHeatmapModel(Tiny()))
    empty = Pipeline(rec)(frames[:1], [FrameBoxes(torch.zeros(0, 4), torch.zeros(0))], ids[:1])
    assert empty.results == [] and empty.num_proposals == 0 and not rec.crops


def test_paper_preset_and_half_cell_offset():
    box = torch.tensor([[10.0, 20.0, 110.0, 220.0]])
    th = crop_theta(box, (256, 192), "paper")
    corners = th[0] @ torch.tensor([[0.0, 192.0], [0.0, 256.0], [1.0, 1.0]], dtype=torch.float64)
    # +30%: 130 x 260 about the centre (60, 120)
    torch.testing.assert_close(corners, torch.tensor([[-5.0, 125.0], [-10.0, 250.0]], dtype=torch.float64))
    th = crop_theta(box, (256, 256), "alphapose")  # square input: the longer side x1.25
    m = heatmap_to_image(th, (256, 256), (64, 64), offset=0.5)
    # cell (31.5 + 0.5 = 32, 32) is the crop centre = the box centre
    pt = m[0] @ torch.tensor([31.5, 31.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(pt, torch.tensor([60.0, 120.0], dtype=torch.float64))
    s = pose_scores(torch.tensor([[0.1, 0.5, 0.7], [0.1, 0.1, 0.1]]), torch.tensor([0.5, 0.9]))
    torch.testing.assert_close(s, torch.tensor([0.3, 0.0]))


def test_nms_params_from_file(tmp_path, coco4):
    frames, per_frame, ids = coco4
    path = tmp_path / "p.json"
    save_params(path, make_params("oks", {"thresh": 0.5}))
    pipe = Pipeline(TorchHeatmapModel(Tiny()), nms_params=path)
    assert pipe.nms == "oks" and pipe.nms_params.thresh == 0.5
    res = pipe(frames[:2], per_frame[:2], ids[:2])
    loose = run_nms(res.proposals, "oks", make_params("oks", {"thresh": 0.99}))[0]
    assert len(res.keep) <= len(loose)
    with pytest.raises(ValueError, match="is for 'oks'"):
        Pipeline(TorchHeatmapModel(Tiny()), nms="paper", nms_params=path)


# ------------------------------------------------------------------ bad input


def test_wrong_heatmap_joint_count(coco4):
    frames, per_frame, ids = coco4
    pipe = Pipeline(TorchHeatmapModel(Tiny(k=16)))
    with pytest.raises(ValueError, match="16 joints, expected num_joints = 17"):
        pipe(frames[:1], per_frame[:1], ids[:1])
    with pytest.raises(ValueError, match="joint_map is needed"):
        TorchHeatmapModel(Tiny(k=16), num_joints=16)
    with pytest.raises(ValueError, match="joint_map must hold 17 indices"):
        TorchHeatmapModel(Tiny(k=16), num_joints=16, joint_map=list(range(17)))
    with pytest.raises(TypeError, match="lacks the adapter attribute 'input_size'"):
        check_model(lambda x: x)


def test_bad_frames_and_boxes(coco4):
    frames, per_frame, ids = coco4
    pipe = Pipeline(TorchHeatmapModel(Tiny()))
    with pytest.raises(ValueError, match=r"frames\[0\] must be a uint8"):
        pipe([frames[0].astype(np.float32)], per_frame[:1])
    with pytest.raises(ValueError, match="2 entries for 1 frames"):
        pipe(frames[:1], per_frame[:2])
    with pytest.raises(ValueError, match="image_ids has 2 entries"):
        pipe(frames[:1], per_frame[:1], [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        pipe(frames[:1], [(np.array([[0, 0, np.nan, 10]]), np.array([0.9]))])
    with pytest.raises(ValueError, match="x2 < x1"):
        as_frame_boxes((np.array([[10, 0, 5, 10]]), np.array([0.9])))
    with pytest.raises(ValueError, match=r"scores must have shape \[n\] = \[1\]"):
        as_frame_boxes((np.array([[0, 0, 5, 10]]), np.array([0.9, 0.2])))
    with pytest.raises(ValueError, match="wrap a single frame"):
        pipe(frames[0], per_frame[:1])
    with pytest.raises(ValueError, match="nms must be one of"):
        Pipeline(TorchHeatmapModel(Tiny()), nms="greedy")


def test_bad_detection_records_and_files(tmp_path):
    good = {"image_id": 785, "bbox": [1, 2, 3, 4], "score": 0.5}
    with pytest.raises(ValueError, match="record 1: missing field 'bbox'"):
        detections_from_records([good, {"image_id": 785, "score": 0.5}])
    with pytest.raises(ValueError, match="record 0: missing field 'image_id'"):
        detections_from_records([{"bbox": [1, 2, 3, 4], "score": 0.5}])
    with pytest.raises(ValueError, match="'bbox' must be 4 numbers"):
        detections_from_records([dict(good, bbox=[1, 2, 3])])
    with pytest.raises(ValueError, match="negative width"):
        detections_from_records([dict(good, bbox=[1, 2, -3, 4])])
    with pytest.raises(ValueError, match="expected a JSON list"):
        detections_from_records({"image_id": 1})
    d = detections_from_records([good, dict(good, category_id=2), dict(good, score=0.1)], det_thresh=0.2)
    assert len(d[785]) == 1  # another category and a low score dropped
    bad = tmp_path / "dets.json"
    bad.write_text('[{"image_id": 1, "bbox": [0, 0, 1')
    with pytest.raises(ValueError, match="not valid JSON"):
        load_detections(bad)
    (tmp_path / "000000000001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="could not be read"):
        load_image(tmp_path / "000000000001.jpg")
    with pytest.raises(FileNotFoundError, match=r"1 image\(s\) named by the detections are not in .*: 7 "):
        image_files(tmp_path, [1, 7])
    assert image_files(tmp_path, [1])[1].name == "000000000001.jpg"
    with pytest.raises(FileNotFoundError, match="not listed in the images file"):
        image_files(tmp_path, [1], {"images": [{"id": 2, "file_name": "x.jpg"}]})


# ------------------------------------------------------------------ drawing


def test_draw_and_save(tmp_path, coco4):
    frames, per_frame, ids = coco4
    res = Pipeline(TorchHeatmapModel(Tiny()), nms="oks")(frames[:1], per_frame[:1], ids[:1])
    frame = frames[0].copy()
    img = draw_results(frame, res.results, kp_thresh=0.0)
    assert np.array_equal(frame, frames[0]) and img.shape == frame.shape and (img != frame).any()
    for ext in ("png", "jpg"):
        save_image(tmp_path / f"a.{ext}", img)
        back = load_image(tmp_path / f"a.{ext}")
        assert back.shape == img.shape
    assert np.array_equal(load_image(tmp_path / "a.png"), img)
    with pytest.raises(ValueError, match="extension"):
        save_image(tmp_path / "a.gif", img)
    with pytest.raises(ValueError, match="result 0: missing field 'keypoints'"):
        draw_results(frame, [{"score": 1.0}])
    with pytest.raises(ValueError, match="uint8"):
        draw_results(frame.astype(np.float32), res.results)


def test_model_files_torchscript_and_export(tmp_path):
    import warnings

    from rmpe.pipeline.models import load_torch_model

    m = Tiny().eval()
    x = torch.rand(3, 3, 256, 192)
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.export.save(torch.export.export(m, (x[:2],), dynamic_shapes=({0: batch},)), str(tmp_path / "m.pt2"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.*: deprecated, still what many ship
        torch.jit.save(torch.jit.trace(m, x[:1]), str(tmp_path / "m.pt"))
    for name in ("m.pt2", "m.pt"):
        torch.testing.assert_close(load_torch_model(tmp_path / name)(x), m(x))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.pt.*is not a TorchScript module"):
        load_torch_model(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_torch_model(tmp_path / "missing.pt")


def test_blazepose_batched_interpreter_gives_the_same_heatmaps():
    pytest.importorskip("ai_edge_litert")
    from rmpe.pipeline.models import BlazePoseModel

    crops = torch.rand(3, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    one = BlazePoseModel(num_threads=1)(crops)
    two = BlazePoseModel(num_threads=1, batch=2)(crops)  # resize_tensor_input; the last chunk is padded
    assert one.shape == (3, 39, 64, 64)
    torch.testing.assert_close(one, two, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"crops must be a \[N, 3, 256, 256\] tensor"):
        BlazePoseModel(num_threads=1)(torch.rand(1, 3, 256, 192))
    with pytest.raises(FileNotFoundError, match="BlazePose model file"):
        BlazePoseModel("/nonexistent/model.tflite")


def test_blazepose_model_path_from_the_environment(monkeypatch):
    pytest.importorskip("ai_edge_litert")
    from rmpe.pipeline.models import BlazePoseModel, default_blazepose_path

    monkeypatch.delenv("RMPE_BLAZEPOSE_MODEL", raising=False)
    shipped = default_blazepose_path()
    # package data: inside the rmpe package, so that a wheel has it
    assert shipped == ROOT / "python" / "rmpe" / "data" / "models" / "blazepose" / "pose_landmark_full.tflite"
    assert shipped.is_file()
    monkeypatch.setenv("RMPE_BLAZEPOSE_MODEL", "/nonexistent/env.tflite")
    assert default_blazepose_path() == pathlib.Path("/nonexistent/env.tflite")
    with pytest.raises(FileNotFoundError, match="env.tflite.*set RMPE_BLAZEPOSE_MODEL"):
        BlazePoseModel()


def test_nan_heatmaps_are_an_error(coco4):
    class NaNs(Tiny):
        def forward(self, x):
            out = super().forward(x)
            out[1, 3, 5, 5] = float("nan")
            return out

    frames, per_frame, ids = coco4
    with pytest.raises(ValueError, match=r"NaN or infinite heatmaps \(persons \[1\]"):
        Pipeline(TorchHeatmapModel(NaNs()), refine="none")(frames[:1], per_frame[:1], ids[:1])


def test_run_nms_takes_the_parameter_files_scoring():
    """A tuned file's ranking/score choice (meta["scoring"]) is applied, not the method's default."""
    from rmpe.coco import read_proposals
    from rmpe.nms.runtime import apply_nms, default_scoring, load_params_and_scoring
    from rmpe.nms.search import tuned_params_path

    props = read_proposals(ROOT / "data" / "blazepose_proposals_pre_nms_dev.json.gz")
    path = tuned_params_path("alphapose")
    method, params, scoring = load_params_and_scoring(path)
    assert scoring != default_scoring(method)  # else this test could not tell the two apart
    keep, poses, joints, scores = run_nms(props, method, path)
    want = apply_nms(props, method, params, scoring)
    assert torch.equal(keep, want.keep) and torch.equal(scores, want.scores) and torch.equal(poses, want.poses)
    default = apply_nms(props, method, params, None)
    assert not torch.equal(scores, default.scores)


def test_detector_output_forms_agree():
    """A detector may return (boxes, scores), an [n, 5] array, FrameBoxes or COCO detection dicts: the same boxes."""
    boxes = np.array([[10, 20, 110, 220], [5, 5, 50, 60], [0, 0, 8, 9]], np.float64)
    scores = np.array([0.9, 0.3, 0.6])
    forms = [(boxes, scores), np.concatenate([boxes, scores[:, None]], 1),
             FrameBoxes(torch.from_numpy(boxes), torch.from_numpy(scores)),
             [{"bbox": [x1, y1, x2 - x1, y2 - y1], "score": s} for (x1, y1, x2, y2), s in zip(boxes, scores)]]
    for form in forms:
        fb = as_frame_boxes(form, det_thresh=0.5)
        assert fb.boxes.dtype == torch.float32 and fb.scores.dtype == torch.float32
        torch.testing.assert_close(fb.boxes, torch.tensor(boxes[[0, 2]], dtype=torch.float32))
        torch.testing.assert_close(fb.scores, torch.tensor([0.9, 0.6]))
    assert len(as_frame_boxes([])) == 0 and len(as_frame_boxes((np.zeros((0, 4)), np.zeros(0)))) == 0
    with pytest.raises(ValueError, match=r"an \[n, 5\] array"):
        as_frame_boxes(np.zeros((2, 4)))


def test_nms_rank_and_score_vocabulary():
    """The default NMS (oks, chosen by held-out AP), and nms_rank / nms_score: the same choices as the CLI's
    --nms-rank / --nms-score; "pose" is "proposal"; "method" keeps AlphaPose's exact convention."""
    from rmpe.coco import read_proposals
    from rmpe.nms.runtime import Scoring, apply_nms
    from rmpe.pipeline.core import DEFAULT_NMS

    assert DEFAULT_NMS == "oks" and Pipeline(TorchHeatmapModel(Tiny())).nms == "oks"
    props = read_proposals(ROOT / "data" / "blazepose_proposals_pre_nms_dev.json.gz")
    for rank in ("proposal", "joints", "box"):
        for score in (None, "proposal", "alphapose"):
            keep, poses, _, scores = run_nms(props, "alphapose", None, rank, score=score)
            want = apply_nms(props, "alphapose", None, Scoring(rank, score or "rank"))
            assert torch.equal(keep, want.keep) and torch.equal(scores, want.scores)
    assert torch.equal(run_nms(props, "oks", None, "pose")[3], run_nms(props, "oks", None, "proposal")[3])
    exact = apply_nms(props, "alphapose", None, Scoring("joints", "alphapose"))  # AlphaPose's own convention
    keep, _, _, scores = run_nms(props, "alphapose", None, "method")
    assert torch.equal(keep, exact.keep) and torch.equal(scores, exact.scores)
    keep, _, _, scores = run_nms(props, "alphapose", None, "method", score="joints")  # its ranking, another score
    want = apply_nms(props, "alphapose", None, Scoring("joints", "joints"))
    assert torch.equal(keep, want.keep) and torch.equal(scores, want.scores)
    with pytest.raises(ValueError, match="nms_score must be one of"):
        Pipeline(TorchHeatmapModel(Tiny()), nms_score="best")
    with pytest.raises(ValueError, match="nms_rank must be one of"):
        Pipeline(TorchHeatmapModel(Tiny()), nms_rank="score")
    with pytest.raises(ValueError, match="soft-oks rescores"):
        Pipeline(TorchHeatmapModel(Tiny()), nms="soft-oks", nms_score="joints")
