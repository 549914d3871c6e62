"""rmpe.pipeline.models.BlazePoseTorch: the BlazePose landmark model rebuilt in torch from the shipped .tflite, checked
against LiteRT on real crops; batching, torch.export, gradients, pruning; its pipeline adapter against the
LiteRT one on data/coco4."""
import json
import pathlib

import numpy as np
import pytest
import torch

pytest.importorskip("tflite", reason="BlazePoseTorch reads the .tflite with the `tflite` package (pip install tflite)")
pytest.importorskip("ai_edge_litert", reason="the reference, LiteRT, needs ai-edge-litert (pip install ai-edge-litert)")

from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from rmpe.pipeline.detections import load_image  # noqa: E402
from rmpe.pipeline.models import BlazePoseModel, BlazePoseTorch, BlazePoseTorchModel, check_model, \
    default_blazepose_path  # noqa: E402
from rmpe.pipeline.models.blazepose_torch import TFLiteModule, parse_tflite  # noqa: E402
from rmpe.pipeline import Pipeline  # noqa: E402
from rmpe_ext import ops  # noqa: E402
from rmpe_ext.presets import cv2_inverse_map  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
COCO4 = ROOT / "data" / "coco4"
ALL = ("landmarks", "pose_flag", "segmentation", "heatmap", "world_landmarks")


pytestmark = pytest.mark.usefixtures("one_thread")


def _crops_of(frame_bgr: np.ndarray, boxes_xywh) -> torch.Tensor:
    """The team's BlazePose crops (make_blazepose_proposals.py): the box's longer side x1.25, square, 256x256,
    RGB / 255, warped as OpenCV 4's warpAffine does (rmpe_ext's bit-exact "opencv4" mode, so the crops do not
    depend on the installed OpenCV)."""
    S, mats = 256, []
    for x, y, w, h in boxes_xywh:
        cx, cy, s = x + w / 2, y + h / 2, max(w, h) * 1.25
        mats.append([[S / s, 0, S / 2 - cx * S / s], [0, S / s, S / 2 - cy * S / s]])
    theta = torch.from_numpy(cv2_inverse_map(np.asarray(mats, np.float32).astype(np.float64)))
    return ops.affine_crop(torch.from_numpy(frame_bgr), theta, (S, S), reverse_channels=True, interpolation="opencv4")


@pytest.fixture(scope="module")
def coco4_crops():
    """8 real crops: the 8 best-scored AP_H_56 boxes of the shipped COCO sample."""
    dets = json.loads((COCO4 / "test_coco_det_AP_H_56.json").read_text())
    dets = sorted(dets, key=lambda d: -d["score"])[:8]
    crops = [_crops_of(load_image(COCO4 / f"{d['image_id']:012d}.jpg"), [d["bbox"]]) for d in dets]
    return torch.cat(crops)


def _litert(crops: torch.Tensor):
    """LiteRT's five outputs (default CPU path, XNNPACK), crop by crop, as numpy keyed by our names."""
    it = Interpreter(model_path=str(default_blazepose_path()), num_threads=1)
    it.allocate_tensors()
    inp = it.get_input_details()[0]["index"]
    by_shape = {tuple(d["shape"][1:]): d["index"] for d in it.get_output_details()}
    idx = {"landmarks": by_shape[(195,)], "pose_flag": by_shape[(1,)], "segmentation": by_shape[(256, 256, 1)],
           "heatmap": by_shape[(64, 64, 39)], "world_landmarks": by_shape[(117,)]}
    out = {k: [] for k in idx}
    for c in crops.permute(0, 2, 3, 1).contiguous().numpy():
        it.set_tensor(inp, c[None])
        it.invoke()
        for k, i in idx.items():
            out[k].append(it.get_tensor(i)[0].copy())
    out = {k: np.stack(v) for k, v in out.items()}
    out["heatmap"] = out["heatmap"].transpose(0, 3, 1, 2)
    out["segmentation"] = out["segmentation"].transpose(0, 3, 1, 2)
    out["landmarks"] = out["landmarks"].reshape(-1, 39, 5)
    out["world_landmarks"] = out["world_landmarks"].reshape(-1, 39, 3)
    return out


@pytest.fixture(scope="module")
def full_model():
    return BlazePoseTorch(outputs=ALL)


@pytest.fixture(scope="module")
def heatmap_model():
    return BlazePoseTorch(outputs=("heatmap",))


@pytest.fixture(scope="module")
def full_out(full_model, coco4_crops):
    with torch.no_grad():
        return full_model(coco4_crops)


