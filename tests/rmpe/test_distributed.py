"""rmpe.distributed and the torchrun paths of ``rmpe train`` / ``rmpe run``: gloo, 2 processes on the CPU.

The multi-process tests launch this file itself under ``torchrun --standalone --nproc_per_node=2`` (its
``__main__`` is the worker: ``python test_distributed.py MODE OUT_DIR``); each rank writes what it saw to
OUT_DIR and the test compares. Every launch runs with ``OMP_NUM_THREADS=1`` and tiny models.
"""
from __future__ import annotations

import os
import pathlib
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from rmpe import distributed as D

ROOT = pathlib.Path(__file__).resolve().parents[2]
TORCHRUN = pathlib.Path(sys.executable).with_name("torchrun")


# ------------------------------------------------------------------ sharding (no processes)


def _loads(weights, world):
    shards = [D.shard_indices(weights, r, world) for r in range(world)]
    return shards, [sum(weights[i] for i in s) for s in shards]


def test_shard_indices_partition_balance_determinism():
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(0, 60))
        world = int(rng.integers(1, 9))
        weights = [int(x) for x in rng.integers(0, 30 if trial % 3 else 3, n)]
        shards, loads = _loads(weights, world)
        flat = sorted(i for s in shards for i in s)
        assert flat == list(range(n)), (weights, world)  # disjoint, covering
        assert all(s == sorted(s) for s in shards)  # frames keep their order inside a shard
        if n:
            assert max(loads) - min(loads) <= max(weights), (weights, world, loads)
        # a function of its arguments only: the same shards again, from lists, tuples, arrays and tensors
        for form in (tuple(weights), np.array(weights, dtype=np.int64), torch.tensor(weights, dtype=torch.long)):
            assert [D.shard_indices(form, r, world) for r in range(world)] == shards
    # frames of weight 0 are spread by count; more ranks than frames leave ranks empty
    assert [len(D.shard_indices([0] * 7, r, 3)) for r in range(3)] == [3, 2, 2]
    assert [D.shard_indices([5, 1], r, 4) for r in range(4)] == [[0], [1], [], []]
    # the rule on a small case, worked by hand: 9 -> r0, 7 -> r1, 4 -> r1 (7 < 9), 3 -> r0 (9 < 11), 1 -> r1
    assert D.shard_indices([3, 9, 1, 7, 4], 0, 2) == [0, 1]
    assert D.shard_indices([3, 9, 1, 7, 4], 1, 2) == [2, 3, 4]
    # contiguous halves would be 12 vs 5 boxes here; balanced by boxes it is 9 vs 8
    assert _loads([6, 6, 1, 1, 1, 1, 1], 2)[1] in ([9, 8], [8, 9])
    assert D.shard_indices([], 0, 3) == []


def test_shard_indices_rejects_bad_input():
    for bad, match in [(dict(weights=[1, -1]), "weights"), (dict(weights=[1, float("nan")]), "weights"),
                       (dict(weights=[float("inf")]), "weights"), (dict(weights=["a"]), "weights"),
                       (dict(weights=5), "weights"), (dict(rank=2), "rank"), (dict(rank=-1), "rank"),
                       (dict(world_size=0), "world_size"), (dict(world_size=2.0), "world_size"),
                       (dict(rank=True), "rank")]:
        args = dict(weights=[1, 2, 3], rank=0, world_size=2)
        args.update(bad)
        with pytest.raises(ValueError, match=match):
            D.shard_indices(**args)


def test_one_process_helpers_act_as_the_one_process(tmp_path):
    assert not D.is_distributed() and D.get_rank() == 0 and D.get_world_size() == 1 and D.is_main()
    ctx = D.init_from_env("cpu", env={})
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.distributed, ctx.is_main) == (0, 1, None, False, True)
    assert D.init_from_env("cpu", env={"WORLD_SIZE": "1", "RANK": "0"}).world_size == 1
    assert D.all_reduce_sum({"a": 1, "b": 2.5}) == {"a": 1.0, "b": 2.5} and D.all_reduce_sum([3]) == [3.0]
    assert D.all_gather_object({"x": 1}) == [{"x": 1}] and D.broadcast_object(7) == 7
    recs = [{"image_id": 3}, {"image_id": 1}, {"image_id": 3, "k": 2}]
    assert D.gather_records(recs) == recs and D.gather_records(recs) is not recs
    assert D.gather_records(recs, key=lambda r: r["image_id"]) == [recs[1], recs[0], recs[2]]  # stable
    assert recs[0] == {"image_id": 3}  # the caller's list is not reordered
    with pytest.raises(ValueError, match="records"):
        D.gather_records("abc")
    path = D.save_on_main({"w": torch.arange(3)}, tmp_path / "sub" / "x.pt")
    assert torch.equal(torch.load(path)["w"], torch.arange(3)) and os.listdir(tmp_path / "sub") == ["x.pt"]
    with pytest.raises(ZeroDivisionError):
        D.run_on_main(lambda: 1 / 0)
    D.barrier()


