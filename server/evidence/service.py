"""Filing evidence: files announced by records, made durable in the store, segments listed and annotated."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from server.cases.footage import index_segment
from server.custody_log.service import log_event
from server.db import insert_ignore
from server.errors import ServerError
from server.evidence.models import EvidenceFile, Segment
from server.evidence.store import BlobStore
from server.ingest.models import Record


class FileConflictError(ServerError):
    """A record names a file digest the server already holds with a different size."""


def announce_file(*, session: Session, digest: str, size: int, now: datetime) -> str:
    """The file row for ``digest`` (created pending); its status. FileConflictError if it is held with
    another size."""
    values = {"digest": digest, "size": size, "status": "pending", "announced_at": now}
    if insert_ignore(session, EvidenceFile, values, "digest"):
        return "pending"  # new: the row is what was just written (one statement, not two)
    files = EvidenceFile.__table__.c
    held_size, status = session.execute(select(files.size, files.status).where(files.digest == digest)).one()
    if held_size != size:
        raise FileConflictError(f"the server holds {digest} with {held_size} bytes, the record says {size}")
    return str(status)


#: One statement, its values given as parameters: compiled and cached once, not per segment.
_INSERT_SEGMENT = insert(Segment.__table__).returning(Segment.__table__.c.id)
_records = Record.__table__.c
#: A device's annotations after a seq (on the table's columns: no autoflush of the batch's events).
_LATER_ANNOTATIONS = select(_records.seq, _records.line).where(
    _records.device == bindparam("device"), _records.kind == "annotation", _records.seq > bindparam("seq")
)


@dataclass(frozen=True)
class HeldRecord:
    """What filing a record's segment or annotation needs of the record row just inserted."""

    id: int
    device: str
    seq: int
    hash: str
    kind: str


def add_segment(*, session: Session, record: HeldRecord, body: dict[str, Any]) -> int:
    """The segment row of a segment/recovered record (its id), with annotations the device already made
    applied. Plain INSERTs: this runs once per segment on the ingest's busiest thread."""
    values: dict[str, Any] = {
        "record_id": record.id,
        "device": record.device,
        "seq": record.seq,
        "digest": body["digest"],
        "kind": record.kind,
        "recording": body["recording"],
        "index": body["index"],
        "file_name": body["file"],
        "start": body["start"],
        "end": body["end"],
        "officer": body["officer"],
        "case_number": body["case"],
        "subject": body["subject"],
    }
    segment_id = session.execute(_INSERT_SEGMENT, values).scalar_one()
    index_segment(session=session, segment_id=segment_id, body=body)  # for search by place, matter, proof
    # An annotation normally comes after its target; if it arrived first, apply it now.
    later = session.execute(_LATER_ANNOTATIONS, {"device": record.device, "seq": record.seq}).all()
    if later:
        segment = session.get_one(Segment, segment_id)
        for ann_seq, line in later:
            ann = json.loads(line)["record"]["body"]
            if any(_names(t, record) for t in ann["targets"]):
                _apply(segment, ann_seq, ann["set"])
    return segment_id


def _names(target: dict[str, Any], record: HeldRecord) -> bool:
    return (target["device"], target["seq"], target["hash"]) == (record.device, record.seq, record.hash)


def _apply(segment: Segment, ann_seq: int, values: dict[str, Any]) -> bool:
    """Set case/subject from an annotation unless a later one (in chain order) already did."""
    changed = False
    if "case" in values and (segment.case_set_by is None or ann_seq > segment.case_set_by):
        segment.case_number, segment.case_set_by, changed = values["case"], ann_seq, True
    if "subject" in values and (segment.subject_set_by is None or ann_seq > segment.subject_set_by):
        segment.subject, segment.subject_set_by, changed = values["subject"], ann_seq, True
    return changed


def apply_annotation(
    *, session: Session, annotation: HeldRecord, body: dict[str, Any], actor: str
) -> list[Segment]:
    """Apply an annotation to the held segments it names (same device only: a device annotates its
    own footage; annotations across devices come with server-side signing, later)."""
    changed = []
    for t in body["targets"]:
        if t["device"] != annotation.device:
            continue
        row = session.execute(
            select(Segment, Record.hash)
            .join(Record, Record.id == Segment.record_id)
            .where(Segment.device == t["device"], Segment.seq == t["seq"])
        ).first()
        if row is None or row[1] != t["hash"]:
            continue
        segment = row[0]
        if _apply(segment, annotation.seq, body["set"]):
            changed.append(segment)
            log_event(
                session=session,
                kind="annotated",
                actor=actor,
                device=segment.device,
                seq=segment.seq,
                record_hash=t["hash"],
                digest=segment.digest,
                detail={"by_seq": annotation.seq, "by_hash": annotation.hash, "set": body["set"]},
            )
    return changed


