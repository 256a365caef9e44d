"""Accepting a verified record into the database: chain continuity, idempotency, custody events.

Everything here runs inside one transaction and relies on the database's UNIQUE constraints, not on
anything a worker remembers: two workers racing on the same record both end in the same state (one
inserts, the other's insert fails, is rolled back, and on retry finds a duplicate — or a fork).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, select
from sqlalchemy.orm import Session, aliased

from custody.examine import RecordFacts
from server.custody_log.service import log_event
from server.devices.service import learn_certificate, see_device
from server.errors import ServerError
from server.evidence.models import EvidenceFile, Segment
from server.evidence.service import FileConflictError, add_segment, announce_file, apply_annotation
from server.ingest.models import Record

FILE_KINDS = ("segment", "recovered")


class ChainRejectionError(ServerError):
    """A record refused against what the server holds; ``code`` is the protocol's rejection code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass(frozen=True)
class IncomingRecord:
    """A record whose line, signature, certificate and revocation were checked (handler's job)."""

    facts: RecordFacts
    line: bytes
    body: dict[str, Any]
    key_id: str
    key_detail: str
    learn_pem: str | None  # the certificate came in the message: remember it for later messages
    device_role: str
    dock: str
    dock_role: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Acceptance:
    """The result: a new record or a duplicate, and its file if it names one."""

    new: bool
    device: str
    seq: int
    hash: str
    status: str  # filed | pending | stored
    digest: str | None = None
    size: int | None = None


def accept_record(*, session: Session, incoming: IncomingRecord, now: datetime, actor: str) -> Acceptance:
    """Check ``incoming`` against the device's chain as held, and file it; ChainRejectionError if it does not fit."""
    f = incoming.facts
    assert f.seq is not None
    device, seq = f.device, f.seq
    base = {"actor": actor, "device": device, "seq": seq, "record_hash": f.hash, "dock": incoming.dock}

    held = session.scalars(select(Record).where(Record.device == device, Record.seq == seq)).first()
    if held is not None:
        if held.hash != f.hash:
            raise ChainRejectionError(
                "fork",
                f"the server holds a different record at seq {seq} ({held.hash}); this one is {f.hash}",
            )
        digest, size = _file_of(session, held)
        log_event(session=session, kind="duplicate", detail={"status": held.status}, digest=digest, **base)
        return Acceptance(False, device, seq, held.hash, held.status, digest, size)

    before = None
    if seq > 0:
        before = session.scalar(select(Record.hash).where(Record.device == device, Record.seq == seq - 1))
        if before is not None and before != f.prev:
            raise ChainRejectionError(
                "broken-link",
                f"prev {f.prev} is not the hash of record {seq - 1} held by the server ({before})",
            )
    after = session.execute(select(Record.prev).where(Record.device == device, Record.seq == seq + 1)).first()
    if after is not None and after[0] != f.hash:
        raise ChainRejectionError(
            "broken-link", f"record {seq + 1} held by the server names another predecessor ({after[0]})"
        )
    highest = session.scalar(select(func.max(Record.seq)).where(Record.device == device))

    see_device(session=session, device=device, role=incoming.device_role, now=now)
    if incoming.dock != device:
        see_device(session=session, device=incoming.dock, role=incoming.dock_role, now=now)
    if incoming.learn_pem is not None:
        learn_certificate(
            session=session, key_id=incoming.key_id, device=device, pem=incoming.learn_pem, now=now
        )

    is_file = f.kind in FILE_KINDS
    file = None
    if is_file:
        try:
            file = announce_file(
                session=session, digest=incoming.body["digest"], size=incoming.body["size"], now=now
            )
        except FileConflictError as exc:
            raise ChainRejectionError("size-mismatch", str(exc)) from None
    status = (
        "filed" if not is_file else ("stored" if file is not None and file.status == "stored" else "pending")
    )
    record = Record(
        device=device,
        seq=seq,
        hash=f.hash,
        prev=f.prev,
        kind=f.kind,
        time=f.time,
        key_id=incoming.key_id,
        line=incoming.line,
        dock=incoming.dock,
        received_at=now,
        status=status,
    )
    session.add(record)
    session.flush()  # the UNIQUE (device, seq) constraint speaks here when another worker was first

    log_event(
        session=session,
        kind="received",
        detail={"kind": f.kind, "time": f.time, "line_bytes": len(incoming.line)},
        digest=incoming.body.get("digest") if is_file else None,
        **base,
    )
    link = (
        "first record of the chain"
        if seq == 0
        else f"prev is the hash of record {seq - 1}"
        if before is not None
        else f"record {seq - 1} not held: link unchecked"
    )
    log_event(
        session=session,
        kind="verified",
        detail={"key": incoming.key_id, "certificate": incoming.key_detail, "chain": link},
        **base,
    )
    for text in incoming.warnings:
        log_event(session=session, kind="warning", detail={"text": text}, **base)
    if (highest is None and seq > 0) or (highest is not None and seq > highest + 1):
        first_missing = 0 if highest is None else highest + 1
        log_event(
            session=session,
            kind="gap",
            detail={
                "missing_from": first_missing,
                "missing_to": seq - 1,
                "text": f"records {first_missing}–{seq - 1} of {device} have not reached the server",
            },
            **base,
        )
    if is_file:
        add_segment(session=session, record=record, body=incoming.body)
    elif f.kind == "annotation":
        apply_annotation(session=session, annotation=record, body=incoming.body, actor=actor)
    if status in ("filed", "stored"):
        log_event(
            session=session,
            kind="filed",
            detail={"kind": f.kind} | ({"note": "file already held"} if is_file else {}),
            digest=incoming.body.get("digest") if is_file else None,
            **base,
        )
    return Acceptance(
        True,
        device,
        seq,
        f.hash,
        status,
        incoming.body["digest"] if is_file else None,
        incoming.body["size"] if is_file else None,
    )


