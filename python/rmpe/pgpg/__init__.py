"""The pose-guided proposals generator (RMPE paper section 3.3): box offsets conditioned on atomic poses.

    atoms.py     COCO-17 constants, input checks, the torso, torso alignment, the nearest atom
    matching.py  box offsets, COCO ground-truth and detection parsing, detection-to-person matching, IoU
    model.py     the offset mixtures, PGPG (fit, sample, save/load), cross_validate, load_default
    plot.py      the paper's Figure 5 (PGPG.plot)

The conventions are in :mod:`rmpe.pgpg.model`. This package re-exports the public names
(``from rmpe.pgpg import PGPG, load_default``).
"""
from .atoms import COCO_SKELETON, NO_ATOM, NUM_JOINTS, align_pose, torso
from .matching import box_offsets, match_detections, matched_pairs, offsets_to_boxes
from .model import DEFAULT_MODEL, PGPG, cross_validate, load_default

__all__ = ["PGPG", "load_default", "NO_ATOM", "NUM_JOINTS", "COCO_SKELETON", "align_pose", "torso",
           "box_offsets", "offsets_to_boxes", "match_detections", "matched_pairs", "cross_validate", "DEFAULT_MODEL"]
