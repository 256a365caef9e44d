"""Revoking a lost or retired device: both of its certificates (and earlier ones) go onto the CRL."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fieldproof.durable import exclusive_lock, write_file
from provisioning import certificates as c
from provisioning.ca import load_device_ca, open_ca
from provisioning.crl import CrlEntry, build_crl, check_reason, crl_pem, load_crl
from provisioning.errors import ProvisioningError
from provisioning.layout import CaLayout, check_device_id
from provisioning.registry import all_serials, read_record

# A revocation time a little ahead of this machine's clock is tolerated (clocks differ); one far in
# the future is almost certainly a typo and would leave the device trusted until then by some readers.
_FUTURE_SLACK = timedelta(minutes=5)


@dataclass(frozen=True)
class Revocation:
    """One entry of revocations.json."""

    device: str
    role: str
    serials: list[str]
    revoked_at: str
    reason: str


def read_revocations(layout: CaLayout) -> list[Revocation]:
    """Every revocation recorded for this CA, oldest first."""
    try:
        raw = json.loads(layout.revocations.read_text())
        return [Revocation(**entry) for entry in raw]
    except FileNotFoundError:
        raise ProvisioningError(f"{layout.revocations} is missing: the CA directory is incomplete") from None
    except (ValueError, TypeError) as exc:
        raise ProvisioningError(
            f"{layout.revocations} is damaged ({exc}); restore it from a backup"
        ) from None


def revocation_of(layout: CaLayout, device: str) -> Revocation | None:
    """The revocation of ``device``, or None when it is not revoked."""
    return next((r for r in read_revocations(layout) if r.device == device), None)


def parse_time(text: str) -> datetime:
    """Parse an ISO-8601 time that names its offset (``Z`` or ``+08:00``); naive times are refused."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ProvisioningError(
            f"--at {text!r} is not an ISO-8601 time such as 2026-11-26T08:30:00Z"
        ) from None
    if moment.tzinfo is None:
        raise ProvisioningError(
            f"--at {text!r} has no time zone; add Z for UTC or +08:00 for Beijing time"
            " (e.g. 2026-11-26T16:30:00+08:00)"
        )
    return moment.astimezone(UTC)


def revoke(ca_dir: Path, *, device: str, at: datetime | None = None, reason: str = "unspecified") -> None:
    """Revoke every certificate ``device`` ever held, as of ``at`` (default now); re-sign the CRL."""
    layout = open_ca(ca_dir)
    check_device_id(device)
    check_reason(reason)
    now = c.utc_now()
    if at is None:
        at = now
    elif at.tzinfo is None:
        raise ProvisioningError("the revocation time must be timezone-aware (UTC)")
    at = at.astimezone(UTC).replace(microsecond=0)
    if at > now + _FUTURE_SLACK:
        raise ProvisioningError(
            f"revocation time {c.iso_z(at)} is in the future; give the time the device was lost"
        )
    with exclusive_lock(layout.lock):
        bundle = layout.device_dir(device)
        record = read_record(bundle)
        serials = all_serials(bundle)
        if record is None or not serials:
            raise ProvisioningError(
                f"{device} is not enrolled in {ca_dir}; check the id with `fieldproof provision list`"
            )
        earlier = revocation_of(layout, device)
        if earlier is not None:
            raise ProvisioningError(
                f"{device} was already revoked at {earlier.revoked_at} ({earlier.reason});"
                " nothing was changed"
            )
        issuer = load_device_ca(layout)
        state = load_crl(layout.crl, issuer=issuer)
        number, entries = state.number, list(state.entries)
        listed = {e.serial for e in entries}
        # A crash between the CRL write and the JSON write below leaves serials on the CRL but no JSON
        # entry; a retry must not list them twice.
        entries += [CrlEntry(int(s, 16), at, reason) for s in serials if int(s, 16) not in listed]
        # The CRL first: it is what stops the device at the broker.
        write_file(layout.crl, crl_pem(build_crl(issuer=issuer, entries=entries, number=number + 1, now=now)))
        revocations = read_revocations(layout)
        revocations.append(Revocation(device, record.role, serials, c.iso_z(at), reason))
        text = json.dumps([r.__dict__ for r in revocations], indent=2) + "\n"
        write_file(layout.revocations, text.encode())


def refresh_crl(ca_dir: Path) -> int:
    """Re-sign the CRL with the same entries, a new validity period and the next CRL number."""
    layout = open_ca(ca_dir)
    with exclusive_lock(layout.lock):
        issuer = load_device_ca(layout)
        state = load_crl(layout.crl, issuer=issuer)
        number, entries = state.number, state.entries
        write_file(
            layout.crl, crl_pem(build_crl(issuer=issuer, entries=entries, number=number + 1, now=c.utc_now()))
        )
    return number + 1
