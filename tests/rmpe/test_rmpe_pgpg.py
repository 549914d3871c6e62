"""PGPG: atomic poses, per-atom box-offset mixtures, the box augmenter, the fit-pgpg command."""
import json
import os

import numpy as np
import pytest

from rmpe import cli
from rmpe.pgpg import (DEFAULT_MODEL, NO_ATOM, PGPG, align_pose, box_offsets, cross_validate, load_default,
                       match_detections, matched_pairs, offsets_to_boxes, torso)

SUBSET = "coco_val2017_subset538"
GT_NAME = "person_keypoints_val2017_subset538.json"
DET_NAME = "COCO_val2017_detections_AP_H_56_person_subset538.json"

# a standing COCO-17 pose (x, y) in a unit frame: head at the top, ankles at the bottom
STANDING = np.array([[0, 0], [-.05, -.05], [.05, -.05], [-.12, 0], [.12, 0], [-.25, .3], [.25, .3],
                     [-.3, .65], [.3, .65], [-.32, 1.0], [.32, 1.0], [-.18, 1.05], [.18, 1.05],
                     [-.2, 1.5], [.2, 1.5], [-.2, 1.95], [.2, 1.95]])
MU = {"standing": np.array([0.08, -0.02, 0.10, 0.0]), "lying": np.array([-0.10, 0.05, -0.06, 0.12])}


def _pose_kp(xy, v=2):
    kp = np.zeros((17, 3))
    kp[:, :2] = xy
    kp[:, 2] = v
    return kp


