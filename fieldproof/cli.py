"""The `fieldproof` command: one subcommand per component.

Each component module exposes ``add_parser(subparsers)``, which adds its subcommand and sets
``func`` (taking the parsed arguments, returning the exit code). Exit codes everywhere:
0 done / all sound, 1 findings (verification), 2 cannot run (bad arguments, unreadable input) —
always with a clear message on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from fieldproof.errors import FieldproofError

# Subcommands, in the order `fieldproof --help` lists them. Only what is built is listed; the
# the case file is absent until its issue lands (see README).
COMPONENTS: tuple[str, ...] = (
    "custody.cli",  # verify
    "provisioning.cli",  # provision …
    "edge.config_cli",  # config check …
    "edge.recorder.cli",  # recorder run | record | ctl | recover
    "server.cli",  # server migrate | ingest | api
    "edge.dock.cli",  # dock run | sync-once
    "fieldproof.demo",  # demo
)


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on bad arguments already; keep its message short and plain."""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every component's subcommand."""
    parser = _Parser(prog="fieldproof", description="Fieldproof: evidence recorders, docks and case files.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMPONENTS:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except FieldproofError as exc:
        print(f"fieldproof {args.command}: {exc.diagnostics()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fieldproof: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
