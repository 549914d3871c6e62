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
    assert [D.launched_distributed(e) for e in ({}, {"WORLD_SIZE": "1"}, {"WORLD_SIZE": "2"})] == [False, False, True]
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


def torchrun(args, out_dir, nproc=2, timeout=120, check=True, module=False, cwd=ROOT):
    """Runs ``torchrun --standalone --nproc_per_node=nproc`` on this file's worker (or ``-m rmpe`` when
    ``module``) with one thread per process; returns the CompletedProcess."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    cmd = [str(TORCHRUN), "--standalone", f"--nproc_per_node={nproc}", "--monitor_interval=0.2"]
    cmd += ["-m", "rmpe", *args] if module else [__file__, *args, str(out_dir)]
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
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


# ------------------------------------------------------------------ training under DDP


B = 4  # crops per process and step


def synthetic_crops(n, seed=0):
    """``n`` random crops of 32 x 24 pixels (targets 8 x 6, 17 joints), as tests/rmpe/test_rmpe_train.py."""
    from rmpe.sstn.datasets import CropSet

    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, 17, 8, 6, generator=g)
    star = torch.eye(2, 3).repeat(n, 1, 1)
    star[:, :, 2] = (torch.rand(n, 2, generator=g) - 0.5) * 0.4
    kp = torch.cat([torch.rand(n, 17, 2, generator=g, dtype=torch.float64) * 20,
                    torch.full((n, 17, 1), 2.0, dtype=torch.float64)], 2)
    return CropSet(torch.randn(n, 3, 32, 24, generator=g), t, torch.ones(n, 17), t.clone(), torch.ones(n, 17), star,
                   torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64).repeat(n, 1, 1),
                   torch.zeros(n, 4, dtype=torch.float64), kp, torch.full((n, 4), 20.0, dtype=torch.float64),
                   torch.arange(n), torch.zeros(n, dtype=torch.long))


def bn_free_model(parallel, transform="affine"):
    """A tiny SSTN without batch norm (whose statistics are per process under DDP on CPUs: PyTorch's
    SyncBatchNorm is GPU-only), so that 2 processes x batch b must equal 1 process x batch 2b. The
    localization net's last layers start off the identity's zeros so that every one of its parameters
    gets a gradient in the first step."""
    from rmpe.sstn.model import SSTN, LocalizationNet

    torch.manual_seed(0)
    sppe = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 17, 3, stride=2, padding=1))
    loc = LocalizationNet((32, 24), backbone=torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, stride=4, padding=1),
                                                                 torch.nn.ReLU()), transform=transform)
    with torch.no_grad():
        for p in (loc.fc.weight, loc.points.weight):
            p.normal_(0, 0.05)
    return SSTN(sppe, input_size=(32, 24), loc_net=loc, parallel=parallel)


# name -> (parallel branch, freeze_sppe, SPPE warm-up epochs, the localization net's transform); with
# "translation" its 2x2 layer is never used: DDP must be told (the trainer probes for unused parameters)
STEP_VARIANTS = {"copy_frozen": ("copy", True, 0, "affine"), "none": (None, False, 0, "affine"),
                 "shared": ("shared", False, 0, "affine"), "warmup": ("shared", False, 1, "affine"),
                 "translation": ("shared", False, 0, "translation")}


def one_step(variant, batch_size, distributed=None):
    """One epoch of one optimizer step on 2 x B crops; returns what the test compares."""
    from rmpe.sstn.trainer import Trainer, TrainConfig

    parallel, frozen, warmup, transform = STEP_VARIANTS[variant]
    model = bn_free_model(parallel, transform)
    cfg = TrainConfig(epochs=1, batch_size=batch_size, lr=1e-2, schedule="constant", freeze_sppe=frozen,
                      sppe_warmup_epochs=warmup, progress=False, seed=0)
    t = Trainer(model, synthetic_crops(2 * B), cfg, val=synthetic_crops(6, seed=1), distributed=distributed)
    history = t.fit()
    return {"params": {k: v.detach().clone() for k, v in model.named_parameters()},
            "loc_grads": {k: None if p.grad is None else p.grad.clone() for k, p in model.loc_net.named_parameters()},
            "history": history,
            "parallel_params": [(p.requires_grad, p.grad is None) for p in
                                (model.parallel_sppe.parameters() if model.parallel_sppe is not None else [])]}


@pytest.fixture(scope="module")
def ddp_steps(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_steps")
    torchrun(["steps"], out)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("variant", list(STEP_VARIANTS))
def test_one_step_on_two_processes_equals_one_process_on_twice_the_batch(ddp_steps, variant):
    """2 processes x batch 4 (gloo) give the parameters, the localization net's gradients, the loss and
    the held-out figures of 1 process x batch 8: with the frozen parallel SPPE copy, without a parallel
    branch, with the shared one, and in the SPPE warm-up (where the localization net is not used)."""
    torch.set_num_threads(1)
    ref = one_step(variant, 2 * B)
    for r, got in enumerate(ddp_steps):
        got = got[variant]
        for k, v in ref["params"].items():
            torch.testing.assert_close(got["params"][k], v, rtol=1e-5, atol=1e-6, msg=f"rank {r} {variant} {k}")
        for k, g in ref["loc_grads"].items():
            if STEP_VARIANTS[variant][2] or (variant == "translation" and k.startswith("fc.")):
                # warm-up: theta is given, the localization net gets no gradient; the unused 2x2 layer neither
                assert g is None and got["loc_grads"][k] is None, k
                continue
            # the affine sampler's gradient reaches every parameter of the localization net, on every rank
            assert got["loc_grads"][k] is not None and got["loc_grads"][k].abs().sum() > 0, (r, variant, k)
            torch.testing.assert_close(got["loc_grads"][k], g, rtol=1e-4, atol=1e-7, msg=f"rank {r} {variant} {k}")
            assert torch.equal(got["loc_grads"][k], ddp_steps[0][variant]["loc_grads"][k])  # all-reduced
        (h,), (rh,) = got["history"], ref["history"]
        assert h.keys() == rh.keys()
        for k in rh:
            assert h[k] == pytest.approx(rh[k], rel=1e-5, abs=1e-7), (r, variant, k)
        # the frozen parallel copy: out of the optimizer and the all-reduce, no gradient on any rank
        assert got["parallel_params"] == ref["parallel_params"]
        assert all(p == (False, True) for p in got["parallel_params"])
    if variant != "warmup":  # one process on its own half of the batch does not give the same step
        alone = ddp_steps[0][variant]["params"]["loc_net.points.weight"]
        half = one_step_half(variant)["params"]["loc_net.points.weight"]
        assert not torch.allclose(alone, half, rtol=1e-5, atol=1e-6)


def one_step_half(variant):
    """Rank 0's half of the batch trained alone (what a run without the all-reduce would do)."""
    from rmpe.sstn.trainer import Trainer, TrainConfig
    from torch.utils.data import DistributedSampler

    parallel, frozen, warmup, transform = STEP_VARIANTS[variant]
    model = bn_free_model(parallel, transform)
    cfg = TrainConfig(epochs=1, batch_size=B, lr=1e-2, schedule="constant", freeze_sppe=frozen,
                      sppe_warmup_epochs=warmup, progress=False, seed=0)
    data = synthetic_crops(2 * B)
    half = data.subset(list(DistributedSampler(data, num_replicas=2, rank=0, shuffle=True, seed=0)))
    Trainer(model, half, cfg).fit()
    return {"params": dict(model.named_parameters())}


