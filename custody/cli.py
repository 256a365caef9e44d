"""``fieldproof verify PATH``: check a recorder spool, or an exported case bundle, against the fleet's trust
root, offline."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from custody.bundle import is_bundle, render_bundle_text, verify_bundle
from custody.errors import CustodyError
from custody.report import render_text
from custody.spool import Spool
from custody.trust import TrustStore
from custody.verify import ChainVerifier

_WITNESS_RE = re.compile(r"^(\d+)(?::(sha256:[0-9a-f]{64}))?$")


def add_parser(subparsers: Any) -> None:
    """Add the ``verify`` subcommand."""
    p = subparsers.add_parser(
        "verify",
        help="verify a recorder spool's chain of custody, or an exported case bundle",
        description="Verify a recorder spool (signatures, chain continuity, revocation, clocks and media "
        "hashes), or an exported case bundle (a BagIt bag: manifests, records, media, annotations, "
        "custody-log proofs and its report; docs/export.md). Exit 0: all sound; 1: findings; 2: cannot run.",
    )
    p.add_argument("path", type=Path, help="the spool folder, or an export bundle (a folder with bagit.txt)")
    p.add_argument(
        "--ca",
        type=Path,
        action="append",
        required=True,
        help="the fleet root certificate (PEM); repeat for several roots",
    )
    p.add_argument(
        "--crl",
        type=Path,
        action="append",
        default=[],
        help="a CRL from the fleet's device CA (PEM or DER); repeatable",
    )
    p.add_argument(
        "--certs",
        type=Path,
        action="append",
        default=[],
        help="extra certificates (file or folder), e.g. a device's earlier signing certificates",
    )
    p.add_argument(
        "--expect-last",
        metavar="SEQ[:HASH]",
        help="what a witness (server ack, dock) saw last; a chain ending earlier is truncated",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--workers", type=int, default=None, help="processes for signature checks (default: all cores)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Verify and print the report; the exit code says sound (0), findings (1) or cannot run (2)."""
    expect = None
    if args.expect_last:
        m = _WITNESS_RE.fullmatch(args.expect_last)
        if m is None:
            print("fieldproof verify: --expect-last takes SEQ or SEQ:sha256:<hex>", file=sys.stderr)
            return 2
        expect = (int(m.group(1)), m.group(2))
    for path in [*args.ca, *args.crl, *args.certs]:
        if not path.exists():
            print(f"fieldproof verify: {path} does not exist", file=sys.stderr)
            return 2
    if is_bundle(args.path):
        return _run_bundle(args)
    try:
        trust = TrustStore.from_paths(ca=args.ca, crl=args.crl, certs=args.certs)
        spool = Spool.open(args.path)
        report = ChainVerifier(trust, workers=args.workers).verify_spool(spool, expect_last=expect)
    except CustodyError as exc:
        print(f"fieldproof verify: {exc.diagnostics()}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(report.to_json(), sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_text(report))
    return 0 if report.all_sound else 1


def _run_bundle(args: argparse.Namespace) -> int:
    """Verify an export bundle: only --ca counts (the bag carries its own chain, CRL and certificates)."""
    if args.crl or args.certs or args.expect_last:
        print("fieldproof verify: a bundle carries its CRL and certificates; give only --ca", file=sys.stderr)
        return 2
    try:
        report = verify_bundle(args.path, ca=args.ca, workers=args.workers)
    except CustodyError as exc:
        print(f"fieldproof verify: {exc.diagnostics()}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(report.to_json(), sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_bundle_text(report))
    return 0 if report.all_sound else 1
