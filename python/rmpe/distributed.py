"""Scale-out on ``torch.distributed`` (launched with ``torchrun``): process-group setup from torchrun's
environment, rank helpers, rank-0-only writes, metric reductions, box-balanced frame sharding and the
gathering of result records to rank 0.

    torchrun --nproc_per_node=2 -m rmpe train ...        # every process runs the same command

    ctx = init_from_env("cpu")        # gloo on CPUs; "cuda": NCCL, one GPU per process (cuda:LOCAL_RANK)
    mine = shard_indices(box_counts, ctx.rank, ctx.world_size)  # this rank's frames, balanced by boxes
    records = gather_records(my_records, key=...)               # all ranks' records on rank 0, None elsewhere
    save_on_main(state, "ckpt/last.pt")                         # rank 0 writes atomically; every rank waits

Without torchrun (no ``WORLD_SIZE`` in the environment, or ``WORLD_SIZE=1``) no process group is made
and every helper acts as the one process it is: ``shard_indices`` gives every index, ``gather_records``
returns the records, ``all_reduce_sum`` returns its input, ``save_on_main`` writes.

Collectives on NCCL need CUDA tensors: the helpers put their tensors on ``torch.cuda.current_device()``
when the group's backend is NCCL (:func:`init_from_env` sets it to ``cuda:LOCAL_RANK``), on the CPU
otherwise.
"""
from __future__ import annotations

import contextlib
import datetime
import heapq
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Union

import torch
import torch.distributed as dist

