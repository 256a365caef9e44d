"""Records received from the fleet: one row per (device, seq), the journal line kept byte for byte."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, UTCDateTime, one_of

#: filed: committed (no file); pending: committed, its file incomplete; stored: its file durable too.
RECORD_STATUSES = ("filed", "pending", "stored")


class Record(Base):
    """An accepted capture record. Never updated except ``status`` moving pending → stored."""

    __tablename__ = "records"
    __table_args__ = (
        UniqueConstraint("device", "seq"),
        CheckConstraint(one_of("status", RECORD_STATUSES), name="status"),
        CheckConstraint("seq >= 0", name="seq"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    device: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(71))
    prev: Mapped[str | None] = mapped_column(String(71))
    kind: Mapped[str] = mapped_column(String(16))
    time: Mapped[str] = mapped_column(String(24))  # the record's own timestamp text (custody format)
    key_id: Mapped[str] = mapped_column(String(71))
    line: Mapped[bytes] = mapped_column(LargeBinary)  # the canonical journal line, LF included
    dock: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16))
