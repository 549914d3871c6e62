"""File helpers shared by the command line and the library: atomic writes, JSON loading with clear errors."""
from __future__ import annotations

import contextlib
import gzip
import json
import os
import tempfile
from typing import Any, Iterator, Union

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
    except (json.JSONDecodeError, UnicodeDecodeError, OSError, EOFError) as e:
        raise ValueError(f"{what} {path!r} is not valid JSON: {e}") from None
