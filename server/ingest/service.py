"""Accepting a verified record into the database: chain continuity, idempotency, custody events.

Everything here runs inside one transaction and relies on the database's UNIQUE constraints, not on
anything a worker remembers: two workers racing on the same record both end in the same state (one
inserts, the other's insert fails, is rolled back, and on retry finds a duplicate — or a fork).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, exists, func, insert, select, update
from sqlalchemy.orm import Session, aliased

from custody.examine import RecordFacts
from server.custody_log.service import log_event
from server.devices.service import learn_certificate, see_device
from server.errors import ServerError
from server.evidence.models import EvidenceFile, Segment
from server.evidence.service import (
    FileConflictError,
    HeldRecord,
    StoredRecord,
    add_segment,
    announce_file,
    apply_annotation,
)
from server.ingest.models import Record

FILE_KINDS = ("segment", "recovered")
#: One statement, its values given as parameters: compiled and cached once, not per record.
_INSERT_RECORD = insert(Record.__table__).returning(Record.__table__.c.id)
_records = Record.__table__.c
_files = EvidenceFile.__table__.c
_segments = Segment.__table__.c
#: Filing a committed file: cached statements with parameters (a committer runs them once per file).
_FILE_STORED = (
    update(EvidenceFile.__table__)
    .where(_files.digest == bindparam("b_digest"), _files.status == "pending")
    .values(status="stored", stored_at=bindparam("b_stored_at"), blob_key=bindparam("b_blob_key"))
)
_RECORD_STORED = (
    update(Record.__table__)
    .where(_records.id == bindparam("record_id"), _records.status == "pending")
    .values(status="stored")
)
_FILE_RECORDS = (
    select(
        _records.id, _records.device, _records.seq, _records.hash, _records.dock, _records.status, _files.size
    )
    .join(Segment.__table__, _segments.record_id == _records.id)
    .join(EvidenceFile.__table__, _files.digest == _segments.digest)
    .where(_segments.digest == bindparam("digest"))
    .order_by(_records.device, _records.seq)
)
#: The record at a seq and its two neighbours. On the table's columns, not the ORM's: no autoflush of
#: the batch's custody events before each record (they go in together at the commit).
_NEAR = select(_records.id, _records.seq, _records.hash, _records.prev, _records.status).where(
    _records.device == bindparam("device"),
    _records.seq >= bindparam("low"),
    _records.seq <= bindparam("high"),
)


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
    #: Devices whose rows this worker created or touched (``last_seen``) within the last second: not
    #: touched again (one write a second per device, not two per record).
    seen_recently: frozenset[str] = frozenset()


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


@dataclass(frozen=True)
class FileRecord:
    """A record naming a file, with what completing the file needs of it."""

    id: int
    device: str
    seq: int
    hash: str
    dock: str
    status: str
    size: int


def accept_record(*, session: Session, incoming: IncomingRecord, now: datetime, actor: str) -> Acceptance:
    """Check ``incoming`` against the device's chain as held, and file it; ChainRejectionError if it does not fit."""
    f = incoming.facts
    assert f.seq is not None
    device, seq = f.device, f.seq
    base = {"actor": actor, "device": device, "seq": seq, "record_hash": f.hash, "dock": incoming.dock}

    # The record at seq and its two neighbours, in one query (the chain checks need nothing else).
    near = {r.seq: r for r in session.execute(_NEAR, {"device": device, "low": seq - 1, "high": seq + 1})}
    held = near.get(seq)
    if held is not None:
        if held.hash != f.hash:
            raise ChainRejectionError(
                "fork",
                f"the server holds a different record at seq {seq} ({held.hash}); this one is {f.hash}",
            )
        digest, size = _file_of(session, held.id)
        log_event(session=session, kind="duplicate", detail={"status": held.status}, digest=digest, **base)
        return Acceptance(False, device, seq, held.hash, held.status, digest, size)

    before = near[seq - 1].hash if seq - 1 in near else None
    if before is not None and before != f.prev:
        raise ChainRejectionError(
            "broken-link",
            f"prev {f.prev} is not the hash of record {seq - 1} held by the server ({before})",
        )
    after = near.get(seq + 1)
    if after is not None and after.prev != f.hash:
        raise ChainRejectionError(
            "broken-link", f"record {seq + 1} held by the server names another predecessor ({after.prev})"
        )
    # A gap (seq beyond the next expected) is only possible when seq - 1 is not held.
    highest = None
    if seq > 0 and before is None:
        highest = session.scalar(select(func.max(Record.seq)).where(Record.device == device))

    if device not in incoming.seen_recently:
        see_device(session=session, device=device, role=incoming.device_role, now=now)
    if incoming.dock != device and incoming.dock not in incoming.seen_recently:
        see_device(session=session, device=incoming.dock, role=incoming.dock_role, now=now)
    if incoming.learn_pem is not None:
        learn_certificate(
            session=session, key_id=incoming.key_id, device=device, pem=incoming.learn_pem, now=now
        )

    is_file = f.kind in FILE_KINDS
    file_status = None
    if is_file:
        try:
            file_status = announce_file(
                session=session, digest=incoming.body["digest"], size=incoming.body["size"], now=now
            )
        except FileConflictError as exc:
            raise ChainRejectionError("size-mismatch", str(exc)) from None
    status = "filed" if not is_file else ("stored" if file_status == "stored" else "pending")
    # A plain INSERT … RETURNING id: the UNIQUE (device, seq) constraint speaks here when another worker
    # was first. (The ORM's unit of work cost about a millisecond of CPU per record for the same row.)
    record = HeldRecord(
        id=session.execute(
            _INSERT_RECORD,
            {
                "device": device,
                "seq": seq,
                "hash": f.hash,
                "prev": f.prev,
                "kind": f.kind,
                "time": f.time,
                "key_id": incoming.key_id,
                "line": incoming.line,
                "dock": incoming.dock,
                "received_at": now,
                "status": status,
            },
        ).scalar_one(),
        device=device,
        seq=seq,
        hash=f.hash,
        kind=f.kind,
    )

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
    if seq > 0 and before is None and (highest is None or seq > highest + 1):
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