def test_init_from_env_names_what_is_wrong():
    for env, match in [({"WORLD_SIZE": "two"}, "WORLD_SIZE"), ({"WORLD_SIZE": "0"}, "WORLD_SIZE"),
                       ({"WORLD_SIZE": "2"}, "RANK"), ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK"),
                       ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "-1"}, "LOCAL_RANK"),
                       ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}, "MASTER_ADDR")]:
        with pytest.raises(ValueError, match=match):
            D.init_from_env("cpu", env=env)
    with pytest.raises(ValueError, match="device"):
        D.init_from_env("tpu", env={})
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            D.init_from_env("cuda", env={})
    ok = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    with pytest.raises(ValueError, match="backend"):
        D.init_from_env("cpu", backend="mpi", env=ok)
    with pytest.raises(ValueError, match="NCCL"):
        D.init_from_env("cpu", backend="nccl", env=ok)
    with pytest.raises(ValueError, match="timeout_s"):
        D.init_from_env("cpu", timeout_s=float("nan"), env=ok)
    assert not D.is_distributed()


# ------------------------------------------------------------------ launching this file under torchrun


def torchrun(args, out_dir, nproc=2, timeout=120, check=True, module=False):
    """Runs ``torchrun --standalone --nproc_per_node=nproc`` on this file's worker (or ``-m rmpe`` when
    ``module``) with one thread per process; returns the CompletedProcess."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    cmd = [str(TORCHRUN), "--standalone", f"--nproc_per_node={nproc}", "--monitor_interval=0.2"]
    cmd += ["-m", "rmpe", *args] if module else [__file__, *args, str(out_dir)]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"torchrun {args} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
    return p


def test_collectives_under_torchrun(tmp_path):
    """The helpers with a real gloo group of 2: sums, gathers (rank 0 only, sorted), broadcast of
    buffers, rank-0-only atomic writes, and rank 0's failure raised on every rank."""
    torchrun(["collectives"], tmp_path)
    for r in range(2):
        got = torch.load(tmp_path / f"rank{r}.pt")
        assert got["ctx"] == (r, 2, r, "gloo")
        assert got["sum"] == {"n": 3.0, "x": 1.5}
        assert got["gathered"] == ([{"image_id": i, "rank": i % 2} for i in range(6)] if r == 0 else None)
        assert got["all"] == [0, 10]
        assert got["buffer"] == [0.0, 0.0, 0.0]  # rank 0's buffer everywhere
        assert got["saved"] == str(tmp_path / "ckpt.pt")
        assert got["failure"].startswith("ZeroDivisionError" if r == 0 else "RuntimeError: rank 0 failed: ZeroDivision")
    assert torch.load(tmp_path / "ckpt.pt") == {"from": 0}
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt", "rank0.pt", "rank1.pt"]  # no temporary file left


# ------------------------------------------------------------------ the worker


def _worker_collectives(out):
    ctx = D.init_from_env("cpu")
    r = ctx.rank
    got = {"ctx": (ctx.rank, ctx.world_size, ctx.local_rank, ctx.backend)}
    got["sum"] = D.all_reduce_sum({"n": r + 1, "x": 0.5 + r * 0.5})
    mine = [{"image_id": i, "rank": r} for i in range(6) if i % 2 == r]
    got["gathered"] = D.gather_records(mine[::-1], key=lambda rec: rec["image_id"])
    got["all"] = D.all_gather_object(10 * r)
    bn = torch.nn.BatchNorm1d(3)
    bn.running_mean.fill_(float(r))
    D.broadcast_buffers(bn)
    got["buffer"] = bn.running_mean.tolist()
    got["saved"] = D.save_on_main({"from": r}, os.path.join(out, "ckpt.pt"))
    try:
        D.run_on_main(lambda: 1 / 0)
    except Exception as e:  # noqa: BLE001 - the test reads the message
        got["failure"] = f"{type(e).__name__}: {e}"
    torch.save(got, os.path.join(out, f"rank{r}.pt"))


WORKERS = {"collectives": _worker_collectives}


def _main(argv):
    mode, out = argv
    torch.set_num_threads(1)
    random.seed(0)
    try:
        WORKERS[mode](out)
    finally:
        if D.is_distributed():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    _main(sys.argv[1:])
