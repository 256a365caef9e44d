"""Files (content-addressed blobs) and the segment records that name them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, UTCDateTime, one_of

FILE_STATUSES = ("pending", "stored")


class EvidenceFile(Base):
    """One file by its digest: announced by a record (pending), then verified and durable (stored)."""

    __tablename__ = "files"
    __table_args__ = (
        CheckConstraint(one_of("status", FILE_STATUSES), name="status"),
        CheckConstraint("size >= 0", name="size"),
    )

    digest: Mapped[str] = mapped_column(String(71), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    announced_at: Mapped[datetime] = mapped_column(UTCDateTime())
    stored_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    blob_key: Mapped[str | None] = mapped_column(String(200))


class Segment(Base):
    """A segment or recovered record's facts, for finding footage without parsing journal lines."""

    __tablename__ = "segments"
    __table_args__ = (
        Index(None, "device", "seq", unique=True),
        Index(None, "case_number"),
        Index("ix_segments_device_recording", "device", "recording"),  # migration 0006
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    record_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("records.id"), unique=True)
    device: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int] = mapped_column(BigInteger)
    digest: Mapped[str] = mapped_column(ForeignKey("files.digest"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # segment | recovered
    recording: Mapped[str] = mapped_column(String(64))
    index: Mapped[int] = mapped_column(Integer)
    file_name: Mapped[str] = mapped_column(String(255))
    start: Mapped[str] = mapped_column(String(24))
    end: Mapped[str] = mapped_column(String(24))
    officer: Mapped[str] = mapped_column(String(64))
    case_number: Mapped[str] = mapped_column(String(2000))
    subject: Mapped[str] = mapped_column(String(2000))
    #: seq (in the device's chain) of the annotation that set case_number / subject; None: as captured.
    #: Kept per member because the latest annotation wins for each member it sets (custody format §4.2).
    case_set_by: Mapped[int | None] = mapped_column(BigInteger)
    subject_set_by: Mapped[int | None] = mapped_column(BigInteger)