def _worker_steps(out):
    D.init_from_env("cpu")
    got = {v: one_step(v, B) for v in STEP_VARIANTS}
    torch.save(got, os.path.join(out, f"rank{D.get_rank()}.pt"))


# ------------------------------------------------------------------ a killed rank, resumed


def resume_trainer(out_dir, seed=0):
    """A tiny hourglass SSTN (batch norm, the frozen parallel copy) for 3 epochs (1 SPPE warm-up), 18
    crops: 9 per process, batches of 4, 4 and 1."""
    from rmpe.sstn.hourglass import StackedHourglass
    from rmpe.sstn.model import SSTN
    from rmpe.sstn.trainer import Trainer, TrainConfig

    torch.manual_seed(seed)
    model = SSTN(StackedHourglass(stacks=1, width=8, depth=1), input_size=(32, 24), loc_width=4, loc_blocks=(1, 1),
                 parallel="copy")
    cfg = TrainConfig(epochs=3, batch_size=B, lr=1e-3, schedule="step", lr_milestones=[2], sppe_warmup_epochs=1,
                      progress=False, seed=3)
    return Trainer(model, synthetic_crops(18), cfg, val=synthetic_crops(6, seed=1), out_dir=out_dir)


def test_a_run_killed_mid_epoch_resumes_as_the_uninterrupted_run(tmp_path):
    """Rank 1 is killed (SIGKILL) after the first step of epoch 2; torchrun ends rank 0; the checkpoint is
    epoch 1's. Two new processes resume from it (fresh models of another seed, disturbed global random
    generators): the history and every weight are those of an uninterrupted 2-process run, bit for bit
    (as the one-process resume test in test_rmpe_train.py asserts for one process)."""
    p = torchrun(["kill"], tmp_path, check=False)
    assert p.returncode != 0
    assert (tmp_path / "killed").read_text() == "rank 1 killed after step 1 of epoch 2"
    state = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    assert state["epoch"] == 1 and len(state["history"]) == 1
    info = state["config"]["distributed"]
    assert (info["world_size"], info["backend"], info["batch_size_per_process"], info["batch_size_total"]) == \
        (2, "gloo", B, 2 * B)
    assert len(state["rng_ranks"]) == 2
    torchrun(["resume"], tmp_path)
    got = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for r, g in enumerate(got):
        assert len(g["hist_c"]) == 3
        assert g["hist_c"] == g["hist_a"] == got[0]["hist_a"], r
        for k, v in g["state_a"].items():
            assert torch.equal(v, g["state_c"][k]), (r, k)
            assert torch.equal(v, got[0]["state_a"][k]), (r, k)  # every rank holds the same model
    # the history is a real run's: the warm-up epoch and two STN epochs, with the lr milestone
    hist = got[0]["hist_a"]
    assert [h["epoch"] for h in hist] == [1, 2, 3] and hist[2]["lr"] == pytest.approx(1e-4)
    assert all(np.isfinite(h["val_loss"]) for h in hist) and hist[0]["loss"] != hist[1]["loss"]
    assert len(__import__("json").loads((tmp_path / "b" / "history.json").read_text())) == 3


