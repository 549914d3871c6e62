"""The data-driven search of pose-NMS parameters (docs/design.md 2.1), on COCO keypoint AP.

    props = read_proposals("data/blazepose_proposals_pre_nms_dev.json.gz")      # rmpe.coco
    ev = KeypointAP("data/gt_dev.json.gz")                                       # rmpe.evaluate
    res = tune_nms(props, ev, method="paper")                                    # the paper's pair search
    save_params("tuned.json", res.params, meta=res.meta())                       # rmpe.nms.params file

Coordinate search over pairs: for each pair of the searched parameters, with the others fixed, a 2-D grid
around the current values (log-spaced for scales, linear for thresholds, integer steps for counts); move
to the best point when it beats the current AP, ties broken towards the current point, then the nearest,
then grid order (so the result is deterministic). A round tries the boolean flags (``merge``), with
``search_scoring`` every scoring choice (:class:`rmpe.nms.runtime.Scoring`), then visits every pair; when a
round improves AP by less than ``tol`` the grids are refined (half the span), and after ``refine``
refinements the search stops. Each evaluation is one call of the batched NMS op over all images
(:func:`rmpe.nms.runtime.apply_nms`) and one pass of a prepared ``COCOeval``
(:class:`rmpe.evaluate.KeypointAP`: one GT index, the AP-only area range, an OKS cache); identical NMS
outputs are scored once.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import os
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from rmpe_ext.proposals import Proposals

from ..evaluate import KeypointAP
from .params import METHODS, make_params, params_to_json
from .runtime import OUTPUTS, RANKS, NMSOutput, Scoring, apply_nms, to_results

__all__ = ["ParamSpec", "default_space", "default_flags", "TuneResult", "tune_nms", "tuned_params_path"]


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One searched parameter: ``scale`` ``"log"`` (grid ``v * span ** t``), ``"linear"`` (``v + span t``),
    ``t`` in [-1, 1] (``n`` points), or ``"int"`` (every integer within ``v +- span``, whatever ``n``); the
    span halves at each refinement (the log exponent halves); values are clipped to ``[lo, hi]`` and
    rounded to 4 significant digits (the current value is kept exactly)."""

    name: str
    scale: str
    span: float
    lo: float = -math.inf
    hi: float = math.inf

    def __post_init__(self):
        if self.scale not in ("log", "linear", "int"):
            raise ValueError(f"ParamSpec {self.name!r}: scale must be 'log', 'linear' or 'int', got {self.scale!r}")
        if not self.span > 0 or (self.scale == "log" and not self.span > 1):
            raise ValueError(f"ParamSpec {self.name!r}: span must be > 0 (> 1 for a log scale), got {self.span}")
        if self.scale == "log" and not self.lo > 0:
            object.__setattr__(self, "lo", max(self.lo, 1e-12))

    def grid(self, value: float, n: int, level: int) -> List[float]:
        """``n`` values around ``value`` (itself included), ascending, without duplicates."""
        value = float(value)
        ts = np.linspace(-1.0, 1.0, n)
        f = 0.5 ** level
        if self.scale == "log":
            if not value > 0:
                raise ValueError(f"{self.name} = {value}: a log-scale parameter must be > 0")
            vals = [value * self.span ** (f * t) for t in ts]
        elif self.scale == "linear":
            vals = [value + self.span * f * t for t in ts]
        else:  # every integer within the span (at least the neighbours)
            half = max(1, int(round(self.span * f)))
            vals = [round(value) + k for k in range(-half, half + 1)]
        out = set()
        for v in vals:
            v = min(max(v, self.lo), self.hi)
            if self.scale == "int":
                v = float(round(v))
            elif v != value:
                v = float(f"{v:.4g}")
            out.add(v)
        out.add(min(max(value, self.lo), self.hi) if self.scale != "int" else float(round(value)))
        return sorted(out)