def test_agrees_with_litert_on_real_crops(full_out, coco4_crops):
    ours = {k: v.numpy() for k, v in full_out.items()}
    ref = _litert(coco4_crops)
    assert set(ours) == set(ALL)
    assert ours["heatmap"].shape == (8, 39, 64, 64) and ours["landmarks"].shape == (8, 39, 5)
    assert ours["segmentation"].shape == (8, 1, 256, 256) and ours["pose_flag"].shape == (8, 1)
    assert ours["world_landmarks"].shape == (8, 39, 3)
    # heatmap logits (from -80 to 3 here): measured 2.8e-4 (LiteRT's XNNPACK and builtin kernels differ by 3.8e-4
    # on these crops; ours and the builtin ones by 3.0e-4)
    hm, hr = ours["heatmap"], ref["heatmap"]
    assert np.abs(hm - hr).max() < 1e-3
    assert hr.min() < -50  # the comparison covers the logits' range, not just the peaks
    # the same argmax on every joint of every crop
    np.testing.assert_array_equal(hm.reshape(8, 39, -1).argmax(-1), hr.reshape(8, 39, -1).argmax(-1))
    # landmarks: x, y in crop pixels measured within 4.7e-4 (XNNPACK vs builtin: 6.6e-4), z within 2.4e-3
    # (values up to 255), the visibility/presence logits 1.3e-4
    lm, lr = ours["landmarks"], ref["landmarks"]
    assert np.abs(lm[..., :2] - lr[..., :2]).max() < 5e-3
    assert np.abs(lm[..., 2] - lr[..., 2]).max() < 2e-2
    assert np.abs(lm[..., 3:] - lr[..., 3:]).max() < 2e-3
    assert np.abs(ours["pose_flag"] - ref["pose_flag"]).max() < 1e-4  # measured 1.5e-5
    assert np.abs(ours["world_landmarks"] - ref["world_landmarks"]).max() < 5e-4  # measured 2.8e-5
    # segmentation logits reach 1724 in magnitude: measured 0.62 at most (3.6e-4 of that; XNNPACK vs builtin:
    # 0.98), the same sign everywhere
    sr = ref["segmentation"]
    assert np.abs(ours["segmentation"] - sr).max() < 5e-3 * np.abs(sr).max()
    assert ((ours["segmentation"] > 0) == (sr > 0)).mean() > 0.999


def test_reproduces_the_shared_heatmap_sample(shared_data, heatmap_model):
    """The 8 real heatmaps LiteRT gave the team (generated/blazepose_full_heatmaps_sample.npz, stored as
    float16), from the same crops rebuilt (OpenCV 4's warpAffine, bit for bit)."""
    sample = np.load(shared_data / "generated" / "blazepose_full_heatmaps_sample.npz")
    dets = json.loads((shared_data / "coco_mini" / "COCO_val2017_detections_AP_H_56_person_cocomini.json").read_text())
    keys = sorted((k for k in sample.files if not k.endswith("_affine")), key=lambda k: int(k[3:]))
    assert len(keys) == 8
    crops = []
    for k in keys:
        img = load_image(shared_data / "coco_mini" / "val2017" / f"{dets[int(k[3:])]['image_id']:012d}.jpg")
        theta = torch.from_numpy(cv2_inverse_map(sample[k + "_affine"][None].astype(np.float64)))
        crops.append(ops.affine_crop(torch.from_numpy(img), theta, (256, 256), reverse_channels=True,
                                     interpolation="opencv4"))
    with torch.no_grad():
        hm = heatmap_model(torch.cat(crops))["heatmap"].numpy()
    ref = np.stack([sample[k].astype(np.float32).transpose(2, 0, 1) for k in keys])
    # measured 0.0157: float16's rounding of logits of up to 58 in magnitude (half a step is 0.0156 there)
    assert np.abs(hm - ref).max() < 0.02
    # our argmax is a maximum of the stored map on every joint (float16 rounding makes ties: one joint of 312
    # has two equal stored peaks)
    a = hm.reshape(8, 39, -1).argmax(-1)
    r = ref.reshape(8, 39, -1)
    np.testing.assert_array_equal(np.take_along_axis(r, a[..., None], -1)[..., 0], r.max(-1))


def test_batch_invariance(full_model, full_out, coco4_crops):
    """A crop alone gives what it gives in a batch of 8."""
    with torch.no_grad():
        alone = full_model(coco4_crops[3:4])
    for k in ALL:
        # measured: heatmaps and segmentation equal, landmarks within 5e-5 (oneDNN's kernels for the 2x2
        # maps of the regression heads depend on the batch)
        torch.testing.assert_close(alone[k], full_out[k][3:4], atol=1e-4, rtol=1e-5, msg=k)


