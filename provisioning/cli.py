"""`fieldproof provision …`: the IT person's commands for the fleet CA."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fieldproof.durable import write_file
from provisioning import ca, device_keys, enrollment, inventory, revocation
from provisioning.broker import crl_valid_until, write_broker_config, written_files
from provisioning.certificates import cert_pem, iso_z
from provisioning.crl import REASONS
from provisioning.errors import ProvisioningError
from provisioning.layout import ROLES, CaLayout


def _say(*lines: str) -> None:
    for line in lines:
        print(line)


def _init_ca(args: argparse.Namespace) -> int:
    ca.init_ca(args.ca_dir, server_names=args.server_name)
    layout = CaLayout(args.ca_dir)
    _say(f"created CA in {args.ca_dir}:", *(f"  {p}" for p in layout.ca_files()), f"  {layout.devices}/")
    _say("keep root-ca.key offline after this; device-ca.key signs every device certificate and the CRL")
    return 0


def _enroll(args: argparse.Namespace) -> int:
    bundle = enrollment.enroll(args.ca_dir, device=args.device, role=args.role, renew=args.renew)
    _say(f"enrolled {args.device} as {args.role}; bundle in {bundle}:")
    _say(*(f"  {p}" for p in sorted(bundle.iterdir()) if p.is_file()))
    return 0


def _keygen(args: argparse.Namespace) -> int:
    written = device_keys.keygen(device=args.device, role=args.role, out=args.out)
    _say(*(f"wrote {p}" for p in written))
    _say("send the two .csr files to the CA (`fieldproof provision sign-csr`); the .key files stay here")
    return 0


def _sign_csr(args: argparse.Namespace) -> int:
    csr_paths: list[Path] = args.csr
    if args.out is not None and len(csr_paths) != 1:
        raise ProvisioningError("--out names one certificate file: give exactly one --csr with it")
    targets = [args.out] if args.out is not None else [p.with_suffix(".pem") for p in csr_paths]
    for p, target in zip(csr_paths, targets, strict=True):
        if target.resolve() == p.resolve():
            raise ProvisioningError(f"the certificate would overwrite the CSR {p}; give --out FILE")
    pems = []
    for p in csr_paths:
        try:
            pems.append(p.read_bytes())
        except OSError as exc:
            raise ProvisioningError(f"cannot read {p}: {exc.strerror}") from None
    bundle, certs = enrollment.sign_csrs(args.ca_dir, csrs=pems, role=args.role, renew=args.renew)
    for target, cert in zip(targets, certs, strict=True):
        write_file(target, cert_pem(cert))
        _say(f"wrote {target}")
    _say(f"recorded in {bundle} (with ca-chain.pem, root-ca.pem and the config file for the device)")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    at = revocation.parse_time(args.at) if args.at else None
    revocation.revoke(args.ca_dir, device=args.device, at=at, reason=args.reason)
    layout = CaLayout(args.ca_dir)
    _say(f"revoked {args.device}; wrote {layout.crl} and {layout.revocations}")
    _say(
        "now re-run `fieldproof provision broker-config` and send the broker SIGHUP: Mosquitto reads the"
        " CRL only when it reloads, and SIGHUP checks new connections only — restart the broker to cut"
        " off a device that is connected right now"
    )
    return 0


def _refresh_crl(args: argparse.Namespace) -> int:
    number = revocation.refresh_crl(args.ca_dir)
    _say(
        f"re-signed {CaLayout(args.ca_dir).crl} (CRL number {number}, valid 30 days);"
        " re-run broker-config and send the broker SIGHUP"
    )
    return 0


def _broker_config(args: argparse.Namespace) -> int:
    conf = write_broker_config(
        args.ca_dir, out=args.out, port=args.port, bind=args.bind, prefix=args.prefix, user=args.user
    )
    _say(*(f"wrote {p}" for p in written_files(conf.parent)))
    until = crl_valid_until(CaLayout(args.ca_dir))
    _say(f"start it with: mosquitto -c {conf}")
    _say(
        f"the CRL is valid until {iso_z(until)}: run `fieldproof provision refresh-crl`, re-run this and"
        " send the broker SIGHUP before then, or every device will be refused"
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    rows = inventory.fleet(args.ca_dir)
    if not rows:
        _say("no devices enrolled")
        return 0
    header = ("DEVICE", "ROLE", "STATUS", "NOT AFTER", "RENEWALS", "TLS SERIAL", "SIGNING SERIAL")
    table: list[tuple[str, ...]] = [header]
    for r in rows:
        status = f"{r.status} {r.revoked_at}" if r.revoked_at else r.status
        table.append(
            (
                r.device,
                r.role,
                status,
                r.not_after or "-",
                str(r.renewals),
                r.tls_serial or "-",
                r.signing_serial or "-",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def add_parser(subparsers: Any) -> None:
    """Add `provision` and its subcommands to the `fieldproof` command line."""
    p = subparsers.add_parser(
        "provision",
        help="run the fleet CA: enrol, revoke, broker config",
        description="Run the fleet CA: enrol devices, revoke lost ones, configure the broker.",
    )
    sub = p.add_subparsers(dest="provision_command", metavar="ACTION")
    sub.required = True

    def ca_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("ca_dir", type=Path, metavar="CADIR", help="the CA directory")

    sp = sub.add_parser("init-ca", help="create a new CA directory")
    ca_arg(sp)
    sp.add_argument(
        "--server-name",
        action="append",
        default=[],
        metavar="NAME",
        help="extra DNS name or IP address for the server certificate (repeatable)",
    )
    sp.set_defaults(func=_init_ca)

    sp = sub.add_parser("enroll", help="make keys, certificates and config for a device in one step")
    ca_arg(sp)
    sp.add_argument("--device", required=True, help="device id, e.g. REC-0001")
    sp.add_argument("--role", required=True, choices=ROLES)
    sp.add_argument(
        "--renew", action="store_true", help="replace the keys of an enrolled device, keeping the old ones"
    )
    sp.set_defaults(func=_enroll)

    sp = sub.add_parser("keygen", help="on the device: make its keys and CSRs")
    sp.add_argument("--device", required=True, help="device id, e.g. REC-0001")
    sp.add_argument("--role", required=True, choices=ROLES)
    sp.add_argument("--out", required=True, type=Path, help="directory for tls.key, signing.key and the CSRs")
    sp.set_defaults(func=_keygen)

    sp = sub.add_parser("sign-csr", help="sign a device's CSR(s) and record the device")
    ca_arg(sp)
    sp.add_argument(
        "--csr",
        required=True,
        action="append",
        type=Path,
        metavar="FILE",
        help="tls.csr or signing.csr (repeat for both)",
    )
    sp.add_argument("--role", required=True, choices=ROLES)
    sp.add_argument("--out", type=Path, help="certificate file to write (default: the CSR's name with .pem)")
    sp.add_argument(
        "--renew", action="store_true", help="replace the device's current certificate of that kind"
    )
    sp.set_defaults(func=_sign_csr)

    sp = sub.add_parser("revoke", help="revoke every certificate of a lost or retired device")
    ca_arg(sp)
    sp.add_argument("--device", required=True)
    sp.add_argument("--at", help="when the device was lost, ISO-8601 with zone (default: now)")
    sp.add_argument("--reason", default="unspecified", choices=list(REASONS))
    sp.set_defaults(func=_revoke)

    sp = sub.add_parser("refresh-crl", help="re-sign the CRL before it expires (every few weeks)")
    ca_arg(sp)
    sp.set_defaults(func=_refresh_crl)

    sp = sub.add_parser("broker-config", help="write mosquitto.conf, ACL and TLS files for the broker")
    ca_arg(sp)
    sp.add_argument("--out", required=True, type=Path, help="directory for the broker's files")
    sp.add_argument("--port", type=int, default=8883)
    sp.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sp.add_argument("--prefix", default="fieldproof/v1", help="topic prefix (default fieldproof/v1)")
    sp.add_argument("--user", default="mosquitto", help="account the broker runs as (default mosquitto)")
    sp.set_defaults(func=_broker_config)

    sp = sub.add_parser("list", help="list devices with role, status, serials and expiry")
    ca_arg(sp)
    sp.set_defaults(func=_list)


def main(argv: list[str] | None = None) -> int:
    """Run `provision` alone (for tests and scripts)."""
    parser = argparse.ArgumentParser(prog="fieldproof")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ProvisioningError as exc:
        print(f"fieldproof provision: {exc.diagnostics()}", file=sys.stderr)
        return 2
    return code
