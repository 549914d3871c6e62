"""rmpe_ext: RMPE (Fang et al., ICCV 2017) operators for PyTorch, CPU and CUDA.

    import rmpe_ext
    rmpe_ext.ops.pose_nms(...)            # batched parametric pose NMS (tensors in, tensors out)
    rmpe_ext.alphapose.pose_nms(...)      # drop-in for alphapose.utils.pPose_nms.pose_nms
    rmpe_ext.nn.AffineSampler(...)        # torch.nn modules: the STN sampler, the SDTN

The operators live in torch.ops.rmpe_ext (registered when this package is
imported); rmpe_ext.ops wraps them with checks, defaults and docs.
"""
from ._loader import load_extension as _load_extension

BUILD_INFO = _load_extension()

from . import ops  # noqa: E402  (registers fake kernels; needs the operators loaded)
from . import alphapose  # noqa: E402
from . import nn  # noqa: E402

__version__ = "0.1.0"
__all__ = ["ops", "alphapose", "nn", "BUILD_INFO"]
