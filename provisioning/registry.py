"""The CA's record of each device: ``devices/<ID>/`` with its certificates, ``device.json`` and archives.

``device.json`` is the index other components read; the certificates next to it are the truth it
was made from. A renewal moves the whole current bundle into ``previous-<UTC time>/`` — old signing
certificates must stay available, because evidence signed with them must still verify.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509

from fieldproof.durable import fsync_dir, make_dir, write_file
from provisioning import certificates as c
from provisioning.errors import ProvisioningError
from provisioning.layout import (
    DEVICE_ID_RE,
    DEVICE_JSON,
    PREVIOUS_PREFIX,
    SIGNING_CERT,
    TLS_CERT,
    CaLayout,
)

CERT_FILES: dict[str, str] = {"tls": TLS_CERT, "signing": SIGNING_CERT}


@dataclass(frozen=True)
class DeviceRecord:
    """The content of ``device.json``. Serials and fingerprints are None until that certificate is issued."""

    device: str
    role: str
    tls_serial: str | None
    signing_serial: str | None
    tls_fingerprint: str | None
    signing_fingerprint: str | None
    issued_at: str
    not_after: str | None

    def serials(self) -> list[str]:
        """The serials (hex) of the certificates issued so far."""
        return [s for s in (self.tls_serial, self.signing_serial) if s is not None]

    def complete(self) -> bool:
        """True once both certificates are issued."""
        return self.tls_serial is not None and self.signing_serial is not None


def record_for(
    *, device: str, role: str, certs: dict[str, x509.Certificate], issued_at: datetime
) -> DeviceRecord:
    """The device.json content describing ``certs`` (by kind)."""
    tls, signing = certs.get("tls"), certs.get("signing")
    ends = [cert.not_valid_after_utc for cert in certs.values()]
    return DeviceRecord(
        device=device,
        role=role,
        tls_serial=c.serial_hex(tls.serial_number) if tls else None,
        signing_serial=c.serial_hex(signing.serial_number) if signing else None,
        tls_fingerprint=c.fingerprint(tls) if tls else None,
        signing_fingerprint=c.fingerprint(signing) if signing else None,
        issued_at=c.iso_z(issued_at),
        not_after=c.iso_z(min(ends)) if ends else None,
    )


def write_record(bundle: Path, record: DeviceRecord) -> None:
    """Write device.json durably."""
    write_file(bundle / DEVICE_JSON, (json.dumps(asdict(record), indent=2) + "\n").encode())


def read_record(bundle: Path) -> DeviceRecord | None:
    """device.json of a bundle (current or previous), or None when there is none."""
    path = bundle / DEVICE_JSON
    try:
        raw = json.loads(path.read_text())
        return DeviceRecord(**raw)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise ProvisioningError(f"{path} is damaged ({exc}); restore it from a backup") from None


def bundle_certs(bundle: Path) -> dict[str, x509.Certificate]:
    """The TLS and signing certificates present in a bundle, by kind."""
    return {kind: c.load_cert(bundle / f) for kind, f in CERT_FILES.items() if (bundle / f).exists()}


def previous_bundles(bundle: Path) -> list[Path]:
    """Archived bundles of earlier enrolments, oldest first."""
    if not bundle.is_dir():
        return []
    return sorted(p for p in bundle.iterdir() if p.is_dir() and p.name.startswith(PREVIOUS_PREFIX))


def all_serials(bundle: Path) -> list[str]:
    """Serials of every certificate the device ever got: current and previous enrolments."""
    serials: list[str] = []
    for b in [*previous_bundles(bundle), bundle]:
        record = read_record(b)
        if record is not None:
            serials.extend(record.serials())
    return serials


def archive_current(bundle: Path, *, now: datetime) -> Path:
    """Move the current bundle's files into ``previous-<UTC time>/`` and return that directory."""
    stamp = c.iso_z(now).replace("-", "").replace(":", "")
    target = bundle / f"{PREVIOUS_PREFIX}{stamp}"
    n = 1
    while target.exists():  # two renewals within one second
        target = bundle / f"{PREVIOUS_PREFIX}{stamp}-{n}"
        n += 1
    make_dir(target)
    entries = [p for p in bundle.iterdir() if p != target and not p.name.startswith(PREVIOUS_PREFIX)]
    # device.json last: while it is still in place, an interrupted renewal is seen as "enrolled".
    for entry in sorted(entries, key=lambda p: p.name == DEVICE_JSON):
        os.rename(entry, target / entry.name)
    fsync_dir(target)
    fsync_dir(bundle)
    return target


def list_devices(layout: CaLayout) -> list[tuple[str, Path]]:
    """(device id, bundle dir) of every device directory, sorted by id; other entries are ignored."""
    if not layout.devices.is_dir():
        return []
    return [
        (p.name, p)
        for p in sorted(layout.devices.iterdir())
        if p.is_dir() and DEVICE_ID_RE.fullmatch(p.name) is not None
    ]
