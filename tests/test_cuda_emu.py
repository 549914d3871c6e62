"""The CUDA kernels (csrc/cuda) executed on the CPU under the emulation of the CUDA
execution model in tests/cuda_emu (docs/cuda_emulation.md): the emulation's own
checks, the bugs it found (each with the mutant that puts it back and must be
caught), the kernels' schemas, and every operator against the CPU kernels.

The tests that take the ``device`` fixture, and those that call ``.cuda()``, run
on the emulated device in a second session: ``make test-cuda-emu``.
Under the sanitizers (tests/cuda_emu/run_sanitized.py: RMPE_CUDA_EMU_VARIANT=asan)
the same tests run on a smaller case set.
"""
import os

import numpy as np
import pytest
import torch
from cuda_emu import build, compare

from rmpe_ext import ops, reference

VARIANT = os.environ.get("RMPE_CUDA_EMU_VARIANT", "default")
LEVEL = "asan" if VARIANT == "asan" else "ci"
SCHEDULES = compare.LEVELS[LEVEL]
CPU = torch.ops.rmpe_ext


@pytest.fixture(scope="module")
def emu():
    return build.load(VARIANT)


def configure(emu, schedule, mutants=()):
    name, seed = compare._schedule(schedule)
    emu._emu_configure(name, seed, True, list(mutants))


@pytest.fixture(autouse=True)
def _default_schedule(emu):
    configure(emu, "random:0")
    yield
    configure(emu, "random:0")


def nms_args(p, method, dtype=torch.float32, rank="box score", merge=None):
    P, S, B = (t.to(dtype) for t in (p.poses, p.joint_scores, p.boxes))
    r = p.scores.to(dtype) if rank == "box score" else None
    return compare._nms_args(P, S, B, r, p.image_index, method, compare._params(method, merge))


# ------------------------------------------------------------------ the emulation's own checks

# self-test kernel (tests/cuda_emu/selftest.cu) -> what the emulation must report, whatever the schedule
BROKEN = {
    "lane_outside_mask": r"lane \d+ calls __ballot_sync \(.*selftest.cu:\d+\) with mask 0x00000001, which excludes it",
    "divergent_intrinsics": r"arrives at __(ballot|any)_sync .* while lanes .* wait at __(any|ballot)_sync",
    "exit_while_waited": r"lane 5 exited while lanes .* wait for it at __syncwarp|naming lanes \{5\} that have exited",
    "divergent_syncthreads": r"exited while \d+ threads wait at __syncthreads|after \d+ threads of the block have exited",
    "shfl_outside_mask": r"reads lane 5, outside the mask 0x00000003, at __shfl_sync",
    "warp_waits_on_syncthreads": r"deadlock: no thread can run|reaches __syncthreads .* while lanes \{0\} wait for it",
}


@pytest.mark.parametrize("schedule", ["lowest-first", "highest-first", "random:7"])
@pytest.mark.parametrize("case", list(BROKEN))
def test_emulation_reports_kernels_that_break_the_model(emu, case, schedule):
    configure(emu, schedule)
    with pytest.raises(RuntimeError, match=r"CUDA emulation: " + case + r" \(launched at .*selftest.cu:\d+\), "
                                           r"block \(0,0,0\), schedule [^:]+: .*(" + BROKEN[case] + ")"):
        emu._emu_selftest(case, 96)


@pytest.mark.parametrize("schedule", ["lowest-first", "highest-first", "random:7"])
def test_warp_intrinsics_block_barriers_shared_memory_and_atomics(emu, schedule):
    configure(emu, schedule)
    n = 64
    out = emu._emu_selftest("warp_ops", n).view(7, n)
    t = torch.arange(n)
    lane, base = t % 32, t - t % 32
    want = torch.stack([
        torch.full((n,), sum(1 << k for k in range(0, 32, 3))),  # ballot of lane % 3 == 0
        torch.ones(n, dtype=torch.long),                           # any: lane 7
        torch.zeros(n, dtype=torch.long),                          # all lanes < 31: not lane 31
        (base + (lane + 3) % 32) * 10,                             # shfl from lane + 3, modulo 32
        base + (lane ^ 5),                                         # xor 5
        torch.where(lane % 8 + 3 >= 8, t, t + 3),                  # down 3 within 8 lanes
        torch.where(lane % 16 < 2, t, t - 2),                      # up 2 within 16 lanes
    ])
    assert torch.equal(out, want)
    sums = emu._emu_selftest("block_sums", n)[:7]  # __shared__ is per block
    assert sums.tolist() == [sum(range(b * n, (b + 1) * n)) for b in range(7)]
    counts = emu._emu_selftest("atomics", n)  # int count, 64-bit OR, float sum (in the low half of a word)
    assert counts[0] == 5 * n and counts[1] == -1 and counts[2:].view(torch.float32)[0] == 0.5 * 5 * n


def test_fresh_allocations_hold_seeded_garbage_and_bad_launches_fail(emu):
    configure(emu, "random:1")
    a = emu._emu_selftest("garbage", 256)
    configure(emu, "random:2")
    b = emu._emu_selftest("garbage", 256)
    configure(emu, "random:1")
    assert torch.equal(a, emu._emu_selftest("garbage", 256)) and not torch.equal(a, b) and (a != 0).all()
    with pytest.raises(RuntimeError, match="launch of bad_config failed: invalid configuration argument"):
        emu._emu_selftest("bad_config", 32)