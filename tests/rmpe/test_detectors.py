"""rmpe.pipeline.detectors: BlazePose's person detector (anchors, NMS, decode on real images), the torchvision and
Ultralytics adapters (their plumbing, through stand-ins at the boundary rmpe calls), make_detector."""
import json
import pathlib
import sys
import types

import numpy as np
import pytest
import torch

from rmpe.pipeline.detections import FrameBoxes, as_frame_boxes, load_image
from rmpe.pipeline.detectors import (TORCHVISION_ARCHS, BlazePoseDetector, SsdAnchorOptions, TorchvisionDetector,
                                     UltralyticsDetector, make_detector, ssd_anchors, weighted_nms)

ROOT = pathlib.Path(__file__).resolve().parents[2]
COCO4 = ROOT / "data" / "coco4"

torch.set_num_threads(1)


def iou(a, b):
    """IoU of xyxy boxes a [n, 4], b [m, 4] -> [n, m]."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


@pytest.fixture(scope="module")
def coco4_gt():
    """{image_id: (BGR image, GT person boxes xyxy [n, 4])} of the 4 shipped images."""
    doc = json.loads((COCO4 / "test_coco.json").read_text())
    out = {}
    for im in doc["images"]:
        boxes = [[x, y, x + w, y + h] for a in doc["annotations"] if a["image_id"] == im["id"]
                 for x, y, w, h in [a["bbox"]]]
        out[im["id"]] = (load_image(COCO4 / im["file_name"]), np.array(boxes, np.float64))
    return out


@pytest.fixture(scope="module")
def detector():
    pytest.importorskip("ai_edge_litert")
    return BlazePoseDetector()


# ------------------------------------------------------------------ anchors and NMS


def test_ssd_anchors_of_the_pose_detector():
    a = ssd_anchors()
    assert a.shape == (2254, 4) and a.dtype == np.float32
    # 28x28 cells x 2 anchors (stride 8), 14x14 x 2 (16), then the three stride-32 layers pooled: 7x7 x 6
    assert np.all(a[:, 2:] == 1.0)  # fixed anchor size
    first = a[:1568].reshape(28, 28, 2, 4)
    np.testing.assert_allclose(first[..., 0], np.broadcast_to(((np.arange(28) + 0.5) / 28)[None, :, None], (28, 28, 2)),
                               rtol=0, atol=1e-7)
    np.testing.assert_allclose(first[..., 1], np.broadcast_to(((np.arange(28) + 0.5) / 28)[:, None, None], (28, 28, 2)),
                               rtol=0, atol=1e-7)
    mid = a[1568:1568 + 392].reshape(14, 14, 2, 4)
    np.testing.assert_allclose(mid[3, 5, :, :2], [[5.5 / 14, 3.5 / 14]] * 2, atol=1e-7)
    last = a[1960:].reshape(7, 7, 6, 4)
    np.testing.assert_allclose(last[6, 0, :, :2], [[0.5 / 7, 6.5 / 7]] * 6, atol=1e-7)
    # anchor sizes when not fixed: the layer's scale, then the interpolated one sqrt(s_i s_{i+1})
    sized = ssd_anchors(SsdAnchorOptions(fixed_anchor_size=False))
    s0, s1 = 0.1484375, 0.1484375 + (0.75 - 0.1484375) / 4
    np.testing.assert_allclose(sized[:2, 2], [s0, np.sqrt(s0 * s1)], rtol=1e-6)
    np.testing.assert_allclose(sized[-1, 2], np.sqrt(0.75 * 1.0), rtol=1e-6)  # the last layer's next scale is 1
    with pytest.raises(ValueError, match="strides"):
        ssd_anchors(SsdAnchorOptions(strides=(8, 16)))


def test_weighted_nms_merges_clusters():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10.5]], np.float64)
    scores = np.array([0.9, 0.6, 0.5, 0.3])
    vals = np.arange(8, dtype=np.float64).reshape(4, 2)
    b, s, v = weighted_nms(boxes, scores, 0.3, True, vals)
    np.testing.assert_allclose(s, [0.9, 0.5])
    w = np.array([0.9, 0.6, 0.3])
    np.testing.assert_allclose(b[0], (boxes[[0, 1, 3]] * w[:, None]).sum(0) / w.sum())
    np.testing.assert_allclose(v[0], (vals[[0, 1, 3]] * w[:, None]).sum(0) / w.sum())
    np.testing.assert_allclose(b[1], boxes[2])
    b2, s2, v2 = weighted_nms(boxes, scores, 0.3, False)
    np.testing.assert_allclose(b2, boxes[[0, 2]])
    assert v2 is None
    # overlap must be above the threshold: IoU(box0, box1) = 81/119
    b3, _, _ = weighted_nms(boxes[:2], scores[:2], 81 / 119, False)
    assert len(b3) == 2
    b4, s4, _ = weighted_nms(np.zeros((0, 4)), np.zeros(0))
    assert b4.shape == (0, 4) and s4.shape == (0,)
    with pytest.raises(ValueError, match="scores"):
        weighted_nms(boxes, scores[:2])


def test_person_box_rule():
    pytest.importorskip("ai_edge_litert")
    det = BlazePoseDetector(body_width=0.4)
    # upright: hip centre (100, 200), the circle point 100 px above; lying: the circle point to the right
    kp = np.array([[[100, 200], [100, 100], [0, 0], [0, 0]], [[300, 200], [400, 200], [0, 0], [0, 0]]], np.float64)
    np.testing.assert_allclose(det.person_boxes(kp, 1000, 1000), [[60, 100, 140, 300], [200, 160, 400, 240]])
    # clipped to the frame
    np.testing.assert_allclose(det.person_boxes(kp[:1], 120, 250), [[60, 100, 120, 250]])
    square = BlazePoseDetector(box="square")
    np.testing.assert_allclose(square.person_boxes(kp, 1000, 1000), [[0, 100, 200, 300], [200, 100, 400, 300]])


# ------------------------------------------------------------------ BlazePose on real images


def test_blazepose_detector_finds_the_persons_of_coco4(detector, coco4_gt):
    """On the 4 shipped COCO images every box lies on a GT person (best IoU >= 0.45; measured: 0.506 to 0.775
    with the default box rule), scores are sigmoid probabilities, best first; the frame is not modified."""
    counts = {}
    for image_id, (img, gt) in coco4_gt.items():
        before = img.copy()
        fb = detector(img)
        assert np.array_equal(img, before)
        assert isinstance(fb, FrameBoxes) and fb.boxes.dtype == torch.float32 and fb.scores.dtype == torch.float32
        assert len(fb) >= 1
        h, w = img.shape[:2]
        b = fb.boxes.numpy()
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert (fb.scores >= 0.2).all() and (fb.scores <= 1).all()
        assert torch.equal(fb.scores, fb.scores.sort(descending=True).values)
        best = iou(b, gt).max(1)
        assert (best >= 0.45).all(), (image_id, best)
        as_frame_boxes(fb)  # what the pipeline takes
        counts[image_id] = len(fb)
        # a tensor frame gives the same boxes
        fb2 = detector(torch.from_numpy(img))
        assert torch.equal(fb2.boxes, fb.boxes)
    assert counts[197388] >= 2  # two detections of one image are both returned (measured: 2)


def test_blazepose_detector_two_persons(detector, coco4_gt):
    """Two persons side by side (the skier of 785 and the person of 196141) give two boxes, one on each
    (measured IoUs with their GT boxes: 0.68 and 0.81)."""
    a, gt_a = coco4_gt[785]
    b, gt_b = coco4_gt[196141]
    frame = np.ascontiguousarray(np.concatenate([a[:, 200:600], b[:425, 160:480]], 1))
    fb = detector(frame)
    assert len(fb) >= 2
    persons = np.array([gt_a[0] - [200, 0, 200, 0], gt_b[0] - [160, 0, 160, 0] + [400, 0, 400, 0]])
    m = iou(fb.boxes.numpy(), persons)
    assert m[:, 0].max() > 0.5 and m[:, 1].max() > 0.5
    assert m[:, 0].argmax() != m[:, 1].argmax()


def test_blazepose_detector_details(detector, coco4_gt):
    img, _ = coco4_gt[785]
    d = detector.detect(img)
    n = len(d.scores)
    assert d.boxes.shape == (n, 4) and d.keypoints.shape == (n, 4, 2) and d.face_boxes.shape == (n, 4)
    # the face box lies in the upper part of the person box (the skier stands upright)
    fx = (d.face_boxes[0, 0] + d.face_boxes[0, 2]) / 2
    fy = (d.face_boxes[0, 1] + d.face_boxes[0, 3]) / 2
    x1, y1, x2, y2 = d.boxes[0].tolist()
    assert x1 <= fx <= x2 and y1 <= fy <= y1 + (y2 - y1) / 3
    # letterbox: the frame's centre lands in the tensor's centre; the border is black (-1)
    t, side, x0, y0 = detector.letterbox(img)
    assert t.shape == (1, 224, 224, 3) and t.dtype == np.float32 and side == 640 and x0 == 0
    assert np.all(t[0, :5] == -1.0) and t.min() >= -1.0 and t.max() <= 1.0
    # score_thresh and max_detections
    assert len(BlazePoseDetector(score_thresh=0.99)(img)) == 0
    assert len(BlazePoseDetector(min_score=0.01, max_detections=1)(coco4_gt[197388][0])) == 1
    # a frame with nobody: a blank image gives no box at MediaPipe's 0.2 floor
    assert len(detector(np.zeros((300, 400, 3), np.uint8))) == 0


def test_blazepose_detector_errors(detector, tmp_path):
    for bad in (np.zeros((10, 10, 3), np.float32), np.zeros((10, 10), np.uint8), np.zeros((0, 10, 3), np.uint8),
                [[1, 2, 3]]):
        with pytest.raises(ValueError, match="frame"):
            detector(bad)
    for kwargs, match in (({"box": "circle"}, "box"), ({"min_score": 1.5}, "min_score"),
                          ({"body_width": 0}, "body_width"), ({"score_thresh": float("nan")}, "score_thresh"),
                          ({"nms_iou": -0.1}, "nms_iou"), ({"max_detections": 0}, "max_detections")):
        with pytest.raises(ValueError, match=match):
            BlazePoseDetector(**kwargs)
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        BlazePoseDetector(tmp_path / "missing.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model" * 10)
    with pytest.raises(ValueError, match="junk.tflite"):
        BlazePoseDetector(junk)


def test_blazepose_detector_in_the_pipeline(detector, coco4_gt):
    """The detector as the pipeline's detections callable, with the BlazePose landmark model."""
    from rmpe.pipeline import Pipeline
    from rmpe.pipeline.models import BlazePoseModel

    ids = sorted(coco4_gt)
    frames = [coco4_gt[i][0] for i in ids]
    res = Pipeline(BlazePoseModel(), nms="oks")(frames, detector, ids)
    assert res.num_proposals == sum(len(detector(f)) for f in frames)
    assert {r["image_id"] for r in res.results} == set(ids)
    # each pose's keypoints lie near its box
    for r in res.results:
        x, y, w, h = r["det_bbox"]
        kp = np.array(r["keypoints"]).reshape(17, 3)
        inside = (kp[:, 0] >= x - w) & (kp[:, 0] <= x + 2 * w) & (kp[:, 1] >= y - h) & (kp[:, 1] <= y + 2 * h)
        assert inside.mean() > 0.8


