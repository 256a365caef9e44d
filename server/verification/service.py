"""Rebuilding a device's chain from what the server holds and running the offline verifier over it.

The journal is the signed lines of ``records`` (byte for byte, in seq order); the media are the blobs
of the evidence store, re-hashed now — never the digests in the database. The verifier reads files in
a folder: a local store's blobs are linked into it (no copy); any other store's (S3) are copied into it
from ``store.open`` — the bytes the store serves — in a scratch folder under the data directory, which
costs one download of the device's footage and as much local disk while the verification runs. The verifier is the same
``custody.verify.ChainVerifier`` that ``fieldproof verify`` runs on a spool, trusting the fleet root of
the CA directory, its CA chain and its current CRL. A case's verdict is read from its devices' reports,
segment by segment.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.canonical import parse
from custody.errors import CustodyError
from custody.findings import FindingCode, Severity
from custody.trust import TrustStore, load_certificates
from custody.verify import ChainReport, ChainVerifier
from server.auth.principal import Principal
from server.cases import policy, retrieval
from server.cases.footage import Footage
from server.cases.footage import of_case as footage_of_case
from server.cases.models import Case
from server.cases.service import find_case
from server.config import ServerSettings
from server.devices.models import SigningCertificate
from server.errors import BlobNotFoundError, SettingsError, StoreError
from server.evidence.s3 import S3RefusedError, TamperedBlobError
from server.evidence.store import BlobStore, LocalBlobStore
from server.ingest.models import Record

#: What a finding on a segment's record means for the custodian, in the words of the issue.
REASONS: dict[FindingCode, str] = {
    FindingCode.MISSING_FILE: "missing",
    FindingCode.HASH_MISMATCH: "altered",
    FindingCode.SIZE_MISMATCH: "altered",
    FindingCode.BAD_SIGNATURE: "bad-signature",
    FindingCode.MALFORMED: "bad-signature",
    FindingCode.REVOKED: "revoked-device",
    FindingCode.UNKNOWN_DEVICE: "untrusted-device",
    FindingCode.FOREIGN_CA: "untrusted-device",
    FindingCode.CERT_NOT_VALID: "untrusted-device",
    FindingCode.WRONG_DEVICE: "untrusted-device",
    FindingCode.CLOCK_BACKWARDS: "clock-anomaly",
    FindingCode.BROKEN_LINK: "out-of-order",
    FindingCode.REORDERED: "out-of-order",
    FindingCode.FORK: "out-of-order",
    FindingCode.DUPLICATE: "out-of-order",
}


def trust_store(ca_dir: Path | None) -> TrustStore:
    """The fleet root, CA chain and CRL of the provisioning CA directory."""
    if ca_dir is None:
        raise SettingsError("verification needs the fleet CA: set FIELDPROOF_CA_DIR")
    return TrustStore.from_paths(
        ca=[ca_dir / "root-ca.pem"], certs=[ca_dir / "ca-chain.pem"], crl=[ca_dir / "crl.pem"]
    )


def device_certificates(session: Session, ca_dir: Path, device: str) -> list[x509.Certificate]:
    """Every signing certificate known for ``device``: learnt from its messages, and in the CA directory.

    None is trusted for being here; the verifier judges each against the root.
    """
    certs = [
        c
        for pem in session.scalars(select(SigningCertificate.pem).where(SigningCertificate.device == device))
        for c in x509.load_pem_x509_certificates(pem.encode("ascii"))
    ]
    bundle = ca_dir / "devices" / device
    if bundle.is_dir():
        for folder in [bundle, *sorted(bundle.glob("previous-*"))]:
            if (folder / "signing.pem").is_file():
                certs.extend(load_certificates(folder / "signing.pem"))
    return certs


def journal_lines(session: Session, device: str) -> list[bytes]:
    """The device's signed lines as received, in seq order (what a spool's chain.jsonl would hold)."""
    rows = session.scalars(select(Record.line).where(Record.device == device).order_by(Record.seq))
    return [bytes(line) for line in rows]


_COPY_CHUNK = 1024 * 1024


@dataclass
class MediaView:
    """The folder the verifier reads, the names in it, and what the store said of blobs it would not serve."""

    root: Path
    names: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


def _place_blob(store: BlobStore, digest: str, target: Path, placed: dict[str, Path]) -> None:
    """Put the blob's bytes at ``target``: a link into a local store, else a copy of what ``open`` serves
    (a blob named twice is copied once and hard-linked)."""
    if isinstance(store, LocalBlobStore):
        os.symlink(store.root / store.key(digest), target)
        return
    if digest in placed:
        os.link(placed[digest], target)
        return
    with store.open(digest) as src, open(target, "xb") as dst:
        shutil.copyfileobj(src, dst, _COPY_CHUNK)
    placed[digest] = target


@contextmanager
def media_view(lines: list[bytes], store: BlobStore, *, scratch: Path | None = None) -> Iterator[MediaView]:
    """A temporary folder (under ``scratch``) where each segment's ``file`` holds its blob's bytes.

    The verifier then hashes the store's bytes under the names the records use. A blob the store lacks
    has no file: the verifier reports the file missing. A blob the store refuses to serve because what
    it holds under the key does not hash to the digest (TamperedBlobError: a forgery locked in an S3
    bucket) has no file either, and the view's notes say why. Any other store error (unreachable)
    propagates: the verification cannot run, and must not report footage missing that may not be.
    """
    with tempfile.TemporaryDirectory(prefix="fieldproof-verify-", dir=scratch) as tmp:
        view = MediaView(Path(tmp))
        placed: dict[str, Path] = {}
        for line in lines:
            try:
                body = parse(line.rstrip(b"\n"))["record"]["body"]
                name, digest = body["file"], body["digest"]
            except (ValueError, KeyError, TypeError):
                continue  # not a segment, or malformed: the verifier says so
            if not isinstance(name, str) or not isinstance(digest, str):
                continue
            target = view.root / name
            if not target.resolve().is_relative_to(view.root.resolve()):
                continue  # the format forbids "..": never write outside the view
            if target.exists():
                continue
            try:
                if not store.exists(digest):
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                _place_blob(store, digest, target, placed)
            except TamperedBlobError as exc:
                view.notes.append(f"{name}: {exc}")
                continue
            except StoreError as exc:
                # The version the store sealed is gone between its answer and the read (removed behind
                # the S3 API): the file is missing. Any other failure: the verification cannot run.
                target.unlink(missing_ok=True)
                if isinstance(exc, BlobNotFoundError) or (isinstance(exc, S3RefusedError) and exc.missing):
                    view.notes.append(f"{name}: the store no longer serves the blob it sealed ({exc})")
                    continue
                raise
            view.names.add(name)
        yield view


def verify_device(
    session: Session,
    *,
    ca_dir: Path | None,
    store: BlobStore,
    device: str,
    workers: int | None = 1,
    scratch: Path | None = None,
) -> ChainReport:
    """The ChainReport of ``device``'s chain as the server holds it, with its media re-hashed."""
    trust = trust_store(ca_dir)
    assert ca_dir is not None  # trust_store refuses None
    certs = device_certificates(session, ca_dir, device)
    trust.add_untrusted(certs)
    lines = journal_lines(session, device)
    with media_view(lines, store, scratch=scratch) as view:
        report = ChainVerifier(trust, workers=workers).verify(
            device=device,
            lines=lines,
            keys=trust.signing_keys(certs),
            media_dir=view.root,
            media_files=view.names,
            source=f"server: records of {device} and the evidence store",
        )
    report.notes.extend(f"The evidence store refused a blob as tampered: {n}" for n in view.notes)
    return report