__all__ = ["DistContext", "init_from_env", "process_group", "current", "is_distributed", "get_rank",
           "get_world_size", "is_main", "barrier", "all_reduce_sum", "all_gather_object", "broadcast_object",
           "broadcast_buffers", "run_on_main", "save_on_main", "shard_indices", "gather_records",
           "launched_distributed", "run_sharded"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` in ``[0, world_size)``, ``local_rank`` (its index on its
    machine: its GPU), ``device`` (the torch device it computes on), ``backend`` (``"gloo"``,
    ``"nccl"``, or None without a process group)."""
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: Optional[str]

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, env: Mapping[str, str]) -> Optional[int]:
    value = env.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def _resolve_device(device: Union[str, torch.device], local_rank: int, distributed: bool) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device {device!r}: {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: torch sees no CUDA device")
        if distributed and dev.index is None:
            if local_rank >= torch.cuda.device_count():
                raise ValueError(f"LOCAL_RANK is {local_rank} but this machine shows {torch.cuda.device_count()} "
                                 f"CUDA device(s): run at most one process per GPU (--nproc_per_node)")
            dev = torch.device("cuda", local_rank)
    elif dev.type != "cpu":
        raise ValueError(f"device {device!r}: only 'cpu' and 'cuda' devices are supported")
    return dev


def init_from_env(device: Union[str, torch.device] = "cpu", backend: Optional[str] = None,
                  timeout_s: Optional[float] = None, env: Optional[Mapping[str, str]] = None) -> DistContext:
    """Joins the process group torchrun describes in the environment (``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and returns this process' :class:`DistContext`.

    ``device``: ``"cpu"`` (backend gloo) or ``"cuda"`` (backend NCCL; each process takes the GPU
    ``cuda:LOCAL_RANK`` and makes it current). ``backend`` overrides the choice. Without ``WORLD_SIZE``
    or with ``WORLD_SIZE=1`` no group is made (one process, exactly as without torchrun). A group that is
    already initialized (e.g. by the caller) is used as it is, after checking it matches the environment.
    Errors (ValueError) name the variable or argument at fault."""
    env = os.environ if env is None else env
    world = _env_int("WORLD_SIZE", env)
    if world is not None and world < 1:
        raise ValueError(f"environment variable WORLD_SIZE must be >= 1, got {world}")
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        ctx = current()
        dev = _resolve_device(device, ctx.local_rank, True)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        return DistContext(ctx.rank, ctx.world_size, ctx.local_rank, dev, ctx.backend)
    if world is None or world == 1:
        return DistContext(0, 1, 0, _resolve_device(device, 0, False), None)
    rank, local_rank = _env_int("RANK", env), _env_int("LOCAL_RANK", env)
    if rank is None:
        raise ValueError(f"WORLD_SIZE is {world} but RANK is not set: launch the processes with torchrun")
    if not 0 <= rank < world:
        raise ValueError(f"environment variable RANK must be in [0, WORLD_SIZE={world}), got {rank}")
    local_rank = rank if local_rank is None else local_rank
    if local_rank < 0:
        raise ValueError(f"environment variable LOCAL_RANK must be >= 0, got {local_rank}")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not env.get(name):
            raise ValueError(f"WORLD_SIZE is {world} but {name} is not set: launch the processes with torchrun")
    if not dist.is_available():
        raise ValueError("this build of torch has no torch.distributed")
    dev = _resolve_device(device, local_rank, True)
    if backend is None:
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    if backend == "nccl" and dev.type != "cuda":
        raise ValueError("the NCCL backend needs a CUDA device (device='cuda')")
    kwargs: Dict[str, Any] = {}
    if timeout_s is not None:
        if not (float(timeout_s) > 0 and math.isfinite(float(timeout_s))):
            raise ValueError(f"timeout_s must be positive and finite, got {timeout_s}")
        kwargs["timeout"] = datetime.timedelta(seconds=float(timeout_s))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        kwargs["device_id"] = dev
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world, **kwargs)
    return DistContext(rank, world, local_rank, dev, backend)


@contextlib.contextmanager
def process_group(device: Union[str, torch.device] = "cpu", backend: Optional[str] = None,
                  timeout_s: Optional[float] = None) -> Iterator[DistContext]:
    """:func:`init_from_env` for a ``with`` block; a group it made is destroyed at the end."""
    made = not (dist.is_available() and dist.is_initialized())
    ctx = init_from_env(device, backend, timeout_s)
    try:
        yield ctx
    finally:
        if made and ctx.distributed and dist.is_initialized():
            dist.destroy_process_group()


def is_distributed() -> bool:
    """True when a process group of more than one process is initialized."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0 (or the one process)."""
    return get_rank() == 0


def current() -> DistContext:
    """This process' :class:`DistContext` from the initialized group (device: the current CUDA device
    under NCCL, else the CPU), or the one process'."""
    if not is_distributed():
        return DistContext(0, 1, 0, torch.device("cpu"), None)
    backend = str(dist.get_backend())
    local = _env_int("LOCAL_RANK", os.environ)
    dev = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    return DistContext(dist.get_rank(), dist.get_world_size(), dist.get_rank() if local is None else local, dev,
                       backend)


def _comm_device() -> torch.device:
    if str(dist.get_backend()) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Waits for every process (nothing without a group)."""
    if is_distributed():
        if str(dist.get_backend()) == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def all_reduce_sum(values: Union[Sequence[float], Mapping[str, float]]) -> Union[List[float], Dict[str, float]]:
    """Sums numbers over all processes (float64; one collective for all of them). A mapping gives a
    dict with the same keys (every process must pass the same keys in the same order), a sequence a
    list. Without a group: the values as floats."""
    keys = list(values.keys()) if isinstance(values, Mapping) else None
    nums = [float(values[k]) for k in keys] if keys is not None else [float(v) for v in values]
    if is_distributed() and nums:
        t = torch.tensor(nums, dtype=torch.float64, device=_comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        nums = [float(v) for v in t.cpu()]
    return dict(zip(keys, nums)) if keys is not None else nums


def all_gather_object(obj: Any) -> List[Any]:
    """Every process' ``obj`` (picklable), in rank order, on every process."""
    if not is_distributed():
        return [obj]
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every process."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_comm_device() if str(dist.get_backend()) == "nccl" else None)
    return box[0]


@torch.no_grad()
def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copies rank ``src``'s buffers (batch-norm running statistics, counters) into every process'
    ``module`` in place, so that all processes evaluate and save the same model. Buffers must be on the
    group's device (the module's device under NCCL; any under gloo: CPU copies are made)."""
    if not is_distributed():
        return
    for buf in module.buffers():
        if buf.device.type == "cpu" or str(dist.get_backend()) == "nccl":
            dist.broadcast(buf, src=src)
        else:
            tmp = buf.cpu()
            dist.broadcast(tmp, src=src)
            buf.copy_(tmp)


def run_on_main(fn: Callable[..., Any], *args, **kwargs) -> Any:
    """Runs ``fn(*args, **kwargs)`` on rank 0 only; every process returns when it is done, with rank 0's
    return value. When it raises, rank 0 re-raises its exception and the other processes raise a
    RuntimeError quoting it (none of them is left waiting)."""
    if not is_distributed():
        return fn(*args, **kwargs)
    outcome, error = (True, None), None
    if dist.get_rank() == 0:
        try:
            outcome = (True, fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - re-raised below, after telling the other ranks
            error = e
            outcome = (False, f"{type(e).__name__}: {e}")
    outcome = broadcast_object(outcome)
    if error is not None:
        raise error
    if not outcome[0]:
        raise RuntimeError(f"rank 0 failed: {outcome[1]}")
    return outcome[1]


def _atomic_torch_save(obj: Any, path: str) -> str:
    from .io import atomic_path

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path


def save_on_main(obj: Any, path: Union[str, os.PathLike]) -> str:
    """``torch.save(obj)`` to ``path`` by rank 0 only, atomically (``rmpe.io.atomic_path``: a temporary
    file in the same folder, renamed on success); every process returns once the file is complete."""
    return run_on_main(_atomic_torch_save, obj, os.fspath(path))


# ------------------------------------------------------------------ sharding and gathering


def shard_indices(weights: Sequence[float], rank: int, world_size: int) -> List[int]:
    """The indices of ``weights`` (one per frame: its number of boxes, the work it costs) that process
    ``rank`` of ``world_size`` takes, in ascending order.

    A deterministic function of its arguments (no randomness, no dependence on the process): every
    process computes the same partition, and the shards of all ranks are disjoint and cover every index.
    Balanced by weight with the longest-processing-time rule: frames in order of decreasing weight (ties:
    lower index first), each to the rank with the least weight so far (ties: fewer frames, then lower
    rank). Hence the heaviest and the lightest rank differ by at most the heaviest frame's weight, and
    frames of weight 0 are spread evenly by count. ``world_size`` larger than the number of frames
    leaves some ranks empty."""
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be an integer >= 1, got {world_size!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an integer in [0, world_size={world_size}), got {rank!r}")
    if isinstance(weights, torch.Tensor):
        weights = weights.tolist()
    try:
        w = [float(x) for x in weights]
    except (TypeError, ValueError):
        raise ValueError("weights must be a 1-D sequence of numbers (boxes per frame)") from None
    for i, x in enumerate(w):
        if not (x >= 0 and math.isfinite(x)):
            raise ValueError(f"weights must be finite and >= 0, got {weights[i]!r} at index {i}")
    heap = [(0.0, 0, r) for r in range(world_size)]  # (weight so far, frames so far, rank)
    mine: List[int] = []
    for i in sorted(range(len(w)), key=lambda i: (-w[i], i)):
        load, count, r = heapq.heappop(heap)
        if r == rank:
            mine.append(i)
        heapq.heappush(heap, (load + w[i], count + 1, r))
    return sorted(mine)


def gather_records(records: Sequence[Any], key: Optional[Callable[[Any], Any]] = None) -> Optional[List[Any]]:
    """All processes' ``records`` (picklable, e.g. COCO result dicts) on rank 0 as one list: the ranks'
    lists concatenated in rank order, then stably sorted by ``key`` when given (e.g. the position of the
    record's frame in the one-process order, which gives exactly the one-process list). Rank 0 returns
    the list, the others None. Without a group: ``records`` as a list (sorted by ``key`` when given)."""
    if isinstance(records, (str, bytes)) or not isinstance(records, Sequence):
        raise ValueError(f"records must be a sequence, got {type(records).__name__}")
    records = list(records)
    if is_distributed():
        parts: Optional[List[Any]] = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
        dist.gather_object(records, parts, dst=0)
        if dist.get_rank() != 0:
            return None
        records = [r for part in parts for r in part]
    if key is not None:
        records.sort(key=key)
    return records


# ------------------------------------------------------------------ rmpe run over a set of images


def launched_distributed(env: Optional[Mapping[str, str]] = None) -> bool:
    """True when torchrun started this process as one of several (``WORLD_SIZE`` > 1)."""
    world = _env_int("WORLD_SIZE", os.environ if env is None else env)
    return world is not None and world > 1


class _FrameName(NamedTuple):
    """What ``rmpe run``'s frame naming reads of a frame before it is read."""
    index: int
    name: str


def run_sharded(args, run_one: Callable[[Any], int]) -> int:
    """``rmpe run`` on a set of images under ``torchrun --nproc_per_node=N`` (what
    :mod:`rmpe.commands.run` calls when it was launched as one of several processes).

    Every process opens the same source (an image, a folder or a list of images: videos, cameras and
    streams, ``--track`` and ``--save-video`` need their frames in order in one process and are
    refused), counts each image's boxes in the detections file (1 per image with a detector) and takes
    its shard of the batches one process would form (``--frames-per-batch`` consecutive images):
    :func:`shard_indices` over the batches, balanced by their boxes, deterministic. It runs the
    one-process command ``run_one`` on its shard: a list file of its images, the detections of its images,
    the same flags and image ids, its outputs in a private temporary folder. Rank 0 gathers every
    process' per-frame records, pre-NMS poses and summary, puts them back in the source's order, writes
    ``-o``, ``--frames``, ``--pre-nms`` and ``--summary`` once (atomically), evaluates ``--gt`` on all of
    them and prints the report; then each process moves its ``--render`` images into place. Each image
    goes through the same code in the same batch as in one process, so the results are the one-process
    run's, in its order (batched torch ops may round differently for another batch: an unreadable image,
    which shifts the one-process run's later batches, can change the last bits of later poses). The
    summary's stage seconds are summed over the processes, its ``total`` is the wall clock. ``--device
    cuda`` gives each process ``cuda:LOCAL_RANK``. Returns 0, or 1 when some image could not be read (as
    the one-process command). Errors in the input are raised before any process group is made."""
    import shutil
    import tempfile
    import time

    from .commands import check_renamed
    from .commands.run import _check_flags, _coco_ids, _Frames, _is_detections_file
    from .io import read_json
    from .pipeline.detections import load_detections
    from .pipeline.sources import open_source

    t_start = time.perf_counter()
    check_renamed(args)
    _check_flags(args)  # the one-process command's checks, before the split
    if getattr(args, "track", False) or getattr(args, "save_video", None):
        raise ValueError("--track and --save-video need every frame in order in one process: run them without "
                         "torchrun")
    gt_doc = read_json(args.gt, "ground truth") if args.gt and not args.images_json else None
    names, _ = _coco_ids(args, gt_doc)
    src = open_source(args.source, names)
    if src.files is None:
        src.close()
        raise ValueError(f"source {args.source!r} is a {src.kind}: its frames cannot be split over processes; run "
                         f"it without torchrun, or give images (a file, a folder or a list of images)")
    naming = _Frames(src, names)
    frames0 = [_FrameName(n, os.path.basename(p)) for n, p in enumerate(src.files)]
    spec = args.detections if args.detections is not None else args.detector
    raw = None
    if spec is not None and _is_detections_file(spec):
        dets = load_detections(spec, det_thresh=args.det_thresh)  # checks the file as the one-process run does
        weights = [len(next((dets[k] for k in naming.keys(f) if k in dets), ())) for f in frames0]
        raw = read_json(spec, "detections file")
        known = {k for f in frames0 for k in naming.keys(f)}
        stray = [k for k in dets if k not in known]
        if stray:  # what the one-process run refuses, refused before the images are split
            raise FileNotFoundError(f"{len(stray)} image(s) named by the detections are not in {args.source!r}: "
                                    + ", ".join(map(str, stray[:5])) + (", ..." if len(stray) > 5 else ""))
    else:
        weights = [1] * len(frames0)  # a detector finds the boxes as the images are read: balance by images
    if args.gt:
        from .evaluate import KeypointAP

        in_gt = set(KeypointAP(args.gt).image_ids)
        lacking = [i for i in (naming.image_id(f) for f in frames0) if i not in in_gt]
        if lacking:
            raise ValueError(f"{len(lacking)} image(s) of {args.source!r} are not in the ground truth {args.gt!r}, "
                             f"e.g. {lacking[0]!r}")

    made = not (dist.is_available() and dist.is_initialized())
    ctx = init_from_env(args.device)
    work = render_dir = None
    try:
        fpb = int(args.frames_per_batch)
        batches = [range(s, min(s + fpb, len(frames0))) for s in range(0, len(frames0), fpb)]
        mine = [i for b in shard_indices([sum(weights[i] for i in b) for b in batches], ctx.rank, ctx.world_size)
                for i in batches[b]]
        work = tempfile.mkdtemp(prefix=f"rmpe-run-rank{ctx.rank}-")
        if args.render:
            parent = os.path.dirname(os.path.abspath(args.render))
            os.makedirs(parent, exist_ok=True)
            render_dir = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(os.path.abspath(args.render))}"
                                                             f".rank{ctx.rank}.")
        payload = _run_shard(args, run_one, ctx, src, naming, frames0, mine, raw, spec, work, render_dir)
        parts = gather_records([payload])
        merged = _merge_shards(args, src, parts, time.perf_counter() - t_start, ctx.world_size,
                               spec if raw is not None else None) if ctx.is_main else None
        written = run_on_main(_write_merged, args, merged)
        if render_dir:  # every process' images, once rank 0 has written the results
            os.makedirs(args.render, exist_ok=True)
            for name in sorted(os.listdir(render_dir)):
                os.replace(os.path.join(render_dir, name), os.path.join(args.render, name))
        barrier()
        status = broadcast_object(1 if merged is not None and merged["summary"]["unreadable"] else 0)
        if ctx.is_main:
            _report(args, merged, written, ctx.world_size)
        return status
    finally:
        for d in (work, render_dir):
            if d:
                shutil.rmtree(d, ignore_errors=True)
        if made and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _run_shard(args, run_one, ctx: DistContext, src, naming, frames0, mine: List[int], raw, spec, work: str,
               render_dir: Optional[str]) -> Dict[str, Any]:
    """Runs the one-process command on this process' images; returns its records for rank 0."""
    import copy
    import io

    from .io import read_json, write_json
    from .pipeline.detections import detection_image_id

    payload: Dict[str, Any] = {"mine": mine, "frames": [], "pre": [], "summary": None, "status": 0}
    if not mine:
        return payload
    sub = copy.copy(args)
    sub.source = os.path.join(work, "images.txt")
    with open(sub.source, "w", encoding="utf-8") as f:
        f.writelines(os.path.abspath(src.files[g]) + "\n" for g in mine)
    if raw is not None:  # the records of this shard's images, as they are in the file
        keys = {k for g in mine for k in naming.keys(frames0[g])}
        sub.detections, sub.detector = os.path.join(work, "detections.json"), None
        write_json(sub.detections, [r for n, r in enumerate(raw) if detection_image_id(
            r["image_id"], f"detections file {spec!r}: record {n}: 'image_id'") in keys])
    sub.images_json = args.images_json or args.gt  # the same image ids; --gt is scored by rank 0 on all images
    sub.gt = None
    sub.format = "coco"  # rank 0 writes the asked format from these
    sub.output = None
    sub.frames = os.path.join(work, "frames.json")
    sub.pre_nms = os.path.join(work, "pre_nms.json") if (args.pre_nms or args.gt) else None
    sub.summary = os.path.join(work, "summary.json")
    sub.render = render_dir
    sub.device = str(ctx.device)
    sub.quiet = args.quiet or not ctx.is_main  # rank 0 shows its shard's progress
    quiet_err = contextlib.nullcontext() if ctx.is_main else contextlib.redirect_stderr(io.StringIO())
    with contextlib.redirect_stdout(io.StringIO()), quiet_err:
        payload["status"] = int(run_one(sub) or 0)
    payload["frames"] = read_json(sub.frames, "frames file")
    payload["pre"] = read_json(sub.pre_nms, "pre-NMS file") if sub.pre_nms else []
    payload["summary"] = read_json(sub.summary, "summary file")
    return payload


def _merge_shards(args, src, parts: List[Dict[str, Any]], wall: float, world: int,
                  det_file: Optional[str]) -> Dict[str, Any]:
    """Rank 0: every shard's records in the source's order, the results in the asked format, the
    evaluation and the summary."""
    from .pipeline.writers import format_results

    def local_to_global(part, rec):
        g = part["mine"][rec["frame"]]
        out = dict(rec, frame=g, file=src.files[g])  # the one-process record names the file as the source does
        if out.get("error"):
            out["error"] = out["error"].replace(os.path.abspath(src.files[g]), src.files[g])
        return out

    frames = sorted((local_to_global(p, r) for p in parts for r in p["frames"]), key=lambda r: r["frame"])
    position: Dict[Any, int] = {}
    for r in frames:
        position.setdefault(r["image_id"], r["frame"])
    pre = sorted((x for p in parts for x in p["pre"]), key=lambda x: position.get(x["image_id"], -1))
    coco = [x for r in frames for x in r["poses"]]
    if args.format != "coco":
        frames = [dict(r, poses=format_results(r["poses"], args.format, r["image_id"],
                                               os.path.basename(src.files[r["frame"]]))) for r in frames]
    results = [x for r in frames for x in r["poses"]]

    stats = stats_pre = None
    covered = sorted({r["image_id"] for r in frames if r["status"] == "ok"})
    if args.gt:
        from .evaluate import KeypointAP

        evaluator = KeypointAP(args.gt)
        if covered:
            ev = KeypointAP(evaluator.coco, image_ids=covered)
            stats_pre, stats = ev.stats(pre), ev.stats(coco)
    subs = [p["summary"] for p in parts if p["summary"] is not None]
    per_frame = sorted((local_to_global(p, r) for p in parts if p["summary"] is not None
                        for r in p["summary"].get("per_frame", [])), key=lambda r: r["frame"])
    unreadable = sorted((local_to_global(p, r) for p in parts if p["summary"] is not None
                         for r in p["summary"].get("unreadable", [])), key=lambda r: r["frame"])
    summary = dict(subs[0]) if subs else {}
    seconds: Dict[str, float] = {}
    for s in subs:
        for k, v in s.get("seconds", {}).items():
            if k != "total":
                seconds[k] = seconds.get(k, 0.0) + v
    n = len(frames)
    summary.update({
        "source": str(args.source), "kind": src.kind, "frames": n, "frames_read": n - len(unreadable),
        "frames_without_persons": sum(s.get("frames_without_persons", 0) for s in subs), "unreadable": unreadable,
        "person_boxes": sum(s.get("person_boxes", 0) for s in subs), "poses": sum(s.get("poses", 0) for s in subs),
        "processes": world,
        "seconds": {**{k: round(v, 4) for k, v in seconds.items()}, "total": round(wall, 4)},
        "frames_per_second": round(n / wall, 3) if wall > 0 else None, "per_frame": per_frame})
    summary.pop("eval", None)
    if det_file is not None:
        summary["detector"] = f"detections file {det_file}"
    if stats is not None:
        summary["eval"] = {"ground_truth": args.gt, "images_scored": len(covered),
                           "images_in_ground_truth": len(evaluator.image_ids), "before_nms": stats_pre,
                           "after_nms": stats}
    return {"frames": frames, "results": results, "pre": pre, "summary": summary, "stats": (stats_pre, stats),
            "images_in_gt": len(evaluator.image_ids) if args.gt else None, "covered": len(covered)}


def _write_merged(args, merged: Dict[str, Any]) -> List[str]:
    """Rank 0: the outputs, each atomically; on a failure the ones already written are removed."""
    from .io import write_json
    from .pipeline.writers import JsonListWriter

    committed: List[str] = []
    try:
        for path, items in ((args.output, merged["results"]), (args.frames, merged["frames"]),
                            (args.pre_nms, merged["pre"])):
            if path:
                with JsonListWriter(path) as w:
                    for x in items:
                        w.write(x)
                committed.append(path)
        if args.summary:
            write_json(args.summary, merged["summary"], indent=1)
            committed.append(args.summary)
    except BaseException:
        for path in committed:  # complete, but they belong to a run that failed
            if os.path.isfile(path):
                os.remove(path)
        raise
    return committed


def _report(args, merged: Dict[str, Any], written: List[str], world: int) -> None:
    import sys

    s = merged["summary"]
    n, bad = s["frames"], s["unreadable"]
    wrote = written + ([args.render + "/"] if args.render else [])
    print(f"{n} frames ({s['kind']}) on {world} processes: {s['frames_read'] - s['frames_without_persons']} with "
          f"persons, {s['frames_without_persons']} without, {len(bad)} unreadable; {s['person_boxes']} person boxes "
          f"-> {s['poses']} poses after {s.get('nms')} NMS" + (f"; wrote {', '.join(wrote)}" if wrote else ""))
    wall = s["seconds"]["total"]
    print(f"{n / wall if wall > 0 else 0:.2f} frames/s ({wall:.2f} s, {world} processes)")
    stats_pre, stats = merged["stats"]
    if stats is not None:
        print(f"COCO keypoint AP on the {merged['covered']} images of this run (of {merged['images_in_gt']} in the "
              f"ground truth): {stats_pre['AP']:.3f} before NMS, {stats['AP']:.3f} after "
              f"(AP50 {stats_pre['AP50']:.3f} -> {stats['AP50']:.3f})")
    elif args.gt:
        print("COCO keypoint AP: no image of this run could be read; nothing scored")
    if bad:
        listed = "; ".join(x["error"] for x in bad[:3]) + ("; ..." if len(bad) > 3 else "")
        print(f"rmpe run: {len(bad)} of {n} frames could not be read and were skipped ({listed})", file=sys.stderr)
