"""``python -m rmpe`` / ``rmpe``: the command line. Subcommands live in rmpe.commands."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from .commands import COMMANDS


class CommandError(Exception):
    """A user-facing failure: printed as ``rmpe <cmd>: error: <message>``, exit status 2."""


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


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CommandError, FileNotFoundError, ValueError) as e:
        print(f"rmpe {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rmpe {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