@dataclass(frozen=True)
class StoredRecord:
    """A record whose file is now durable: who to ack, and where."""

    device: str
    seq: int
    hash: str
    dock: str
    size: int


@dataclass(frozen=True)
class FileOutcome:
    """What finishing a file came to: ``stored`` or ``hash-mismatch``."""

    status: str
    digest: str
    records: list[StoredRecord]
    reason: str = ""


@dataclass(frozen=True)
class SegmentListing:
    """One filed segment as the API shows it."""

    seq: int
    kind: str
    sha256: str
    size: int
    status: str
    recording: str
    index: int
    case_number: str
    subject: str
    officer: str
    start: str
    end: str
    stored_at: datetime | None


def list_segments(*, session: Session, device: str) -> list[SegmentListing]:
    """Every segment of ``device`` the server accepted, by seq, with its file's status."""
    rows = session.execute(
        select(
            Segment.seq,
            Segment.kind,
            Segment.digest,
            EvidenceFile.size,
            EvidenceFile.status,
            Segment.recording,
            Segment.index,
            Segment.case_number,
            Segment.subject,
            Segment.officer,
            Segment.start,
            Segment.end,
            EvidenceFile.stored_at,
        )
        .join(EvidenceFile, EvidenceFile.digest == Segment.digest)
        .where(Segment.device == device)
        .order_by(Segment.seq)
    )
    return [SegmentListing(*r) for r in rows]


# -- reading blobs: HTTP byte ranges (RFC 9110 §14) ------------------------------------------------------


class RangeNotSatisfiableError(ServerError):
    """The Range asked for lies outside the blob (answer 416 with ``Content-Range: bytes */size``)."""

    def __init__(self, message: str, *, size: int) -> None:
        super().__init__(message)
        self.size = size


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` to ``end`` inclusive of a blob of ``size`` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        """How many bytes the range holds."""
        return self.end - self.start + 1

    @property
    def content_range(self) -> str:
        """The ``Content-Range`` header value."""
        return f"bytes {self.start}-{self.end}/{self.size}"


_RANGE_RE = re.compile(r"(\d*)-(\d*)")
#: Longer decimal numbers than this cannot be offsets of any blob (and would cost to parse).
_MAX_DIGITS = 19


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one byte range a ``Range`` header asks for; None to send the whole blob.

    None also for a unit other than ``bytes`` and for several ranges (RFC 9110 lets a server ignore
    Range; browsers ask for one). ``bytes=a-b``, ``bytes=a-`` and ``bytes=-n`` are served, ``b`` cut to
    the blob's end; a range starting at or past the end, ``bytes=-0``, ``b < a`` or bad syntax raise
    RangeNotSatisfiableError.
    """
    if header is None:
        return None
    unit, sep, spec = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    spec = spec.strip()
    if "," in spec:
        return None
    m = _RANGE_RE.fullmatch(spec)
    if m is None or not (m.group(1) or m.group(2)) or any(len(g) > _MAX_DIGITS for g in m.groups()):
        raise RangeNotSatisfiableError(f"{header!r} is not a byte range (bytes=FIRST-LAST)", size=size)
    first, last = m.group(1), m.group(2)
    if not first:  # suffix: the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiableError(f"{header!r} asks for no bytes of a {size}-byte blob", size=size)
        return ByteRange(max(0, size - n), size - 1, size)
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or end < start:
        raise RangeNotSatisfiableError(f"{header!r} lies outside a {size}-byte blob", size=size)
    return ByteRange(start, min(end, size - 1), size)


def iter_blob(
    store: BlobStore, digest: str, *, start: int, length: int, chunk: int = 256 * 1024
) -> Iterator[bytes]:
    """The blob's bytes from ``start``, ``length`` of them, a chunk at a time (never the whole file in memory)."""
    with store.open(digest) as f:
        f.seek(start)
        left = length
        while left > 0:
            data = f.read(min(chunk, left))
            if not data:  # the blob is shorter than its row says: stop rather than pad
                break
            left -= len(data)
            yield data
