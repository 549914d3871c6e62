"""rmpe.sstn.trainer, rmpe.sstn.datasets, rmpe.sstn.augment and ``rmpe train``: resumable training (bit-identical to an
uninterrupted run), atomic checkpoints, targets aligned with the real GT joints, box augmenters, and a
short training on real COCO persons."""
import json
import math
import os
import pathlib

import numpy as np
import pytest
import torch

from rmpe.sstn import SSTN
from rmpe.sstn.augment import JitterAugmenter, PGPGAugmenter, make_augmenter
from rmpe.sstn.datasets import (CropSet, crops_from_boxes, heatmap_to_image_theta, load_frames, load_persons,
                                make_crops, split_by_image)
from rmpe.sstn.hourglass import StackedHourglass
from rmpe.sstn.trainer import Trainer, TrainConfig, evaluate, set_seed


def _threads():
    """OMP_NUM_THREADS when set (CI runs the learning tests at 1 and 2), else 2."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return 2


torch.set_num_threads(_threads())


def synthetic_crops(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, 17, 8, 6, generator=g)
    star = torch.eye(2, 3).repeat(n, 1, 1)
    star[:, :, 2] = (torch.rand(n, 2, generator=g) - 0.5) * 0.4
    kp = torch.cat([torch.rand(n, 17, 2, generator=g, dtype=torch.float64) * 20, torch.full((n, 17, 1), 2.0,
                                                                                          dtype=torch.float64)], 2)
    return CropSet(torch.randn(n, 3, 32, 24, generator=g), t, torch.ones(n, 17), t.clone(), torch.ones(n, 17), star,
                   torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64).repeat(n, 1, 1),
                   torch.zeros(n, 4, dtype=torch.float64), kp, torch.full((n, 4), 20.0, dtype=torch.float64),
                   torch.arange(n), torch.zeros(n, dtype=torch.long))


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return SSTN(StackedHourglass(stacks=1, width=8, depth=1), input_size=(32, 24), loc_width=4, loc_blocks=(1, 1))


def test_resume_gives_the_uninterrupted_result(tmp_path):
    data, val = synthetic_crops(), synthetic_crops(8, seed=1)
    cfg = TrainConfig(epochs=3, batch_size=8, lr=1e-3, schedule="step", lr_milestones=[2], sppe_warmup_epochs=1,
                      progress=False, seed=3)
    set_seed(0)
    a = Trainer(tiny_model(), data, cfg, val=val, out_dir=tmp_path / "a")
    hist_a = a.fit()
    set_seed(0)
    b = Trainer(tiny_model(), data, cfg, val=val, out_dir=tmp_path / "b")
    b.fit(epochs=2)
    torch.manual_seed(123)  # the interruption disturbs the global generators: the checkpoint restores them
    np.random.seed(7)
    c = Trainer(tiny_model(seed=99), data, cfg, val=val, out_dir=tmp_path / "b")
    hist_c = c.fit(resume=True)
    assert c.epoch == 3 and len(hist_c) == 3
    assert hist_c == hist_a
    for (k, pa), (_, pc) in zip(a.model.state_dict().items(), c.model.state_dict().items()):
        assert torch.equal(pa, pc), k
    assert a.optimizer.param_groups[0]["lr"] == c.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    # a different seed does not give the same run (the test can fail)
    cfg2 = TrainConfig(**{**cfg.__dict__, "seed": 4})
    set_seed(0)
    d = Trainer(tiny_model(), data, cfg2, val=val)
    assert d.fit() != hist_a


def test_checkpoint_contents_and_errors(tmp_path):
    t = Trainer(tiny_model(), synthetic_crops(8), TrainConfig(epochs=1, batch_size=8, progress=False),
                out_dir=tmp_path)
    t.fit()
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    assert {"model", "optimizer", "scheduler", "epoch", "history", "rng", "config"} <= set(state)
    assert state["epoch"] == 1 and os.path.isfile(tmp_path / "history.json")
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not be read"):
        t.load_checkpoint(str(tmp_path / "bad.pt"))
    with pytest.raises(FileNotFoundError):
        t.load_checkpoint(str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="linear").check()
    with pytest.raises(ValueError, match="SSTN"):
        Trainer(torch.nn.Linear(2, 2), synthetic_crops(4), TrainConfig())


def test_jitter_augmenter():
    kp = np.zeros((17, 3))
    box = (100.0, 50.0, 40.0, 80.0)
    aug = JitterAugmenter(shift=0.1, scale=(0.9, 1.1))
    b1 = aug.sample_boxes(kp, box, 500, np.random.default_rng(0))
    b2 = aug.sample_boxes(kp, box, 500, np.random.default_rng(0))
    assert b1.shape == (500, 4) and b1.dtype == np.float64 and np.array_equal(b1, b2)
    cx, cy = (b1[:, 0] + b1[:, 2]) / 2, (b1[:, 1] + b1[:, 3]) / 2
    w, h = b1[:, 2] - b1[:, 0], b1[:, 3] - b1[:, 1]
    assert np.abs(cx - 120).max() <= 4 + 1e-9 and np.abs(cy - 90).max() <= 8 + 1e-9
    assert np.abs(cx - 120).max() > 3 and (w / 40).min() >= 0.9 - 1e-12 and (h / 80).max() <= 1.1 + 1e-12
    g = JitterAugmenter(shift=0.1, distribution="gaussian", keep_aspect=True).sample_boxes(kp, box, 2000,
                                                                                          np.random.default_rng(1))
    gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    assert np.allclose(gw / 40, gh / 80) and abs(np.std((g[:, 0] + g[:, 2]) / 2 - 120) / 4 - 1) < 0.1
    assert JitterAugmenter().sample_boxes(kp, box, 0, np.random.default_rng(0)).shape == (0, 4)
    for bad in [dict(keypoints=np.zeros((17, 2))), dict(gt_box_xywh=(0, 0, -1, 5)), dict(n=-1), dict(n=2.5),
                dict(rng=np.random.RandomState(0)), dict(keypoints=np.full((17, 3), np.nan))]:
        args = dict(keypoints=kp, gt_box_xywh=box, n=3, rng=np.random.default_rng(0), **{})
        args.update(bad)
        with pytest.raises(ValueError):
            aug.sample_boxes(**args)
    with pytest.raises(ValueError, match="distribution"):
        JitterAugmenter(distribution="laplace")
    with pytest.raises(ValueError, match="augmenter"):
        make_augmenter("random")


def test_pgpg_augmenter_wraps_any_model_and_checks_it():
    class Fixed:
        def __init__(self, boxes):
            self.boxes = boxes

        def sample_boxes(self, keypoints, gt_box_xywh, n, rng):
            return np.repeat(np.asarray(self.boxes, dtype=np.float64)[None], n, 0)

    kp, box, rng = np.zeros((17, 3)), (0, 0, 10, 20), np.random.default_rng(0)
    assert np.array_equal(PGPGAugmenter(Fixed([1, 2, 3, 4])).sample_boxes(kp, box, 2, rng), [[1, 2, 3, 4]] * 2)
    with pytest.raises(ValueError, match="empty"):
        PGPGAugmenter(Fixed([5, 2, 3, 4])).sample_boxes(kp, box, 2, rng)
    with pytest.raises(ValueError, match="sample_boxes"):
        PGPGAugmenter(object())


def test_pgpg_augmenter_default_model():
    try:
        aug = make_augmenter("pgpg")
    except (ValueError, FileNotFoundError) as e:
        pytest.skip(f"the shipped PGPG model is not available: {e}")
    kp = np.array([[50, 20, 2]] * 5 + [[40, 40, 2], [60, 40, 2]] + [[50, 60, 2]] * 4 + [[45, 80, 2], [55, 80, 2]]
                  + [[50, 100, 2]] * 4, dtype=np.float64)
    b = aug.sample_boxes(kp, (35, 10, 30, 100), 64, np.random.default_rng(0))
    assert b.shape == (64, 4) and np.isfinite(b).all()
    assert np.array_equal(b, aug.sample_boxes(kp, (35, 10, 30, 100), 64, np.random.default_rng(0)))


def _mmpose(shared_data):
    root = shared_data / "mmpose_tests" / "coco"
    return load_persons(root / "test_coco.json", root, min_keypoints=3)


def test_targets_align_with_the_gt_joints(shared_data):
    """Decoding the proposal-frame targets through heatmap_to_image_theta gives back the GT joints
    (to the quantization of the heatmap grid); a GT-box proposal has theta_star = identity and equal
    proposal and centred targets; the crops are the image where the proposal lies."""
    from rmpe_ext.ops import heatmap_decode

    persons = _mmpose(shared_data)
    frames = load_frames(persons)
    cs = make_crops(persons, frames, JitterAugmenter(shift=0.2), 4, np.random.default_rng(0), sigma=1.0)
    m = heatmap_to_image_theta(cs.proposal_theta_px, (64, 48), (16, 12))
    pts, _ = heatmap_decode(cs.target, m, refine="none")
    ok = cs.weight > 0
    err = (pts.double() - cs.keypoints[..., :2]).norm(dim=-1)[ok]
    stride = cs.proposal_theta_px[:, 0, 0][:, None].expand_as(ok)[ok] * 4
    assert ok.sum() > 100 and (err <= 0.75 * stride).all()  # within half a heatmap pixel per axis
    # unlabelled joints and joints outside the proposal weigh 0
    assert (cs.weight[cs.keypoints[..., 2] == 0] == 0).all()
    gt = np.array([[p.bbox[0], p.bbox[1], p.bbox[0] + p.bbox[2], p.bbox[1] + p.bbox[3]] for p in persons])
    c0 = crops_from_boxes(persons, frames, gt, np.arange(len(persons)), sigma=1.0)
    torch.testing.assert_close(c0.theta_star, torch.eye(2, 3).expand(len(persons), 2, 3), rtol=0, atol=1e-5)
    torch.testing.assert_close(c0.target, c0.centred_target, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="person_index"):
        crops_from_boxes(persons, frames, gt[:2], [0])
    with pytest.raises(ValueError, match="x2 > x1"):
        crops_from_boxes(persons, frames, [[10, 10, 5, 20]], [0])


def test_split_by_image_keeps_images_apart(shared_data):
    persons = _mmpose(shared_data)
    tr, va = split_by_image(persons, 0.5, seed=0)
    assert tr and va and not ({p.image_path for p in tr} & {p.image_path for p in va})
    assert len(tr) + len(va) == len(persons)


# Seed spread of the short run (examples/sstn_seed_spread.py --part short --short-epochs 6; 20 runs per
# branch: seeds 0-7 at 1 thread, 0-3 at 2 threads with torch's default kernels (AVX512 on the Intel Xeon it
# ran on), 0-3 at 1 and 2 threads with ATEN_CPU_CAPABILITY=default), mean +- SD (min..max):
#   training loss last / first epoch   parallel 0.350 +- 0.033 (0.287..0.385), none 0.349 +- 0.033
#   held-out loss after / before       parallel 0.261 +- 0.118 (0.108..0.460), none 0.259 +- 0.117
#   held-out PCK@0.2 gain              parallel +0.108 +- 0.017 (+0.080..+0.139), none +0.111 +- 0.019
# Limits: mean + 3 SD for the ratios, mean - 3 SD for the PCK gain, rounded towards the weaker claim.
SHORT_EPOCHS = 6
SHORT_LIMITS = {"loss_ratio": 0.46, "val_loss_ratio": 0.62, "pck_gain": 0.05}


@pytest.mark.learning
def test_short_training_on_real_persons(shared_data):
    """A short run on real COCO persons (coco_mini train2017 + mmpose) with jittered boxes, evaluated on
    held-out coco_mini val2017 persons: the training loss falls and the held-out heatmap loss and PCK
    improve over 6 epochs (1 of SPPE warm-up), with and without the parallel branch, by more than the
    measured seed spread allows to be chance (table above). At 3 epochs, as this test ran before, the
    PCK gain was +0.062 +- 0.024 (min +0.024) over 21 runs: within 3 SD of no gain, hence the 6 epochs.
    The displacement measure is computed and checked finite only: at this scale the STN (a ResNet
    localization net trained end to end) does not reduce it (measured, both branches, 40 runs: reduction
    -0.0025 +- 0.0052)."""
    torch.set_num_threads(_threads())
    root = shared_data / "coco_mini"
    train_p = load_persons(root / "person_keypoints_train2017_cocomini.json", root / "train2017", min_keypoints=5)
    val_p = load_persons(root / "person_keypoints_val2017_cocomini.json", root / "val2017", min_keypoints=8)[:20]
    frames = load_frames(train_p + val_p)
    aug = JitterAugmenter(shift=0.25, scale=(0.9, 1.1), keep_aspect=True)
    tr = make_crops(train_p, frames, aug, 4, np.random.default_rng(0), sigma=2.0)
    va = make_crops(val_p, frames, aug, 2, np.random.default_rng(1), sigma=2.0)
    lim = SHORT_LIMITS
    for parallel in ("shared", None):
        set_seed(0)
        model = SSTN(StackedHourglass(stacks=1, width=16, depth=2), parallel=parallel, loc_width=8,
                     loc_blocks=(1, 1, 1))
        before = evaluate(model, va)
        cfg = TrainConfig(epochs=SHORT_EPOCHS, lr=3e-3, loc_lr=1e-3, sppe_warmup_epochs=1, progress=False, seed=0)
        hist = Trainer(model, tr, cfg, val=va).fit()
        assert hist[-1]["main_loss"] < lim["loss_ratio"] * hist[0]["main_loss"], (parallel, hist)
        assert hist[-1]["val_loss"] < lim["val_loss_ratio"] * before["loss"], (parallel, before, hist[-1])
        assert hist[-1]["val_pck"] > before["pck"] + lim["pck_gain"], (parallel, before, hist[-1])
        assert np.isfinite(hist[-1]["val_displacement_after"])


def test_flip_crops_mirror_everything_consistently(shared_data):
    """The mirrored crops decode back to the GT joints exactly as well as the originals (the mirrored
    proposal map and the swapped keypoints agree with the swapped, flipped heatmaps), theta_star's x
    translation changes sign, flipping twice is the identity, and the input is not changed."""
    from rmpe_ext.ops import heatmap_decode

    from rmpe.sstn.datasets import FLIP_PAIRS, flip_crops

    persons = _mmpose(shared_data)
    cs = make_crops(persons, load_frames(persons), JitterAugmenter(shift=0.2), 2, np.random.default_rng(0), sigma=1.0)
    images = cs.images.clone()
    f = flip_crops(cs)
    assert torch.equal(cs.images, images)
    errs = []
    for c in (cs, f):
        m = heatmap_to_image_theta(c.proposal_theta_px, (64, 48), (16, 12))
        pts, _ = heatmap_decode(c.target, m, refine="none")
        ok = c.weight > 0
        errs.append((pts.double() - c.keypoints[..., :2]).norm(dim=-1)[ok])
    assert len(errs[0]) > 50 and torch.allclose(errs[0].sort().values, errs[1].sort().values, atol=1e-6)
    torch.testing.assert_close(f.theta_star[:, 0, 2], -cs.theta_star[:, 0, 2])
    torch.testing.assert_close(f.theta_star[:, 1, 2], cs.theta_star[:, 1, 2])
    a, b = FLIP_PAIRS[2]  # shoulders
    torch.testing.assert_close(f.target[:, a], cs.target[:, b].flip(-1))
    ff = flip_crops(f)
    for name in ("images", "target", "weight", "theta_star", "proposal_theta_px", "keypoints"):
        torch.testing.assert_close(getattr(ff, name), getattr(cs, name), rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="CropSet"):
        flip_crops(images)


def test_resampled_crops_are_a_function_of_seed_and_epoch(shared_data):
    from rmpe.sstn.datasets import ResampledCrops

    persons = _mmpose(shared_data)
    frames = load_frames(persons)
    a = ResampledCrops(persons, frames, JitterAugmenter(shift=0.3), 3, seed=5, flip=True)
    b = ResampledCrops(persons, frames, JitterAugmenter(shift=0.3), 3, seed=5, flip=True)
    assert len(a(0)) == 3 * len(persons)
    assert torch.equal(a(0).images, b(0).images) and torch.equal(a(1).boxes, b(1).boxes)
    assert not torch.equal(a(0).boxes, a(1).boxes)
    assert not torch.equal(a(0).boxes, ResampledCrops(persons, frames, JitterAugmenter(), 3, seed=6)(0).boxes)
    with pytest.raises(ValueError, match="boxes_per_person"):
        ResampledCrops(persons, frames, JitterAugmenter(), 0)


def test_proposal_warmup_and_frozen_sppe():
    """warmup_crops='proposal' trains the SPPE on the proposals with the identity theta (the
    localization net is not used, so it does not move); freeze_sppe then keeps every SPPE weight and
    running statistic fixed while the localization net learns."""
    data, val = synthetic_crops(), synthetic_crops(8, seed=1)
    set_seed(0)
    model = tiny_model()
    loc0 = {k: v.clone() for k, v in model.loc_net.state_dict().items()}
    cfg = TrainConfig(epochs=3, batch_size=8, lr=1e-2, sppe_warmup_epochs=1, warmup_crops="proposal",
                      freeze_sppe=True, progress=False)
    t = Trainer(model, lambda e: data, cfg, val=val)
    sppe0 = {k: v.clone() for k, v in model.sppe.state_dict().items()}
    t.fit(epochs=1)
    assert all(torch.equal(v, model.loc_net.state_dict()[k]) for k, v in loc0.items())
    assert not all(torch.equal(v, model.sppe.state_dict()[k]) for k, v in sppe0.items())
    sppe1 = {k: v.clone() for k, v in model.sppe.state_dict().items()}
    t.fit()
    assert all(torch.equal(v, model.sppe.state_dict()[k]) for k, v in sppe1.items())
    assert not all(torch.equal(v, model.loc_net.state_dict()[k]) for k, v in loc0.items())
    with pytest.raises(ValueError, match="warmup_crops"):
        TrainConfig(warmup_crops="centre").check()
    with pytest.raises(ValueError, match="CropSet"):
        Trainer(model, lambda e: None, TrainConfig(epochs=1, progress=False)).fit()


def _centring_data(shared_data):
    """Training: coco_mini train2017 + mmpose + the coco_mini val2017 images without detector boxes
    (124 persons); held out: the val2017 persons of the 15 images with AP_H_56 boxes (53 persons)."""
    import json

    root = shared_data / "coco_mini"
    with open(root / "COCO_val2017_detections_AP_H_56_person_cocomini.json") as f:
        det_images = {int(d["image_id"]) for d in json.load(f)}
    val = load_persons(root / "person_keypoints_val2017_cocomini.json", root / "val2017", min_keypoints=5)
    train = (load_persons(root / "person_keypoints_train2017_cocomini.json", root / "train2017", min_keypoints=5)
             + _mmpose(shared_data) + [p for p in val if p.image_id not in det_images])
    return train, [p for p in val if p.image_id in det_images]


@pytest.fixture(scope="module")
def position_sensitive_sppe(shared_data):
    """An SSTN whose SPPE was warmed up on heavily displaced proposal crops (12 new jittered boxes per
    person per epoch, shift up to 0.3 of the box, random mirror; targets in the proposal's own frame),
    so that its heatmaps move with the person; the localization net (a spatial soft-argmax on those
    heatmaps, translation only) is still the identity."""
    from rmpe.sstn.datasets import ResampledCrops

    torch.set_num_threads(_threads())
    train_p, held_p = _centring_data(shared_data)
    frames = load_frames(train_p + held_p)
    aug = JitterAugmenter(shift=0.3, scale=(0.8, 1.25), keep_aspect=True)
    data = ResampledCrops(train_p, frames, aug, BOXES_PER_PERSON, seed=0, flip=True, sigma=2.0)
    held = make_crops(held_p, frames, aug, 8, np.random.default_rng(1), sigma=2.0)
    set_seed(0)
    model = SSTN(StackedHourglass(stacks=1, width=16, depth=2), loc_features="sppe", loc_transform="translation")
    cfg = TrainConfig(epochs=WARMUP, lr=2e-3, sppe_warmup_epochs=WARMUP, warmup_crops="proposal",
                      schedule="constant", progress=False, seed=0)
    hist = Trainer(model, data, cfg).fit()
    return model, data, held, hist


# examples/train_sstn.py's default sizes (its "jitter" runs), which its own docs table reports
WARMUP = 12
BOXES_PER_PERSON = 12
STN_EPOCHS = 4

# Seed spread of the centring run (`examples/sstn_seed_spread.py --matrix`, docs/sstn_training.md): 22 runs =
# seeds 0-9 at 1 thread and 0-3 at 2 threads with torch's default kernels (AVX512 on the Intel Xeon it ran
# on), seeds 0-3 at 1 and 2 threads with ATEN_CPU_CAPABILITY=default. Mean +- sample SD (min) after
# STN_EPOCHS epochs; displacement reductions before - after (> 0: towards the person), PCK@0.2 change after
# - before, loss: the last STN epoch's main loss (larger branch) over the first warm-up epoch's:
#
#                        parallel branch              none                         parallel - none
#   training persons     +0.0505 +- 0.0095 (+0.0356)  +0.0245 +- 0.0065 (+0.0117)  +0.0260 +- 0.0091 (+0.0101)
#   held-out persons     +0.0154 +- 0.0060 (+0.0069)  +0.0101 +- 0.0047 (+0.0009)  +0.0053 +- 0.0058 (-0.0032)
#   held-out PCK change  -0.0060 +- 0.0084 (-0.0194)  -0.0019 +- 0.0090 (-0.0265)
#   both branches' mean: training +0.0375 +- 0.0068, held-out +0.0127 +- 0.0045; loss ratio 0.314 +- 0.029
#
# Each limit is mean - 3 SD (mean + 3 SD for the loss), rounded towards the weaker claim; where that comes
# out below zero it is asserted as the bound it is ("moves away by no more than ..."), not as a reduction.
CENTRING_LIMITS = {
    "parallel": {"train": 0.022, "held": -0.003, "pck": -0.032, "loss": 0.41},
    "none": {"train": 0.004, "held": -0.004, "pck": -0.029, "loss": 0.41},
}
CENTRING_BOTH = {"train": 0.017, "held": -0.001}  # the two branches' mean reduction
CENTRING_PARALLEL_GAIN = -0.002  # parallel - none on the training persons: 0.0260 - 3 * 0.0091 = -0.0012


@pytest.mark.slow
@pytest.mark.learning
def test_stn_learns_to_centre_the_person(position_sensitive_sppe):
    """The paper's claim on real persons, at examples/train_sstn.py's default size: after the SPPE
    warm-up on displaced crops (12 epochs), 4 epochs of STN training with the SPPE frozen move the crop
    towards the person, with the parallel branch and without it (the SDTN's loss alone), and the heatmap
    loss falls over the run (0.068 -> 0.019, mostly in the warm-up).

    The limits are the measured seed spread's mean - 3 SD (table above; per-seed figures and the command
    in docs/sstn_training.md), not one run's figures: one run's figures are as much the seed, the thread
    count and the CPU's kernels as the method (at the old 8 + 3 epochs, seed 0 at 2 threads reduced the
    training persons' displacement by 0.0093 on the machine the old test was written on and by 0.0024
    on an Intel Xeon). Asserted:

    * the training persons' unseen boxes: the displacement falls, with either branch and on average;
    * the held-out persons: it falls on average over the spread (+0.013) but not by 3 SD in every run,
      so only their mean over both branches is asserted not to grow past the spread, and each branch's;
    * the parallel branch's extra reduction on the training persons (+0.026 +- 0.009, positive in all
      22 runs) is 2.9 SD from zero: asserted only not to be negative beyond the spread. On the held-out
      persons it is within noise (+0.005 +- 0.006): not asserted;
    * held-out PCK@0.2: centring does not improve it at this scale (-0.006 +- 0.008 with the parallel
      branch); asserted only not to drop by more than 3 SD.

    The reductions are small (the training persons' 0.32 falls by about 16% with the parallel branch,
    the held-out persons' by about 5%) because this SPPE's heatmaps carry little position: a linear probe
    on them corrects the held-out displacement only 0.320 -> 0.307.

    Both branches run here (one test, one shared warm-up)."""
    import copy

    base, data, held, warm = position_sensitive_sppe
    train_eval = data(100)  # boxes the run never trains on, of the training persons
    figures = {}
    for name, parallel in (("parallel", True), ("none", False)):
        model = copy.deepcopy(base)
        model.use_parallel = parallel
        before, before_train = evaluate(model, held), evaluate(model, train_eval)
        assert before["displacement_after"] == pytest.approx(before["displacement_before"])  # identity start
        cfg = TrainConfig(epochs=STN_EPOCHS, lr=2e-3, loc_lr=1e-3, freeze_sppe=True, schedule="constant",
                          progress=False, seed=0)
        hist = Trainer(model, lambda e: data(WARMUP + e), cfg).fit()
        after, after_train = evaluate(model, held), evaluate(model, train_eval)
        figures[name] = {
            "train": before_train["displacement_after"] - after_train["displacement_after"],
            "held": before["displacement_after"] - after["displacement_after"],
            "pck": after["pck"] - before["pck"],
            "loss": hist[-1]["main_loss"] / warm[0]["main_loss"],
            "displacement": (before_train["displacement_after"], after_train["displacement_after"],
                             before["displacement_after"], after["displacement_after"])}
    for name, lim in CENTRING_LIMITS.items():
        f = figures[name]
        assert f["loss"] < lim["loss"], (name, figures)
        assert f["train"] > lim["train"], (name, figures)
        assert f["held"] > lim["held"], (name, figures)
        assert f["pck"] > lim["pck"], (name, figures)
    for key, lim in CENTRING_BOTH.items():
        assert (figures["parallel"][key] + figures["none"][key]) / 2 > lim, (key, figures)
    assert figures["parallel"]["train"] - figures["none"]["train"] > CENTRING_PARALLEL_GAIN, figures


def test_train_command_end_to_end(tmp_path, capsys):
    """``rmpe train`` on the shipped sample (4 COCO images and their GT): checkpoints, resume, bad input."""
    from rmpe import cli

    coco4 = pathlib.Path(__file__).resolve().parents[2] / "data" / "coco4"
    args = ["train", "--data", str(coco4 / "test_coco.json"), "--images", str(coco4), "--epochs", "1",
            "--warmup-epochs", "0", "--width", "8", "--depth", "1", "--boxes-per-person", "2", "--threads", "1",
            "--no-progress", "--out", str(tmp_path / "ckpt"), "--seed", "0"]
    assert cli.main(args) == 0
    assert (tmp_path / "ckpt" / "last.pt").is_file()
    history = json.loads((tmp_path / "ckpt" / "history.json").read_text())
    assert len(history) == 1 and all(math.isfinite(v) for v in history[0].values() if isinstance(v, float))
    args[args.index("--epochs") + 1] = "2"
    assert cli.main(args + ["--resume"]) == 0
    assert len(json.loads((tmp_path / "ckpt" / "history.json").read_text())) == 2
    capsys.readouterr()
    assert cli.main(["train", "--data", str(tmp_path / "missing.json"), "--images", str(coco4)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.json" in err[0]
