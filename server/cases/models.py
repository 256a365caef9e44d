"""Tables of the case file (migration 0004): subjects, officers, cases and their assignments, text
records, signed footage annotations, and the footage index that search reads.

Evidence is never edited here: a text record's bytes are a write-once blob of the evidence store
(``files``), a segment's capture record is the signed journal line in ``records``. What people add
later — a segment linked to a case, a corrected proof statement — is a *new* row of
``footage_annotations``, signed by the server on the user's behalf; migration 0004 makes that table
and its targets append-only with triggers (UPDATE, DELETE and, on PostgreSQL, TRUNCATE refused).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.auth.models import RESTRICTIONS
from server.db import Base, BigId, UTCDateTime, one_of

CASE_STATUSES = ("open", "closed", "archived")
#: A user's part in one case: handlers work it, reviewers (legal review) read it.
ASSIGNMENT_ROLES = ("handler", "reviewer")
TEXT_KINDS = ("inspection-note", "inquiry-transcript", "notice", "decision", "other")
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
MEDIA_TYPES = ("application/pdf", DOCX, "image/png", "image/jpeg")


def _nullable_one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IS NULL OR {one_of(column, values)}"


class EnforcementSubject(Base):
    """An enforcement subject (执法对象): an employer, by its unified social credit code (GB 32100)."""

    __tablename__ = "enforcement_subjects"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    uscc: Mapped[str] = mapped_column(String(18), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(500))
    contacts: Mapped[str] = mapped_column(Text)  # JSON list of {name, phone, role}
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))


class Officer(Base):
    """An enforcement officer by their certificate number (执法证号), as segments name the collector.

    A user is linked to their officer record by ``users.officer_id`` (server/auth): one link, kept on
    the user, which the request's Principal already carries.
    """

    __tablename__ = "officers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    certificate_no: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(64))
    department: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Case(Base):
    """A case (案件): its number is unique and never changes (segments and custody events name it)."""

    __tablename__ = "cases"
    __table_args__ = (
        CheckConstraint(one_of("status", CASE_STATUSES), name="status"),
        CheckConstraint(_nullable_one_of("restriction", RESTRICTIONS), name="restriction"),
        CheckConstraint("closed_on IS NULL OR closed_on >= opened_on", name="closed_on"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    number: Mapped[str] = mapped_column(String(64), unique=True)
    subject_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("enforcement_subjects.id"), index=True)
    matter_code: Mapped[str] = mapped_column(String(16))  # custody/data/enforcement-matters.json
    title: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    opened_on: Mapped[date] = mapped_column(Date)
    closed_on: Mapped[date | None] = mapped_column(Date)
    restriction: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))


class CaseAssignment(Base):
    """A user assigned to a case as handler or reviewer; ended, never deleted (who had access when)."""

    __tablename__ = "case_assignments"
    __table_args__ = (CheckConstraint(one_of("role", ASSIGNMENT_ROLES), name="role"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    case_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("cases.id"), index=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime())
    assigned_by: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_by: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("users.id"))


class TextRecord(Base):
    """A text record of a case (文字记录): its bytes are a blob of the evidence store, by digest."""

    __tablename__ = "text_records"
    __table_args__ = (
        CheckConstraint(one_of("kind", TEXT_KINDS), name="kind"),
        CheckConstraint(one_of("media_type", MEDIA_TYPES), name="media_type"),
        CheckConstraint(_nullable_one_of("restriction", RESTRICTIONS), name="restriction"),
        CheckConstraint("size >= 0", name="size"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    case_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("cases.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(200))
    file_name: Mapped[str] = mapped_column(String(255))
    media_type: Mapped[str] = mapped_column(String(100))
    digest: Mapped[str] = mapped_column(String(71), ForeignKey("files.digest"), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    uploaded_by: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    restriction: Mapped[str | None] = mapped_column(String(16))


class FootageAnnotation(Base):
    """A signed annotation: footage linked to a case or subject, or its proof statement corrected.

    ``signed`` is the RFC 8785 text that was signed (without the context string), ``signature`` the
    Ed25519 signature by the server-signing key (``key_id``) on behalf of ``user_id``. The columns
    repeat what ``signed`` says, for queries; a verifier checks that they agree. Append-only.
    ``case_number`` '' means "unlinked from any case"; None means "case not changed".
    """

    __tablename__ = "footage_annotations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime())
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))
    actor: Mapped[str] = mapped_column(String(64))
    case_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("cases.id"), index=True)
    case_number: Mapped[str | None] = mapped_column(String(64))
    subject_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("enforcement_subjects.id"))
    subject_uscc: Mapped[str | None] = mapped_column(String(18))
    proof: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(71))
    signed: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[str] = mapped_column(String(128))  # base64


class FootageAnnotationTarget(Base):
    """A segment an annotation names (by device, seq and record hash in the signed text). Append-only."""

    __tablename__ = "footage_annotation_targets"

    annotation_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("footage_annotations.id"), primary_key=True
    )
    segment_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("segments.id"), primary_key=True, index=True
    )


class SegmentFacts(Base):
    """What search needs from a segment's capture record, copied once at filing (never changed).

    The signed journal line in ``records`` stays the truth; this is its index.
    """

    __tablename__ = "segment_facts"

    segment_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("segments.id"), primary_key=True)
    container: Mapped[str] = mapped_column(String(16))  # mp4-fragmented | mpegts
    duration_ms: Mapped[int] = mapped_column(BigInteger)
    matter: Mapped[str] = mapped_column(String(16), index=True)
    scene: Mapped[str] = mapped_column(String(64), index=True)
    proof: Mapped[str] = mapped_column(Text)
    fix: Mapped[bool] = mapped_column(Boolean)


class SegmentFix(Base):
    """One position fix of a segment (WGS-84 degrees × 10^7), for search by place."""

    __tablename__ = "segment_fixes"
    __table_args__ = (Index(None, "lat_e7", "lon_e7"),)

    segment_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("segments.id"), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, primary_key=True)
    t: Mapped[str] = mapped_column(String(24))
    lat_e7: Mapped[int] = mapped_column(Integer)
    lon_e7: Mapped[int] = mapped_column(Integer)