@dataclass
class SegmentVerdict:
    """One segment of a case: green (sound, nothing to read), amber (sound, anomalies), red (unsound)."""

    device: str
    seq: int
    recording: str
    index: int
    start: str
    end: str
    record_hash: str
    digest: str
    status: str
    reasons: list[str] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "device": self.device,
            "seq": self.seq,
            "recording": self.recording,
            "index": self.index,
            "start": self.start,
            "end": self.end,
            "record_hash": self.record_hash,
            "digest": self.digest,
            "status": self.status,
            "reasons": self.reasons,
            "findings": self.findings,
        }


def segment_verdicts(footage: list[Footage], reports: dict[str, ChainReport]) -> list[SegmentVerdict]:
    """Each segment's verdict from its device's report: its record's findings, and gaps right before it."""
    out = []
    for seg in footage:
        report = reports[seg.device]
        own = [f for f in report.findings if f.seq == seg.seq and f.code is not FindingCode.GAP]
        gaps = [
            f
            for f in report.findings
            if f.code is FindingCode.GAP and f.missing and f.missing[1] == seg.seq - 1
        ]
        status_of_record = next((r for r in report.records if r.seq == seg.seq), None)
        reasons: list[str] = []
        for f in own:
            reason = REASONS.get(f.code, str(f.code))
            if reason not in reasons:
                reasons.append(reason)
        if gaps:
            reasons.append("gap")
        if status_of_record is None:
            reasons.append("missing-record")
        errors = [f for f in own if f.severity is Severity.ERROR]
        status = "red" if errors or status_of_record is None else ("amber" if reasons else "green")
        out.append(
            SegmentVerdict(
                device=seg.device,
                seq=seg.seq,
                recording=seg.recording,
                index=seg.index,
                start=seg.start,
                end=seg.end,
                record_hash=seg.record_hash,
                digest=seg.digest,
                status=status,
                reasons=reasons,
                findings=[f.to_json() for f in [*own, *gaps]],
            )
        )
    return out


