"""The fleet as the CA sees it: every enrolled device with its certificates and status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from provisioning import certificates as c
from provisioning.ca import open_ca
from provisioning.registry import list_devices, previous_bundles, read_record
from provisioning.revocation import read_revocations


@dataclass(frozen=True)
class DeviceStatus:
    """One line of `fieldproof provision list`."""

    device: str
    role: str
    status: str  # active | revoked | expired | incomplete
    tls_serial: str | None
    signing_serial: str | None
    not_after: str | None
    renewals: int
    revoked_at: str | None


def fleet(ca_dir: Path, *, now: datetime | None = None) -> list[DeviceStatus]:
    """Status of every device directory in the CA, sorted by id."""
    layout = open_ca(ca_dir)
    now = now or c.utc_now()
    revoked = {r.device: r for r in read_revocations(layout)}
    out = []
    for device, bundle in list_devices(layout):
        record = read_record(bundle)
        rev = revoked.get(device)
        if record is None:
            # An enrolment cut short (crash, or a renewal whose first CSR is not signed yet).
            out.append(
                DeviceStatus(
                    device,
                    "?",
                    "incomplete",
                    None,
                    None,
                    None,
                    len(previous_bundles(bundle)),
                    rev.revoked_at if rev else None,
                )
            )
            continue
        if rev is not None:
            status = "revoked"
        elif not record.complete():
            status = "incomplete"
        elif record.not_after and datetime.fromisoformat(record.not_after) <= now:
            status = "expired"
        else:
            status = "active"
        out.append(
            DeviceStatus(
                device=device,
                role=record.role,
                status=status,
                tls_serial=record.tls_serial,
                signing_serial=record.signing_serial,
                not_after=record.not_after,
                renewals=len(previous_bundles(bundle)),
                revoked_at=rev.revoked_at if rev else None,
            )
        )
    return out