def _synthetic(n_images=160, seed=0):
    """Images with one standing or one lying person; the detector's box offsets depend on the pose
    (MU, small noise); plus a low-score stray detection per image. -> (gt dict, detections list)."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(n_images):
        kind = "standing" if i % 2 == 0 else "lying"
        xy = STANDING + rng.normal(0, 0.02, STANDING.shape)
        if kind == "lying":
            xy = xy[:, ::-1] * np.array([1.0, 1.0])  # swap x and y: lying along x
        scale = rng.uniform(80, 200)
        xy = xy * scale + rng.uniform(50, 300, 2)
        kp = _pose_kp(xy)
        kp[rng.random(17) < 0.1, 2] = 0  # some joints unlabelled
        kp[[5, 11], 2] = 2
        kp[kp[:, 2] == 0, :2] = 0
        lo, hi = xy.min(0) - 5, xy.max(0) + 5
        box = [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]
        images.append({"id": i, "width": 640, "height": 480})
        anns.append({"id": 1000 + i, "image_id": i, "category_id": 1, "iscrowd": 0, "bbox": box, "area": box[2] * box[3],
                     "num_keypoints": int((kp[:, 2] > 0).sum()), "keypoints": kp.reshape(-1).tolist()})
        off = MU[kind] + rng.normal(0, 0.015, 4)
        det = offsets_to_boxes(off[None], box)[0]
        dets.append({"image_id": i, "category_id": 1, "score": float(rng.uniform(0.6, 1.0)),
                     "bbox": [det[0], det[1], det[2] - det[0], det[3] - det[1]]})
        dets.append({"image_id": i, "category_id": 1, "score": 0.05, "bbox": [0, 0, 30, 30]})
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": 1, "name": "person", "keypoints": [str(k) for k in range(17)]}]}
    return gt, dets


@pytest.fixture(scope="module")
def synthetic():
    return _synthetic()


@pytest.fixture(scope="module")
def synthetic_model(synthetic):
    return PGPG.fit(*synthetic, n_atoms=2, min_atom_samples=20, prior_strength=0, seed=0)


@pytest.fixture(scope="module")
def real_small(shared_data):
    """The first 120 images of the real 538 subset: GT dict and their AP_H_56 detections."""
    d = shared_data / SUBSET
    gt = json.loads((d / GT_NAME).read_text())
    keep = {im["id"] for im in gt["images"][:120]}
    gt = dict(gt, images=[im for im in gt["images"] if im["id"] in keep],
              annotations=[a for a in gt["annotations"] if a["image_id"] in keep])
    dets = [x for x in json.loads((d / DET_NAME).read_text()) if x["image_id"] in keep]
    return gt, dets


@pytest.fixture(scope="module")
def real_model(real_small):
    return PGPG.fit(*real_small, n_atoms=3, seed=0)


# ---------------------------------------------------------------------------------------------- geometry

def test_torso_and_alignment():
    kp = _pose_kp(STANDING * 100 + [200, 50])
    c, length = torso(kp)
    np.testing.assert_allclose(c, [200, 50 + 100 * (0.3 + 1.05) / 2])
    np.testing.assert_allclose(length, 75.0)
    xy, lab = align_pose(kp)
    assert lab.all()
    # aligned poses do not depend on translation and scale
    xy2, _ = align_pose(_pose_kp(STANDING * 37 + [-5, 900]))
    np.testing.assert_allclose(xy, xy2, atol=1e-12)
    # one shoulder and one hip are enough; none of either is not
    kp1 = kp.copy()
    kp1[[6, 12], 2] = 0
    assert torso(kp1) is not None
    kp1[5, 2] = 0
    assert torso(kp1) is None and align_pose(kp1) is None


def test_offsets_round_trip_and_meaning():
    gt = np.array([[10.0, 20.0, 100.0, 200.0]])
    det = np.array([[0.0, 40.0, 120.0, 220.0]])  # left side 10 px out, top 20 px in, right 10 px out, bottom 0
    off = box_offsets(det, gt)
    np.testing.assert_allclose(off, [[-0.1, 0.1, 0.1, 0.0]])
    np.testing.assert_allclose(offsets_to_boxes(off, gt[0]), det)
    with pytest.raises(ValueError, match="positive"):
        box_offsets(det, [[0, 0, 0, 5]])
    with pytest.raises(ValueError, match="2 boxes"):
        box_offsets(np.zeros((2, 4)), gt)


def test_offsets_fixed_numbers_each_side_by_its_own_extent():
    # a non-square GT box (64 x 128) and a nonzero offset on every side, each direction checked on its own
    # numbers (a round trip alone cannot see x and y extents swapped in both): x offsets are in GT widths,
    # y offsets in GT heights; dyadic values, so exact
    gt = [10.0, 20.0, 64.0, 128.0]                        # xyxy (10, 20, 74, 148)
    det = np.array([[2.0, 52.0, 78.0, 196.0],             # -0.125 w, +0.25 h, +0.0625 w, +0.375 h
                    [18.0, 4.0, 58.0, 116.0]])            # +0.125 w, -0.125 h, -0.25 w, -0.25 h
    off = np.array([[-0.125, 0.25, 0.0625, 0.375], [0.125, -0.125, -0.25, -0.25]])
    assert box_offsets(det, [gt, gt]).tolist() == off.tolist()
    assert box_offsets(det[0], gt).tolist() == off[0].tolist()  # one box: [4]
    assert offsets_to_boxes(off, gt).tolist() == det.tolist()


def test_matching_is_greedy_by_score_and_one_to_one():
    gts = np.array([[0, 0, 100, 100], [60, 0, 100, 100]], dtype=float)
    dets = np.array([[5, 0, 100, 100],     # IoU .90 with gt0
                     [30, 0, 100, 100],    # IoU .54 with gt0, .54 with gt1 -- highest score takes gt0 first
                     [62, 0, 100, 100],    # IoU .96 with gt1
                     [500, 500, 10, 10]], dtype=float)
    scores = np.array([0.5, 0.9, 0.4, 0.99])
    pairs = match_detections(gts, dets, scores, 0.5)
    assert [(g, d) for g, d, _ in pairs] == [(0, 1), (1, 2)]
    assert match_detections(gts, dets, scores, 0.95) == [(1, 2, pytest.approx(pairs[1][2]))]


# ---------------------------------------------------------------------------------------------- fitting

def test_synthetic_fit_recovers_pose_dependent_offsets(synthetic, synthetic_model):
    m = synthetic_model
    assert m.n_atoms == 2 and m.settings["n_offsets"] == 160 and m.settings["n_matched_pairs"] == 160
    standing = m.atom_of(_pose_kp(STANDING * 100 + 50))
    lying = m.atom_of(_pose_kp(STANDING[:, ::-1] * 100 + 50))
    assert {standing, lying} == {0, 1}
    np.testing.assert_array_equal(m.atom_counts, [80, 80])
    for kind, a in (("standing", standing), ("lying", lying)):
        assert not m.atom_uses_pooled[a]
        np.testing.assert_allclose(m.mixtures[a].mean(), MU[kind], atol=0.006)
        np.testing.assert_allclose(np.sqrt(np.diag(m.mixtures[a].covariance())), 0.015, rtol=0.3)
    # the per-atom model explains held-out offsets better than the pooled one (by up to log 2 here:
    # the pooled mixture splits its mass between the two offset clusters)
    gt, dets = _synthetic(40, seed=1)
    pairs = matched_pairs(gt, dets)
    atoms = [m.atom_of(k) for k in pairs["keypoints"]]
    assert m.log_likelihood(pairs["offsets"], atoms).mean() > m.pooled.log_likelihood(pairs["offsets"]).mean() + 0.3


def test_atom_of_equals_kmeans_label(synthetic_model):
    np.testing.assert_array_equal([synthetic_model.atom_of(k) for k in synthetic_model.cluster_keypoints_],
                                  synthetic_model.kmeans_labels_)


def test_back_off_to_the_pooled_mixture(synthetic, synthetic_model):
    m = PGPG.fit(*synthetic, n_atoms=2, min_atom_samples=20, prior_strength=80, seed=0)
    assert m.settings["atom_own_weight"] == [0.5, 0.5]
    for a in range(2):
        own, mix = synthetic_model.mixtures[a], m.mixtures[a]
        assert mix.n_components == own.n_components + m.pooled.n_components
        np.testing.assert_allclose(mix.weights, np.concatenate([own.weights, m.pooled.weights]) / 2)
        np.testing.assert_allclose(mix.mean(), (own.mean() + m.pooled.mean()) / 2, atol=1e-12)
    # an atom with too few offsets uses the pooled mixture alone
    few = PGPG.fit(*synthetic, n_atoms=2, min_atom_samples=81, seed=0)
    assert few.atom_uses_pooled.all() and all(mx is few.pooled for mx in few.mixtures)


def test_real_fit_small_subset(real_model, real_small):
    m = real_model
    s = m.summary()
    assert s["n_images"] == 120 and 0 < s["n_offsets"] <= s["n_matched_pairs"] <= s["n_gt_persons"]
    assert sum(a["n_offsets"] for a in s["atoms"]) == s["n_offsets"] == len(m.train_offsets)
    # atom_of of every clustered real GT pose is its k-means label
    np.testing.assert_array_equal([m.atom_of(k) for k in m.cluster_keypoints_], m.kmeans_labels_)
    # matched detections really overlap their GT boxes and offsets are small fractions of the box
    assert np.abs(m.train_offsets).mean() < 0.2
    pairs = matched_pairs(*real_small)
    assert (pairs["iou"] >= 0.5).all() and (pairs["det_score"] >= 0.3).all()
    assert pairs["has_torso"].sum() == s["n_offsets"]


def test_fit_is_deterministic_with_a_seed(real_small, real_model, tmp_path):
    again = PGPG.fit(*real_small, n_atoms=3, seed=0)
    np.testing.assert_array_equal(again.atoms, real_model.atoms)
    for a, b in zip(again.mixtures, real_model.mixtures):
        np.testing.assert_array_equal(a.means, b.means)
        np.testing.assert_array_equal(a.covariances, b.covariances)
    kp = real_model.cluster_keypoints_[0]
    np.testing.assert_array_equal(again.sample_boxes(kp, [10, 20, 50, 120], 32, np.random.default_rng(5)),
                                  real_model.sample_boxes(kp, [10, 20, 50, 120], 32, np.random.default_rng(5)))


def test_save_load_round_trip_gives_identical_samples(synthetic_model, tmp_path):
    path = tmp_path / "m.npz"
    synthetic_model.save(path)
    back = PGPG.load(path)
    assert back.settings == synthetic_model.settings
    np.testing.assert_array_equal(back.atoms, synthetic_model.atoms)
    for k in (_pose_kp(STANDING * 90 + 10), _pose_kp(STANDING[:, ::-1] * 90 + 10)):
        assert back.atom_of(k) == synthetic_model.atom_of(k)
        np.testing.assert_array_equal(back.sample_boxes(k, [1, 2, 90, 180], 50, np.random.default_rng(3)),
                                      synthetic_model.sample_boxes(k, [1, 2, 90, 180], 50, np.random.default_rng(3)))
    with np.load(path, allow_pickle=False) as z:  # plain arrays, no pickled objects
        assert "atoms" in z.files and z["gmm_covariances"].shape[1:] == (4, 4)


# ---------------------------------------------------------------------------------------------- sampling

def test_sampled_offsets_follow_the_mixture():
    m = load_default()
    rng = np.random.default_rng(0)
    n = 40000
    for atom in [NO_ATOM] + list(range(m.n_atoms)):
        mix = m.mixture(atom)
        x = m.sample_offsets(atom, n, rng)
        sd = np.sqrt(np.diag(mix.covariance()))
        np.testing.assert_allclose(x.mean(0), mix.mean(), atol=float(5 * sd.max() / np.sqrt(n)))
        np.testing.assert_allclose(x.std(0), sd, rtol=0.05)


def test_sample_boxes_is_the_offsets_on_the_gt_box():
    m = load_default()
    kp = _pose_kp(STANDING * 100 + 300)
    before = kp.copy()
    a = m.atom_of(kp)
    boxes = m.sample_boxes(kp, [280, 290, 70, 210], 64, np.random.default_rng(1))
    off = m.sample_offsets(a, 64, np.random.default_rng(1))
    np.testing.assert_allclose(box_offsets(boxes, np.tile([280, 290, 70, 210], (64, 1))), off, atol=1e-12)
    np.testing.assert_array_equal(kp, before)  # the caller's array is left alone
    # translating the person translates the boxes; the same generator state gives the same boxes
    moved = m.sample_boxes(kp + [40, -30, 0], [320, 260, 70, 210], 64, np.random.default_rng(1))
    np.testing.assert_allclose(moved, boxes + [40, -30, 40, -30], atol=1e-9)
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert m.sample_boxes(kp, [280, 290, 70, 210], 0, np.random.default_rng(1)).shape == (0, 4)


def test_pose_without_torso_uses_the_pooled_mixture():
    m = load_default()
    kp = _pose_kp(STANDING * 100)
    kp[[11, 12], 2] = 0
    assert m.atom_of(kp) == NO_ATOM
    np.testing.assert_array_equal(m.sample_boxes(kp, [0, 0, 50, 200], 8, np.random.default_rng(2)),
                                  offsets_to_boxes(m.sample_offsets(NO_ATOM, 8, np.random.default_rng(2)), [0, 0, 50, 200]))


def test_shipped_model():
    m = load_default()
    s = m.summary()
    assert os.path.getsize(DEFAULT_MODEL) < 200_000
    assert s["n_images"] == 538 and s["n_atoms"] == m.n_atoms >= 2
    assert sum(a["n_offsets"] for a in s["atoms"]) == s["n_offsets"] > 500
    assert all(a["uses_pooled"] == (a["n_offsets"] < m.settings["min_atom_samples"]) for a in s["atoms"])
    assert load_default() is m


# ---------------------------------------------------------------------------------------------- bad input

def test_bad_sampling_arguments():
    m = load_default()
    kp = _pose_kp(STANDING * 100)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="keypoints.*17, 3"):
        m.sample_boxes(kp[:16], [0, 0, 10, 10], 2, rng)
    bad = kp.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="keypoints.*NaN"):
        m.atom_of(bad)
    with pytest.raises(ValueError, match="gt_box_xywh.*positive"):
        m.sample_boxes(kp, [0, 0, -1, 10], 2, rng)
    with pytest.raises(ValueError, match="gt_box_xywh.*4 numbers"):
        m.sample_boxes(kp, [0, 0, 10], 2, rng)
    with pytest.raises(ValueError, match="n must"):
        m.sample_boxes(kp, [0, 0, 10, 10], -1, rng)
    with pytest.raises(ValueError, match="rng must"):
        m.sample_boxes(kp, [0, 0, 10, 10], 2, 0)
    with pytest.raises(ValueError, match="atom must"):
        m.sample_offsets(m.n_atoms, 2, rng)


def test_bad_fit_inputs(synthetic):
    gt, dets = synthetic
    bad = dict(gt, annotations=[dict(gt["annotations"][0], keypoints=[0] * 50)] + gt["annotations"][1:])
    with pytest.raises(ValueError, match="annotation 1000.*51 numbers.*got 50"):
        PGPG.fit(bad, dets, n_atoms=2)
    nobox = dict(gt, annotations=[{k: v for k, v in gt["annotations"][0].items() if k != "bbox"}])
    with pytest.raises(ValueError, match="no 'bbox'"):
        PGPG.fit(nobox, dets, n_atoms=2)
    with pytest.raises(ValueError, match="detection #3 has no 'score'"):
        PGPG.fit(gt, dets[:3] + [{"image_id": 0, "bbox": [0, 0, 1, 1]}], n_atoms=2)
    with pytest.raises(ValueError, match="'annotations' list"):
        PGPG.fit({"images": []}, dets)
    with pytest.raises(ValueError, match="too few"):
        PGPG.fit(gt, dets, n_atoms=500)
    with pytest.raises(ValueError, match="too few to fit offset"):
        PGPG.fit(gt, [], n_atoms=2)
    with pytest.raises(ValueError, match="n_atoms"):
        PGPG.fit(gt, dets, n_atoms=0)
    with pytest.raises(ValueError, match="iou_thresh"):
        PGPG.fit(gt, dets, n_atoms=2, iou_thresh=1.5)
    with pytest.raises(FileNotFoundError, match="ground-truth file"):
        PGPG.fit("/nonexistent/gt.json", dets)


def test_bad_model_files(tmp_path, synthetic_model):
    with pytest.raises(FileNotFoundError):
        PGPG.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        PGPG.load(tmp_path / "junk.npz")
    synthetic_model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "gmm_means"}
    np.savez(tmp_path / "partial.npz", **arrays)
    with pytest.raises(ValueError, match="gmm_means"):
        PGPG.load(tmp_path / "partial.npz")


# ---------------------------------------------------------------------------------------------- command

def test_fit_pgpg_command_end_to_end(tmp_path, synthetic, capsys):
    gt, dets = synthetic
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    out, fig = tmp_path / "out" / "model.npz", tmp_path / "fig.png"
    rc = cli.main(["fit-pgpg", str(tmp_path / "gt.json"), str(tmp_path / "dets.json"), "-o", str(out),
                   "--atoms", "2", "--min-atom-samples", "20", "--prior-strength", "0", "--plot", str(fig), "--seed", "0"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "160 matched persons" in text and "atom 1: 80 offsets" in text
    model = PGPG.load(out)
    assert model.n_atoms == 2 and fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # bad inputs: one clear line, exit 2, nothing written
    bad = dict(gt, annotations=[dict(gt["annotations"][0], keypoints=[0] * 54)])
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    (tmp_path / "broken.json").write_text("{not json")
    for args, msg in ((["bad.json", "dets.json"], "51 numbers"), (["broken.json", "dets.json"], "not valid JSON"),
                      (["missing.json", "dets.json"], "does not exist")):
        out2 = tmp_path / "never.npz"
        rc = cli.main(["fit-pgpg"] + [str(tmp_path / a) for a in args] + ["-o", str(out2), "--atoms", "2"])
        err = capsys.readouterr().err
        assert rc == 2 and msg in err and err.startswith("rmpe fit-pgpg: error:")
        assert not out2.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json", "broken.json", "dets.json", "fig.png", "gt.json", "out"]


def test_cross_validate_and_cv_option(synthetic, tmp_path, capsys):
    gt, dets = synthetic
    cv = cross_validate(gt, dets, folds=2, n_atoms=2, min_atom_samples=20, prior_strength=0)
    assert cv["n_heldout"] == 160
    # pose-dependent offsets: the per-atom model wins on held-out offsets; one Gaussian loses
    assert cv["loglik_atom"] > cv["loglik_pooled"] + 0.3 > cv["loglik_gaussian"] + 0.3
    # sampled boxes overlap their GT box as the real detections do
    np.testing.assert_allclose(cv["iou_sampled"], cv["iou_real"], atol=0.03)
    with pytest.raises(ValueError, match="folds"):
        cross_validate(gt, dets, folds=1)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    assert cli.main(["fit-pgpg", str(tmp_path / "gt.json"), str(tmp_path / "dets.json"), "-o", str(tmp_path / "m.npz"),
                     "--atoms", "2", "--min-atom-samples", "20", "--cv", "2", "-q"]) == 0
    assert "held-out (2 folds over images, 160 offsets)" in capsys.readouterr().out
