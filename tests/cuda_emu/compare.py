"""The CPU kernels against the emulated CUDA kernels (csrc/cuda under tests/cuda_emu):
every operator, on real data and generated cases, under several schedules.

Decisions (kept indices, their order, groups, match counts, crops, decoded peaks,
errors raised) must be exactly equal. Sums must be exactly equal where both
backends add in the same order by design (merged joints, the deterministic input
gradient, the SDTN inverse, similarities); where they do not (the atomic input
gradient, the theta gradient's block reduction), within TOLERANCE. Every
comparison is counted: exact, within tolerance, or failed.

    python tests/cuda_emu/compare.py [full|ci|asan] [--json PATH]

"full" gives the figures of benchmarks/RESULTS.md; tests/test_cuda_emu.py runs
"ci" (and "asan" under the sanitizers).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import sys
import time

import numpy as np
import torch

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(HERE.parent) not in sys.path:  # run as a script: make `cuda_emu` importable
    sys.path.insert(0, str(HERE.parent))

from cuda_emu import build  # noqa: E402

import rmpe_ext  # noqa: E402,F401
from rmpe_ext import ops  # noqa: E402

CPU = torch.ops.rmpe_ext
SHARED = pathlib.Path(os.environ.get("RMPE_SHARED_DATA", ROOT.parent / "shared" / "data"))
METHODS = {"alphapose": 0, "paper": 1, "oks": 2}

# (rtol, atol) of the sums that are not added in the same order on both backends
TOLERANCE = {
    "grad_input atomic": (1e-5, 1e-5),  # _affine_sample_backward: atomics add in the schedule's order
    "grad_theta": (1e-5, 1e-4),         # its theta gradient: per-thread, warp and block partial sums
}

# schedules per level: real-data pose NMS runs under all of them, the other cases under OTHERS
LEVELS = {
    "full": ["lowest-first", "highest-first"] + [f"random:{s}" for s in range(10)],
    "ci": ["lowest-first", "highest-first", "random:1", "random:2", "random:3"],
    "asan": ["lowest-first", "random:1"],
}
OTHERS = {"full": ["lowest-first", "highest-first", "random:0"], "ci": ["random:3"], "asan": ["random:1"]}


def _schedule(s: str):
    name, _, seed = s.partition(":")
    return name, int(seed or 0)


class Tally:
    """Per operator: comparisons, exact, within tolerance; and the failures."""

    def __init__(self):
        self.rows: dict[str, list[int]] = {}
        self.failures: list[str] = []

    def check(self, op: str, case: str, what: str, cpu, emu, tol=None):
        row = self.rows.setdefault(op, [0, 0, 0])
        row[0] += 1
        if _same(cpu, emu):
            row[1] += 1
            return
        if tol is not None and _close(cpu, emu, tol):
            row[2] += 1
            return
        self.failures.append(f"{op} [{case}] {what}: {_describe(cpu, emu)}")

    def summary(self) -> str:
        lines = [f"{'operator':<26}{'comparisons':>12}{'exact':>8}{'within tol':>12}{'failed':>8}"]
        tot = [0, 0, 0]
        for op, (n, ex, tl) in sorted(self.rows.items()):
            lines.append(f"{op:<26}{n:>12}{ex:>8}{tl:>12}{n - ex - tl:>8}")
            tot = [a + b for a, b in zip(tot, (n, ex, tl))]
        lines.append(f"{'total':<26}{tot[0]:>12}{tot[1]:>8}{tot[2]:>12}{tot[0] - tot[1] - tot[2]:>8}")
        return "\n".join(lines + self.failures[:20])

    def merge(self, other: "Tally"):
        for op, row in other.rows.items():
            mine = self.rows.setdefault(op, [0, 0, 0])
            self.rows[op] = [a + b for a, b in zip(mine, row)]
        self.failures += other.failures


def _same(a, b) -> bool:
    if isinstance(a, Exception) or isinstance(b, Exception):
        return isinstance(a, Exception) and isinstance(b, Exception) and _msg(a) == _msg(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        return bool(((a == b) | (a.isnan() & b.isnan())).all())
    return torch.equal(a, b)


def _close(a, b, tol) -> bool:
    if isinstance(a, Exception) or isinstance(b, Exception) or a.shape != b.shape or a.dtype != b.dtype:
        return False
    return torch.allclose(a.double(), b.double(), rtol=tol[0], atol=tol[1], equal_nan=True)


def _describe(a, b) -> str:
    if isinstance(a, Exception) or isinstance(b, Exception):
        return f"cpu: {_msg(a) if isinstance(a, Exception) else 'no error'}; cuda: " \
               f"{_msg(b) if isinstance(b, Exception) else 'no error'}"
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"cpu {a.dtype}{list(a.shape)} vs cuda {b.dtype}{list(b.shape)}"
    d = (a.double() - b.double()).abs()
    return f"{int((~((a == b) | (a.isnan() & b.isnan()))).sum())} of {a.numel()} differ, max |diff| {d.nan_to_num(0).max():.3g}"


def _msg(e: Exception) -> str:
    return str(e).split("\n")[0].replace("CUDA emulation: ", "")


def _run(op, args):
    try:
        out = op(*args)
    except RuntimeError as e:
        if "CUDA emulation" in str(e) and "schedule" in str(e):
            raise  # a protocol error of the emulated kernel: never a result
        return e
    return out if isinstance(out, (tuple, list)) else (out,)


class Comparer:
    def __init__(self, level: str):
        self.level = level
        self.emu = build.load()
        self.schedules = LEVELS[level]
        self.others = OTHERS[level]
        self.tally = Tally()

    def configure(self, schedule: str):
        name, seed = _schedule(schedule)
        self.emu._emu_configure(name, seed, True, [])

    def op(self, name: str, case: str, args, outputs, tol=None, schedules=None):
        """Runs CPU and emulated CUDA on `args`, compares output k (named outputs[k])."""
        cpu = _run(getattr(CPU, name), args)
        for s in schedules or self.others:
            self.configure(s)
            emu = _run(getattr(self.emu, name), args)
            if isinstance(cpu, Exception) or isinstance(emu, Exception):
                self.tally.check(name, f"{case} {s}", "error", cpu, emu)
                continue
            for k, what in enumerate(outputs):
                if what is None:
                    continue
                t = tol.get(what) if isinstance(tol, dict) else tol
                self.tally.check(name, f"{case} {s}", what, cpu[k], emu[k], t)


# ------------------------------------------------------------------ pose NMS


def _params(method, merge=None, **kw):
    cls = {"alphapose": ops.AlphaPoseNMSParams, "paper": ops.PaperNMSParams, "oks": ops.OKSNMSParams}[method]
    if merge is not None:
        kw["merge"] = merge
    return cls(**kw)


def _nms_args(P, S, B, rank, img, method, params):
    sig = torch.tensor(ops.COCO_SIGMAS if P.shape[1] == 17 else [0.05] * P.shape[1], dtype=P.dtype) \
        if method == "oks" else None
    return (P, S, B, rank, img, METHODS[method], params.to_list(), sig)


NMS_OUT = ("keep", "poses", "scores", "group")


def generated(seed, images, persons, per_person, K=17, spread=2.0, dtype=torch.float32):
    """Redundant proposals (tests/conftest.py's cluster_poses) of several images, interleaved."""
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))
    from conftest import cluster_poses

    rng = np.random.default_rng(seed)
    parts = [cluster_poses(rng, persons, per_person, K=K, spread=spread) for _ in range(images)]
    P, S, B = (torch.cat([p[i] for p in parts]).to(dtype) for i in range(3))
    img = torch.cat([torch.full((len(p[0]),), 3 * b + 1, dtype=torch.long) for b, p in enumerate(parts)])
    perm = torch.from_numpy(rng.permutation(len(img)))
    return P[perm], S[perm], B[perm], img[perm]