def _worker_kill(out):
    import signal

    D.init_from_env("cpu")
    t = resume_trainer(os.path.join(out, "b"))
    step, count = t.optimizer.step, [0]

    def counted_step(*args, **kwargs):
        result = step(*args, **kwargs)
        if t.epoch == 1:
            count[0] += 1
            if D.get_rank() == 1 and count[0] == 1:
                with open(os.path.join(out, "killed"), "w") as f:
                    f.write("rank 1 killed after step 1 of epoch 2")
                os.kill(os.getpid(), signal.SIGKILL)
        return result

    t.optimizer.step = counted_step
    t.fit()


def _worker_resume(out):
    from rmpe.sstn.trainer import set_seed

    D.init_from_env("cpu")
    set_seed(0)
    a = resume_trainer(os.path.join(out, "a"))
    hist_a = a.fit()
    torch.manual_seed(123 + D.get_rank())  # the interruption disturbs the global generators
    np.random.seed(7)
    random.seed(5)
    c = resume_trainer(os.path.join(out, "b"), seed=99)
    hist_c = c.fit(resume=True)
    torch.save({"hist_a": hist_a, "hist_c": hist_c, "state_a": a.model.state_dict(),
                "state_c": c.model.state_dict()}, os.path.join(out, f"rank{D.get_rank()}.pt"))


# ------------------------------------------------------------------ rmpe train under torchrun