@dataclass
class CaseVerification:
    """A case's footage verified: per segment, and each device's whole chain."""

    case_number: str
    segments: list[SegmentVerdict]
    reports: dict[str, ChainReport]
    withheld: int = 0

    @property
    def all_sound(self) -> bool:
        """Every segment green."""
        return all(s.status == "green" for s in self.segments)

    def summary(self) -> dict[str, int]:
        """How many segments are green, amber, red."""
        counts = {"green": 0, "amber": 0, "red": 0}
        for s in self.segments:
            counts[s.status] += 1
        return counts

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "case_number": self.case_number,
            "all_sound": self.all_sound,
            "summary": self.summary(),
            "segments": [s.to_json() for s in self.segments],
            "devices": {
                d: {
                    "all_sound": r.all_sound,
                    "records": len(r.records),
                    "gaps": [list(f.missing) for f in r.findings if f.missing],
                    "findings": [f.to_json() for f in r.findings],
                    "notes": r.notes,
                }
                for d, r in sorted(self.reports.items())
            },
        }


def verify_case_footage(
    session: Session,
    *,
    ca_dir: Path | None,
    store: BlobStore,
    case_number: str,
    footage: list[Footage],
    scratch: Path | None = None,
) -> CaseVerification:
    """Verify every device that recorded ``footage`` and judge each segment of it."""
    reports = {
        d: verify_device(session, ca_dir=ca_dir, store=store, device=d, scratch=scratch)
        for d in sorted({f.device for f in footage})
    }
    return CaseVerification(
        case_number=case_number, segments=segment_verdicts(footage, reports), reports=reports
    )


class VerifierUnavailableError(Exception):
    """The verifier cannot run (CA directory, store): ``cause`` says why. The reader was allowed."""

    def __init__(self, cause: CustodyError | SettingsError | StoreError) -> None:
        super().__init__(str(cause))
        self.cause = cause


def read_case_verification(
    session: Session,
    *,
    principal: Principal,
    number: str,
    settings: ServerSettings,
    store: BlobStore,
    reason: str | None = None,
) -> tuple[Case, CaseVerification]:
    """A case's verification as this reader may see it — the case file's access rules, the verifier
    over the footage they may read, and one ``viewed`` event (target ``case-verification``) — for the
    API and the custody page alike. The caller commits. Raises the case domain's errors, and
    VerifierUnavailableError when the verifier cannot run."""
    case = find_case(session, number=number)
    scope = policy.ensure_reads_case(session, principal, case)
    grant = policy.unlock(session, principal, restriction=case.restriction, targets=[("case", case.number)])
    shown = footage_of_case(session, scope=scope, case_number=case.number)
    try:
        result = verify_case_footage(
            session,
            ca_dir=settings.ca_dir,
            store=store,
            case_number=case.number,
            footage=shown,
            scratch=settings.data_dir,
        )
    except (CustodyError, SettingsError, StoreError) as exc:
        raise VerifierUnavailableError(exc) from None
    retrieval.record_access(
        session,
        principal=principal,
        kind="viewed",
        target_kind="case-verification",
        target_id=case.number,
        grants=[grant],
        reason=reason,
        detail={"segments": [f"{s.device}:{s.seq}" for s in shown][:1000], "result": result.summary()},
    )
    return case, result


def render_case_text(v: CaseVerification) -> str:
    """The human report of a case's verification."""
    from custody.report import render_text

    c = v.summary()
    lines = [
        f"Verification of case {v.case_number}",
        f"Segments: {len(v.segments)}; green: {c['green']}; amber: {c['amber']}; red: {c['red']}",
        "Result: ALL SOUND" if v.all_sound else "Result: FINDINGS (see red and amber segments below)",
        "",
        "Segments (device:seq, recording/index, start – end UTC, status, reasons):",
    ]
    for s in v.segments:
        why = ", ".join(s.reasons) if s.reasons else "sound"
        lines.append(
            f"  {s.device}:{s.seq}  {s.recording}/{s.index}  {s.start} – {s.end}  {s.status.upper()}  {why}"
        )
    if v.withheld:
        lines.append(f"Withheld (restricted, no grant): {v.withheld}")
    for report in v.reports.values():
        lines.append("")
        lines.append(render_text(report).rstrip("\n"))
    return "\n".join(lines) + "\n"