def default_space(method: str, num_joints: int = 17) -> List[ParamSpec]:
    """The parameters searched by default (measured on the BlazePose dev proposals: the ones whose change
    moves AP):

    * ``paper``: ``sigma1`` (KSim's tanh scale), ``sigma2`` (HSim's width, px^2), ``lam``, ``eta``: the
      paper's four.
    * ``alphapose``: ``gamma`` and ``delta2`` (the spatial term and its threshold; ``mu`` only rescales
      that term against ``gamma``), ``match_thresh`` (the PCK count, ``K + 1`` turns it off), ``pck_cap``
      and ``alpha`` (the PCK radius ``min(alpha max(w, h), pck_cap)``; ``alpha`` is also the merge radius).
      ``delta1`` only acts on joints within one pixel and ``score_thresh`` only drops poses that rank last
      anyway; add them by name.
    * ``oks``/``soft-oks``: ``thresh``.

    The boolean ``merge`` (``linear`` for soft-oks) is searched with the scoring, see :func:`tune_nms`."""
    if method == "paper":
        return [ParamSpec("sigma1", "log", 8.0, 1e-3, 1e3), ParamSpec("sigma2", "log", 8.0, 1e-2, 1e7),
                ParamSpec("lam", "log", 8.0, 1e-4, 1e3),
                ParamSpec("eta", "linear", 6.0, 0.0, 2.0 * num_joints * 1000)]
    if method == "alphapose":
        return [ParamSpec("gamma", "linear", 8.0, 0.0, 1e5), ParamSpec("delta2", "log", 8.0, 1e-3, 1e4),
                ParamSpec("match_thresh", "int", num_joints, 1, num_joints + 1),
                ParamSpec("pck_cap", "log", 8.0, 1e-2, 1e4), ParamSpec("alpha", "log", 4.0, 1e-3, 10.0)]
    if method in ("oks", "soft-oks"):
        return [ParamSpec("thresh", "linear", 0.4, 0.0, 1.0)]
    raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")


def default_flags(method: str) -> List[str]:
    """The boolean fields searched beside the scoring: ``merge`` (``linear`` for soft-oks)."""
    return ["linear"] if method == "soft-oks" else ["merge"]


_EXTRA_SPECS = {
    "delta1": ParamSpec("delta1", "log", 8.0, 1e-3, 1e3),
    "mu": ParamSpec("mu", "log", 8.0, 1e-4, 1e3),
    "score_thresh": ParamSpec("score_thresh", "linear", 0.3, 0.0, 1.0),
    "merge_cap": ParamSpec("merge_cap", "log", 4.0, 1e-2, 1e4),
    "box_frac": ParamSpec("box_frac", "log", 4.0, 1e-3, 10.0),
    "area_thresh": ParamSpec("area_thresh", "linear", 2000.0, 0.0, 1e9),
    "max_dets": ParamSpec("max_dets", "int", 10, 1, 1000),
}


@dataclasses.dataclass
class TuneResult:
    """What :func:`tune_nms` found: the tuned ``params`` and ``scoring``, their ``ap`` and the starting
    point's (``start_ap``, ``start_params``, ``start_scoring``); ``history``: one entry per pair step
    (``round``, ``level``, the ``step``: a pair, a flag or "scoring", the values chosen, ``ap``); ``rounds``; ``converged`` (False: stopped by
    ``max_rounds``); counts: ``nms_calls``, ``coco_evals`` (distinct NMS outputs scored), ``seconds``."""

    method: str
    params: Any
    scoring: Scoring
    ap: float
    start_params: Any
    start_scoring: Scoring
    start_ap: float
    names: List[str]
    history: List[dict]
    rounds: int
    converged: bool
    nms_calls: int
    coco_evals: int
    seconds: float
    eval_seconds: float
    image_ids: List[int]

    @property
    def evals_per_second(self) -> float:
        """Parameter points evaluated (NMS + AP, cached or not) per second of search."""
        return self.nms_calls / self.seconds if self.seconds > 0 else float("nan")

    @property
    def coco_evals_per_second(self) -> float:
        """COCOeval runs per second of COCOeval time (the prepared evaluator alone)."""
        return self.coco_evals / self.eval_seconds if self.eval_seconds > 0 else float("nan")

    def meta(self, **extra) -> Dict[str, Any]:
        """A ``meta`` dict for :func:`rmpe.nms.params.save_params`: the scoring (read back by
        :func:`scoring_from_meta`), the AP reached and how it was found."""
        m = {
            "scoring": self.scoring.as_dict(),
            "ap": self.ap,
            "start_ap": self.start_ap,
            "start_params": params_to_json(self.start_params),
            "start_scoring": self.start_scoring.as_dict(),
            "searched": list(self.names),
            "search": "coordinate search over pairs of parameters (2-D grids, refined on convergence), "
                      "rmpe.nms.search.tune_nms",
            "rounds": self.rounds,
            "converged": self.converged,
            "nms_calls": self.nms_calls,
            "coco_evals": self.coco_evals,
            "seconds": round(self.seconds, 2),
            "tuned_on_image_ids": list(self.image_ids),
        }
        m.update(extra)
        return m


