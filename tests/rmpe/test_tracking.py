"""rmpe.pipeline.tracking: track ids across frames (OKS / IoU, optimal assignment) on a synthetic moving
sequence and on a short clip made from a real COCO image, ages, and bad input."""
import json
import pathlib

import numpy as np
import pytest

from rmpe.pipeline.tracking import PoseTracker, box_iou, oks_matrix

ROOT = pathlib.Path(__file__).resolve().parents[2]
COCO4 = ROOT / "data" / "coco4"

# a standing person in a 100 x 200 box (x, y relative to the box's top-left corner), COCO-17 order
TEMPLATE = np.array([[50, 20], [55, 15], [45, 15], [60, 18], [40, 18], [70, 50], [30, 50], [80, 80], [20, 80],
                     [85, 110], [15, 110], [62, 110], [38, 110], [64, 150], [36, 150], [65, 190], [35, 190]],
                    dtype=np.float64)


def person(x, y, rng, scale=1.0):
    kp = np.concatenate([TEMPLATE * scale + (x, y) + rng.normal(0, 1.0, TEMPLATE.shape),
                         rng.uniform(0.5, 1.0, (17, 1))], 1)
    return kp, np.array([x, y, x + 100 * scale, y + 200 * scale])


def sequence(n_frames, rng, starts, velocities, absent=()):
    """Frames of moving persons, each frame's persons shuffled. Returns per frame (keypoints [n, 17, 3],
    boxes [n, 4], person index of each row)."""
    out = []
    for t in range(n_frames):
        rows = [(p, *person(x + vx * t, y + vy * t, rng)) for p, ((x, y), (vx, vy)) in
                enumerate(zip(starts, velocities)) if (p, t) not in absent]
        order = rng.permutation(len(rows))
        rows = [rows[i] for i in order]
        out.append((np.array([r[1] for r in rows]).reshape(-1, 17, 3), np.array([r[2] for r in rows]).reshape(-1, 4),
                    [r[0] for r in rows]))
    return out


STARTS = [(0, 0), (300, 0), (0, 260), (160, 130)]
VELOCITIES = [(6, 3), (-6, 3), (6, -3), (0, 8)]  # persons 0 and 1 walk towards each other, 3 crosses 0 and 2


@pytest.mark.parametrize("similarity", ["oks", "iou"])
def test_synthetic_moving_persons_keep_their_ids(similarity):
    rng = np.random.default_rng(0)
    tracker = PoseTracker(similarity=similarity)
    seen = {}
    for kp, boxes, who in sequence(25, rng, STARTS, VELOCITIES):
        kp_before, boxes_before = kp.copy(), boxes.copy()
        ids = tracker.update(kp, boxes)
        assert np.array_equal(kp, kp_before) and np.array_equal(boxes, boxes_before)  # inputs untouched
        assert ids.dtype == np.int64 and len(set(ids.tolist())) == len(ids)
        for p, i in zip(who, ids.tolist()):
            assert seen.setdefault(p, i) == i, f"person {p} changed id"
    assert sorted(seen.values()) == [0, 1, 2, 3] and tracker.next_id == 4


def test_a_hidden_person_keeps_the_id_within_max_age():
    absent = {(2, t) for t in (5, 6, 7)}  # person 2 hidden for 3 frames
    for max_age, same in ((5, True), (2, False)):
        rng = np.random.default_rng(1)
        tracker = PoseTracker(max_age=max_age)
        ids_of_2 = []
        for kp, boxes, who in sequence(12, rng, STARTS[:3], [(2, 1), (-2, 1), (2, -1)], absent=absent):
            ids = tracker.update(kp, boxes)
            ids_of_2 += [int(i) for p, i in zip(who, ids) if p == 2]
        assert (len(set(ids_of_2)) == 1) == same, (max_age, ids_of_2)
        if not same:
            assert ids_of_2[-1] == 3  # a new id, the next one


def test_empty_frames_age_tracks_and_new_persons_get_new_ids():
    rng = np.random.default_rng(2)
    tracker = PoseTracker(max_age=1)
    kp, box = person(10, 10, rng)
    assert tracker.update(kp[None], box[None]).tolist() == [0]
    assert tracker.update([], []).tolist() == []
    assert tracker.num_tracks == 1
    assert tracker.update(np.zeros((0, 17, 3)), np.zeros((0, 4))).tolist() == []
    assert tracker.num_tracks == 0  # dropped after max_age frames without its person
    kp2, box2 = person(400, 10, rng)
    assert tracker.update(np.stack([kp, kp2]), np.stack([box, box2])).tolist() == [1, 2]
    tracker.reset()
    assert tracker.update(kp[None], box[None]).tolist() == [0]


