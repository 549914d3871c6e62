"""Builds csrc/cuda/*.cu for the host, against the CUDA emulation, and loads it.

The .cu files are compiled as C++ after a rewrite that keeps every line where
it is (``#line`` names the original file, so messages and ``__LINE__`` point
at the real source):

* ``#include "emu.h"`` first: the CUDA vocabulary (emu.h), then the file;
* ``kernel<<<grid, block, smem, stream>>>(args)`` becomes
  ``::emu::Launch("kernel", __FILE__, __LINE__, grid, block, smem, stream)
  .run([](auto... a) { kernel(a...); }, args)``;
* ``__shared__ T name[n];`` becomes per-block storage
  (``auto& name = emu_shared<T[n]>([] {});``);
* ``at::empty`` / ``at::empty_like`` become their emulated versions, which
  fill the new memory with seeded garbage;
* ``TORCH_LIBRARY_IMPL(rmpe_ext, CUDA, m)`` becomes
  ``TORCH_LIBRARY_IMPL(rmpe_ext_cuda_emu, CPU, m)``: the CUDA launchers are
  registered under their own namespace, taking CPU tensors (the op schemas are
  those of torch.ops.rmpe_ext, copied at load time);
* MUTANTS: a few known bugs put back under a runtime switch
  (``::emu::mutant("name")``, off unless a test turns it on), so tests can show
  that the emulation catches them. With every switch off the code does what
  the .cu file says.

``cuda/cuda_context.h`` and ``<cuda_runtime.h>`` resolve to the emulation's
(tests/cuda_emu/include). Variants: "default" (-O2) and "asan"
(AddressSanitizer + UBSan, fiber switches annotated; load it in a process that
preloads libasan, see run_sanitized.py).

    python tests/cuda_emu/build.py [default|asan]     # build only
"""
from __future__ import annotations

import os
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CSRC = ROOT / "csrc"
KERNELS = sorted((CSRC / "cuda").glob("*.cu"))
NAMESPACE = "rmpe_ext_cuda_emu"

# name -> (file, [(exact text in the .cu file, replacement), ...]). A
# replacement keeps the line count and, with the switch off, does exactly what
# the text it replaces does.
_M = '::emu::mutant("{}")'
MUTANTS = {
    # bug 1 (fixed): every lane reads rem[v] while its owner lane may already
    # have written the pick's bit into it (no sync between the read and the write)
    "scan_race": ("pose_nms_cuda.cu", [
        ("      __syncwarp();  // every lane has read rem[v] before lane v % 32 writes it below",
         f"      if (!{_M.format('scan_race')}) __syncwarp();  // every lane has read rem[v] before ...")]),
    # bug 2 (fixed): the merge visited a group's members in score order (the
    # sorted order and its slots) instead of ascending index
    "merge_score_order": ("pose_nms_cuda.cu", [
        ("      N, K, xy, s, meta, by_index_p, seg_begin, seg_end, slot_by_index_p, pick_local, seg_count,",
         f"      N, K, xy, s, meta, {_M.format('merge_score_order')} ? order_p : by_index_p, seg_begin, seg_end, "
         f"{_M.format('merge_score_order')} ? slot_local : slot_by_index_p, pick_local, seg_count,")]),
    # bug 3 (fixed): the gather's bounds trusted gamma when gamma[0] and
    # gamma[4] were finite, and trusted the mapped corners whatever they were
    "gather_partial_check": ("affine_cuda.cu", [
        ("      bool bounded = finite6(gm);",
         f"      bool bounded = {_M.format('gather_partial_check')} ? fp::isfinite(gm[0]) && fp::isfinite(gm[4]) "
         ": finite6(gm);"),
        ("        bounded = fp::isfinite(jj) && fp::isfinite(ii);",
         f"        bounded = {_M.format('gather_partial_check')} || (fp::isfinite(jj) && fp::isfinite(ii));")]),
}

LAUNCH = re.compile(r"<<<(.*?)>>>\s*\(", re.S)
SHARED = re.compile(r"^([ \t]*)__shared__[ \t]+([^;\n]*?)[ \t]*\b(\w+)[ \t]*((?:\[[^\]\n]*\][ \t]*)*);", re.M)


def _kernel_before(text: str, end: int) -> int:
    """Start of the kernel expression ending at `end` (name, optional <...>)."""
    i = end
    while i > 0 and text[i - 1].isspace():
        i -= 1
    if text[i - 1] == ">":  # template arguments
        depth = 0
        while True:
            i -= 1
            depth += {">": 1, "<": -1}.get(text[i], 0)
            if depth == 0:
                break
    while i > 0 and (text[i - 1].isalnum() or text[i - 1] in "_:"):
        i -= 1
    return i


