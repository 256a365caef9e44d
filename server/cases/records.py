"""Text records of a case (文字记录): inspection notes, inquiry transcripts, notices, decisions — PDF,
DOCX, PNG or JPEG, checked by their leading bytes, stored write-once in the evidence store by SHA-256.

Threat model: an upload may claim any name and media type, and be anything. The type is decided by
the bytes (a declared type that disagrees is refused), the digest is computed over the bytes as
received and checked again by the store over the bytes as stored, and nothing is recorded unless the
blob committed. A record is never changed or deleted; a corrected document is a new record.
"""

from __future__ import annotations

import hashlib
import re
import struct
import zipfile
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.auth.models import AccessRequest
from server.auth.principal import Principal
from server.cases import policy
from server.cases.errors import ConflictError, InvalidInputError, NotFoundError
from server.cases.models import DOCX, TEXT_KINDS, Case, TextRecord
from server.cases.service import MAX_ID, check_restriction, find_case, line
from server.custody_log.service import log_event
from server.db import utc_now
from server.evidence.models import EvidenceFile
from server.evidence.service import announce_file
from server.evidence.store import BlobStore

#: Largest text record accepted (a scanned decision of a few hundred pages fits).
MAX_SIZE = 64 * 1024 * 1024
_CHUNK = 1024 * 1024
_BATCH = 8  # chunks per durable write (one flush each)
_GENERIC = {"", "application/octet-stream"}
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")


class TooLargeError(InvalidInputError):
    """The upload exceeds ``MAX_SIZE``."""


def sniff(stream: BinaryIO) -> str:
    """The media type the bytes show (PDF, DOCX, PNG, JPEG); InvalidInputError for anything else."""
    stream.seek(0)
    head = stream.read(8)
    stream.seek(0)
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"PK\x03\x04"):
        # A DOCX is a ZIP holding these two parts; other ZIPs (XLSX, archives) are refused. Only the
        # central directory is read: nothing is decompressed, so a ZIP bomb costs nothing here.
        try:
            names = set(zipfile.ZipFile(stream).namelist())
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError, struct.error):
            # Damaged or exotic archives (an unknown ZIP version is NotImplementedError): not a DOCX.
            names = set()
        finally:
            stream.seek(0)
        if {"[Content_Types].xml", "word/document.xml"} <= names:
            return DOCX
    raise InvalidInputError(
        "a text record is a PDF, DOCX, PNG or JPEG file; these bytes are none of them", field="file"
    )


def _digest(stream: BinaryIO) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    stream.seek(0)
    while chunk := stream.read(_CHUNK):
        size += len(chunk)
        if size > MAX_SIZE:
            raise TooLargeError(f"a text record has at most {MAX_SIZE // (1024 * 1024)} MiB", field="file")
        h.update(chunk)
    stream.seek(0)
    return "sha256:" + h.hexdigest(), size


def _store(store: BlobStore, stream: BinaryIO, digest: str, size: int) -> None:
    """Write the bytes into the store (durable, write-once); the store checks the hash over what it holds."""
    if store.exists(digest):
        return
    store.begin(digest, size)
    offset = 0
    batch: list[tuple[int, bytes]] = []
    stream.seek(0)
    while chunk := stream.read(_CHUNK):
        batch.append((offset, chunk))
        offset += len(chunk)
        if len(batch) == _BATCH:
            store.write_many(digest, batch)
            batch = []
    if batch:
        store.write_many(digest, batch)
    store.commit(digest)