def test_the_assignment_is_optimal_not_greedy():
    """Greedy matching would give track 0 its best pose (0.95) and leave track 1 with 0.1 (a new id);
    the optimal assignment keeps both tracks (0.9 + 0.8)."""

    class Fixed(PoseTracker):
        matrix = None

        def similarity_matrix(self, keypoints, boxes):
            return self.matrix if self.matrix is not None else super().similarity_matrix(keypoints, boxes)

    rng = np.random.default_rng(3)
    tr = Fixed(min_similarity=0.3)
    (a, ba), (b, bb) = person(0, 0, rng), person(300, 0, rng)
    assert tr.update(np.stack([a, b]), np.stack([ba, bb])).tolist() == [0, 1]
    tr.matrix = np.array([[0.9, 0.95], [0.1, 0.8]])
    assert tr.update(np.stack([a, b]), np.stack([ba, bb])).tolist() == [0, 1]
    tr.matrix = np.array([[0.9, 0.2], [0.1, 0.25]])  # below min_similarity: a new track
    assert tr.update(np.stack([a, b]), np.stack([ba, bb])).tolist() == [0, 2]


def test_similarities():
    rng = np.random.default_rng(4)
    kp, box = person(0, 0, rng)
    oks, cnt = oks_matrix(kp[None], box[None], kp[None])
    assert oks[0, 0] == pytest.approx(1.0) and cnt[0, 0] == 17
    far, _ = oks_matrix(kp[None], box[None], (kp + (500, 0, 0))[None])
    assert far[0, 0] < 1e-6
    low = kp.copy()
    low[:, 2] = 0.05  # no confident joint: IoU is used
    tr = PoseTracker()
    tr.update(kp[None], box[None])
    assert tr.similarity_matrix(low[None], (box + (50, 0, 50, 0))[None])[0, 0] == pytest.approx(
        box_iou(box[None], (box + (50, 0, 50, 0))[None])[0, 0])
    assert box_iou(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10], [20, 20, 20, 20]])).tolist() == \
        [[pytest.approx(1 / 3), 0.0]]


def test_bad_input():
    with pytest.raises(ValueError, match="similarity"):
        PoseTracker(similarity="cosine")
    with pytest.raises(ValueError, match="min_similarity"):
        PoseTracker(min_similarity=float("nan"))
    with pytest.raises(ValueError, match="max_age"):
        PoseTracker(max_age=-1)
    tr = PoseTracker()
    with pytest.raises(ValueError, match="keypoints must have shape"):
        tr.update(np.zeros((2, 17, 2)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="boxes must have shape"):
        tr.update(np.zeros((2, 17, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="finite"):
        tr.update(np.full((1, 17, 3), np.nan), np.zeros((1, 4)))
    tr.update(np.ones((1, 17, 3)), np.array([[0, 0, 10, 10]]))
    with pytest.raises(ValueError, match="16 joints"):
        tr.update(np.ones((1, 16, 3)), np.array([[0, 0, 10, 10]]))


def test_real_clip_from_a_coco_image():
    """Six frames cut from COCO 197388 (five persons, three overlapping) by a window moving 4 px right and
    2 px down per frame; BlazePose on the persons' GT boxes (moved with the window); every person keeps
    one track id, and no two persons share one."""
    pytest.importorskip("ai_edge_litert")
    import cv2

    from rmpe.pipeline import Pipeline
    from rmpe.pipeline.models import BlazePoseModel

    img = cv2.imread(str(COCO4 / "000000197388.jpg"))
    anns = [a for a in json.loads((COCO4 / "test_coco.json").read_text())["annotations"]
            if a["image_id"] == 197388 and a["num_keypoints"] > 0]
    assert len(anns) == 5
    W, H = 600, 370
    pipe = Pipeline(BlazePoseModel(num_threads=1), nms="none")
    tracker = PoseTracker()
    ids_per_person = {n: set() for n in range(len(anns))}
    for t in range(6):
        dx, dy = 4 * t, 2 * t
        frame = np.ascontiguousarray(img[dy:dy + H, dx:dx + W])
        boxes = []
        for a in anns:
            x, y, w, h = a["bbox"]
            boxes.append([max(x - dx, 0), max(y - dy, 0), min(x + w - dx, W - 1), min(y + h - dy, H - 1)])
        boxes = np.array(boxes, dtype=np.float32)
        res = pipe([frame], [(boxes, np.ones(len(boxes), np.float32))], [t])
        assert len(res.results) == len(anns)  # no NMS: one pose per box, in box order
        kp = np.array([r["keypoints"] for r in res.results]).reshape(-1, 17, 3)
        ids = tracker.update(kp, boxes)
        for n, i in enumerate(ids.tolist()):
            ids_per_person[n].add(i)
    assert all(len(v) == 1 for v in ids_per_person.values()), ids_per_person
    assert sorted(next(iter(v)) for v in ids_per_person.values()) == [0, 1, 2, 3, 4]