def _digest(out: NMSOutput) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for t in out:
        h.update(t.contiguous().numpy().tobytes())
    return h.digest()


def tune_nms(props: Proposals, evaluator: KeypointAP, method: str = "paper", start=None,
             names: Optional[Sequence[str]] = None, scoring: Optional[Scoring] = None, search_scoring: bool = False,
             flags: Optional[Sequence[str]] = None, grid: int = 7, max_rounds: int = 20, refine: int = 2,
             tol: float = 1e-4, specs: Optional[Sequence[ParamSpec]] = None,
             progress: bool = True) -> TuneResult:
    """Searches the NMS parameters of ``method`` that maximise COCO keypoint AP of ``props`` (pre-NMS
    proposals) under ``evaluator`` (a :class:`KeypointAP`), two parameters at a time (this module's docstring
    gives the scheme).

    ``start``: the starting parameters (object or dict; default: the method's defaults); ``names``: the
    numeric parameters searched in pairs (default :func:`default_space`; other fields by name where a spec
    is known, or give ``specs``); ``flags``: boolean fields tried both ways after each round (default
    :func:`default_flags`; ``[]``: none) at the start of each round; ``scoring``: the :class:`Scoring`
    (None: ``Scoring("proposal", "rank")`` for every method, the proposal's own score), fixed unless
    ``search_scoring``, which tries every (rank, output) choice at the start of each round too (off by
    default: on the 12 dev images it risks overfitting, see :mod:`rmpe.nms.runtime`); ``grid``: points per axis
    (odd, >= 3); ``max_rounds`` caps the rounds; ``refine``: how many times the grids are refined; ``tol``:
    the AP gain below which a round counts as converged; ``progress``: a tqdm bar on stderr.

    A point moves only on a strictly higher AP; ties go to the current point, then the nearest grid point,
    then grid order, so the result is deterministic. Raises ValueError for an unknown method or name or a
    bad setting."""
    from tqdm.auto import tqdm

    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    if int(grid) != grid or grid < 3 or grid % 2 == 0:
        raise ValueError(f"grid must be an odd number >= 3, got {grid}")
    if int(max_rounds) != max_rounds or max_rounds < 1:
        raise ValueError(f"max_rounds must be an integer >= 1, got {max_rounds}")
    if refine < 0 or not tol >= 0:
        raise ValueError(f"refine must be >= 0 and tol >= 0, got refine={refine}, tol={tol}")
    if len(props.poses) == 0:
        raise ValueError("props: no proposals to tune on")
    K = props.poses.shape[1]
    by_name = {s.name: s for s in default_space(method, K)}
    by_name.update({k: v for k, v in _EXTRA_SPECS.items() if k not in by_name})
    if specs is not None:
        by_name.update({s.name: s for s in specs})
    if names is None:
        names = [s.name for s in (specs if specs is not None else default_space(method, K))]
    names = list(names)
    flags = default_flags(method) if flags is None else list(flags)
    fields = {f.name: f for f in dataclasses.fields(METHODS[method])}
    if not names or len(set(names)) != len(names):
        raise ValueError(f"names must be distinct parameter names, got {names}")
    for nm in names:
        if nm not in fields:
            raise ValueError(f"{nm!r} is not a {method} NMS parameter; known: {sorted(fields)}")
        if nm not in by_name:
            raise ValueError(f"no search range known for {nm!r}: pass a ParamSpec for it in specs")
    for nm in flags:
        if nm not in fields or fields[nm].type not in (bool, "bool"):
            raise ValueError(f"flag {nm!r} is not a boolean {method} NMS parameter")
    if start is None or isinstance(start, dict):
        start = make_params(method, start)
    if getattr(start, "method", None) != method:
        raise ValueError(f"start params are for method {getattr(start, 'method', None)!r}, not {method!r}")
    if scoring is None:
        scoring = Scoring()
    choices: List[Scoring] = []
    if search_scoring:
        outs = ("rank",) if method == "soft-oks" else OUTPUTS
        choices = [Scoring(r, o) for r in RANKS for o in outs
                   if not (o == "proposal" and r == "proposal")]  # the same as ("proposal", "rank")

    t_start = time.perf_counter()
    eval_s0, evals0 = evaluator.seconds, evaluator.n_evals
    by_output: Dict[bytes, float] = {}
    by_point: Dict[tuple, float] = {}
    nms_calls = 0
    bar = tqdm(desc=f"tune {method} NMS", unit="pt", disable=not progress, leave=False)

    def score(params, sc: Scoring) -> float:
        nonlocal nms_calls
        key = (tuple(getattr(params, f.name) for f in dataclasses.fields(params)), sc)
        if key not in by_point:
            out = apply_nms(props, method, params, sc)
            nms_calls += 1
            d = _digest(out)
            if d not in by_output:
                by_output[d] = evaluator.ap(to_results(props, out))
            by_point[key] = by_output[d]
            bar.update(1)
        return by_point[key]

    cur, cur_sc = start, scoring
    cur_ap = start_ap = score(cur, cur_sc)
    history: List[dict] = []
    level, rounds, converged = 0, 0, False
    pairs = list(itertools.combinations(names, 2)) if len(names) > 1 else [(names[0],)]
    try:
        while rounds < max_rounds:
            rounds += 1
            round_start = cur_ap
            for nm in flags:
                p = dataclasses.replace(cur, **{nm: not getattr(cur, nm)})
                ap = score(p, cur_sc)
                if ap > cur_ap:
                    cur, cur_ap = p, ap
                history.append({"round": rounds, "level": level, "step": [nm], "values": {nm: getattr(cur, nm)},
                                "ap": cur_ap})
            if choices:
                for sc in choices:
                    ap = score(cur, sc)
                    if ap > cur_ap:
                        cur_sc, cur_ap = sc, ap
                history.append({"round": rounds, "level": level, "step": ["scoring"], "values": cur_sc.as_dict(),
                                "ap": cur_ap})
            for pair in pairs:
                axes = [by_name[nm].grid(getattr(cur, nm), grid, level) for nm in pair]
                centre = [axis.index(_nearest(axis, getattr(cur, nm))) for axis, nm in zip(axes, pair)]
                best, best_key = None, None
                for idx in itertools.product(*[range(len(a)) for a in axes]):
                    vals = {nm: _cast(cur, nm, axes[a][i]) for a, (nm, i) in enumerate(zip(pair, idx))}
                    p = dataclasses.replace(cur, **vals)
                    is_cur = all(v == getattr(cur, nm) for nm, v in vals.items())
                    dist = sum(abs(i - c) for i, c in zip(idx, centre))
                    # higher AP, then the current point, then the nearest (grid steps), then grid order
                    key = (-score(p, cur_sc), not is_cur, dist)
                    if best_key is None or key < best_key:
                        best, best_key = p, key
                if -best_key[0] > cur_ap:
                    cur, cur_ap = best, -best_key[0]
                history.append({"round": rounds, "level": level, "step": list(pair),
                                "values": {nm: getattr(cur, nm) for nm in pair}, "ap": cur_ap})
                bar.set_postfix(round=rounds, level=level, AP=f"{cur_ap:.4f}")
            if cur_ap - round_start < tol:
                if level >= refine:
                    converged = True
                    break
                level += 1
    finally:
        bar.close()
    return TuneResult(method=method, params=cur, scoring=cur_sc, ap=cur_ap, start_params=start,
                      start_scoring=scoring, start_ap=start_ap, names=names + flags, history=history,
                      rounds=rounds, converged=converged, nms_calls=nms_calls,
                      coco_evals=evaluator.n_evals - evals0, seconds=time.perf_counter() - t_start,
                      eval_seconds=evaluator.seconds - eval_s0, image_ids=sorted(set(props.image_ids.tolist())))


def _nearest(axis: List[float], v: float) -> float:
    return min(axis, key=lambda a: (abs(a - v), a))


def _cast(params, name: str, v: float):
    """``v`` in the type of the field (match_thresh / max_dets stay integers)."""
    old = getattr(params, name)
    if isinstance(old, bool):
        return bool(v)
    if isinstance(old, int) or name in ("match_thresh", "max_dets"):
        return int(round(v))
    return float(v)


def tuned_params_path(method: str, proposals: str = "blazepose_dev") -> str:
    """The shipped tuned parameters file of ``method`` (``rmpe/data/nms_params_<method>_<proposals>.json``,
    a :func:`rmpe.nms.params.load_params` file whose ``meta`` says how it was found and what AP it reached).
    Raises FileNotFoundError naming what is shipped when there is none."""
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
    path = os.path.join(folder, f"nms_params_{method}_{proposals}.json")
    if not os.path.isfile(path):
        have = sorted(f for f in os.listdir(folder) if f.startswith("nms_params_")) if os.path.isdir(folder) else []
        raise FileNotFoundError(f"no tuned NMS parameters for {method!r} on {proposals!r}; shipped: {have}")
    return path