def test_train_command_under_torchrun(tmp_path):
    """``torchrun --nproc_per_node=2 -m rmpe train`` on the shipped sample: rank 0 alone prints (the sizes
    per process and in total, one line per epoch) and writes the checkpoint (with the distributed sizes in
    its config); ``--resume`` continues on both processes."""
    coco4 = ROOT / "data" / "coco4"
    ckpt = tmp_path / "ckpt"
    args = ["train", "--data", str(coco4 / "test_coco.json"), "--images", str(coco4), "--epochs", "1",
            "--warmup-epochs", "0", "--width", "8", "--depth", "1", "--boxes-per-person", "2", "--threads", "1",
            "--no-progress", "--out", str(ckpt), "--seed", "0", "--batch-size", "4"]
    out = torchrun(args, None, module=True).stdout.splitlines()
    dist_lines = [x for x in out if x.startswith("distributed:")]
    assert dist_lines == ["distributed: 2 processes (gloo, cpu); batch 4 per process, 8 in total; lr 0.002, "
                          "loc-lr 0.001 on every process, applied to the gradient averaged over the total batch "
                          "(not scaled)"], out
    assert len([x for x in out if x.startswith("epoch 1:")]) == 1 and sum("training persons" in x for x in out) == 1
    assert [x for x in out if x.startswith("checkpoint:")] == [f"checkpoint: {ckpt / 'last.pt'}"]
    state = torch.load(ckpt / "last.pt", weights_only=False)
    assert state["config"]["distributed"]["batch_size_total"] == 8 and state["config"]["batch_size"] == 4
    assert sorted(os.listdir(ckpt)) == ["history.json", "last.pt"]
    args[args.index("--epochs") + 1] = "2"
    out = torchrun(args + ["--resume"], None, module=True).stdout.splitlines()
    assert not [x for x in out if x.startswith("epoch 1:")] and len([x for x in out if x.startswith("epoch 2:")]) == 1
    history = __import__("json").loads((ckpt / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]


def test_train_device_errors_are_one_line(tmp_path, capsys):
    from rmpe import cli

    coco4 = ROOT / "data" / "coco4"
    base = ["train", "--data", str(coco4 / "test_coco.json"), "--images", str(coco4), "--epochs", "1",
            "--out", str(tmp_path / "ckpt")]
    for device, match in [("mps", "only 'cpu' and 'cuda'"), ("tpu", "device 'tpu'")] + \
            ([] if torch.cuda.is_available() else [("cuda", "torch sees no CUDA device")]):
        capsys.readouterr()
        assert cli.main(base + ["--device", device]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("rmpe train: error: ") and match in err[0], err
    assert not (tmp_path / "ckpt").exists()


# ------------------------------------------------------------------ rmpe run, sharded


def test_sharded_run_writes_the_one_process_results(tmp_path):
    """``torchrun --nproc_per_node=2 -m rmpe run`` on the shipped sample (4 COCO images, 118 detector
    boxes, the shipped BlazePose): the results, the pre-NMS poses, the per-frame records and the drawn
    images are those of one process, byte for byte and in its order; the summary's counts and the AP
    agree; no temporary file is left. (One process' own results change in the last bits with
    --frames-per-batch: the processes take whole batches, so the comparison can be exact.)"""
    pytest.importorskip("ai_edge_litert")
    from rmpe import cli

    coco4 = ROOT / "data" / "coco4"
    # one image per batch: 4 batches, 2 per process (each process batches as one process does)
    common = [str(coco4), str(coco4 / "test_coco_det_AP_H_56.json"), "--gt", str(coco4 / "test_coco.json"),
              "--threads", "1", "--quiet", "--frames-per-batch", "1"]

    def outputs(tag):
        d = tmp_path / tag
        return ["-o", str(d / "res.json"), "--pre-nms", str(d / "pre.json.gz"), "--frames", str(d / "frames.json"),
                "--summary", str(d / "summary.json"), "--render", str(d / "render")]

    torch.set_num_threads(1)
    assert cli.main(["run", *common, *outputs("one")]) == 0
    p = torchrun(["run", *common, *outputs("two")], None, module=True)
    assert "on 2 processes" in p.stdout and "COCO keypoint AP on the 4 images" in p.stdout
    one, two = tmp_path / "one", tmp_path / "two"
    for name in ("res.json", "frames.json"):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    import gzip
    import json

    assert json.loads(gzip.decompress((one / "pre.json.gz").read_bytes())) == \
        json.loads(gzip.decompress((two / "pre.json.gz").read_bytes()))
    res = json.loads((two / "res.json").read_text())
    assert len(res) > 10 and len({r["image_id"] for r in res}) == 4
    assert sorted(os.listdir(one / "render")) == sorted(os.listdir(two / "render"))
    assert len(os.listdir(two / "render")) == 4
    for name in os.listdir(one / "render"):
        assert (one / "render" / name).read_bytes() == (two / "render" / name).read_bytes(), name
    s1, s2 = (json.loads((d / "summary.json").read_text()) for d in (one, two))
    for k in ("frames", "frames_read", "person_boxes", "poses", "per_frame", "unreadable", "eval", "nms"):
        assert s1[k] == s2[k], k
    assert s2["processes"] == 2 and s2["person_boxes"] == 118
    assert sorted(os.listdir(two)) == ["frames.json", "pre.json.gz", "render", "res.json", "summary.json"]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no rank's temporary folder is left


def test_sharded_run_with_an_unreadable_image_and_alphapose_format(tmp_path, monkeypatch):
    """A folder given relative to the working directory, with an unreadable image among the 4 COCO
    images, AlphaPose's format: 2 processes write the one-process results and per-frame records byte for
    byte (frame numbers, file paths and the error message as one process gives them) and exit 1 as it
    does."""
    pytest.importorskip("ai_edge_litert")
    import json
    import shutil

    from rmpe import cli

    coco4 = ROOT / "data" / "coco4"
    (tmp_path / "imgs").mkdir()
    for f in coco4.glob("*.jpg"):
        shutil.copy(f, tmp_path / "imgs" / f.name)
    (tmp_path / "imgs" / "000000000900.jpg").write_bytes(b"not an image")  # sorts among the real ones
    monkeypatch.chdir(tmp_path)
    args = ["run", "imgs", str(coco4 / "test_coco_det_AP_H_56.json"), "--format", "alphapose", "--threads", "1",
            "--quiet", "--det-thresh", "0.3", "--frames-per-batch", "1"]
    torch.set_num_threads(1)
    assert cli.main(args + ["-o", "one/res.json", "--frames", "one/frames.json", "--summary", "one/s.json"]) == 1
    p = torchrun(args + ["-o", "two/res.json", "--frames", "two/frames.json", "--summary", "two/s.json"], None,
                 module=True, check=False, cwd=tmp_path)
    assert p.returncode != 0 and "1 of 5 frames could not be read" in p.stderr, p.stderr[-2000:]
    for name in ("res.json", "frames.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    frames = json.loads((tmp_path / "two" / "frames.json").read_text())
    assert [f["frame"] for f in frames] == list(range(5)) and frames[1]["status"] == "unreadable"
    assert frames[1]["file"] == os.path.join("imgs", "000000000900.jpg")
    assert "imgs/000000000900.jpg" in frames[1]["error"]
    assert all(isinstance(r["image_id"], str) and "box" in r for f in frames for r in f["poses"])
    s1, s2 = (json.loads((tmp_path / d / "s.json").read_text()) for d in ("one", "two"))
    assert s1["unreadable"] == s2["unreadable"] and s1["per_frame"] == s2["per_frame"]


def test_sharded_run_with_the_person_detector(tmp_path):
    """No detections file: the shipped person detector runs in each process on its images (shards
    balanced by image count); the results are the one-process results."""
    pytest.importorskip("ai_edge_litert")
    from rmpe import cli

    coco4 = ROOT / "data" / "coco4"
    args = ["run", str(coco4), "--detector", "blazepose", "--threads", "1", "--quiet", "--frames-per-batch", "1"]
    torch.set_num_threads(1)
    assert cli.main(args + ["-o", str(tmp_path / "one.json")]) == 0
    torchrun(args + ["-o", str(tmp_path / "two.json")], None, module=True)
    one = (tmp_path / "one.json").read_bytes()
    assert one == (tmp_path / "two.json").read_bytes() and len(__import__("json").loads(one)) >= 4


def test_sharded_run_refuses_what_needs_frames_in_order(tmp_path):
    """--track is refused under torchrun, and a bad flag gets the one-process command's message, before
    any work and without a file left behind."""
    coco4 = ROOT / "data" / "coco4"
    base = ["run", str(coco4), str(coco4 / "test_coco_det_AP_H_56.json"), "-o", str(tmp_path / "r.json")]
    for extra, message in [(["--track"], "--track and --save-video need every frame in order in one process"),
                           (["--frames-per-batch", "0"], "--frames-per-batch must be at least 1")]:
        p = torchrun(base + extra, None, module=True, check=False)
        assert p.returncode != 0
        assert f"rmpe run: error: {message}" in p.stderr, p.stderr[-2000:]
        assert os.listdir(tmp_path) == []


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


WORKERS = {"collectives": _worker_collectives, "steps": _worker_steps, "kill": _worker_kill,
           "resume": _worker_resume}


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
