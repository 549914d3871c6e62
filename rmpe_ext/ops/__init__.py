"""The rmpe_ext operators with their conventions, checks and defaults.

Pose NMS (``rmpe_ext.ops.pose_nms`` module): pose_similarity, pose_nms, oks_nms,
soft_oks_nms. Affine (``rmpe_ext.ops.affine`` module): affine_grid_sample,
affine_sample_px, affine_crop, affine_inverse, heatmap_decode, soft_argmax and
the coordinate helpers. Every function is re-exported here.
"""
from .affine import *  # noqa: F401,F403
from .affine import __all__ as _affine_all
from .pose_nms import *  # noqa: F401,F403
from .pose_nms import __all__ as _nms_all

__all__ = list(_nms_all) + list(_affine_all)