# ------------------------------------------------------------------ torchvision (a stand-in at the boundary)


class FixedDetection(torch.nn.Module):
    """A torchvision-style detection model with a fixed output: a list with one dict of boxes, labels, scores.
    Records the images it was called with. One parameter, so its state_dict round-trips."""

    def __init__(self, num_classes=91):
        super().__init__()
        self.num_classes = num_classes
        self.bias = torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    def forward(self, images):
        self.calls.append(images)
        b = float(self.bias)
        boxes = torch.tensor([[10.0, 20.0, 110.0, 220.0], [5.0, 5.0, 50.0, 40.0], [200.0, 30.0, 260.0, 190.0],
                              [300.0, 10.0, 330.0, 90.0]]) + b
        return [{"boxes": boxes, "labels": torch.tensor([1, 3, 1, 1]), "scores": torch.tensor([0.5, 0.99, 0.9, 0.04])}]


@pytest.fixture
def fake_torchvision(monkeypatch, tmp_path):
    """A stand-in `torchvision` package with `models.detection`: builders returning FixedDetection and the
    weights enums' DEFAULT URLs; the torch hub cache in tmp_path."""
    built = []
    detection = types.ModuleType("torchvision.models.detection")
    for arch, enum in TORCHVISION_ARCHS.items():
        def builder(weights=None, weights_backbone=None, num_classes=91, _arch=arch):
            assert weights is None and weights_backbone is None  # rmpe never lets torchvision download
            m = FixedDetection(num_classes)
            built.append((_arch, m))
            return m
        setattr(detection, arch, builder)
        setattr(detection, enum, types.SimpleNamespace(
            DEFAULT=types.SimpleNamespace(url=f"https://download.pytorch.org/models/{arch}_coco-0123abcd.pth")))
    models = types.ModuleType("torchvision.models")
    models.detection = detection
    tv = types.ModuleType("torchvision")
    tv.models = models
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    monkeypatch.setitem(sys.modules, "torchvision.models.detection", detection)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return built


