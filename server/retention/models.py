"""Tables of retention (migration 0005): legal holds and their history, per-case archive rules, and the
blobs the retention sweep purged.

Nothing here is ever deleted. A hold's row carries its current state (placed, or released with who,
when and why) for queries; ``legal_hold_events`` is its append-only history. Archive rules and purges
are append-only themselves: a new rule supersedes the last one of its case, and a purge is a fact.
Migration 0005 installs the triggers (UPDATE, DELETE and, on PostgreSQL, TRUNCATE refused).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from server.cases.models import FootageAnnotation
from server.db import Base, BigId, UTCDateTime, one_of
from server.evidence.models import Segment

HOLD_SCOPES = ("case", "device")
HOLD_EVENT_KINDS = ("placed", "released")
#: Append-only tables (triggers in migration 0005).
APPEND_ONLY = ("legal_hold_events", "case_archive_rules", "retention_purges")


class LegalHold(Base):
    """A legal hold: while it is not released, nothing it covers is purged, whatever its retention.

    ``case``: every segment whose current or captured case is the case, or that any annotation ever
    linked to it. ``device``: the device's segments with ``seq_from <= seq <= seq_to`` (open ends allowed).
    """

    __tablename__ = "legal_holds"
    __table_args__ = (
        CheckConstraint(one_of("scope", HOLD_SCOPES), name="scope"),
        CheckConstraint(
            "(scope = 'case' AND case_id IS NOT NULL AND device IS NULL AND seq_from IS NULL "
            "AND seq_to IS NULL) OR (scope = 'device' AND device IS NOT NULL AND case_id IS NULL)",
            name="target",
        ),
        CheckConstraint("seq_from IS NULL OR seq_to IS NULL OR seq_to >= seq_from", name="seq_range"),
        CheckConstraint("reason <> ''", name="reason"),
        CheckConstraint(
            "(released_at IS NULL AND released_by IS NULL AND release_reason IS NULL) OR "
            "(released_at IS NOT NULL AND released_by IS NOT NULL AND release_reason <> '')",
            name="released",
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    scope: Mapped[str] = mapped_column(String(16))
    case_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("cases.id"), index=True)
    device: Mapped[str | None] = mapped_column(String(32), index=True)
    seq_from: Mapped[int | None] = mapped_column(BigInteger)
    seq_to: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text)
    placed_by: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))
    placed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    released_by: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("users.id"))
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    release_reason: Mapped[str | None] = mapped_column(Text)


class LegalHoldEvent(Base):
    """One step of a hold's history (placed, released): who, when, why. Append-only."""

    __tablename__ = "legal_hold_events"
    __table_args__ = (
        CheckConstraint(one_of("kind", HOLD_EVENT_KINDS), name="kind"),
        CheckConstraint("note <> ''", name="note"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    hold_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("legal_holds.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    time: Mapped[datetime] = mapped_column(UTCDateTime())
    actor_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))
    note: Mapped[str] = mapped_column(Text)


class CaseArchiveRule(Base):
    """How long a case's evidence is kept after the case is closed: ``keep_years`` after ``closed_on``,
    or None for permanently (永久). The latest rule of a case (by id) is in force. Append-only."""

    __tablename__ = "case_archive_rules"
    __table_args__ = (
        CheckConstraint("keep_years IS NULL OR (keep_years >= 1 AND keep_years <= 100)", name="keep_years"),
        CheckConstraint("reason <> ''", name="reason"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    case_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("cases.id"), index=True)
    keep_years: Mapped[int | None] = mapped_column(Integer)
    set_by: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))
    set_at: Mapped[datetime] = mapped_column(UTCDateTime())
    reason: Mapped[str] = mapped_column(Text)


class RetentionPurge(Base):
    """A blob the retention sweep removed from the evidence store. Its ``files`` row, the records that
    name it and their custody events stay; this row says the bytes are gone, when, and why. Append-only."""

    __tablename__ = "retention_purges"

    digest: Mapped[str] = mapped_column(String(71), ForeignKey("files.digest"), primary_key=True)
    purged_at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(64))
    retention_class: Mapped[str] = mapped_column(String(16))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())


# Indexes migration 0005 adds to other domains' tables, for finding footage by case number and by
# subject without a scan (bench/query_bench.py; docs/case-file.md "Query benchmark"). Declared here so
# that the models match the migrations; they belong with their tables when those models next change.
# A prefix: ``subject`` is the recorder's free text (≤ 2000 characters), too long for a B-tree entry
# whole; a USCC is 18 characters. Queries say ``substr(subject, 1, 18) = :uscc AND subject = :uscc``.
Index("ix_segments_subject_prefix", func.substr(Segment.subject, 1, 18))
Index("ix_footage_annotations_case_number", FootageAnnotation.case_number)
Index("ix_footage_annotations_subject_uscc", FootageAnnotation.subject_uscc)
