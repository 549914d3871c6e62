"""``python -m rmpe`` / ``rmpe``: the command line. Subcommands live in rmpe.commands.

The promise (README): on bad input every command prints one line ``rmpe <cmd>: error: ...`` and exits 2,
and a failed or interrupted run (Ctrl-C, SIGTERM) leaves no file behind. Two places keep it for every
command: :func:`main` checks the output paths a command declares (``outputs`` in its parser defaults)
before the command runs, and translates input errors (:data:`INPUT_ERRORS`) into that line. Any other
exception is a bug and propagates with its traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading
from typing import Iterator, List, Optional

from .commands import COMMANDS


class CommandError(Exception):
    """A user-facing failure: printed as ``rmpe <cmd>: error: <message>``, exit status 2."""


class Terminated(BaseException):
    """Raised by the SIGTERM handler of :func:`main`: like KeyboardInterrupt it unwinds every ``finally`` and
    ``except BaseException`` (so temporary files are removed), and no ``except Exception`` stops it."""


# Errors that describe the input rather than the code: a message naming the file or option (the readers
# raise ValueError / FileNotFoundError so), or the operating system refusing a path (OSError: a folder
# that is a file, a full disk, no permission). Everything else is a bug and keeps its traceback.
INPUT_ERRORS = (CommandError, ValueError, OSError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rmpe", description="RMPE multi-person pose estimation tools")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(f"rmpe.commands.{module}")
        except ModuleNotFoundError as e:
            if e.name == f"rmpe.commands.{module}":
                continue  # not written yet
            raise
        mod.register(sub)
    return parser


def check_outputs(args: argparse.Namespace) -> None:
    """Checks the outputs a command declares, before it runs. A command's parser sets ``outputs``: a list
    of ``(option, dest, "file" | "folder"[, names written inside the folder])``; see
    :func:`rmpe.io.check_output_paths`."""
    from .io import check_output_paths

    check_output_paths((option, getattr(args, dest), kind == "folder", *inside)
                       for option, dest, kind, *inside in getattr(args, "outputs", ()))


def error_message(e: BaseException) -> str:
    """One line for an input error: an OSError as ``'path': reason``, others as their message."""
    if isinstance(e, OSError) and e.strerror and e.filename is not None:
        msg = f"{e.filename!r}" + (f" -> {e.filename2!r}" if e.filename2 is not None else "") + f": {e.strerror}"
    else:
        msg = str(e) or type(e).__name__
    return " ".join(line.strip() for line in msg.splitlines() if line.strip())


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While a command runs, SIGTERM raises :class:`Terminated` (its default would end the process at once,
    leaving temporary files); the previous handler is restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def handler(signum, frame):
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with _sigterm_raises():
        try:
            check_outputs(args)
            return int(args.func(args) or 0)
        except INPUT_ERRORS as e:
            print(f"rmpe {args.command}: error: {error_message(e)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"rmpe {args.command}: interrupted", file=sys.stderr)
            return 130
        except Terminated:
            print(f"rmpe {args.command}: terminated", file=sys.stderr)
            return 128 + signal.SIGTERM


if __name__ == "__main__":
    sys.exit(main())