def test_torchvision_detector_plumbing(fake_torchvision, coco4_gt):
    img = coco4_gt[785][0]
    det = TorchvisionDetector("fasterrcnn_resnet50_fpn")
    fb = det(img)
    # person (label 1) rows only, best first
    np.testing.assert_allclose(fb.boxes.numpy(), [[200, 30, 260, 190], [10, 20, 110, 220], [300, 10, 330, 90]])
    np.testing.assert_allclose(fb.scores.numpy(), [0.9, 0.5, 0.04])
    # the model saw the frame as torchvision wants it: RGB float [3, H, W] in [0, 1]
    (x,), = fake_torchvision[-1][1].calls
    assert x.shape == (3,) + img.shape[:2] and x.dtype == torch.float32
    np.testing.assert_allclose(x.numpy(), img[:, :, ::-1].transpose(2, 0, 1) / 255.0, atol=1e-7)
    assert len(TorchvisionDetector("retinanet_resnet50_fpn", score_thresh=0.3)(img)) == 2
    assert as_frame_boxes(fb).boxes.shape == (3, 4)


def test_torchvision_detector_weights(fake_torchvision, tmp_path, coco4_gt):
    img = coco4_gt[785][0]
    sd = FixedDetection().state_dict()
    sd["bias"] = torch.tensor([1.0])
    path = tmp_path / "frcnn.pth"
    torch.save({"model": sd}, path)
    fb = TorchvisionDetector("fasterrcnn_resnet50_fpn", weights=path)(img)
    np.testing.assert_allclose(fb.boxes[0].numpy(), [201, 31, 261, 191])  # the loaded bias moved the boxes
    # DEFAULT: from the torch hub cache only
    with pytest.raises(FileNotFoundError, match="hub cache.*fcos_resnet50_fpn_coco-0123abcd.pth"):
        TorchvisionDetector("fcos_resnet50_fpn", weights="DEFAULT")
    cached = tmp_path / "hub" / "checkpoints" / "fcos_resnet50_fpn_coco-0123abcd.pth"
    cached.parent.mkdir(parents=True)
    torch.save(sd, cached)
    det = make_detector("torchvision:fcos_resnet50_fpn:DEFAULT")
    assert det.weights == str(cached) and det(img).boxes[0, 0] == 201
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        make_detector(f"torchvision:fasterrcnn_resnet50_fpn:{tmp_path / 'nope.pth'}")
    bad = tmp_path / "bad.pth"
    torch.save({"other": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match="bad.pth.*does not fit"):
        TorchvisionDetector("fasterrcnn_resnet50_fpn", weights=bad)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.pth.*could not be read"):
        TorchvisionDetector("fasterrcnn_resnet50_fpn", weights=junk)
    with pytest.raises(ValueError, match="arch"):
        TorchvisionDetector("maskrcnn_resnet50_fpn")


def test_torchvision_detector_rejects_foreign_output(fake_torchvision, coco4_gt):
    det = TorchvisionDetector("ssdlite320_mobilenet_v3_large")
    det.model = lambda images: [{"boxes": torch.zeros(2, 4)}]
    with pytest.raises(ValueError, match="'boxes', 'labels', 'scores'"):
        det(coco4_gt[785][0])
    det.model = lambda images: [{"boxes": torch.zeros(2, 4), "labels": torch.ones(3), "scores": torch.ones(3)}]
    with pytest.raises(ValueError, match="expected \\[n, 4\\], \\[n\\], \\[n\\]"):
        det(coco4_gt[785][0])
    nan_box = torch.tensor([[0.0, 0.0, float("nan"), 5.0]])
    det.model = lambda images: [{"boxes": nan_box, "labels": torch.ones(1), "scores": torch.ones(1)}]
    with pytest.raises(ValueError, match="ssdlite320_mobilenet_v3_large model returned NaN"):
        det(coco4_gt[785][0])
    det.model = lambda images: [{"boxes": torch.tensor([[9.0, 0, 5, 5]]), "labels": torch.ones(1),
                                 "scores": torch.ones(1)}]
    with pytest.raises(ValueError, match="x2 < x1"):
        det(coco4_gt[785][0])


def test_torchvision_detector_real_untrained(coco4_gt):
    """With a working torchvision (none here: PyPI's torchvision 0.28.0 for torch 2.13 is a CUDA build that
    does not load with the CPU torch): the real Faster R-CNN, untrained, runs and gives FrameBoxes."""
    try:
        import torchvision  # noqa: F401
        from torchvision.ops import nms  # noqa: F401
    except Exception as e:  # ImportError, or a build that does not load with this torch (RuntimeError)
        pytest.skip(f"no working torchvision: {type(e).__name__}")
    det = TorchvisionDetector("fasterrcnn_resnet50_fpn", weights=None)
    fb = det(coco4_gt[785][0][:200, :200].copy())
    assert isinstance(fb, FrameBoxes) and fb.boxes.shape[1] == 4


# ------------------------------------------------------------------ Ultralytics (a stand-in at the boundary)


@pytest.fixture
def fake_ultralytics(monkeypatch):
    """A stand-in `ultralytics` with YOLO(model_file).predict(frame, **kw) -> [Results] whose `boxes` has
    xyxy, conf, cls tensors (Ultralytics' Results layout). Records the calls."""
    calls = []

    class Boxes:
        def __init__(self, xyxy, conf, cls):
            self.xyxy, self.conf, self.cls = xyxy, conf, cls

    class YOLO:
        def __init__(self, model):
            self.model_file = model

        def predict(self, source, **kw):
            calls.append((self.model_file, source, kw))
            conf = kw.get("conf", 0.25)
            xyxy = torch.tensor([[1.0, 2.0, 30.0, 60.0], [40.0, 10.0, 90.0, 120.0], [5.0, 5.0, 9.0, 9.0]])
            scores = torch.tensor([0.8, 0.95, 0.3])
            cls = torch.tensor([0.0, 0.0, 2.0])  # a car among the persons (rmpe drops it too)
            keep = scores >= conf
            return [types.SimpleNamespace(boxes=Boxes(xyxy[keep], scores[keep], cls[keep]))]

    mod = types.ModuleType("ultralytics")
    mod.YOLO = YOLO
    monkeypatch.setitem(sys.modules, "ultralytics", mod)
    return calls


def test_ultralytics_detector_plumbing(fake_ultralytics, tmp_path, coco4_gt):
    model = tmp_path / "yolov8n.pt"
    model.write_bytes(b"weights")
    img = coco4_gt[785][0]
    det = make_detector(f"yolo:{model}", score_thresh=0.1)
    assert isinstance(det, UltralyticsDetector)
    fb = det(img)
    np.testing.assert_allclose(fb.boxes.numpy(), [[40, 10, 90, 120], [1, 2, 30, 60]])
    np.testing.assert_allclose(fb.scores.numpy(), [0.95, 0.8])
    file, source, kw = fake_ultralytics[-1]
    assert file == str(model) and source is img  # the BGR frame as it is (Ultralytics reads numpy as BGR)
    assert kw["classes"] == [0] and kw["conf"] == 0.1 and kw["device"] == "cpu" and kw["verbose"] is False
    assert len(UltralyticsDetector(model, score_thresh=0.9)(img)) == 1
    assert len(UltralyticsDetector(model)(img)) == 2
    assert "conf" not in fake_ultralytics[-1][2]  # score_thresh 0: Ultralytics' own default conf
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        make_detector(f"yolo:{tmp_path / 'missing.pt'}")


def test_ultralytics_missing_package(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # import fails
    model = tmp_path / "yolov8n.pt"
    model.write_bytes(b"weights")
    with pytest.raises(ImportError, match="pip install ultralytics"):
        UltralyticsDetector(model)


# ------------------------------------------------------------------ make_detector


def test_make_detector_specs_and_errors(fake_torchvision):
    pytest.importorskip("ai_edge_litert")
    det = make_detector("blazepose", score_thresh=0.5)
    assert isinstance(det, BlazePoseDetector) and det.score_thresh == 0.5
    tv = make_detector("torchvision:ssdlite320_mobilenet_v3_large", device="cpu")
    assert isinstance(tv, TorchvisionDetector) and tv.weights is None
    for spec, match in (("", "detector must be one of"), ("hog", "detector must be one of"),
                        ("torchvision:maskrcnn", "detector 'torchvision:maskrcnn'.*architecture"),
                        ("torchvision", "architecture"), ("yolo:", "detector 'yolo:'"), (None, "detector must be")):
        with pytest.raises(ValueError, match=match):
            make_detector(spec)
    with pytest.raises(ValueError, match="score_thresh"):
        make_detector("blazepose", score_thresh=float("inf"))
