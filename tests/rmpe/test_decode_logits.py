"""The pipeline's decode of logit heatmaps (BlazePose's, ``heatmap_activation="sigmoid"``): decoded directly (no
sigmoid over whole maps; the sigmoid of the peaks only), with the same keypoints as the sigmoid-then-decode path
and scores equal to sigmoid(peak), on real BlazePose heatmaps; AlphaPose's ``max <= 0`` rule does not apply to
logits; the model's heatmaps are not modified."""
import pathlib

import numpy as np
import pytest
import torch

from rmpe_ext import ops

from rmpe.pipeline import Pipeline, heatmap_to_image
from rmpe.pipeline.detections import image_files, load_detections, load_image
from rmpe.pipeline.models import ADAPTER_ATTRS

ROOT = pathlib.Path(__file__).resolve().parents[2]
COCO4 = ROOT / "data" / "coco4"

torch.set_num_threads(1)


class Replay:
    """An adapter giving fixed heatmaps (one call per batch, in order) with another adapter's attributes."""

    def __init__(self, like, heatmaps, **override):
        for attr in ADAPTER_ATTRS:
            setattr(self, attr, getattr(like, attr))
        for k, v in override.items():
            setattr(self, k, v)
        self.heatmaps, self.pos = heatmaps, 0

    def __call__(self, crops):
        out = self.heatmaps[self.pos:self.pos + crops.shape[0]]
        self.pos += crops.shape[0]
        return out


@pytest.fixture(scope="module")
def blazepose_run():
    """The BlazePose (LiteRT) heatmaps of the 118 shipped AP_H_56 boxes of data/coco4, as the pipeline gives them."""
    pytest.importorskip("ai_edge_litert")
    from rmpe.pipeline.models import BlazePoseModel

    dets = load_detections(COCO4 / "test_coco_det_AP_H_56.json")
    ids = list(dets)
    files = image_files(COCO4, ids, COCO4 / "test_coco.json")
    frames, boxes = [load_image(files[i]) for i in ids], [dets[i] for i in ids]
    model = BlazePoseModel()
    recorded = []
    pipe = Pipeline(_Recorder(model, recorded), nms="none", batch_size=1000)
    res = pipe(frames, boxes, ids)
    return model, frames, boxes, ids, torch.cat(recorded), res


class _Recorder:
    """The real adapter, keeping a copy of each batch of heatmaps."""

    def __init__(self, model, store):
        for attr in ADAPTER_ATTRS:
            setattr(self, attr, getattr(model, attr))
        self.model, self.store = model, store

    def __call__(self, crops):
        out = self.model(crops)
        self.store.append(out.clone())
        return out


def old_decode(heatmaps, theta, model, refine="quarter"):
    """The former path: COCO joints picked, a sigmoid over the whole maps, then the op."""
    hm = heatmaps.index_select(1, torch.tensor(model.joint_map)).contiguous()
    m = heatmap_to_image(theta, model.input_size, hm.shape[2:], model.heatmap_offset)
    return ops.heatmap_decode(torch.sigmoid(hm), m, refine)


def test_logits_decoded_directly_on_real_heatmaps(blazepose_run):
    model, frames, boxes, ids, heatmaps, res = blazepose_run
    assert heatmaps.shape == (118, 39, 64, 64)
    peaks = heatmaps.index_select(1, torch.tensor(model.joint_map)).flatten(2).amax(2)
    assert (peaks <= 0).float().mean() > 0.3  # logits: most joints peak below 0 (measured: 65%)
    theta = torch.cat([_theta(fb.boxes, model) for fb in boxes])
    for refine in ("quarter", "none"):
        pipe = Pipeline(Replay(model, heatmaps), nms="none", refine=refine, batch_size=1000)
        new = pipe(frames, boxes, ids).proposals
        coords, scores = old_decode(heatmaps, theta, model, refine)
        assert torch.equal(new.poses, coords), refine  # the same keypoints, bit for bit
        torch.testing.assert_close(new.joint_scores, scores, rtol=0, atol=1e-6)
        torch.testing.assert_close(new.joint_scores, torch.sigmoid(peaks), rtol=0, atol=1e-6)
    # the recording run (the real model in the pipeline) gave the same as the replay
    assert torch.equal(res.proposals.poses, old_decode(heatmaps, theta, model)[0])


def _theta(boxes, model):
    from rmpe.pipeline import crop_theta

    return crop_theta(boxes, model.input_size, model.box_preset)