def pose_nms_real(c: Comparer, proposals):
    p = proposals
    quick = c.level == "asan"
    for method in METHODS:
        for merge in (True,) if quick else (True, False):
            for dtype in (torch.float32,) if quick else (torch.float32, torch.float64):
                for rank in ("box score", "default"):
                    P, S, B = (t.to(dtype) for t in (p.poses, p.joint_scores, p.boxes))
                    r = p.scores.to(dtype) if rank == "box score" else None
                    args = _nms_args(P, S, B, r, p.image_index, method, _params(method, merge))
                    case = f"413 real, {method}, merge {merge}, {dtype}, rank {rank}"
                    c.op("pose_nms", case, args, NMS_OUT, schedules=c.schedules)
        for dtype in (torch.float32, torch.float64):
            P, S, B = (t.to(dtype) for t in (p.poses, p.joint_scores, p.boxes))
            args = _nms_args(P, S, B, None, None, method, _params(method))
            c.op("pose_similarity", f"413 real, {method}, {dtype}", args[:3] + args[5:], ("sim", "match"))
    for linear in (False, True):
        for max_dets in (20, -1):
            for dtype in (torch.float32, torch.float64):
                P, S, B, r = (t.to(dtype) for t in (p.poses, p.joint_scores, p.boxes, p.scores))
                args = (P, S, B, r, p.image_index, _params("oks", thresh=0.5).to_list(),
                        torch.tensor(ops.COCO_SIGMAS, dtype=dtype), max_dets, linear)
                c.op("soft_oks_nms", f"413 real, linear {linear}, max_dets {max_dets}, {dtype}", args,
                     ("keep", "scores"), schedules=c.schedules[:3])


