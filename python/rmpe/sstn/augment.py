"""Box augmenters: where the training proposals come from (paper section 3.3, Table 3b).

The protocol (:class:`BoxAugmenter`) is one call::

    boxes = augmenter.sample_boxes(keypoints, gt_box_xywh, n, rng)   # -> np.ndarray [n, 4] float64 x1, y1, x2, y2

``keypoints``: ``[17, 3]`` (x, y, v) in image pixels (COCO order; v = 0 unlabelled); ``gt_box_xywh``:
the GT box (x, y, w, h) in image pixels; ``n``: how many boxes; ``rng``: a ``numpy.random.Generator``
(all randomness comes from it, so a seeded generator gives the same boxes). ``rmpe.pgpg``'s model has
exactly this method, so it is an augmenter as it stands; :class:`PGPGAugmenter` wraps it with checks.

* :class:`JitterAugmenter`: the baseline, random jittering of the GT box (shift of its centre and
  scaling of its sides, uniform or Gaussian, relative to the GT box's own sides).
* :class:`PGPGAugmenter`: boxes from the pose-guided proposals generator (offsets drawn from the
  Gaussian mixture of the pose's atomic pose, fitted on real detector boxes).
* :func:`make_augmenter`: ``"jitter"`` or ``"pgpg"`` by name.
"""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

__all__ = ["BoxAugmenter", "JitterAugmenter", "PGPGAugmenter", "check_augment_args", "make_augmenter"]


@runtime_checkable
class BoxAugmenter(Protocol):
    def sample_boxes(self, keypoints: np.ndarray, gt_box_xywh, n: int, rng: np.random.Generator) -> np.ndarray:
        """``[n, 4]`` float64 boxes (x1, y1, x2, y2, image pixels) around the person."""


def check_augment_args(keypoints, gt_box_xywh, n, rng):
    """Validates the protocol's arguments; returns ``(keypoints [17, 3] float64 copy, box [4] float64, n)``."""
    kp = np.array(keypoints, dtype=np.float64, copy=True)
    if kp.ndim != 2 or kp.shape[1] != 3:
        raise ValueError(f"keypoints must have shape [K, 3] (x, y, v), got {kp.shape}")
    if not np.isfinite(kp).all():
        raise ValueError("keypoints contains NaN or infinite values")
    box = np.array(gt_box_xywh, dtype=np.float64).ravel()
    if box.shape != (4,):
        raise ValueError(f"gt_box_xywh must be 4 numbers (x, y, w, h), got shape {box.shape}")
    if not np.isfinite(box).all() or box[2] <= 0 or box[3] <= 0:
        raise ValueError(f"gt_box_xywh must be finite with w, h > 0, got {box.tolist()}")
    if isinstance(n, bool) or int(n) != n or int(n) < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return kp, box, int(n)