def test_logits_decoded_directly_on_the_shared_sample(shared_data):
    """The 8 real heatmaps of the shared sample (float16 logits, some joints peaking below 0)."""
    pytest.importorskip("ai_edge_litert")
    from rmpe.pipeline.models import BlazePoseModel

    z = np.load(shared_data / "generated" / "blazepose_full_heatmaps_sample.npz")
    names = sorted(k for k in z.files if not k.endswith("_affine"))
    hms = torch.from_numpy(np.stack([z[n] for n in names])).float().permute(0, 3, 1, 2).contiguous()
    frame = np.zeros((400, 400, 3), np.uint8)
    boxes = torch.tensor([[50.0 + 10 * i, 60.0, 250.0 + 10 * i, 380.0] for i in range(len(names))])
    like = BlazePoseModel.__new__(BlazePoseModel)  # the adapter's attributes only; nothing runs
    pipe = Pipeline(Replay(like, hms), nms="none", batch_size=100)
    new = pipe([frame], [(boxes, torch.ones(len(boxes)))]).proposals
    coords, scores = old_decode(hms, _theta(boxes, like), like)
    assert torch.equal(new.poses, coords)
    torch.testing.assert_close(new.joint_scores, scores, rtol=0, atol=1e-6)


def test_negative_peaks_and_non_finite_maps():
    """A logit map peaking below 0 decodes at its peak (AlphaPose's max <= 0 -> pixel (0, 0) rule is for score
    maps, not logits); NaN and all -inf maps behave as the sigmoid path; the model's tensor is not modified."""
    from rmpe.pipeline.models import TorchHeatmapModel

    hm = torch.full((2, 17, 16, 12), -30.0)
    hm[0, :, 5, 7] = -4.0     # peak below 0
    hm[0, :, 5, 8] = -4.5     # right neighbour larger than the left: +0.25 in x
    hm[0, :, 5, 6] = -6.0
    hm[1, :, 9, 3] = 2.0
    hm[1, 3] = float("-inf")
    hm[1, 4, 2, 2] = float("nan")
    given = hm.clone()

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return hm

    model = TorchHeatmapModel(Fixed(), input_size=(64, 48), heatmap_activation="sigmoid", heatmap_offset=0.0)
    pipe = Pipeline(model, nms="none")
    frame = np.zeros((100, 100, 3), np.uint8)
    boxes = torch.tensor([[10.0, 10.0, 58.0, 74.0], [10.0, 10.0, 58.0, 74.0]])
    with pytest.raises(ValueError, match="NaN or infinite"):  # the NaN map is reported, as before
        pipe([frame], [(boxes, torch.ones(2))])
    torch.testing.assert_close(hm, given, rtol=0, atol=0, equal_nan=True)  # the model's own tensor is untouched
    hm[1, 4, 2, 2] = -30.0
    out = pipe([frame], [(boxes, torch.ones(2))]).proposals
    theta = _theta(boxes, model)
    m = heatmap_to_image(theta, (64, 48), (16, 12), 0.0)
    ref, ref_scores = ops.heatmap_decode(torch.sigmoid(hm), m, "quarter")
    torch.testing.assert_close(out.poses, ref, rtol=0, atol=0)
    torch.testing.assert_close(out.joint_scores, ref_scores, rtol=0, atol=1e-6)
    # joint 0 of person 0 sits at heatmap pixel (7.25, 5), not at (0, 0)
    torch.testing.assert_close(out.poses[0, 0], ops.heatmap_decode(torch.zeros(1, 1, 16, 12), m[:1], "none")[0][0, 0]
                               + torch.tensor([7.25, 5.0]) * m[0, 0, 0], rtol=0, atol=1e-5)
    assert out.joint_scores[1, 3] == 0  # all -inf: sigmoid 0, as before
    given[1, 4, 2, 2] = -30.0
    assert torch.equal(hm, given)


@pytest.mark.parametrize("refine", ["dark", "soft-argmax"])
def test_dark_and_soft_argmax_still_see_probabilities(refine, blazepose_run):
    """DARK (a log of the blurred map) and soft-argmax (a softmax of it) are not invariant to the sigmoid: they
    keep decoding sigmoid(logits), as before."""
    model, frames, boxes, ids, heatmaps, _ = blazepose_run
    pipe = Pipeline(Replay(model, heatmaps[:20]), nms="none", refine=refine, batch_size=1000)
    new = pipe(frames[:1], [(boxes[0].boxes[:20], boxes[0].scores[:20])], ids[:1]).proposals
    hm = torch.sigmoid(heatmaps[:20].index_select(1, torch.tensor(model.joint_map)).contiguous())
    m = heatmap_to_image(_theta(boxes[0].boxes[:20], model), model.input_size, (64, 64),
                         model.heatmap_offset)
    if refine == "dark":
        ref, _ = ops.heatmap_decode(hm, m, "dark")
    else:
        ref, _ = ops.soft_argmax(hm, m, 1.0)
    torch.testing.assert_close(new.poses, ref.to(torch.float32), rtol=0, atol=1e-4)