def pose_nms_generated(c: Comparer):
    quick = c.level == "asan"
    Ks = {"asan": [1, 2, 4, 17, 33], "ci": [1, 2, 3, 4, 5, 6, 8, 16, 17, 31, 32, 33, 40]}.get(c.level, range(1, 41))
    for K in Ks:  # K < 5: AlphaPose's pick that does not match itself (picked twice)
        P, S, B, img = generated(K, images=3, persons=3, per_person=4, K=K, spread=1.0)
        S[::3, : max(1, K // 3)] = 0  # AlphaPose reads 0 as 1e-5
        for method in METHODS:
            params = _params(method, True, **({"sigmas": tuple([0.05] * K)} if method == "oks" else {}))
            args = _nms_args(P, S, B, None, img, method, params)
            c.op("pose_nms", f"K={K} {method}", args, NMS_OUT)
    sizes = [("70 poses, one image", 1, 7, 10), ("230 images of 6", 230, 2, 3)]
    if not quick:
        sizes += [("300 poses, one image", 1, 30, 10), ("3000 poses, one image", 1, 150, 20),
                  ("9000 poses in 300 images", 300, 6, 5)]
    for name, images, persons, per_person in sizes:
        P, S, B, img = generated(11, images, persons, per_person)
        for method in (METHODS if images * persons * per_person <= 3000 else ["alphapose"]):
            c.op("pose_nms", f"{name}, {method}", _nms_args(P, S, B, None, img, method, _params(method)), NMS_OUT)
    # ties: equal ranking scores and duplicate poses (the lowest index goes first)
    P, S, B, img = generated(5, images=2, persons=3, per_person=4)
    P[1::2], S[1::2], B[1::2] = P[::2].clone(), S[::2].clone(), B[::2].clone()
    for method in METHODS:
        rank = torch.full((len(P),), 0.5)
        c.op("pose_nms", f"ties, {method}", _nms_args(P, S, B, rank, img, method, _params(method)), NMS_OUT)
        c.op("pose_nms", f"duplicates, {method}", _nms_args(P, S, B, None, img, method, _params(method)), NMS_OUT)
    # bad input: the same error
    P, S, B, img = generated(6, images=2, persons=2, per_person=3)
    bad = {"NaN pose": (0, (4, 2, 0), math.nan), "inf score": (1, (3, 5), math.inf),
           "NaN box": (2, (1, 1), math.nan), "box x2 < x1": (2, (2, 2), -1e4), "inf rank": (3, (0,), math.inf),
           "negative image": (4, (5,), -1)}
    for name, (which, at, value) in bad.items():
        args = list(_nms_args(P.clone(), S.clone(), B.clone(), S.mean(1), img.clone(), "alphapose",
                              _params("alphapose")))
        args[which][at] = value
        c.op("pose_nms", f"bad input: {name}", tuple(args), NMS_OUT)
    # soft-OKS on generated batches
    P, S, B, img = generated(8, images=5, persons=4, per_person=6)
    for linear in (False, True):
        args = (P, S, B, S.mean(1), img, _params("oks", thresh=0.6).to_list(), torch.tensor(ops.COCO_SIGMAS), 7,
                linear)
        c.op("soft_oks_nms", f"generated, linear {linear}", args, ("keep", "scores"))


def pose_nms_wholebody(c: Comparer):
    """The whole-body criterion (decisions depend on the poses remaining: live_scan_kernel): AlphaPose
    master's recorded 133/136-keypoint calls (where ../shared is present) and generated scenes, with
    both sets of AlphaPose's constants, under every schedule of the level."""
    quick = c.level == "asan"
    cases = []
    root = SHARED / "alphapose_master"
    if (root / "pose_nms_index.json").exists():
        index = json.loads((root / "pose_nms_index.json").read_text())
        z = np.load(root / "pose_nms_cases.npz")
        for rec in index:
            if rec["K"] in (133, 136) and rec["module_state"] == "fresh" and not (quick and rec["group"] == "edge"):
                P, S, B = (torch.from_numpy(z[f"{rec['case']}_in_{k}"]) for k in ("pose_preds", "pose_scores", "bboxes"))
                cases.append((f"master {rec['case']} K={rec['K']}", P, S[..., 0], B, None, rec["use_heatmap_loss"],
                              float(rec["areaThres"])))
        if quick:
            cases = cases[::6]
    for K in (111, 133, 136):
        P, S, B, img = generated(20 + K, images=2, persons=3, per_person=5, K=K, spread=1.0)
        S[::4, K - 50:] *= 0.02  # low-scoring face and hands: the score masks matter
        cases += [(f"generated K={K}", P, S, B, img, flag, 0.0) for flag in (True, False)]
    for name, P, S, B, img, flag, area in cases:
        params = ops.WholeBodyNMSParams.alphapose(flag, area_thresh=area)
        for dtype in (torch.float32,) if quick else (torch.float32, torch.float64):
            args = (P.to(dtype), S.to(dtype), B.to(dtype), None, img, 3, params.to_list(), None)
            c.op("pose_nms", f"{name}, use_heatmap_loss {flag}, {dtype}", args, NMS_OUT, schedules=c.schedules)
        c.op("pose_similarity", f"{name}, use_heatmap_loss {flag}", (P, S, B, 3, params.to_list(), None),
             ("sim", "match"))


# ------------------------------------------------------------------ affine


def _thetas(n, g, dtype=torch.float32):
    """Pixel maps crop -> image: rotations, scales, shears, shifts, some far outside."""
    ang = (torch.rand(n, generator=g) - 0.5) * 3.0
    sc = 0.3 + 1.7 * torch.rand(n, 2, generator=g)
    sh = 0.3 * (torch.rand(n, generator=g) - 0.5)
    t = torch.zeros(n, 2, 3, dtype=torch.float64)
    t[:, 0, 0], t[:, 0, 1] = sc[:, 0] * ang.cos(), -sc[:, 1] * ang.sin() + sh
    t[:, 1, 0], t[:, 1, 1] = sc[:, 0] * ang.sin(), sc[:, 1] * ang.cos()
    t[:, :, 2] = (torch.rand(n, 2, generator=g) - 0.2) * 60
    return t.to(dtype)


DEGENERATE = {
    "singular": [[1.0, 2.0, 3.0], [2.0, 4.0, 1.0]],
    "1e-37 scale (bug 3)": [[1e-37, 0.0, 40.0], [0.0, 1.0, 3.0]],
    "1e-38 shear (bug 3)": [[1e-38, 1.0, 0.0], [0.0, 1.0, 0.0]],
    "nearly singular": [[1.0, 1.0, 2.0], [1.0, 1.0001, 5.0]],
    "zero": [[0.0, 0.0, 5.0], [0.0, 0.0, 5.0]],
    "huge": [[1e30, 0.0, 0.0], [0.0, 1.0, 0.0]],
    "NaN": [[math.nan, 0.0, 0.0], [0.0, 1.0, 0.0]],
    "inf": [[1.0, 0.0, math.inf], [0.0, 1.0, 0.0]],
}


def affine_sample(c: Comparer):
    g = torch.Generator().manual_seed(3)
    quick = c.level == "asan"
    for dtype in ([torch.float32] if quick else [torch.float32, torch.float64, torch.float16, torch.bfloat16]):
        x = torch.randn(3, 2, 23, 31, generator=g).to(dtype)
        th = _thetas(7, g, torch.float32 if dtype != torch.float64 else dtype)
        bidx = torch.tensor([0, 2, 2, 1, 0, 2, 5])  # 5: out of range, NaN crop
        for padding in (0, 1, 2):
            case = f"{dtype}, padding {padding}"
            c.op("affine_sample", case, (x, th, [9, 11], bidx, padding, 0.25), ("out",))
            go = torch.randn(7, 2, 9, 11, generator=g).to(dtype)
            base = (go, x, th, bidx, padding, 0.25)
            c.op("_affine_sample_backward", case + " atomic", base + (True, True, False),
                 ("grad_input atomic", "grad_theta"), tol=TOLERANCE)
            if padding != 1:  # border padding has no deterministic CUDA gradient (an error on CUDA only)
                c.op("_affine_sample_backward", case + " deterministic", base + (True, False, True),
                     ("grad_input deterministic", None))
    # degenerate maps: the deterministic gradient must not drop contributions (bug 3)
    x = torch.randn(1, 2, 40, 60, generator=g)
    for name, th in DEGENERATE.items():
        theta = torch.tensor([th], dtype=torch.float32)
        go = torch.randn(1, 2, 30, 20, generator=g)
        for padding in (0, 2):
            c.op("affine_sample", f"{name}, padding {padding}", (x, theta, [30, 20], None, padding, 0.5), ("out",))
            c.op("_affine_sample_backward", f"{name}, padding {padding}",
                 (go, x, theta, None, padding, 0.5, True, False, True), ("grad_input deterministic", None))


def affine_crop(c: Comparer):
    g = torch.Generator().manual_seed(4)
    frames = torch.randint(0, 256, (2, 37, 53, 3), dtype=torch.uint8, generator=g)
    th = _thetas(9, g, torch.float64)
    th[3] = torch.tensor(DEGENERATE["NaN"], dtype=torch.float64)
    th[4] = torch.tensor(DEGENERATE["huge"], dtype=torch.float64)
    th[5] = torch.tensor([[1.0, 0.0, 1e4], [0.0, 1.0, 0.0]], dtype=torch.float64)  # far outside
    bidx = torch.tensor([0, 1, 1, 0, 1, 0, 3, 1, 0])  # 3: out of range
    mean, std = [0.406, 0.457, 0.48], [0.225, 0.224, 0.229]
    for interp in (0, 1, 2):
        for dtype in ((torch.float32,) if c.level == "asan" else (torch.float32, torch.float16, torch.bfloat16)):
            for reverse in (False, True):
                case = f"interp {interp}, {dtype}, reverse {reverse}"
                args = (frames, th, [17, 13], bidx, mean, std, reverse, 7.0, interp, dtype)
                c.op("affine_crop", case, args, ("crops",))
        out_cpu, out_emu = torch.full((9, 3, 17, 13), 5.0), torch.full((9, 3, 17, 13), 5.0)
        args = (frames, th, bidx, mean, std, False, 0.0, interp)
        CPU.affine_crop_into(*args, out_cpu)
        for s in c.others:
            c.configure(s)
            c.emu.affine_crop_into(*args, out_emu)
            c.tally.check("affine_crop_into", f"interp {interp} {s}", "out", out_cpu, out_emu)


def affine_inverse(c: Comparer):
    g = torch.Generator().manual_seed(5)
    for dtype in (torch.float32, torch.float64):
        th = torch.cat([_thetas(20, g, dtype), torch.tensor(list(DEGENERATE.values()), dtype=dtype)])
        c.op("affine_inverse", f"{dtype}", (th,), ("gamma",))
        gamma = CPU.affine_inverse(th)
        up = torch.randn(th.shape, generator=g, dtype=dtype)
        c.op("_affine_inverse_backward", f"{dtype}", (up, th, gamma), ("grad_theta",))


def heatmap_decode(c: Comparer):
    g = torch.Generator().manual_seed(6)
    hms = [("random", torch.rand(4, 17, 64, 48, generator=g)),
           ("negative", -torch.rand(2, 5, 16, 12, generator=g)),
           ("constant (ties)", torch.ones(2, 3, 8, 6)),
           ("1x1", torch.rand(2, 3, 1, 1, generator=g))]
    nan = torch.rand(2, 4, 10, 9, generator=g)
    nan[0, 1, 3, 4] = math.nan
    nan[1, 2, :, :] = math.nan
    hms.append(("NaN", nan))
    real = SHARED / "generated" / "blazepose_full_heatmaps_sample.npz"
    if real.exists():
        z = np.load(real)
        names = sorted(k for k in z.files if not k.endswith("_affine"))
        hms.append(("real BlazePose", torch.from_numpy(np.stack([z[n] for n in names])).float()
                     .permute(0, 3, 1, 2).contiguous()))
    for name, hm in hms:
        N = hm.shape[0]
        boxes = torch.rand(N, 2, generator=g, dtype=torch.float64) * 100
        boxes = torch.cat([boxes, boxes + 20 + 50 * torch.rand(N, 2, generator=g, dtype=torch.float64)], 1)
        maps = _thetas(N, g, torch.float64)
        for dtype in ((torch.float32,) if c.level == "asan" else (torch.float32, torch.float64, torch.float16)):
            for quarter in (True, False):
                for kind, m in (("boxes", boxes), ("maps", maps)):
                    c.op("heatmap_decode", f"{name}, {dtype}, quarter {quarter}, {kind}",
                         (hm.to(dtype), m, quarter), ("coords", "scores"))


def real_crops(c: Comparer):
    """The real COCO images and AP_H_56 boxes of test_crop_persons_matches_alphapose_on_real_images."""
    import cv2

    from cuda_emu import device
    from rmpe_ext.alphapose import crop_persons

    sets = [(SHARED / "mmpose_tests" / "coco", "test_coco_det_AP_H_56.json"),
            (SHARED / "coco_mini" / "val2017", "../COCO_val2017_detections_AP_H_56_person_cocomini.json")]
    if not SHARED.exists():
        return
    c.configure(c.others[-1])
    for folder, dets_file in sets[: 2 if c.level == "full" else 1]:
        dets = json.loads((folder / dets_file).read_text())
        for image_id in sorted({d["image_id"] for d in dets})[: 1 if c.level == "asan" else None]:
            bgr = torch.from_numpy(cv2.imread(str(folder / f"{image_id:012d}.jpg")))
            boxes = torch.tensor([[d["bbox"][0], d["bbox"][1], d["bbox"][0] + d["bbox"][2],
                                   d["bbox"][1] + d["bbox"][3]] for d in dets if d["image_id"] == image_id])
            for opencv in (4,) if c.level == "asan" else (4, 5):
                cpu, cpu_boxes = crop_persons(bgr, boxes, bgr=True, opencv=opencv)
                with device.emulated():
                    emu, emu_boxes = crop_persons(bgr.cuda(), boxes, bgr=True, opencv=opencv)
                    emu, emu_boxes = emu.cpu(), emu_boxes.cpu()
                case = f"image {image_id}, {len(boxes)} boxes, OpenCV {opencv}"
                c.tally.check("affine_crop", case + " (real)", "crops", cpu, emu)


GROUPS = {
    "pose_nms_real": lambda c: pose_nms_real(c, _proposals()),
    "pose_nms_generated": pose_nms_generated,
    "pose_nms_wholebody": pose_nms_wholebody,
    "affine_sample": affine_sample,
    "affine_crop": affine_crop,
    "real_crops": real_crops,
    "affine_inverse": affine_inverse,
    "heatmap_decode": heatmap_decode,
}


def _proposals():
    from rmpe_ext.proposals import load_proposals

    return load_proposals(ROOT / "data" / "blazepose_proposals_pre_nms_dev.json.gz")


def run(level: str = "ci", groups=None) -> Tally:
    c = Comparer(level)
    for name in groups or GROUPS:
        GROUPS[name](c)
    return c.tally


def main(argv):
    level = argv[1] if len(argv) > 1 and not argv[1].startswith("--") else "full"
    t0 = time.time()
    tally = run(level)
    print(f"CPU vs emulated CUDA, level {level} (real pose NMS under {', '.join(LEVELS[level])}; the rest "
          f"under {', '.join(OTHERS[level])}), {time.time() - t0:.0f} s")
    print(tally.summary())
    if "--json" in argv:
        path = pathlib.Path(argv[argv.index("--json") + 1])
        path.write_text(json.dumps({"level": level, "rows": tally.rows, "failures": tally.failures}, indent=1))
    return 1 if tally.failures else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main(sys.argv))
