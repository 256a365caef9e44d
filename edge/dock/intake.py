"""Taking a docked recorder's records: journal lines → outbox items, and the local chain check.

The dock is a transport. It sends every complete journal line it can key by (seq, hash), sound or
not — the server judges — and keeps what its own verification found beside it. A torn last line
(a record the recorder was writing when power failed) is not a record and is not sent.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import serialization

from custody.examine import examine_line
from custody.signing import key_id
from custody.spool import MANIFEST, Spool
from custody.trust import TrustStore, load_certificates
from custody.verify import ChainVerifier
from edge.sync.outbox import OutboxItem

log = logging.getLogger(__name__)

#: Findings kept per docking in the outbox's report (the rest are counted).
MAX_FINDINGS: Final = 200


@dataclass
class Intake:
    """Outbox items made from journal lines, and the lines that could not be sent, with why."""

    items: list[OutboxItem] = field(default_factory=list)
    unsendable: list[str] = field(default_factory=list)


def signing_certs(spool: Spool) -> dict[str, str]:
    """PEM of each end-entity certificate the spool carries, by key id (sent along in ``certs``)."""
    out: dict[str, str] = {}
    try:
        certs = spool.certificates()
    except Exception as exc:  # an unreadable certs/ folder: records still go, the server may know the key
        log.warning("%s: cannot read its certificates: %s", spool.root, exc)
        return out
    for c in certs:
        out.setdefault(key_id(c), c.public_bytes(serialization.Encoding.PEM).decode("ascii"))
    return out


def journal_items(
    spool: Spool, lines: Iterable[bytes], *, certs: dict[str, str] | None = None, first_line: int = 1
) -> Intake:
    """Outbox items for complete journal lines; malformed lines go too when their seq can be read."""
    certs = signing_certs(spool) if certs is None else certs
    out = Intake()
    for n, raw in enumerate(lines, start=first_line):
        if not raw.endswith(b"\n"):
            out.unsendable.append(f"line {n}: torn (the journal ends mid-record); not a record, not sent")
            continue
        facts = examine_line(n, raw, {})  # form only: signatures are the server's (and verify's) job
        if facts.seq is None:
            out.unsendable.append(f"line {n}: no readable seq, so it cannot be sent: {facts.problem}")
            continue
        # A malformed line has no record hash; its key in the outbox is the hash of the line itself.
        rhash = facts.hash if facts.ok else "line-sha256:" + hashlib.sha256(raw).hexdigest()
        out.items.append(
            OutboxItem(
                recorder=spool.device,
                seq=facts.seq,
                hash=rhash,
                kind=facts.kind or "?",
                line=raw,
                cert=certs.get(facts.key),
                file=facts.file,
                path=str(spool.media_dir / facts.file) if facts.file else None,
                size=facts.size,
                digest=facts.digest,
            )
        )
    return out


def find_spools(mount_dir: Path) -> list[Path]:
    """Spool folders under ``mount_dir``: each mount point itself, or one folder down."""
    found: list[Path] = []
    try:
        entries = sorted(mount_dir.iterdir())
    except OSError:
        return found
    for entry in entries:
        try:
            if not entry.is_dir():
                continue
            if (entry / MANIFEST).is_file():
                found.append(entry)
                continue
            found += [sub for sub in sorted(entry.iterdir()) if (sub / MANIFEST).is_file()]
        except OSError:
            continue  # a mount going away while we look: it is undocked
    return found


def trust_store(ca: Path | None) -> TrustStore | None:
    """The fleet's trust for local verification: the CA chain the dock's bundle carries."""
    if ca is None or not ca.is_file():
        return None
    return TrustStore(roots=load_certificates(ca))


def verify_locally(spool: Spool, trust: TrustStore | None) -> dict[str, Any]:
    """Verify the chain with ``custody.verify``; a summary for logs and the outbox (never blocks sending)."""
    if trust is None:
        return {"verified": False, "note": "no fleet CA chain given: the chain was not verified on the dock"}
    report = ChainVerifier(trust, workers=1).verify_spool(spool)
    findings = [
        {"code": str(f.code), "severity": str(f.severity), "seq": f.seq, "message": f.message}
        for f in report.findings[:MAX_FINDINGS]
    ]
    notes = list(report.notes)
    if not trust.revocation_checked:
        notes.append("no CRL on the dock: revocation is checked by the server")
    return {
        "verified": True,
        "all_sound": report.all_sound,
        "records": len(report.records),
        "sound": len(report.sound_seqs),
        "findings": findings,
        "findings_total": len(report.findings),
        "notes": notes,
    }


def describe(report: dict[str, Any]) -> str:
    """One line for the log."""
    if not report.get("verified"):
        return str(report.get("note", "not verified"))
    if report["all_sound"]:
        return f"chain verified: {report['records']} records, all sound"
    codes: dict[str, int] = {}
    for f in report["findings"]:
        codes[f["code"]] = codes.get(f["code"], 0) + 1
    text = ", ".join(f"{c} ×{n}" for c, n in sorted(codes.items()))
    return f"chain verified: {report['sound']}/{report['records']} records sound; findings: {text}"
