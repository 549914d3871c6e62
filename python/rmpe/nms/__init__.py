"""Pose NMS (RMPE paper section 3.2): parameters, the run-time NMS, and the search of its parameters.

    params.py   the methods' parameter classes and parameter files (make_params, load_params, save_params)
    runtime.py  what runs NMS: Scoring, apply_nms, no_nms, to_results, load_params_and_scoring
    search.py   the data-driven parameter search (tune_nms, ParamSpec, TuneResult); import it by name

This package re-exports params.py and runtime.py only: importing :mod:`rmpe.nms` (as :mod:`rmpe.pipeline`
does) never loads the tuner. A new NMS method's parameters go in params.py, its call in runtime.py.
"""
from .params import *  # noqa: F401,F403
from .params import __all__ as _params_all
from .runtime import *  # noqa: F401,F403
from .runtime import __all__ as _runtime_all

__all__ = list(_params_all) + list(_runtime_all)
