"""rmpe.pipeline.models.fastpose: AlphaPose's FastPose checked against AlphaPose master's own run (the oracle in
shared/data/alphapose_master, README section 2): the state_dict schema, heatmaps of the deterministically
filled network on 8 real crops (17 and 26 joints), intermediate outputs; checkpoint loading; the pipeline
adapter (its crops against AlphaPose's test_transform crops, a run on data/coco4)."""
import json
import pathlib
from collections import OrderedDict

import numpy as np
import pytest
import torch

from rmpe.pipeline.detections import FrameBoxes, image_files, load_detections, load_image
from conftest import AdapterRecorder
from rmpe.pipeline.models import TorchHeatmapModel, check_model
from rmpe.pipeline.models.fastpose import FastPose, FastPoseModel, fastpose_state_dict, load_fastpose
from rmpe.pipeline import Pipeline
from rmpe_ext.alphapose import ALPHAPOSE_MEAN

ROOT = pathlib.Path(__file__).resolve().parents[2]
COCO4 = ROOT / "data" / "coco4"

# measured (torch 2.13 CPU, 1 thread, 2-core x86 VM): heatmaps j17 and j26 and both intermediates bit-identical
# to AlphaPose's run (max abs diff 0); 2 threads: 1.0e-7; ATEN_CPU_CAPABILITY=default: 1.3e-7 (heatmaps), 1.5e-7
# (preact, duc1). The oracle's README expects up to 1e-7 (2 threads) .. 4.2e-7
# (channels-last), so 2e-6 leaves room for other CPUs' kernels; the smallest mistake tried (BN eps 1e-3) gives 1.9e-4.
ATOL = 2e-6


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ the oracle's weight fill rule (test helper)


