"""A track id per person across video frames: frame-to-frame matching by OKS or box IoU, optimally assigned.

    tracker = PoseTracker(similarity="oks", min_similarity=0.3, max_age=30)
    for frame_keypoints, frame_boxes in video:          # [n, K, 3] (x, y, score), [n, 4] xyxy, image pixels
        ids = tracker.update(frame_keypoints, frame_boxes)   # [n] int64 track ids (0, 1, 2, ...)

Each frame, the live tracks (their last pose and box) and the frame's poses form a similarity matrix; the
assignment that maximises the summed similarity (``scipy.optimize.linear_sum_assignment``, Hungarian) is
taken and a pair is accepted when its similarity is at least ``min_similarity``. A pose left without a track
starts a new one (ids count up from 0, in the order of the frame's poses); a track left without a pose
ages, and is dropped after ``max_age`` frames without one (so a person hidden for a moment keeps the id).

Similarity (``similarity``):

* ``"oks"``: COCO's object keypoint similarity between the track's last pose and the new pose, over the
  joints whose scores are at least ``kp_thresh`` in both, with the track's box area as the scale
  (``exp(-d^2 / (2 area (2 sigma_j)^2))`` averaged; COCO-17 sigmas when K = 17, else 0.05 each).
  Pairs with fewer than ``min_joints`` such joints fall back to the box IoU.
* ``"iou"``: the IoU of the two boxes.

Nothing here looks at the images: a person who leaves and comes back after ``max_age`` frames gets a
new id.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

__all__ = ["PoseTracker", "COCO17_SIGMAS", "box_iou", "oks_matrix", "SIMILARITIES"]

COCO17_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89,
                          .89]) / 10.0
SIMILARITIES = ("oks", "iou")


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU ``[n, m]`` of xyxy boxes ``a [n, 4]`` and ``b [m, 4]`` (0 where both are empty)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def oks_matrix(kp_a: np.ndarray, boxes_a: np.ndarray, kp_b: np.ndarray, kp_thresh: float = 0.2,
               sigmas: Optional[np.ndarray] = None) -> tuple:
    """OKS ``[n, m]`` between poses ``kp_a [n, K, 3]`` (scale: the area of ``boxes_a [n, 4]`` xyxy) and
    ``kp_b [m, K, 3]`` over the joints scored >= ``kp_thresh`` in both, and the number of those joints
    ``[n, m]`` (OKS is 0 where it is 0)."""
    K = kp_a.shape[1]
    if sigmas is None:
        sigmas = COCO17_SIGMAS if K == 17 else np.full(K, 0.05)
    var = (2 * np.asarray(sigmas, dtype=np.float64)) ** 2
    area = np.clip(boxes_a[:, 2:] - boxes_a[:, :2], 0, None).prod(1)
    area = np.maximum(area, 1.0)
    d2 = ((kp_a[:, None, :, :2] - kp_b[None, :, :, :2]) ** 2).sum(3)             # [n, m, K]
    both = (kp_a[:, None, :, 2] >= kp_thresh) & (kp_b[None, :, :, 2] >= kp_thresh)
    e = np.exp(-d2 / (2 * area[:, None, None] * var[None, None, :]))
    cnt = both.sum(2)
    return np.where(cnt > 0, (e * both).sum(2) / np.maximum(cnt, 1), 0.0), cnt


class PoseTracker:
    """Assigns track ids to the poses of consecutive frames (see the module docstring)."""

    def __init__(self, similarity: str = "oks", min_similarity: float = 0.3, max_age: int = 30,
                 kp_thresh: float = 0.2, min_joints: int = 3, sigmas: Optional[Sequence[float]] = None):
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
        if not 0.0 <= float(min_similarity) <= 1.0:
            raise ValueError(f"min_similarity must be in [0, 1], got {min_similarity}")
        if int(max_age) != max_age or max_age < 0:
            raise ValueError(f"max_age must be an integer >= 0, got {max_age}")
        if not np.isfinite(kp_thresh):
            raise ValueError(f"kp_thresh must be a finite number, got {kp_thresh}")
        if int(min_joints) != min_joints or min_joints < 1:
            raise ValueError(f"min_joints must be an integer >= 1, got {min_joints}")
        self.similarity, self.min_similarity = similarity, float(min_similarity)
        self.max_age, self.kp_thresh, self.min_joints = int(max_age), float(kp_thresh), int(min_joints)
        self.sigmas = None if sigmas is None else np.asarray(sigmas, dtype=np.float64)
        from scipy.optimize import linear_sum_assignment  # imported here: an ImportError before the first frame

        self._assign = linear_sum_assignment
        self.reset()

    def reset(self) -> None:
        """Forgets every track; the next id is 0 again."""
        self.next_id = 0
        self._ids: List[int] = []
        self._kp = np.zeros((0, 0, 3))
        self._boxes = np.zeros((0, 4))
        self._age = np.zeros(0, dtype=np.int64)

    @property
    def num_tracks(self) -> int:
        """Tracks alive (seen within the last ``max_age`` frames)."""
        return len(self._ids)

    def _check(self, keypoints, boxes):
        kp = np.asarray(keypoints, dtype=np.float64)
        if kp.size == 0:
            kp = kp.reshape(0, self._kp.shape[1] if self._kp.shape[1] else 17, 3)
        if kp.ndim == 2 and kp.shape[1] % 3 == 0:
            kp = kp.reshape(len(kp), -1, 3)
        if kp.ndim != 3 or kp.shape[2] != 3:
            raise ValueError(f"keypoints must have shape [n, K, 3] (or [n, 3K]), got {np.shape(keypoints)}")
        b = np.asarray(boxes, dtype=np.float64)
        if b.size == 0:
            b = b.reshape(0, 4)
        if b.ndim != 2 or b.shape != (len(kp), 4):
            raise ValueError(f"boxes must have shape [n, 4] = [{len(kp)}, 4] (xyxy), got {np.shape(boxes)}")
        if not (np.isfinite(kp).all() and np.isfinite(b).all()):
            raise ValueError("keypoints and boxes must be finite")
        if self._ids and len(kp) and kp.shape[1] != self._kp.shape[1]:
            raise ValueError(f"keypoints have {kp.shape[1]} joints, the tracks {self._kp.shape[1]}")
        return kp, b

    def similarity_matrix(self, keypoints: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """``[tracks, n]`` similarities of the live tracks to the poses ``keypoints [n, K, 3]``,
        ``boxes [n, 4]``."""
        iou = box_iou(self._boxes, boxes)
        if self.similarity == "iou" or not len(self._ids) or not len(keypoints):
            return iou
        oks, cnt = oks_matrix(self._kp, self._boxes, keypoints, self.kp_thresh, self.sigmas)
        return np.where(cnt >= self.min_joints, oks, iou)

    def update(self, keypoints, boxes) -> np.ndarray:
        """The track ids ``[n]`` int64 of one frame's poses (``keypoints [n, K, 3]`` or ``[n, 3K]`` x, y,
        score; ``boxes [n, 4]`` x1, y1, x2, y2, image pixels). Call once per frame, in order, also for a
        frame with no poses (``[]``, ``[]``): it ages the tracks. The inputs are not modified."""
        kp, b = self._check(keypoints, boxes)
        n = len(kp)
        ids = np.full(n, -1, dtype=np.int64)
        matched_tracks = np.zeros(len(self._ids), dtype=bool)
        if n and self._ids:
            sim = self.similarity_matrix(kp, b)
            rows, cols = self._assign(sim, maximize=True)
            for r, c in zip(rows, cols):
                if sim[r, c] >= self.min_similarity and sim[r, c] > 0:
                    ids[c] = self._ids[r]
                    matched_tracks[r] = True
        # update matched tracks, age the others, start new ones
        new_ids, new_kp, new_boxes, new_age = [], [], [], []
        pos = {t: i for i, t in enumerate(self._ids)}
        for t, m in zip(self._ids, matched_tracks):
            if not m and self._age[pos[t]] + 1 <= self.max_age:
                new_ids.append(t)
                new_kp.append(self._kp[pos[t]])
                new_boxes.append(self._boxes[pos[t]])
                new_age.append(self._age[pos[t]] + 1)
        for j in range(n):
            if ids[j] < 0:
                ids[j] = self.next_id
                self.next_id += 1
            new_ids.append(int(ids[j]))
            new_kp.append(kp[j])
            new_boxes.append(b[j])
            new_age.append(0)
        order = np.argsort(new_ids, kind="stable")
        K = kp.shape[1] if n else (self._kp.shape[1] if self._kp.size else 17)
        self._ids = [new_ids[i] for i in order]
        self._kp = np.array([new_kp[i] for i in order]).reshape(-1, K, 3)
        self._boxes = np.array([new_boxes[i] for i in order]).reshape(-1, 4)
        self._age = np.array([new_age[i] for i in order], dtype=np.int64)
        return ids
