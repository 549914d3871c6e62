"""An emulated CUDA device for the test suite (RMPE_CUDA_EMU=1, see tests/conftest.py).

With ``install()``, ``torch.device("cuda")`` means the CUDA emulation: a tensor
put there (``.cuda()``, ``.to("cuda")``, a factory with ``device="cuda"``)
is a CPU tensor of class :class:`EmulatedCudaTensor`, which reports
``device == cuda:0`` and ``is_cuda``; ``.cpu()`` copies it back to a plain CPU
tensor and ``.numpy()`` refuses it, as for a real GPU tensor. Every
``torch.ops.rmpe_ext`` operator called with such a tensor runs the kernel of
csrc/cuda (``torch.ops.rmpe_ext_cuda_emu``, built by build.py), below autograd,
so rmpe_ext's own autograd formulas and Python wrappers run unchanged; every
other operator runs torch's CPU kernel. An rmpe_ext operator the .cu files do
not implement fails as on a GPU.

So the tests that take the ``device`` fixture, and those that call ``.cuda()``,
compare the CPU kernels with the CUDA kernels' own source. Each test runs
under its own schedule (random, seeded by the test's name; RMPE_CUDA_EMU_SCHEDULE
= lowest-first / highest-first / random picks the policy).

Not emulated: torch's own CUDA ops (they are its CPU ops here), CUDA streams
and events, and a mismatch between a CPU and a CUDA argument, which the C++
checks of a real build report (here both are CPU memory).
"""
from __future__ import annotations

import contextlib
import hashlib
import os

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from . import build

CUDA = torch.device("cuda", 0)


def _plain(t):
    with torch._C.DisableTorchFunctionSubclass():
        return t.as_subclass(torch.Tensor)


def _emulated(t):
    """A fresh plain tensor (nothing else refers to it) put on the emulated device."""
    t.__class__ = EmulatedCudaTensor
    return t


def _is_cuda(device) -> bool:
    if device is None:
        return False
    if isinstance(device, int):  # a bare index means a CUDA device
        return True
    return torch.device(device).type == "cuda"


class EmulatedCudaTensor(torch.Tensor):
    """A CPU tensor on the emulated CUDA device."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", None) == "__get__":
            prop = getattr(func, "__self__", None)
            if prop is torch.Tensor.device:
                return CUDA
            if prop is torch.Tensor.is_cuda:
                return True
            if prop is torch.Tensor.is_cpu:
                return False
        if func is torch.Tensor.get_device:
            return 0
        if func is torch.Tensor.numpy:
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor "
                            "to host memory first.")
        return super().__torch_function__(func, types, args, kwargs)

    def __repr__(self, **kwargs):
        return f"{_plain(self)!r} (emulated CUDA)"


class _Placement(TorchFunctionMode):
    """Moves between the devices: .cuda(), .cpu(), .to(device) and factories with device=."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.cuda:
            x = args[0]
            return x if isinstance(x, EmulatedCudaTensor) else _emulated(x.clone())
        if func is torch.Tensor.cpu:
            x = args[0]
            return _plain(x).clone() if isinstance(x, EmulatedCudaTensor) else x
        if func is torch.Tensor.to:
            x = args[0]
            device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*args[1:], **kwargs)
            if device is None:
                return func(*args, **kwargs)
            src, dst = isinstance(x, EmulatedCudaTensor), _is_cuda(device)
            p = _plain(x)
            y = p.to(dtype=dtype or p.dtype, memory_format=memory_format or torch.preserve_format,
                     copy=bool(kwargs.get("copy", False)))
            if src == dst and y is p:  # nothing to do: the tensor itself, as torch returns it
                return x
            if src != dst and y is p:  # another device: always a copy
                y = p.clone()
            return _emulated(y) if dst else y
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
            return tree_map(lambda t: _emulated(t) if type(t) is torch.Tensor else t, func(*args, **kwargs))
        return func(*args, **kwargs)


