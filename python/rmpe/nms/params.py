"""Pose-NMS parameter files: which formulation, with which parameters.

A parameters file is JSON::

    {"method": "paper", "params": {"sigma1": 0.3, "sigma2": 40.0, "lam": 1.2, "eta": 9.5}, "meta": {...}}

``method`` is one of ``alphapose``, ``paper``, ``oks`` (the kernels of ``rmpe_ext.ops.pose_nms``) or
``soft-oks`` (``rmpe_ext.ops.soft_oks_nms``); ``params`` holds fields of that method's parameter class
(missing fields keep their defaults); ``meta`` is free-form (how the parameters were found, the AP they
reached). ``rmpe nms``, ``rmpe run`` and :class:`rmpe.pipeline.Pipeline` read these files;
``rmpe tune-nms`` writes them.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
import typing
from typing import Any, Dict, Optional, Tuple, Union

from rmpe_ext.ops import AlphaPoseNMSParams, OKSNMSParams, PaperNMSParams

from ..io import read_json, write_json

__all__ = ["METHODS", "SoftOKSNMSParams", "make_params", "params_to_json", "load_params", "save_params"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SoftOKSNMSParams:
    """Soft-OKS-NMS (mmpose): scores of overlapping poses decay instead of being removed.

    ``thresh``: OKS above which (linear) or the Gaussian width with which scores decay (see
    ``rmpe_ext.ops.soft_oks_nms``); ``max_dets``: poses kept per image; ``linear``: the decay form."""

    thresh: float = 0.9
    max_dets: int = 20
    linear: bool = False
    method = "soft-oks"


METHODS = {"alphapose": AlphaPoseNMSParams, "paper": PaperNMSParams, "oks": OKSNMSParams,
           "soft-oks": SoftOKSNMSParams}

Params = Union[AlphaPoseNMSParams, PaperNMSParams, OKSNMSParams, SoftOKSNMSParams]


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


# what each annotation of the parameter classes accepts, and how an error names it
_KINDS = {bool: (lambda v: isinstance(v, bool), "true or false"),
          int: (lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool), "an integer"),
          float: (_is_number, "a number"),
          Optional[float]: (lambda v: v is None or _is_number(v), "a number or null"),
          Optional[Tuple[float, ...]]: (lambda v: v is None or (isinstance(v, (list, tuple))
                                                                and all(map(_is_number, v))),
                                        "a list of numbers or null")}


def _check_ranges(params: Params) -> None:
    """The ranges the kernels accept (their own checks, run on no poses): ValueError with their message."""
    import torch

    from rmpe_ext import ops

    K = 17 if getattr(params, "sigmas", None) is None else len(params.sigmas)
    empty = (torch.zeros(0, K, 2), torch.zeros(0, K), torch.zeros(0, 4))
    try:
        if params.method == "soft-oks":
            ops.soft_oks_nms(*empty, torch.zeros(0), thresh=params.thresh, max_dets=params.max_dets,
                             linear=params.linear)
        else:
            ops.pose_nms(*empty, method=params.method, params=params)
    except (RuntimeError, ValueError) as e:  # "rmpe_ext::pose_nms: params.sigma1 must be > 0 and finite, got -1"
        msg = str(e).split(": ", 1)[1] if str(e).startswith("rmpe_ext::") else str(e)
        msg = msg[len("params."):] if msg.startswith("params.") else msg
        raise ValueError(f"{params.method} NMS parameter {msg}") from None


def make_params(method: str, values: Optional[Dict[str, Any]] = None) -> Params:
    """The parameter object of ``method`` with ``values`` over its defaults; unknown fields, values of the
    wrong type (a string for a number) and values out of the kernels' ranges are errors (ValueError)."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    cls = METHODS[method]
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {method} NMS parameter(s) {unknown}; known: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    for k, v in values.items():
        ok, kind = _KINDS[hints[k]]
        if not ok(v):
            raise ValueError(f"{method} NMS parameter {k!r} must be {kind}, got {v!r}")
        if isinstance(v, float) and math.isnan(v):
            raise ValueError(f"{method} NMS parameter {k!r} is NaN")
    if "sigmas" in values and values["sigmas"] is not None:
        values["sigmas"] = tuple(float(s) for s in values["sigmas"])
    params = cls(**values)
    _check_ranges(params)
    return params


def params_to_json(params: Params) -> Dict[str, Any]:
    """The fields of ``params`` as JSON values (infinities as the strings "inf"/"-inf", tuples as lists)."""
    values = {}
    for f in dataclasses.fields(params):
        v = getattr(params, f.name)
        if isinstance(v, float) and math.isinf(v):
            v = "inf" if v > 0 else "-inf"
        elif isinstance(v, tuple):
            v = list(v)
        values[f.name] = v
    return values


def save_params(path: Union[str, os.PathLike], params: Params, meta: Optional[Dict[str, Any]] = None) -> None:
    """Writes ``params`` (and ``meta``) as a parameters file, atomically."""
    write_json(path, {"method": params.method, "params": params_to_json(params), "meta": meta or {}}, indent=2)


def load_params(path: Union[str, os.PathLike]) -> Tuple[str, Params]:
    """Reads a parameters file -> ``(method, params)``; errors name the file and the field."""
    doc = read_json(path, "NMS parameters file")
    if not isinstance(doc, dict) or "method" not in doc:
        raise ValueError(f"NMS parameters file {os.fspath(path)!r}: needs a JSON object with a 'method' field")
    values = doc.get("params", {})
    if not isinstance(values, dict):
        raise ValueError(f"NMS parameters file {os.fspath(path)!r}: 'params' must be an object")
    values = {k: (float(v) if v in ("inf", "-inf") else v) for k, v in values.items()}
    try:
        return doc["method"], make_params(doc["method"], values)
    except (ValueError, TypeError) as e:
        raise ValueError(f"NMS parameters file {os.fspath(path)!r}: {e}") from None