def test_channels_last_input_and_layouts(heatmap_model, coco4_crops):
    x = coco4_crops[:2]
    with torch.no_grad():
        a = heatmap_model(x)["heatmap"]
        b = heatmap_model(x.permute(0, 2, 3, 1).contiguous())["heatmap"]  # [N, 256, 256, 3]
        c = heatmap_model(x.contiguous(memory_format=torch.channels_last))["heatmap"]
        d = BlazePoseTorch(outputs=("heatmap",), channels_last=False)(x)["heatmap"]
    assert a.is_contiguous() and a.shape == (2, 39, 64, 64)
    torch.testing.assert_close(b, a, atol=0, rtol=0)
    torch.testing.assert_close(c, a, atol=0, rtol=0)
    torch.testing.assert_close(d, a, atol=1e-4, rtol=0)  # another oneDNN layout: measured within 1e-5
    with pytest.raises(ValueError, match="crops must be"):
        heatmap_model(torch.rand(1, 3, 128, 128))
    with pytest.raises(ValueError, match="crops must be"):
        heatmap_model(torch.rand(3, 256, 256))


def test_torch_export_with_a_dynamic_batch(heatmap_model, coco4_crops):
    batch = torch.export.Dim("batch", min=1, max=1024)
    ep = torch.export.export(heatmap_model, (coco4_crops[:2],), dynamic_shapes=({0: batch},))
    run = ep.module()
    with torch.no_grad():
        for n in (1, 3):
            torch.testing.assert_close(run(coco4_crops[:n])["heatmap"], heatmap_model(coco4_crops[:n])["heatmap"],
                                       atol=1e-5, rtol=0)


def test_gradients_reach_the_input(coco4_crops):
    """Autograd against central finite differences in float64 on a few input pixels (and the weights get
    gradients too)."""
    m = BlazePoseTorch(outputs=("heatmap",)).double()
    x = coco4_crops[:1].double().requires_grad_(True)
    h = m(x)["heatmap"]
    w = torch.randn(h.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    (h * w).sum().backward()
    g = x.grad.flatten()
    assert torch.isfinite(g).all() and (g != 0).sum() > 0.9 * g.numel()
    assert all(p.grad is not None for p in m.parameters()) and m.net.ops["op003_conv_2d"].weight.grad.abs().sum() > 0
    pixels = g.abs().topk(2).indices.tolist() + [12345, 150000]
    eps = 1e-6
    with torch.no_grad():
        for i in pixels:
            xp, xm = x.detach().clone().flatten(), x.detach().clone().flatten()
            xp[i] += eps
            xm[i] -= eps
            fd = ((m(xp.view_as(x))["heatmap"] - m(xm.view_as(x))["heatmap"]) * w).sum() / (2 * eps)
            # measured: within 7e-7 relative
            assert abs(fd.item() - g[i].item()) <= 1e-4 * max(abs(fd.item()), 1.0), (i, fd.item(), g[i].item())


def test_only_what_the_outputs_need_is_built_and_run():
    """The segmentation head (and, for the heatmap alone, the regression heads) is neither built nor run."""
    graph = parse_tflite(default_blazepose_path())
    assert len(graph.ops) == 332 - 192  # the DEQUANTIZEs are folded into constants
    full, pose, heat = BlazePoseTorch(outputs=ALL), BlazePoseTorch(), BlazePoseTorch(outputs=("heatmap",))
    n_params = [sum(p.numel() for p in m.parameters()) for m in (full, pose, heat)]
    assert n_params == [3_169_489, 3_167_640, 1_601_759]
    seg_only = set(full.net.ops) - set(pose.net.ops)
    assert len(seg_only) >= 10 and set(pose.net.ops) < set(full.net.ops)
    # the last segmentation operators are in the full module only
    assert any(isinstance(full.net.ops[k], torch.nn.Module) and "resize" in k for k in seg_only)
    ran = []
    hooks = [mod.register_forward_hook(lambda mod, i, o, k=k: ran.append((k, tuple(o.shape))))
             for k, mod in pose.net.ops.items()]
    with torch.no_grad():
        out = pose(torch.rand(1, 3, 256, 256))
    for hk in hooks:
        hk.remove()
    assert set(out) == {"landmarks", "pose_flag", "heatmap", "world_landmarks"}  # the default: all but the mask
    assert [k for k, _ in ran] == list(pose.net.ops)  # every built operator ran once, none other
    assert max(s[2] for _, s in ran if len(s) == 4) <= 128  # nothing at the mask's 256x256


def test_weights_are_the_float16_originals_and_move_with_the_module(heatmap_model):
    graph = parse_tflite(default_blazepose_path())
    op = next(o for o in graph.ops if o.index == 3)  # the first convolution; its weights: DEQUANTIZE's output
    tfl_w = graph.consts[op.inputs[1]]  # [24, 3, 3, 3] OHWI, float32 from float16
    assert op.kind == "CONV_2D" and tfl_w.dtype == np.float32 and tfl_w.shape == (24, 3, 3, 3)
    np.testing.assert_array_equal(tfl_w.astype(np.float16).astype(np.float32), tfl_w)
    conv = heatmap_model.net.ops["op003_conv_2d"]
    assert conv.weight.dtype == torch.float32
    torch.testing.assert_close(conv.weight, torch.from_numpy(tfl_w).permute(0, 3, 1, 2), atol=0, rtol=0)
    half = BlazePoseTorch(outputs=("heatmap",)).half()
    assert all(p.dtype == torch.float16 for p in half.parameters())
    for (k, p), p32 in zip(half.named_parameters(), heatmap_model.parameters()):
        assert torch.equal(p.float(), p32), k  # float16 -> float32 -> float16: lossless
    with torch.no_grad():
        y = half(torch.rand(1, 3, 256, 256))["heatmap"]
    assert y.dtype == torch.float16 and torch.isfinite(y).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_agrees_with_cpu(heatmap_model, coco4_crops):
    gpu = BlazePoseTorch(outputs=("heatmap",)).cuda()
    with torch.no_grad():
        a = gpu(coco4_crops[:4].cuda())["heatmap"].cpu()
        b = heatmap_model(coco4_crops[:4])["heatmap"]
    # TF32 convolutions may be on: a loose bound, and the same argmax
    assert (a - b).abs().max() < 0.05
    assert torch.equal(a.flatten(2).argmax(-1), b.flatten(2).argmax(-1))


def test_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="BlazePose model file"):
        BlazePoseTorch(tmp_path / "none.tflite")
    with pytest.raises(ValueError, match="outputs must be"):
        BlazePoseTorch(outputs=("heatmaps",))
    with pytest.raises(ValueError, match="outputs must be"):
        BlazePoseTorch(outputs=())
    graph = parse_tflite(default_blazepose_path())
    with pytest.raises(ValueError, match="not computed by the graph"):
        TFLiteModule(graph, [graph.ops[0].inputs[1]])  # a constant
    with pytest.raises(ValueError, match="dtype"):
        BlazePoseTorchModel(dtype=torch.float64)


