"""Loads the compiled operators, refusing a binary built for another torch."""
import importlib

import torch

_REBUILD = "rebuild it against the installed torch: pip install --no-build-isolation --no-deps --force-reinstall ."


def load_extension():
    """Imports rmpe_ext._C (which registers torch.ops.rmpe_ext.*); returns the build info dict.

    Raises ImportError naming both torch versions when the binary does not match
    the running torch, and saying how to rebuild.
    """
    try:
        info = importlib.import_module("rmpe_ext._build_info")
    except ImportError as e:
        raise ImportError(
            "rmpe_ext: the compiled extension was never built (rmpe_ext/_build_info.py is missing); "
            "install with: pip install --no-build-isolation ."
        ) from e
    built, running = info.TORCH_VERSION, torch.__version__
    if built != running:
        raise ImportError(
            f"rmpe_ext: the compiled extension was built against torch {built}, but torch {running} is "
            f"installed; a binary built for another torch can crash or misbehave. {_REBUILD}"
        )
    try:
        importlib.import_module("rmpe_ext._C")
    except ImportError as e:
        raise ImportError(
            f"rmpe_ext: the compiled extension failed to load ({e}). It was built against torch {built} "
            f"(CUDA {info.TORCH_CUDA_VERSION}); torch {running} (CUDA {torch.version.cuda}) is running. {_REBUILD}"
        ) from e
    so_info = dict(kv.split("=", 1) for kv in torch.ops.rmpe_ext._build_info().split(";"))
    if so_info["torch"] != built.split("+")[0]:
        raise ImportError(
            f"rmpe_ext: the shared library reports torch {so_info['torch']} but its build record says {built}; "
            f"{_REBUILD}"
        )
    return {"torch": built, "torch_cuda": info.TORCH_CUDA_VERSION, "with_cuda": so_info["cuda"] == "1"}