def upload(
    session: Session,
    *,
    principal: Principal,
    store: BlobStore,
    case_id: int,
    kind: str,
    title: str,
    file_name: str,
    declared_type: str | None,
    stream: BinaryIO,
    restriction: str | None = None,
    now: datetime | None = None,
) -> TextRecord:
    """File a text record in a case (assigned handlers): the blob first, then the row and a ``filed`` event."""
    now = now or utc_now()
    case = find_case(session, case_id=case_id)
    policy.ensure_works_case(session, principal, case)
    if case.status == "archived":
        raise ConflictError(f"case {case.number} is archived: no records are added any more")
    if kind not in TEXT_KINDS:
        raise InvalidInputError(f"kind is one of {', '.join(TEXT_KINDS)}", field="kind")
    title = line(title, field="title", limit=200)
    file_name = line(file_name or "upload", field="file_name", limit=255)
    if _UNSAFE_NAME.search(file_name):
        raise InvalidInputError(
            "a file name holds no path separators or control characters", field="file_name"
        )
    restriction = check_restriction(restriction)
    digest, size = _digest(stream)
    media_type = sniff(stream)
    declared = (declared_type or "").split(";")[0].strip().lower()
    if declared not in _GENERIC and declared != media_type:
        raise InvalidInputError(
            f"the file was sent as {declared} but its bytes are {media_type}", field="file"
        )
    _store(store, stream, digest, size)
    announce_file(session=session, digest=digest, size=size, now=now)
    session.execute(
        update(EvidenceFile)
        .where(EvidenceFile.digest == digest, EvidenceFile.status == "pending")
        .values(status="stored", stored_at=now, blob_key=store.key(digest))
    )
    record = TextRecord(
        case_id=case.id,
        kind=kind,
        title=title,
        file_name=file_name,
        media_type=media_type,
        digest=digest,
        size=size,
        uploaded_by=principal.user_id,
        uploaded_at=now,
        restriction=restriction,
    )
    session.add(record)
    session.flush()
    log_event(
        session=session,
        kind="filed",
        actor=principal.actor,
        time=now,
        digest=digest,
        detail={
            "target_kind": "text-record",
            "target_id": str(record.id),
            "case": case.number,
            "kind": kind,
            "media_type": media_type,
            "size": size,
            "file_name": file_name,
            "restriction": restriction,
            "blob": store.key(digest),
            "sha256_verified_over": "stored bytes",
        },
    )
    return record


@dataclass(frozen=True)
class Opened:
    """A text record the principal may open, with the grants that opened it (restricted ones)."""

    record: TextRecord
    case: Case
    grants: list[AccessRequest]


def open_record(session: Session, *, principal: Principal, record_id: int) -> Opened:
    """A text record's row, for reading its bytes: readable case, and grants for every restriction."""
    record = session.get(TextRecord, record_id) if 1 <= record_id <= MAX_ID else None
    if record is None:
        raise NotFoundError(f"no text record {record_id} that you may see")
    case = find_case(session, case_id=record.case_id)
    try:
        policy.ensure_reads_case(session, principal, case)
    except NotFoundError:
        raise NotFoundError(f"no text record {record_id} that you may see") from None
    grants = [
        g
        for g in (
            policy.unlock(session, principal, restriction=case.restriction, targets=[("case", case.number)]),
            policy.unlock(
                session, principal, restriction=record.restriction, targets=[("text-record", str(record.id))]
            ),
        )
        if g is not None
    ]
    return Opened(record=record, case=case, grants=grants)


def may_open(session: Session, principal: Principal, record: TextRecord, case: Case) -> bool:
    """Whether the principal holds what opens this record's restrictions (no error, no side effect)."""
    for restriction, targets in (
        (case.restriction, [("case", case.number)]),
        (record.restriction, [("text-record", str(record.id))]),
    ):
        if restriction is None:
            continue
        try:
            policy.unlock(session, principal, restriction=restriction, targets=targets)
        except policy.RestrictedError:
            return False
    return True


def of_case(session: Session, *, case_id: int) -> list[TextRecord]:
    """A case's text records, oldest first."""
    return of_cases(session, case_ids=[case_id]).get(case_id, [])


def of_cases(session: Session, *, case_ids: list[int]) -> dict[int, list[TextRecord]]:
    """The text records of several cases (case id → records, oldest first), in one query."""
    out: dict[int, list[TextRecord]] = {}
    if not case_ids:
        return out
    q = select(TextRecord).where(TextRecord.case_id.in_(sorted(set(case_ids)))).order_by(TextRecord.id)
    for r in session.scalars(q):
        out.setdefault(r.case_id, []).append(r)
    return out
