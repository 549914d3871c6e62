"""Generic file helpers shared by the command line and the library: atomic writes, output paths checked
before the work, JSON files and values read with clear errors. COCO documents: :mod:`rmpe.coco`."""
from __future__ import annotations

import contextlib
import gzip
import json
import math
import numbers
import os
import tempfile
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[str]:
    """Yields a temporary path in the same folder as ``path``; on success it is renamed to ``path``,
    on any exception it is removed, so ``path`` is never left half-written."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)  # mkstemp makes the file 0600: give it the mode a plain open() would
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_json(path: PathLike, obj: Any, indent: Union[int, None] = None) -> None:
    """Writes ``obj`` as JSON (gzip-compressed when ``path`` ends in .gz), atomically."""
    with atomic_path(path) as tmp:
        opener = gzip.open if os.fspath(path).endswith(".gz") else open
        with opener(tmp, "wt") as f:
            json.dump(obj, f, indent=indent)


def read_json(path: PathLike, what: str = "JSON file") -> Any:
    """Reads a ``.json`` or ``.json.gz`` file; errors name the file and what it was meant to be."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path!r} does not exist")
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt") as f:
            return json.load(f)
    except (ValueError, OSError, EOFError) as e:  # JSONDecodeError, UnicodeDecodeError, a 5000-digit number
        raise ValueError(f"{what} {path!r} is not valid JSON: {e}") from None


# ---------------------------------------------------------------------------------------------------------
# output paths


def _what(path: str, what: str) -> str:
    return f"{what} {path!r}" if what else repr(path)


def check_output_path(path: PathLike, what: str = "output", folder: bool = False,
                      contents: Sequence[str] = ()) -> None:
    """Raises ``ValueError`` naming ``what`` (e.g. the option) when ``path`` could not be written, so that
    a command fails before its work rather than after it: an empty name; an existing folder where a file is
    meant (``folder=False``) or an existing non-folder where a folder is (``folder=True``, with
    ``contents`` the names that will be written inside it, which must not be folders); a file where a
    parent folder must be; a nearest existing parent folder in which no file can be created (tried with a
    temporary file, removed at once: permission bits alone do not tell, e.g. for root or on /proc).
    Missing parent folders are fine: :func:`atomic_path` creates them at the write."""
    path = os.fspath(path)
    if not path:
        raise ValueError(f"{what}: empty path")
    writable_in = None  # an existing output folder: its files are written in it
    if os.path.isdir(path):
        if not folder:
            raise ValueError(f"{_what(path, what)} is a folder; name a file")
        for name in contents:
            if os.path.isdir(os.path.join(path, name)):
                raise ValueError(f"{_what(path, what)}: {os.path.join(path, name)!r} is a folder")
        writable_in = path
    elif os.path.lexists(path):
        if folder:
            raise ValueError(f"{_what(path, what)} exists and is not a folder")
    elif not folder and path.endswith(("/", os.sep)):
        raise ValueError(f"{_what(path, what)} ends in a separator: name a file")
    # the nearest existing ancestor must be a folder, and files must be creatable in it
    parent = os.path.dirname(path.rstrip("/" + os.sep)) or os.curdir
    while not os.path.lexists(parent):
        up = os.path.dirname(parent)
        if up == parent or not up:
            parent = os.curdir if not os.path.isabs(parent) else up
            break
        parent = up
    if not os.path.isdir(parent):
        raise ValueError(f"{_what(path, what)}: {parent!r} is a file, not a folder")
    for d in dict.fromkeys([parent] + ([writable_in] if writable_in else [])):
        try:
            fd, probe = tempfile.mkstemp(dir=d, prefix=".rmpe-write-check.")
        except OSError as e:
            raise ValueError(f"{_what(path, what)}: cannot write in {d!r}: {e.strerror or e}") from None
        try:
            os.close(fd)
        finally:
            os.remove(probe)


def check_output_paths(outputs: Iterable[tuple]) -> None:
    """:func:`check_output_path` for each ``(what, path, folder[, contents])`` whose path is not None, and
    no two of them on the same path."""
    seen = {}
    for what, path, folder, *contents in outputs:
        if path is None:
            continue
        check_output_path(path, what, folder, *contents)
        key = os.path.normcase(os.path.abspath(path))
        if key in seen:
            raise ValueError(f"{seen[key]} and {what} name the same {'folder' if folder else 'file'} {path!r}")
        seen[key] = what


# ---------------------------------------------------------------------------------------------------------
# JSON values

_INT64 = (-(2 ** 63), 2 ** 63 - 1)


def json_int(value: Any, what: str) -> int:
    """``value`` (a JSON number) as an int; ``ValueError`` ("``what`` must be a 64-bit integer, got ...")
    unless it is integral and fits in int64 (ids go into int64 tensors)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        v = int(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer():
        v = int(value)
    else:
        raise ValueError(f"{what} must be a 64-bit integer, got {value!r}")
    if not _INT64[0] <= v <= _INT64[1]:
        raise ValueError(f"{what} must be a 64-bit integer, got {value!r}")
    return v


def json_number(value: Any, what: str, finite: bool = True) -> float:
    """``value`` as a float; ``ValueError`` ("``what`` must be a (finite) number, got ...") for anything
    else (None, strings, lists, booleans) and, with ``finite``, NaN and infinities."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    try:
        v = float(value) if ok else math.nan
    except OverflowError:  # an integer beyond float's range
        ok, v = False, math.nan
    if not ok or (finite and not math.isfinite(v)):
        raise ValueError(f"{what} must be a {'finite ' if finite else ''}number, got {value!r}")
    return v


def json_numbers(value: Any, what: str, size: Optional[int] = None) -> list:
    """A JSON list of finite numbers (of ``size`` numbers when given); ``ValueError`` naming ``what``."""
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)
    if ok:
        try:
            ok = all(math.isfinite(v) for v in value)
        except OverflowError:
            ok = False
    if not ok or (size is not None and len(value) != size):
        n = "" if size is None else f" {size}"
        raise ValueError(f"{what} must be a list of{n} finite numbers, got {value!r}"[:300])
    return list(value)
