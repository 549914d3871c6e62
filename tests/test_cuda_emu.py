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


# ------------------------------------------------------------------ bug 1: the lane race in scan_kernel


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_scan_agrees_with_the_cpu_under_every_schedule(emu, dev_proposals, schedule):
    """Every lane read the removed set at the top of an iteration while lane 0 wrote the
    pick's bit later in the same iteration, no __syncwarp between: a lane late to the
    read skipped the pick, its count drifted and the warp deadlocked (lowest-first and
    every random schedule on these 413 proposals)."""
    configure(emu, schedule)
    for method in compare.METHODS:
        for rank in ("box score", "default"):
            args = nms_args(dev_proposals, method, rank=rank)
            cpu, cuda = CPU.pose_nms(*args), emu.pose_nms(*args)
            assert torch.equal(cpu[0], cuda[0]) and torch.equal(cpu[3], cuda[3]), (method, rank)


@pytest.mark.parametrize("schedule", ["lowest-first", "random:1", "random:2"])
def test_the_restored_scan_race_is_caught(emu, dev_proposals, schedule):
    configure(emu, schedule, mutants=["scan_race"])
    with pytest.raises(RuntimeError, match=r"CUDA emulation: scan_kernel \(launched at csrc/cuda/pose_nms_cuda.cu:"
                                           r"\d+\), block .*: (deadlock|warp \d+: lane \d+ (exited|calls __syncwarp))"):
        emu.pose_nms(*nms_args(dev_proposals, "alphapose"))


# ------------------------------------------------------------------ bug 2: the merge's order of summation


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_merge_sums_each_group_in_alphapose_order(emu, dev_proposals, dtype):
    """The CUDA merge visited a group's members in score order, the CPU kernel and
    AlphaPose in ascending index: with the default ranking, 29 of the 225 real groups
    differed in the last bits (up to 9.2e-5 px in float32)."""
    for method in compare.METHODS:
        args = nms_args(dev_proposals, method, dtype, rank="default", merge=True)
        cpu, cuda = CPU.pose_nms(*args), emu.pose_nms(*args)
        assert torch.equal(cpu[0], cuda[0]) and torch.equal(cpu[3], cuda[3])
        assert torch.equal(cpu[1], cuda[1]) and torch.equal(cpu[2], cuda[2]), method
    # the NumPy reference adds in the same order (members in ascending index)
    p = dev_proposals
    P, S, B = (t.double() for t in (p.poses, p.joint_scores, p.boxes))
    ref = reference.pose_nms(P, S, B, None, p.image_index, "alphapose")
    cuda = emu.pose_nms(P, S, B, None, p.image_index, 0, ops.AlphaPoseNMSParams().to_list(), None)
    assert cuda[0].tolist() == ref[0].tolist()
    np.testing.assert_allclose(cuda[1].numpy(), ref[1], rtol=0, atol=1e-12)


def test_the_restored_score_order_is_caught(emu, dev_proposals):
    configure(emu, "random:1", mutants=["merge_score_order"])
    args = nms_args(dev_proposals, "alphapose", rank="default")
    cpu, cuda = CPU.pose_nms(*args), emu.pose_nms(*args)
    assert torch.equal(cpu[0], cuda[0])
    differ = (cpu[1] != cuda[1]).flatten(1).any(1)
    assert 0 < int(differ.sum()) < len(cpu[0])  # 29 of 225 groups


# ------------------------------------------------------------------ bug 3: degenerate theta, deterministic gradient

DEGENERATE = ["1e-37 scale (bug 3)", "1e-38 shear (bug 3)"]