# ------------------------------------------------------------------ the pipeline adapter


def test_adapter_has_the_litert_adapters_attributes():
    ours, theirs = BlazePoseTorchModel(), BlazePoseModel(num_threads=1)
    check_model(ours)
    for a in ("input_size", "mean", "std", "channel_order", "dtype", "num_joints", "joint_map", "box_preset",
              "heatmap_offset", "heatmap_activation", "device"):
        assert getattr(ours, a) == getattr(theirs, a), a
    assert set(ours.module.outputs) == {"heatmap"}
    assert not any(p.requires_grad for p in ours.module.parameters())
    with pytest.raises(ValueError, match="crops must be"):
        ours(torch.rand(2, 3, 256, 192))


def test_pipeline_with_the_torch_model_keeps_the_same_poses(coco4):
    """rmpe.pipeline.Pipeline with BlazePoseTorchModel against BlazePoseModel (LiteRT) on data/coco4's 118
    real boxes: the same proposals, the same poses kept by AlphaPose's NMS, the same keypoints."""
    frames, per_frame, ids = coco4
    res = {}
    for name, model in (("litert", BlazePoseModel(num_threads=1)), ("torch", BlazePoseTorchModel())):
        pipe = Pipeline(model, nms="alphapose", interpolation="opencv4", batch_size=64)
        res[name] = pipe(frames, per_frame, ids)
    a, b = res["litert"], res["torch"]
    assert a.num_proposals == b.num_proposals == 118
    # measured: the same positions before NMS (argmax + quarter-offset refinement), joint scores within 6.2e-5
    assert (a.proposals.poses - b.proposals.poses).abs().max() < 1e-3
    torch.testing.assert_close(b.proposals.scores, a.proposals.scores, atol=1e-3, rtol=0)
    assert torch.equal(a.keep, b.keep) and len(a.results) == len(b.results) == 50
    ka = np.array([r["keypoints"] for r in a.results]).reshape(-1, 17, 3)
    kb = np.array([r["keypoints"] for r in b.results]).reshape(-1, 17, 3)
    # measured after NMS's merging: positions within 1.2e-4 px, scores within 4.5e-5
    assert np.abs(ka[..., :2] - kb[..., :2]).max() < 1e-2
    assert np.abs(ka[..., 2] - kb[..., 2]).max() < 1e-3
    assert max(abs(x["score"] - y["score"]) for x, y in zip(a.results, b.results)) < 1e-3
