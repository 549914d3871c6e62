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
import os
from typing import Any, Dict, Optional, Tuple, Union

from rmpe_ext.ops import AlphaPoseNMSParams, OKSNMSParams, PaperNMSParams

from .io import read_json, write_json

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


def make_params(method: str, values: Optional[Dict[str, Any]] = None) -> Params:
    """The parameter object of ``method`` with ``values`` over its defaults; unknown fields are an error."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    cls = METHODS[method]
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {method} NMS parameter(s) {unknown}; known: {sorted(names)}")
    for k, v in values.items():
        if isinstance(v, float) and math.isnan(v):
            raise ValueError(f"{method} NMS parameter {k!r} is NaN")
    if "sigmas" in values and values["sigmas"] is not None:
        values["sigmas"] = tuple(float(s) for s in values["sigmas"])
    return cls(**values)


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