@pytest.mark.parametrize("name", DEGENERATE)
def test_deterministic_input_gradient_of_a_degenerate_theta(emu, name):
    """Only gamma[0] and gamma[4] were checked: theta = [[1e-37, 0, 40], [0, 1, 3]] (gamma[2]
    = -inf in float32) or [[1e-38, 1, 0], [0, 1, 0]] (gamma finite, its corners inf - inf)
    gave no bounds and zeros where the CPU has gradient values."""
    x = torch.randn(1, 2, 40, 60, generator=torch.Generator().manual_seed(0))
    theta = torch.tensor([compare.DEGENERATE[name]], dtype=torch.float32)
    go = torch.randn(1, 2, 80, 60, generator=torch.Generator().manual_seed(1))
    args = (go, x, theta, None, 0, 0.0, True, False, True)
    cpu, cuda = CPU._affine_sample_backward(*args)[0], emu._affine_sample_backward(*args)[0]
    assert (cpu != 0).sum() > 50
    assert torch.equal(cpu, cuda)


def test_the_restored_partial_check_is_caught(emu):
    configure(emu, "random:1", mutants=["gather_partial_check"])
    x = torch.randn(1, 2, 40, 60, generator=torch.Generator().manual_seed(0))
    theta = torch.tensor([compare.DEGENERATE["1e-38 shear (bug 3)"]], dtype=torch.float32)
    go = torch.randn(1, 2, 80, 60, generator=torch.Generator().manual_seed(1))
    args = (go, x, theta, None, 0, 0.0, True, False, True)
    cpu, cuda = CPU._affine_sample_backward(*args)[0], emu._affine_sample_backward(*args)[0]
    assert ((cuda == 0) & (cpu != 0)).sum() > 50


# ------------------------------------------------------------------ every operator against the CPU kernels


def test_cuda_kernels_do_what_their_schemas_say(emu):
    """opcheck's schema test (no input mutated unless declared, no output aliasing an
    input) on the CUDA kernels; the device session cannot run opcheck (see device.py)."""
    P, S, B, img = compare.generated(0, images=2, persons=2, per_person=3)
    nms = compare._nms_args(P, S, B, S.mean(1), img, "alphapose", compare._params("alphapose"))
    g = torch.Generator().manual_seed(0)
    x, th = torch.randn(2, 3, 12, 10, generator=g), compare._thetas(3, g)
    frames = torch.randint(0, 256, (2, 12, 10, 3), dtype=torch.uint8, generator=g)
    bidx = torch.tensor([0, 1, 1])
    cases = {
        "pose_similarity": nms[:3] + nms[5:],
        "pose_nms": nms,
        "soft_oks_nms": (P, S, B, S.mean(1), img, compare._params("oks").to_list(), torch.tensor(ops.COCO_SIGMAS),
                         20, False),
        "affine_sample": (x, th, [5, 4], bidx, 2, 0.25),
        "_affine_sample_backward": (torch.randn(3, 3, 5, 4, generator=g), x, th, bidx, 0, 0.0, True, True, True),
        "affine_crop": (frames, th.double(), [5, 4], bidx, [0.4] * 3, [1.0] * 3, True, 0.0, 2, torch.float32),
        "affine_crop_into": (frames, th.double(), bidx, [0.4] * 3, [1.0] * 3, False, 0.0, 0, torch.empty(3, 3, 5, 4)),
        "affine_inverse": (th,),
        "_affine_inverse_backward": (torch.randn(3, 2, 3, generator=g), th, CPU.affine_inverse(th)),
        "heatmap_decode": (torch.rand(3, 5, 8, 6, generator=g), th.double(), True),
    }
    assert sorted(cases) == sorted(build.op_names())
    for name, args in cases.items():
        torch.library.opcheck(getattr(emu, name).default, args, test_utils=("test_schema",))


@pytest.mark.parametrize("group", list(compare.GROUPS))
def test_cuda_agrees_with_cpu(emu, group, shared_data_or_none):
    if group == "real_crops" and shared_data_or_none is None:
        pytest.skip("shared data not found (set RMPE_SHARED_DATA)")
    c = compare.Comparer(LEVEL)
    compare.GROUPS[group](c)
    print(c.tally.summary())
    assert c.tally.rows and not c.tally.failures, c.tally.summary()


@pytest.fixture
def shared_data_or_none():
    from conftest import SHARED

    return SHARED if SHARED.exists() else None