class JitterAugmenter:
    """Random jittering of the GT box, the baseline of the paper's Table 3b.

    For each box, with (cx, cy, w, h) the GT box: ``cx' = cx + dx * w``, ``cy' = cy + dy * h``,
    ``w' = w * sx``, ``h' = h * sy``, where

    * ``distribution="uniform"``: ``dx, dy ~ U(-shift, shift)`` and ``log sx, log sy ~ U(log scale[0],
      log scale[1])`` (independently per side unless ``keep_aspect``, then ``sy = sx``);
    * ``distribution="gaussian"``: ``dx, dy ~ N(0, shift)``, ``log sx, log sy ~ N(0, log_scale_std)``
      (``scale`` unused).

    Defaults (``shift=0.15``, ``scale=(0.8, 1.25)``) displace the centre by up to 15% of the box's side
    and scale each side by 0.8-1.25.
    """

    def __init__(self, shift: float = 0.15, scale: Sequence[float] = (0.8, 1.25), distribution: str = "uniform",
                 log_scale_std: float = 0.12, keep_aspect: bool = False):
        if distribution not in ("uniform", "gaussian"):
            raise ValueError(f"distribution must be 'uniform' or 'gaussian', got {distribution!r}")
        scale = tuple(float(s) for s in scale)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1] or not np.isfinite(scale).all():
            raise ValueError(f"scale must be (lo, hi) with 0 < lo <= hi, got {scale}")
        if not np.isfinite(shift) or shift < 0:
            raise ValueError(f"shift must be finite and >= 0, got {shift}")
        if not np.isfinite(log_scale_std) or log_scale_std < 0:
            raise ValueError(f"log_scale_std must be finite and >= 0, got {log_scale_std}")
        self.shift, self.scale, self.distribution = float(shift), scale, distribution
        self.log_scale_std, self.keep_aspect = float(log_scale_std), bool(keep_aspect)

    def sample_boxes(self, keypoints, gt_box_xywh, n, rng) -> np.ndarray:
        _, box, n = check_augment_args(keypoints, gt_box_xywh, n, rng)
        x, y, w, h = box
        if self.distribution == "uniform":
            d = rng.uniform(-self.shift, self.shift, (n, 2))
            ls = rng.uniform(np.log(self.scale[0]), np.log(self.scale[1]), (n, 2))
        else:
            d = rng.normal(0.0, self.shift, (n, 2))
            ls = rng.normal(0.0, self.log_scale_std, (n, 2))
        if self.keep_aspect:
            ls[:, 1] = ls[:, 0]
        cx, cy = x + w / 2 + d[:, 0] * w, y + h / 2 + d[:, 1] * h
        w2, h2 = w * np.exp(ls[:, 0]), h * np.exp(ls[:, 1])
        return np.stack([cx - w2 / 2, cy - h2 / 2, cx + w2 / 2, cy + h2 / 2], 1)

    def __repr__(self) -> str:
        return (f"JitterAugmenter(shift={self.shift}, scale={self.scale}, distribution={self.distribution!r}, "
                f"log_scale_std={self.log_scale_std}, keep_aspect={self.keep_aspect})")


class PGPGAugmenter:
    """Boxes from the pose-guided proposals generator: ``pgpg`` is an object with ``sample_boxes``
    (``rmpe.pgpg``'s model); default ``rmpe.pgpg.load_default()`` (the model shipped in
    ``rmpe/data/pgpg_coco_subset538.npz``). Checks the arguments and the boxes it returns (shape
    ``[n, 4]``, finite, x2 > x1 and y2 > y1)."""

    def __init__(self, pgpg=None):
        if pgpg is None:
            try:
                from ..pgpg import load_default
            except ImportError as e:
                raise ValueError(f"the PGPG augmenter needs rmpe.pgpg, which could not be imported: {e}") from e
            pgpg = load_default()
        if not callable(getattr(pgpg, "sample_boxes", None)):
            raise ValueError(f"pgpg must have a sample_boxes method, got {type(pgpg).__name__}")
        self.pgpg = pgpg

    def sample_boxes(self, keypoints, gt_box_xywh, n, rng) -> np.ndarray:
        kp, box, n = check_augment_args(keypoints, gt_box_xywh, n, rng)
        boxes = np.asarray(self.pgpg.sample_boxes(kp, box.copy(), n, rng), dtype=np.float64)
        if boxes.shape != (n, 4):
            raise ValueError(f"the PGPG model returned boxes of shape {boxes.shape}, expected ({n}, 4)")
        if not np.isfinite(boxes).all() or (n and ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any()):
            raise ValueError("the PGPG model returned non-finite or empty boxes")
        return boxes

    def __repr__(self) -> str:
        return f"PGPGAugmenter({self.pgpg!r})"


def make_augmenter(name: str, pgpg=None, **kwargs) -> BoxAugmenter:
    """``"jitter"`` -> :class:`JitterAugmenter` (``kwargs`` passed on); ``"pgpg"`` -> :class:`PGPGAugmenter`."""
    if name == "jitter":
        return JitterAugmenter(**kwargs)
    if name == "pgpg":
        if kwargs:
            raise ValueError(f"the pgpg augmenter takes no options, got {sorted(kwargs)}")
        return PGPGAugmenter(pgpg)
    raise ValueError(f"augmenter must be 'jitter' or 'pgpg', got {name!r}")