class _Route(TorchDispatchMode):
    """rmpe_ext operators on emulated CUDA tensors -> the emulated CUDA kernels."""

    def __init__(self, emu_ops):
        super().__init__()
        self.emu = emu_ops
        self.names = set(build.op_names())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        leaves, _ = tree_flatten((args, kwargs))
        if not any(isinstance(t, EmulatedCudaTensor) for t in leaves):
            return func(*args, **kwargs)
        if func.namespace == "rmpe_ext":
            name = func._opname
            if name not in self.names:
                raise NotImplementedError(f"Could not run '{func}' with arguments from the 'CUDA' backend: "
                                          "csrc/cuda registers no kernel for it (CUDA emulation)")
            unwrap = lambda t: _plain(t) if isinstance(t, torch.Tensor) else t  # noqa: E731
            out = getattr(self.emu, name)(*tree_map(unwrap, args), **tree_map(unwrap, kwargs))
        else:
            out = func(*args, **kwargs)
        # what an op on the device returns is on the device (gradients too)
        inputs = {id(t) for t in leaves if isinstance(t, torch.Tensor)}
        return tree_map(lambda t: _emulated(t) if type(t) is torch.Tensor and id(t) not in inputs else t, out)


_installed = []


def configure(schedule: str = "random", seed: int = 0, garbage: bool = True, mutants=()) -> None:
    """The schedule policy (random / lowest-first / highest-first), its seed (also the
    garbage's), whether fresh allocations get garbage, and the mutants switched on."""
    build.load()._emu_configure(schedule, seed, garbage, list(mutants))


@contextlib.contextmanager
def emulated():
    """"cuda" is the emulated device inside the block."""
    placement, route = _Placement(), _Route(build.load())
    with placement, route:
        yield


def install() -> None:
    """Makes "cuda" the emulated device in this process, for good."""
    if not _installed:
        _installed.append(emulated())
        _installed[0].__enter__()
        # the emulated kernels have finished when their launch returns
        torch.cuda.synchronize = lambda device=None: None


# ---------------------------------------------------------------- pytest hooks (imported by tests/conftest.py)

def _uses_cuda(item) -> bool:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and any(str(v) == "cuda" for v in callspec.params.values()):  # device, dev, ...
        return True
    return any("cuda" in str(m.kwargs.get("reason", "")).lower() for m in item.iter_markers("skipif"))


# Tests that do not run on the emulated device, and why.
NOT_EMULATED = {
    "test_device_mismatch_is_named": "not emulated: the emulated CUDA tensors are CPU memory to the C++ code, so "
                                     "the op's own device check cannot see a CPU argument among CUDA ones",
    "test_opcheck": "not emulated: opcheck's AOT-dispatch check does not trace through the emulated device's "
                    "Python modes (its schema check of the CUDA kernels runs in tests/test_cuda_emu.py)",
    "test_opcheck_affine_ops": "not emulated: as test_opcheck",
    "test_torch_compile_fullgraph": "not emulated: torch.compile refuses the emulated device's dispatch mode",
    "test_torch_compile_affine": "not emulated: as test_torch_compile_fullgraph",
    "test_crop_persons_matches_alphapose_on_real_images": "replaced by tests/test_cuda_emu.py::"
        "test_cuda_agrees_with_cpu[real_crops]: the same images, the emulated CUDA crops against the CPU ones "
        "(the CPU run of this test compares those with AlphaPose), without the 80 s of AlphaPose's transform",
}


def pytest_collection_modifyitems(config, items):
    """Keeps the tests that run on "cuda" (the CPU-only ones ran in the main session)."""
    import pytest

    keep = [item for item in items if _uses_cuda(item)]
    for item in keep:
        if item.originalname in NOT_EMULATED:
            item.add_marker(pytest.mark.skip(reason=NOT_EMULATED[item.originalname]))
    config.hook.pytest_deselected(items=[item for item in items if not _uses_cuda(item)])
    items[:] = keep


def pytest_runtest_setup(item):
    """Each test under its own reproducible schedule; RMPE_CUDA_EMU_MUTANTS=scan_race,...
    runs the session on deliberately broken kernels (build.MUTANTS), which must fail."""
    seed = int(hashlib.sha256(item.nodeid.encode()).hexdigest()[:8], 16)
    mutants = [m for m in os.environ.get("RMPE_CUDA_EMU_MUTANTS", "").split(",") if m]
    unknown = set(mutants) - set(build.MUTANTS)
    assert not unknown, f"RMPE_CUDA_EMU_MUTANTS: no mutant {sorted(unknown)} (build.MUTANTS: {sorted(build.MUTANTS)})"
    configure(os.environ.get("RMPE_CUDA_EMU_SCHEDULE", "random"), seed, mutants=mutants)