def fill_value(i, key, shape):
    """Entry ``i`` (index in the sorted key order) of the oracle's deterministic fill (README section 2)."""
    shape = tuple(shape)
    n = int(np.prod(shape)) if shape else 1
    if key.endswith("num_batches_tracked"):
        return np.zeros(shape, np.int64)
    with np.errstate(over="ignore"):
        x = np.arange(n, dtype=np.uint32) + np.uint32((i * 2654435761) % 2**32)
        x ^= x >> np.uint32(16)
        x *= np.uint32(0x7feb352d)
        x ^= x >> np.uint32(15)
        x *= np.uint32(0x846ca68b)
        x ^= x >> np.uint32(16)
    u = x.astype(np.float64) / 2**32
    r = 2 * u - 1
    if key.endswith("running_mean"):
        v = 0.1 * r
    elif key.endswith("running_var"):
        v = 1 + 0.5 * u
    elif len(shape) >= 2:
        v = r * np.sqrt(6.0 / (n // shape[0]))
    elif key.endswith(".weight"):
        v = 0.5 + 0.1 * r
    else:
        v = 0.1 * r
    return v.astype(np.float32).reshape(shape)


def _lowbias32_py(x):
    x ^= x >> 16
    x = (x * 0x7feb352d) % 2**32
    x ^= x >> 15
    x = (x * 0x846ca68b) % 2**32
    return x ^ (x >> 16)


def filled_state_dict(entries):
    """``{key: tensor}`` filled by the rule; ``entries``: (index, key, shape) in any order."""
    return {key: torch.from_numpy(fill_value(i, key, shape)) for i, key, shape in entries}


def own_entries(num_joints):
    """(sorted index, key, shape) of our own FastPose's state_dict: the schema's when the schema test passes, so
    the tests below that do not compare with AlphaPose's outputs run without the shared data."""
    sd = FastPose(num_joints).state_dict()
    return [(i, k, tuple(sd[k].shape)) for i, k in enumerate(sorted(sd))]


@pytest.fixture(scope="module")
def own_filled_j17():
    return filled_state_dict(own_entries(17))


def test_fill_rule_helper_matches_pure_python():
    v = fill_value(5, "x.weight", (4, 3, 3, 3))
    for k in (0, 17, 107):
        h = _lowbias32_py((k + 5 * 2654435761) % 2**32)
        assert v.reshape(-1)[k] == np.float32((2 * h / 2**32 - 1) * np.sqrt(6.0 / 27))
    assert fill_value(3, "a.num_batches_tracked", ()).dtype == np.int64
    assert (fill_value(9, "a.running_var", (10,)) >= 1).all()


# ------------------------------------------------------------------ the oracle


def _schema(shared_data, j):
    return json.loads((shared_data / "alphapose_master" / f"fastpose_state_dict_schema_j{j}.json").read_text())


@pytest.fixture(scope="module")
def oracle(shared_data):
    path = shared_data / "alphapose_master" / "fastpose_io.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def schema_filled(shared_data):
    """``{J: state_dict}`` filled by the rule from the schema files (what the oracle's FastPose held)."""
    return {j: filled_state_dict((e["index"], e["key"], e["shape"])
                                 for e in _schema(shared_data, j)["entries_sorted_by_key"]) for j in (17, 26)}


@pytest.fixture(scope="module")
def runs(schema_filled, oracle):
    """Our FastPose (J = 17 and 26) filled from the schema, run once on the 8 oracle crops, with the backbone
    (``preact``) and ``duc1`` outputs of crop 0 and the J=17 module."""
    x = torch.from_numpy(oracle["input_crops"])
    out = {}
    for j in (17, 26):
        model = FastPose(j)
        model.load_state_dict(schema_filled[j], strict=True)
        model.eval()
        seen = {}
        hooks = [getattr(model, name).register_forward_hook(lambda m, a, y, name=name: seen.__setitem__(name, y))
                 for name in ("preact", "duc1")]
        with torch.inference_mode():
            out[j] = model(x).numpy()
        for h in hooks:
            h.remove()
        out[f"{j}_preact"], out[f"{j}_duc1"] = seen["preact"][0].numpy(), seen["duc1"][0].numpy()
        out[f"{j}_model"] = model
    return out


@pytest.mark.parametrize("j", [17, 26])
def test_state_dict_schema(shared_data, schema_filled, j):
    sch = _schema(shared_data, j)
    sd = FastPose(j).state_dict()
    assert sch["num_joints"] == j and sch["n_entries"] == len(sd) == 348
    assert list(sd) == sch["module_registration_order"]
    entries = sch["entries_sorted_by_key"]
    assert [e["key"] for e in entries] == sorted(sd) and [e["index"] for e in entries] == list(range(len(sd)))
    for e in entries:
        t = sd[e["key"]]
        assert (list(t.shape), str(t.dtype)) == (e["shape"], "torch." + e["dtype"]), e["key"]
    assert sum(t.numel() for t in sd.values() if t.is_floating_point()) == sch["n_params_float"]
    # the filled dict (what an AlphaPose checkpoint looks like) loads strictly and round-trips exactly
    filled = schema_filled[j]
    assert set(filled) == set(sd)
    model = FastPose(j)
    assert not model.load_state_dict(filled, strict=True).missing_keys
    got = model.state_dict()
    assert all(torch.equal(got[k], filled[k]) and got[k].dtype == filled[k].dtype for k in filled)


@pytest.mark.parametrize("j", [17, 26])
def test_heatmaps_match_alphapose(runs, oracle, j):
    ref = oracle[f"heatmaps_j{j}"]
    ours = runs[j]
    assert ours.shape == ref.shape == (8, j, 64, 48) and ours.dtype == np.float32
    diff = np.abs(ours - ref).max()
    print(f"FastPose J={j}: max abs diff to AlphaPose's heatmaps {diff:.3g}")
    assert diff <= ATOL
    # AlphaPose's float64 run (rounded to float32) agrees as well
    if j == 17:
        assert np.abs(ours - oracle["heatmaps_j17_computed_in_float64"]).max() <= ATOL


def test_j26_first_17_channels_are_j17(runs):
    np.testing.assert_allclose(runs[26][:, :17], runs[17], rtol=0, atol=ATOL)


@pytest.mark.parametrize("name", ["preact", "duc1"])
def test_intermediate_outputs_match_alphapose(runs, oracle, name):
    ref = oracle[f"j17_crop0_{name}"]
    ours = runs[f"17_{name}"]
    assert ours.shape == ref.shape
    diff = np.abs(ours - ref).max()
    print(f"FastPose {name} (crop 0): max abs diff {diff:.3g}")
    assert diff <= ATOL
    # the J=26 model has the same backbone and duc1 weights (the fill depends on the sorted index only)
    assert np.abs(runs[f"26_{name}"] - ref).max() <= ATOL


def _bn_eps_1e3(model):
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eps = 1e-3


def _no_se_in_layer3(model):
    model.preact.layer3[0].se = None


def _no_relu_in_duc2(model):
    model.duc2.relu = torch.nn.Identity()


@pytest.mark.parametrize("mutate", [_bn_eps_1e3, _no_se_in_layer3, _no_relu_in_duc2],
                         ids=["bn-eps-1e-3", "no-se-layer3", "no-relu-duc2"])
def test_oracle_tells_small_architecture_errors(runs, oracle, mutate):
    """The tolerance is far below what a plausible mistake costs (measured on crop 0: BN eps 1e-3 1.9e-4, no SE
    in layer3's first block 7.3e-3, no ReLU in duc2 0.22)."""
    import copy

    model = copy.deepcopy(runs["17_model"])
    mutate(model)
    with torch.inference_mode():
        y = model(torch.from_numpy(oracle["input_crops"][:1])).numpy()
    diff = np.abs(y - oracle["heatmaps_j17"][:1]).max()
    print(f"{mutate.__name__}: max abs diff {diff:.3g}")
    assert diff > 50 * ATOL


# ------------------------------------------------------------------ the pipeline adapter on data/coco4


# the oracle's 8 persons: the best-scored boxes of data/coco4's shipped detections, per image
TOP_BOXES = ((785, 1), (197388, 3), (40083, 2), (196141, 2))


@pytest.fixture(scope="module")
def coco4_top8():
    """data/coco4's frames (BGR) and, per frame, its best-scored shipped detector boxes (8 in all)."""
    dets = load_detections(COCO4 / "test_coco_det_AP_H_56.json")
    ids = [i for i, _ in TOP_BOXES]
    files = image_files(COCO4, ids, COCO4 / "test_coco.json")
    per_frame = []
    for i, k in TOP_BOXES:
        fb = dets[i]
        order = torch.argsort(fb.scores, descending=True, stable=True)[:k]
        per_frame.append(FrameBoxes(fb.boxes[order], fb.scores[order]))
    return [load_image(files[i]) for i in ids], per_frame, ids


@pytest.fixture(scope="module")
def pipeline_run(coco4_top8, own_filled_j17):
    """The filled FastPose (J=17) through the whole pipeline (AlphaPose's NMS) on those 8 persons, recorded."""
    model = FastPose(17)
    model.load_state_dict(own_filled_j17, strict=True)
    rec = AdapterRecorder(FastPoseModel(model))
    frames, per_frame, ids = coco4_top8
    pipe = Pipeline(rec, nms="alphapose", batch_size=8)
    return pipe, pipe(frames, per_frame, ids), torch.cat(rec.crops), torch.cat(rec.heatmaps)


def test_pipeline_end_to_end_on_coco4(pipeline_run, coco4_top8, own_filled_j17):
    """Untrained (filled) weights: no accuracy claim, only that every stage runs and gives finite numbers."""
    pipe, res, crops, heatmaps = pipeline_run
    assert crops.shape == (8, 3, 256, 192) and heatmaps.shape == (8, 17, 64, 48)
    assert torch.isfinite(heatmaps).all()
    assert res.num_proposals == 8 and res.image_ids == [i for i, _ in TOP_BOXES]
    assert torch.isfinite(res.proposals.poses).all() and torch.isfinite(res.proposals.joint_scores).all()
    pre = res.pre_nms_results()
    assert len(pre) == 8
    for r in pre:
        assert len(r["keypoints"]) == 51 and np.isfinite(r["keypoints"]).all() and np.isfinite(r["score"])
    # the heatmap peaks of these weights (~0.1-0.25) are below AlphaPose NMS's keep threshold (0.3): it keeps
    # nothing; OKS-NMS keeps poses, all finite
    assert all(np.isfinite(r["keypoints"]).all() for r in res.results)
    oks = pipe.renms(res, "oks")
    assert 0 < len(oks) <= 8 and all(np.isfinite(r["keypoints"]).all() for r in oks)
    # the Halpe-26 model through its adapter (joints 0-16 = COCO-17): the same poses for the same box
    frames, per_frame, ids = coco4_top8
    j26 = FastPose(26)
    j26.load_state_dict(filled_state_dict(own_entries(26)), strict=True)
    res26 = Pipeline(FastPoseModel(j26), nms="none")(frames[:1], per_frame[:1], ids[:1])
    torch.testing.assert_close(res26.proposals.poses, res.proposals.poses[:1], atol=1e-4, rtol=0)
    torch.testing.assert_close(res26.proposals.joint_scores, res.proposals.joint_scores[:1], atol=ATOL, rtol=0)


def test_pipeline_crops_and_heatmaps_match_alphapose(shared_data, oracle, pipeline_run):
    """The adapter's crops of the 8 oracle persons are AlphaPose's SimpleTransform.test_transform crops (OpenCV
    5: RGB, /255, minus the mean) to one uint8 step on a few values, and the heatmaps follow."""
    _, _, crops, heatmaps = pipeline_run
    ref = torch.from_numpy(oracle["input_crops"])
    diff = (crops - ref).abs()
    print(f"adapter crops: max abs diff {diff.max():.3g} on {(diff > 1e-6).float().mean():.2g} of the values")
    assert diff.max() <= 1 / 255 + 1e-6 and (diff > 1e-6).float().mean() < 1e-3
    hdiff = (heatmaps - torch.from_numpy(oracle["heatmaps_j17"])).abs().max()
    print(f"pipeline heatmaps: max abs diff {hdiff:.3g}")
    assert hdiff < 5e-5  # measured 2.9e-6


# ------------------------------------------------------------------ checkpoints


def test_checkpoint_round_trip(tmp_path, own_filled_j17, pipeline_run):
    """torch.save of the filled state_dict (as AlphaPose saves its checkpoints), and of it wrapped with
    DataParallel's 'module.' prefixes, loads back with the same weights and bit-identical heatmaps."""
    crop0 = pipeline_run[2][:1]  # a real crop (batch of one: a batch of 8 may round differently)
    original = FastPose(17)
    original.load_state_dict(own_filled_j17, strict=True)
    with torch.inference_mode():
        ref = original.eval()(crop0)
    assert (ref - pipeline_run[3][:1]).abs().max() < 1e-5
    plain = tmp_path / "fast_res50_256x192.pth"
    torch.save(own_filled_j17, plain)
    prefixed = OrderedDict(("module." + k, v) for k, v in own_filled_j17.items())
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": prefixed, "epoch": 3}, wrapped)
    for src in (plain, str(wrapped), {"model": prefixed}):
        m = load_fastpose(src)
        assert isinstance(m, FastPose) and not m.training and m.num_joints == 17
        got = m.state_dict()
        assert set(got) == set(own_filled_j17)
        assert all(torch.equal(got[k], v) for k, v in own_filled_j17.items())
        with torch.inference_mode():
            assert torch.equal(m(crop0), ref)
    adapter = FastPoseModel.from_checkpoint(plain, device="cpu")
    assert adapter.num_joints == 17 and torch.equal(adapter(crop0), ref)


def test_load_fastpose_infers_and_checks_num_joints():
    sd = FastPose(26).state_dict()
    m = load_fastpose({"model": sd})
    assert m.num_joints == 26 and m.conv_out.out_channels == 26 and not m.training
    assert load_fastpose(sd, num_joints=26).num_joints == 26
    with pytest.raises(ValueError, match="num_joints=17"):
        load_fastpose(sd, num_joints=17)


def test_load_fastpose_refuses_other_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_fastpose(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="conv_out.weight"):
        load_fastpose({"a.weight": torch.zeros(2)})
    with pytest.raises(ValueError, match="state_dict"):
        fastpose_state_dict([1, 2])
    sd = FastPose(17).state_dict()
    sd["preact.layer1.1.se.fc.0.weight"] = torch.zeros(256, 256)  # SE where AlphaPose has none
    with pytest.raises(ValueError, match="Unexpected key"):
        load_fastpose(sd)
    sd = FastPose(17).state_dict()
    del sd["duc2.bn.running_var"]
    with pytest.raises(ValueError, match="Missing key"):
        load_fastpose(sd)


# ------------------------------------------------------------------ the adapter's settings


def test_adapter_settings():
    import rmpe.pipeline.models

    assert rmpe.pipeline.models.FastPoseModel is FastPoseModel and rmpe.pipeline.models.load_fastpose is load_fastpose
    m = FastPoseModel(FastPose(17))
    check_model(m)
    assert isinstance(m, TorchHeatmapModel)
    assert (m.input_size, m.mean, m.std, m.channel_order, m.dtype) == ((256, 192), ALPHAPOSE_MEAN, (1.0, 1.0, 1.0),
                                                                      "RGB", torch.float32)
    assert (m.num_joints, m.joint_map, m.box_preset, m.heatmap_offset, m.heatmap_activation) == (
        17, None, "alphapose", 0.0, None)
    assert not m.module.training
    h = FastPoseModel(FastPose(26))
    assert h.num_joints == 26 and h.joint_map == tuple(range(17))
    with pytest.raises(ValueError, match="joint_map"):
        FastPoseModel(FastPose(21))
    assert FastPoseModel(FastPose(21), joint_map=range(17)).num_joints == 21
