"""PGPG atomic poses: COCO-17 constants, keypoint and box input checks, the torso, torso alignment and the
nearest atom (conventions: :mod:`rmpe.pgpg.model`).

Keypoints are ``[17, 3]`` ``(x, y, v)`` image pixels (COCO-17 order; a joint is labelled when ``v > 0``);
ground-truth boxes COCO ``xywh`` pixels.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

__all__ = ["NUM_JOINTS", "NO_ATOM", "COCO_SKELETON", "SHOULDERS", "HIPS", "MIN_TORSO_PX", "MIN_SIDE_FRAC", "torso",
           "align_pose"]

NUM_JOINTS = 17
NO_ATOM = -1
SHOULDERS = (5, 6)
HIPS = (11, 12)
MIN_TORSO_PX = 1.0
MIN_SIDE_FRAC = 0.05

# COCO-17 limbs as 0-based joint index pairs (for drawing atomic poses)
COCO_SKELETON = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
                 (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))


# ----------------------------------------------------------------------------------------------------
# input checks

def _keypoints_array(keypoints: Any, name: str = "keypoints") -> np.ndarray:
    """-> a float64 copy of shape [17, 3]; errors name ``name``."""
    try:
        kp = np.array(keypoints, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric [17, 3] (x, y, v), got {type(keypoints).__name__}: {e}") from None
    if kp.shape == (NUM_JOINTS * 3,):
        kp = kp.reshape(NUM_JOINTS, 3)
    if kp.shape != (NUM_JOINTS, 3):
        raise ValueError(f"{name} must have shape [17, 3] (COCO-17 x, y, v), got {list(kp.shape)}")
    labelled = kp[:, 2] > 0
    if np.isnan(kp[:, 2]).any() or not np.isfinite(kp[labelled, :2]).all():
        raise ValueError(f"{name} holds NaN or infinite values (visibility, or x/y of a labelled joint)")
    return kp


def _box_xywh(box: Any, name: str = "gt_box_xywh") -> np.ndarray:
    try:
        b = np.array(box, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be 4 numbers (COCO x, y, w, h), got {type(box).__name__}: {e}") from None
    if b.shape != (4,):
        raise ValueError(f"{name} must be 4 numbers (COCO x, y, w, h), got {b.size}")
    if not np.isfinite(b).all():
        raise ValueError(f"{name} holds NaN or infinite values: {b.tolist()}")
    if b[2] <= 0 or b[3] <= 0:
        raise ValueError(f"{name} must have positive width and height, got w={b[2]:g}, h={b[3]:g}")
    return b


# ----------------------------------------------------------------------------------------------------
# torso and alignment

def torso(keypoints: Any) -> Optional[Tuple[np.ndarray, float]]:
    """The torso of a pose -> ``(centre [2] float64 px, length float px)``, or None when it is not
    annotated (no labelled shoulder, no labelled hip, or the two points closer than ``MIN_TORSO_PX``).
    ``keypoints``: [17, 3] (x, y, v) image px (see :mod:`rmpe.pgpg.model` for the definition)."""
    kp = _keypoints_array(keypoints)
    return _torso(kp)


def _torso(kp: np.ndarray) -> Optional[Tuple[np.ndarray, float]]:
    lab = kp[:, 2] > 0
    sh = [j for j in SHOULDERS if lab[j]]
    hp = [j for j in HIPS if lab[j]]
    if not sh or not hp:
        return None
    s = kp[sh, :2].mean(0)
    h = kp[hp, :2].mean(0)
    length = float(np.hypot(*(s - h)))
    if not length >= MIN_TORSO_PX:
        return None
    return (s + h) / 2.0, length


def align_pose(keypoints: Any) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Torso-aligned pose -> ``(xy [17, 2] float64, labelled [17] bool)``: ``(xy - torso centre) / torso
    length``, unlabelled joints NaN; None when the torso is not annotated. ``keypoints``: [17, 3] px."""
    return _align(_keypoints_array(keypoints))


def _align(kp: np.ndarray) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    t = _torso(kp)
    if t is None:
        return None
    centre, length = t
    lab = kp[:, 2] > 0
    xy = (kp[:, :2] - centre) / length
    xy[~lab] = np.nan
    return xy, lab


def _impute(aligned: Tuple[np.ndarray, np.ndarray], joint_mean: np.ndarray) -> np.ndarray:
    xy, lab = aligned
    return np.where(lab[:, None], xy, joint_mean).reshape(-1)


def _nearest(atoms: np.ndarray, feat: np.ndarray) -> int:
    d = ((atoms.reshape(len(atoms), -1) - feat[None]) ** 2).sum(1)
    return int(np.argmin(d))
