"""``python -m edge.dock ACTION …``: the same as ``fieldproof dock ACTION …``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from edge.dock.cli import add_parser
from fieldproof.errors import FieldproofError


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``dock`` arguments and run; FieldproofError → message and exit 2, as fieldproof does."""
    parser = argparse.ArgumentParser(prog="python -m edge.dock")
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    args = parser.parse_args(["dock", *(sys.argv[1:] if argv is None else argv)])
    try:
        code: int = args.func(args)
    except FieldproofError as exc:
        print(f"fieldproof dock: {exc.diagnostics()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