def _file_of(session: Session, record: Record) -> tuple[str | None, int | None]:
    row = session.execute(
        select(Segment.digest, EvidenceFile.size)
        .join(EvidenceFile, EvidenceFile.digest == Segment.digest)
        .where(Segment.record_id == record.id)
    ).first()
    return (row[0], row[1]) if row else (None, None)


def held_record(*, session: Session, device: str, seq: int) -> Record | None:
    """The record the server holds at (device, seq)."""
    return session.scalars(select(Record).where(Record.device == device, Record.seq == seq)).first()


def chain_position(*, session: Session, device: str) -> tuple[int, str | None]:
    """(next_seq, last_hash): everything below next_seq is held; last_hash is record next_seq − 1's.

    next_seq is the first seq missing, not one past the highest: after a gap the dock resends from the
    hole (records the recorder has lost are simply not there to send).
    """
    if session.scalar(select(Record.id).where(Record.device == device, Record.seq == 0)) is None:
        return 0, None
    nxt = aliased(Record)
    end = session.scalar(
        select(func.min(Record.seq)).where(
            Record.device == device,
            ~exists().where(and_(nxt.device == Record.device, nxt.seq == Record.seq + 1)),
        )
    )
    assert end is not None
    last = session.scalar(select(Record.hash).where(Record.device == device, Record.seq == end))
    return end + 1, last


def pending_files(*, session: Session, device: str, limit: int = 256) -> list[tuple[str, int]]:
    """(digest, size) of the device's files still incomplete, oldest first (for a ``have`` answer)."""
    rows = session.execute(
        select(Segment.digest, EvidenceFile.size)
        .join(EvidenceFile, EvidenceFile.digest == Segment.digest)
        .where(Segment.device == device, EvidenceFile.status == "pending")
        .group_by(Segment.digest, EvidenceFile.size)
        .order_by(func.min(Segment.seq))
        .limit(limit)
    )
    return [(d, n) for d, n in rows]
