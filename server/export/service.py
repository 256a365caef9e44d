"""A case exported as a BagIt bag: what goes in, and the custody event that records it.

The bag (layout in docs/export.md) carries the case's media, the signed journal lines that describe
them, the certificates and CRL to check those signatures against the fleet root, the signed footage
annotations, the text records, custody-log events with inclusion proofs against one signed checkpoint,
and a report per clip. ``fieldproof verify BAG --ca root-ca.pem`` checks all of it offline.

The ``exported`` event cannot be inside the bag it describes (its leaf is made after the bag is
sealed): the log is sequenced and its checkpoint taken *before* the bag is written; the ``exported``
event, naming the bag's manifest digest, is logged *after*. Fetch its proof later from
``GET /custody-log/events/{id}`` to show the export itself was recorded.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from custody.bundle import render_report_text
from custody.canonical import parse
from server.auth.principal import Principal, Role
from server.cases import footage, policy, records
from server.cases.errors import ConflictError, NotAllowedError
from server.cases.footage import Footage
from server.cases.models import Case, FootageAnnotation, FootageAnnotationTarget, Officer
from server.cases.service import find_case
from server.config import ServerSettings
from server.custody_log import service as log
from server.custody_log.models import CustodyEvent, LogLeaf
from server.custody_log.sequencer import CheckpointSigner, sequence_pending
from server.custody_log.service import log_event
from server.devices.models import SigningCertificate
from server.errors import BlobNotFoundError
from server.evidence.models import Segment
from server.evidence.s3 import S3RefusedError, TamperedBlobError
from server.evidence.store import BlobStore
from server.export.bag import BagWriter
from server.ingest.models import Record

FORMAT = "fieldproof-export/1"
SHANGHAI = ZoneInfo("Asia/Shanghai")
EXPORT_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{12}$")
_EXT = {"application/pdf": "pdf", "image/png": "png", "image/jpeg": "jpg"}


@dataclass(frozen=True)
class Export:
    """A finished bag and the custody event that recorded it."""

    export_id: str
    path: Path
    case_number: str
    clips: int
    event_id: int
    manifest_sha256: str
    checkpoint_size: int


def exports_dir(settings: ServerSettings) -> Path:
    """Where bags are kept: ``<data_dir>/exports``."""
    return settings.data_dir / "exports"


def _shanghai(ts: str) -> str:
    when = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return when.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


def _clip_entry(seg: Footage, body: dict[str, Any], officer_name: str | None) -> dict[str, Any]:
    loc = body["location"]
    first = loc["fixes"][0] if loc["fix"] else None
    return {
        "device": seg.device,
        "seq": seg.seq,
        "record_hash": seg.record_hash,
        "file": f"media/{seg.device}/{body['file']}",
        "sha256": seg.digest,
        "size": body["size"],
        "case_number": seg.case_number,
        "case_source": seg.case_source,
        "case_annotation": seg.case_annotation,
        "start": body["start"],
        "end": body["end"],
        "start_local": _shanghai(body["start"]),
        "end_local": _shanghai(body["end"]),
        "place": (
            {"lat_e7": first["lat_e7"], "lon_e7": first["lon_e7"]}
            if first
            else {"fix": False, "reason": loc["reason"]}
        ),
        "collector": body["officer"],
        "collector_name": officer_name,  # from the officer register, not signed
        "proof": seg.proof,
        "proof_annotation": seg.proof_annotation,
        "recording": seg.recording,
        "index": seg.index,
    }


def export_case(
    session: Session,
    *,
    principal: Principal,
    settings: ServerSettings,
    factory: sessionmaker[Session],
    store: BlobStore,
    number: str,
    reason: str | None = None,
) -> Export:
    """Build the case's bag (custodians), then log ``exported``; the caller commits."""
    if not principal.has(Role.CUSTODIAN):
        raise NotAllowedError("exporting a case needs the role custodian")
    case = find_case(session, number=number)
    scope = policy.ensure_reads_case(session, principal, case)
    grant = policy.unlock(session, principal, restriction=case.restriction, targets=[("case", case.number)])
    ca_dir = settings.check_ca_dir()
    clips = footage.of_case(session, scope=scope, case_number=case.number)

    # The checkpoint first: every event committed so far gets its leaf; the bag proves against it.
    session.commit()
    signer = CheckpointSigner.from_ca_dir(ca_dir)
    sequence_pending(factory=factory, signer=signer)
    checkpoint = log.latest_checkpoint(session=session)

    now = datetime.now(UTC)
    export_id = f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(6)}"
    out = exports_dir(settings)
    out.mkdir(parents=True, exist_ok=True)
    bag = BagWriter(out / export_id)
    try:
        report = _write_payload(
            session,
            bag=bag,
            case=case,
            clips=clips,
            store=store,
            ca_dir=ca_dir,
            checkpoint=checkpoint,
            principal=principal,
        )
        report["exported_at"] = now.isoformat()
        bag.add_bytes("report.json", json.dumps(report, ensure_ascii=False, indent=2).encode("utf-8"))
        bag.add_bytes("report.txt", render_report_text(report).encode("utf-8"))
        path = bag.finish([("External-Identifier", case.number), ("Source-Organization", "fieldproof")])
    except BaseException:
        bag.abandon()
        raise
    manifest = bag.manifest_sha256
    event = log_event(
        session=session,
        kind="exported",
        actor=principal.actor,
        detail={
            "target_kind": "case",
            "target_id": case.number,
            "via": principal.via,
            "export_id": export_id,
            "manifest_sha256": manifest,
            "checkpoint_tree_size": checkpoint.tree_size,
            "clips": [f"{c.device}:{c.seq}" for c in clips][:1000],
            "text_records": [t["id"] for t in report["text_records"]],
            "annotations": [a["id"] for a in report["annotations"]],
            "custody_events": len(report["custody_events"]),
            **({"reason": reason} if reason else {}),
            **({"access_requests": [{"id": grant.id, "purpose": grant.purpose}]} if grant else {}),
        },
    )
    session.flush()
    return Export(export_id, path, case.number, len(clips), event.id, manifest, checkpoint.tree_size)