def rewrite_launches(text: str) -> str:
    out, pos = [], 0
    for m in LAUNCH.finditer(text):
        start = _kernel_before(text, m.start())
        kernel = text[start:m.start()].strip()
        assert re.fullmatch(r"[\w:]+(<.*>)?", kernel, re.S), f"cuda_emu: cannot read the kernel of {kernel!r}"
        rest = text[m.end():]
        no_args = re.match(r"\s*\)", rest) is not None
        name = re.sub(r"\s+", " ", kernel)
        call = (f'::emu::Launch("{name}", __FILE__, __LINE__, {m.group(1)})'
                f".run([](auto... emu_a) {{ {kernel}(emu_a...); }}" + ("" if no_args else ", "))
        out += [text[pos:start], call]
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def rewrite(text: str, name: str, origin: str, mutants: dict | None = None) -> str:
    """The emulated build's source of the .cu file `origin` (its name: `name`)."""
    lines = text.count("\n")
    for mname, (fname, edits) in (MUTANTS if mutants is None else mutants).items():
        for old, new in edits if fname == name else ():
            assert text.count(old) == 1, f"cuda_emu: mutant {mname}: the text it changes is not (once) in {name}: {old!r}"
            assert new.count("\n") == old.count("\n")
            text = text.replace(old, new)
    impl = "TORCH_LIBRARY_IMPL(rmpe_ext, CUDA, m)"
    text = text.replace(impl, f"TORCH_LIBRARY_IMPL({NAMESPACE}, CPU, m)")
    assert "extern __shared__" not in text, "cuda_emu: dynamic shared memory is not emulated"
    text = SHARED.sub(lambda m: f"{m.group(1)}auto& {m.group(3)} = emu_shared<{m.group(2)}"
                                f"{''.join(m.group(4).split())}>([] {{}});", text)
    text = re.sub(r"\bat::empty\(", "::emu::empty(", text)
    text = re.sub(r"\bat::empty_like\(", "::emu::empty_like(", text)
    text = rewrite_launches(text)
    assert text.count("\n") == lines, f"cuda_emu: the rewrite of {name} moved lines"
    return f'#include "emu.h"\n#line 1 "{origin}"\n' + text


def op_names() -> list[str]:
    """The ops the .cu files register (m.impl("name", ...))."""
    names = []
    for cu in KERNELS:
        names += re.findall(r'm\.impl\("(\w+)"', cu.read_text())
    return names


def _write_if_changed(path: pathlib.Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


VARIANTS = {
    "default": (["-O2"], []),
    "asan": (["-O1", "-g1", "-fno-omit-frame-pointer", "-fsanitize=address,undefined,float-cast-overflow",
              "-fno-sanitize-recover=all"],
             ["-fsanitize=address,undefined,float-cast-overflow"]),
}


def build(variant: str = "default", verbose: bool = False) -> pathlib.Path:
    """Compiles the emulated CUDA kernels (incrementally) and returns the library's path."""
    from torch.utils import cpp_extension

    cflags, ldflags = VARIANTS[variant]
    out = ROOT / "build" / "cuda_emu" / variant
    src = out / "src"
    src.mkdir(parents=True, exist_ok=True)
    sources = []
    for cu in KERNELS + [HERE / "selftest.cu"]:
        text = cu.read_text()
        if cu in KERNELS:
            assert text.count("TORCH_LIBRARY_IMPL(rmpe_ext, CUDA, m)") == 1, \
                f"cuda_emu: {cu.name} must register its kernels with one TORCH_LIBRARY_IMPL(rmpe_ext, CUDA, m)"
        dst = src / (cu.stem + ".cpp")
        _write_if_changed(dst, rewrite(text, cu.name, cu.relative_to(ROOT).as_posix()))
        sources.append(str(dst))
    sources.append(str(HERE / "emu_runtime.cpp"))
    name = NAMESPACE + ("" if variant == "default" else "_" + variant)
    os.environ.setdefault("MAX_JOBS", "2")
    cpp_extension.load(
        name=name, sources=sources, build_directory=str(out), is_python_module=False, verbose=verbose,
        extra_include_paths=[str(HERE / "include"), str(HERE), str(CSRC)],
        extra_cflags=cflags + ["-ffp-contract=off", "-DRMPE_CUDA_EMU", "-Wno-unused-function"],
        extra_ldflags=ldflags)
    return out / f"{name}.so"


_loaded = None


def load(variant: str | None = None, verbose: bool = False):
    """Builds if needed, registers the schemas of torch.ops.rmpe_ext_cuda_emu
    (copied from torch.ops.rmpe_ext) and loads the emulated kernels; returns
    torch.ops.rmpe_ext_cuda_emu. `variant`: default or asan (None: the one
    loaded already, else $RMPE_CUDA_EMU_VARIANT, else default)."""
    global _loaded
    import torch

    import rmpe_ext  # noqa: F401  (defines torch.ops.rmpe_ext)

    if variant is None:
        variant = _loaded[0] if _loaded else os.environ.get("RMPE_CUDA_EMU_VARIANT", "default")
    if _loaded is None:
        lib = torch.library.Library(NAMESPACE, "FRAGMENT")
        for op in op_names():
            schema = str(getattr(torch.ops.rmpe_ext, op).default._schema)
            assert schema.startswith("rmpe_ext::"), schema
            lib.define(schema[len("rmpe_ext::"):])
        path = build(variant, verbose)
        torch.ops.load_library(str(path))
        _loaded = (variant, lib)
    assert _loaded[0] == variant, f"cuda_emu: the {_loaded[0]} build is loaded already"
    return getattr(torch.ops, NAMESPACE)


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else "default", verbose=True))