def _file_of(session: Session, record_id: int) -> tuple[str | None, int | None]:
    row = session.execute(
        select(Segment.digest, EvidenceFile.size)
        .join(EvidenceFile, EvidenceFile.digest == Segment.digest)
        .where(Segment.record_id == record_id)
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


def file_records(*, session: Session, digest: str) -> list[FileRecord]:
    """Every record naming the file ``digest``, by (device, seq): whom its answers go to."""
    return [FileRecord(*r) for r in session.execute(_FILE_RECORDS, {"digest": digest})]


def file_stored(
    *, session: Session, digest: str, blob_key: str, size: int, actor: str, dock: str, now: datetime
) -> list[StoredRecord]:
    """File a blob the store has just committed (hash checked over the stored bytes): the file row
    ``stored``, each of its pending records ``stored`` with a ``filed`` event; returns every record
    naming it, for the answers. Conditional updates: of two workers finishing the same file, only one
    files each record. Three statements and the events, where the ORM took six and a load per record.
    """
    session.execute(_FILE_STORED, {"b_digest": digest, "b_stored_at": now, "b_blob_key": blob_key})
    records = file_records(session=session, digest=digest)
    for r in records:
        if r.status != "pending":
            continue
        done = session.execute(_RECORD_STORED, {"record_id": r.id})
        if done.rowcount:  # type: ignore[attr-defined]
            log_event(
                session=session,
                kind="filed",
                actor=actor,
                device=r.device,
                seq=r.seq,
                record_hash=r.hash,
                digest=digest,
                dock=dock,
                time=now,
                detail={"size": size, "blob": blob_key, "sha256_verified_over": "stored bytes"},
            )
    return [StoredRecord(r.device, r.seq, r.hash, r.dock, r.size) for r in records]