def _add_blob(bag: BagWriter, store: BlobStore, name: str, digest: str) -> str:
    """Stream a blob from the store into the bag; the hex SHA-256 of the bytes written. A store that
    refuses the blob as tampered (an S3 forgery under its key), or no longer has the version it sealed,
    is a conflict, like altered bytes; a store that cannot be reached is a StoreError (503)."""
    try:
        with store.open(digest) as blob:
            return bag.add_stream(name, blob)
    except TamperedBlobError as exc:
        raise ConflictError(f"{exc}: run the case's verification") from None
    except (BlobNotFoundError, S3RefusedError) as exc:
        if isinstance(exc, S3RefusedError) and not exc.missing:
            raise
        raise ConflictError(
            f"the store no longer holds the file {digest} it stored ({exc}): run the case's verification"
        ) from None


def _write_payload(
    session: Session,
    *,
    bag: BagWriter,
    case: Case,
    clips: list[Footage],
    store: BlobStore,
    ca_dir: Path,
    checkpoint: Any,
    principal: Principal,
) -> dict[str, Any]:
    officers = {no: name for no, name in session.execute(select(Officer.certificate_no, Officer.name))}
    entries: list[dict[str, Any]] = []
    lines: dict[str, dict[int, bytes]] = {}
    key_ids: set[str] = set()
    for seg in clips:
        rec = session.scalar(select(Record).where(Record.device == seg.device, Record.seq == seg.seq))
        assert rec is not None  # a segment names its record
        line = bytes(rec.line)
        body = parse(line.rstrip(b"\n"))["record"]["body"]
        lines.setdefault(seg.device, {})[seg.seq] = line
        key_ids.add(rec.key_id)
        got = _add_blob(bag, store, f"media/{seg.device}/{body['file']}", seg.digest)
        if f"sha256:{got}" != seg.digest:
            # Never seal altered footage into a bundle: the custodian verifies the case and investigates.
            raise ConflictError(
                f"the stored file of {seg.ref} no longer has its signed hash: run the case's verification"
            )
        entries.append(_clip_entry(seg, body, officers.get(body["officer"])))
        # The device's own annotation records that set this segment's case or subject: the report's case
        # number may come from one, so the verifier needs its signed line.
        row = session.get(Segment, seg.segment_id)
        setters = {row.case_set_by, row.subject_set_by} if row is not None else set()
        for by in sorted(s for s in setters if s is not None):
            ann = session.scalar(select(Record).where(Record.device == seg.device, Record.seq == by))
            if ann is not None:
                lines[seg.device][ann.seq] = bytes(ann.line)
                key_ids.add(ann.key_id)
    for device, by_seq in lines.items():
        bag.add_bytes(f"records/{device}.jsonl", b"".join(by_seq[s] for s in sorted(by_seq)))

    # Certificates: the fleet's CA chain and CRL, the server-signing certificate, the devices' signing
    # certificates. root-ca.pem is a copy for reference: the verifier trusts only the root it is given.
    for name in ("root-ca.pem", "ca-chain.pem", "crl.pem", "server-signing.pem"):
        bag.add_bytes(f"certs/{name}", (ca_dir / name).read_bytes())
    for kid in sorted(key_ids):
        pem = session.scalar(select(SigningCertificate.pem).where(SigningCertificate.key_id == kid))
        if pem is not None:
            bag.add_bytes(f"certs/devices/{kid.removeprefix('sha256:')[:16]}.pem", pem.encode("ascii"))

    # Signed annotations naming the clips.
    ids = [c.segment_id for c in clips]
    anns = list(
        session.scalars(
            select(FootageAnnotation)
            .where(
                FootageAnnotation.id.in_(
                    select(FootageAnnotationTarget.annotation_id).where(
                        FootageAnnotationTarget.segment_id.in_(ids)
                    )
                )
            )
            .order_by(FootageAnnotation.id)
        )
    )
    annotations = []
    for a in anns:
        item = {
            "id": a.id,
            "signed": bytes(a.signed).decode("utf-8"),
            "signature": a.signature,
            "key_id": a.key_id,
        }
        bag.add_bytes(
            f"annotations/{a.id}.json", json.dumps(item, ensure_ascii=False, indent=2).encode("utf-8")
        )
        annotations.append({"id": a.id, "file": f"annotations/{a.id}.json"})

    # Text records the principal may open (a restricted one without a grant is left out and counted).
    texts, withheld = [], 0
    for t in records.of_case(session, case_id=case.id):
        if not records.may_open(session, principal, t, case):
            withheld += 1
            continue
        ext = _EXT.get(t.media_type, "docx")
        got = _add_blob(bag, store, f"text-records/{t.id}.{ext}", t.digest)
        if f"sha256:{got}" != t.digest:
            raise ConflictError(f"the stored bytes of text record {t.id} no longer have their hash")
        texts.append(
            {
                "id": t.id,
                "file": f"text-records/{t.id}.{ext}",
                "sha256": t.digest,
                "size": t.size,
                "kind": t.kind,
                "title": t.title,
                "file_name": t.file_name,
                "media_type": t.media_type,
                "uploaded_at": t.uploaded_at.isoformat(),
            }
        )
    bag.add_bytes("text-records/index.json", json.dumps(texts, ensure_ascii=False, indent=2).encode("utf-8"))

    # Custody-log events of the clips, each with its inclusion proof against the one checkpoint.
    pairs = {(c.device, c.seq) for c in clips}
    candidates = session.execute(
        select(CustodyEvent.id, CustodyEvent.device, CustodyEvent.seq)
        .join(LogLeaf, LogLeaf.event_id == CustodyEvent.id)
        .where(CustodyEvent.device.in_(sorted({c.device for c in clips})))
        .where(LogLeaf.leaf_index < checkpoint.tree_size)
        .order_by(LogLeaf.leaf_index)
    ).all()
    events = []
    for event_id, device, seq in candidates:
        if (device, seq) not in pairs:
            continue
        proof = log.event_proof(session=session, event_id=event_id, tree_size=checkpoint.tree_size)
        events.append(
            {
                "event": proof.event,
                "leaf_index": proof.leaf_index,
                "inclusion_proof": [h.hex() for h in proof.proof],
            }
        )
    # And each text record's ``filed`` event: it names the digest the server hashed at upload.
    for t in texts:
        for event_id, detail in session.execute(
            select(CustodyEvent.id, CustodyEvent.detail)
            .join(LogLeaf, LogLeaf.event_id == CustodyEvent.id)
            .where(CustodyEvent.kind == "filed", CustodyEvent.digest == t["sha256"])
            .where(LogLeaf.leaf_index < checkpoint.tree_size)
        ):
            if json.loads(detail).get("target_id") == str(t["id"]):
                proof = log.event_proof(session=session, event_id=event_id, tree_size=checkpoint.tree_size)
                events.append(
                    {
                        "event": proof.event,
                        "leaf_index": proof.leaf_index,
                        "inclusion_proof": [h.hex() for h in proof.proof],
                    }
                )
    bag.add_bytes("custody-log/checkpoint.json", json.dumps(checkpoint.to_json(), indent=2).encode())
    bag.add_bytes("custody-log/events.json", json.dumps(events, ensure_ascii=False, indent=2).encode("utf-8"))
    return {
        "format": FORMAT,
        "case": {
            "number": case.number,
            "title": case.title,
            "matter_code": case.matter_code,
            "status": case.status,
            "opened_on": case.opened_on.isoformat(),
        },
        "exported_by": principal.actor,
        "checkpoint": checkpoint.to_json(),
        "clips": entries,
        "text_records": texts,
        "withheld_text_records": withheld,
        "annotations": annotations,
        "custody_events": [e["event"]["id"] for e in events],
    }


def find_export(settings: ServerSettings, export_id: str) -> Path | None:
    """The folder of a finished export, or None."""
    if not EXPORT_ID_RE.fullmatch(export_id):
        return None
    path = exports_dir(settings) / export_id
    return path if (path / "bagit.txt").is_file() else None


def export_case_number(path: Path) -> str | None:
    """The case number a bag was made for (its report)."""
    try:
        return str(json.loads((path / "data" / "report.json").read_text("utf-8"))["case"]["number"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def manifest_digest(path: Path) -> str:
    """SHA-256 of a bag's manifest-sha256.txt (what the ``exported`` event names)."""
    import hashlib

    return hashlib.sha256((path / "manifest-sha256.txt").read_bytes()).hexdigest()
