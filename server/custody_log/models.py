"""Custody events. Append-only: the first migration installs triggers that refuse UPDATE and DELETE."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, UTCDateTime, one_of

EVENT_KINDS = (
    "received",  # a record arrived and parsed
    "verified",  # signature, certificate, revocation and chain continuity checked
    "filed",  # committed: a record without file, or a record whose file is now durable
    "duplicate",  # the very same record again: nothing changed
    "annotated",  # a held segment's case/subject set by an annotation record
    "gap",  # records missing before this one
    "rejected",  # refused, with the protocol's reason code
    "warning",  # accepted, but a custodian should read this
    "error",  # the server failed handling a message (nothing filed)
)


class CustodyEvent(Base):
    """One event; ``detail`` is JSON text."""

    __tablename__ = "custody_events"
    __table_args__ = (CheckConstraint(one_of("kind", EVENT_KINDS), name="kind"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    code: Mapped[str | None] = mapped_column(String(32))  # rejection code (docs/sync-protocol.md §3)
    device: Mapped[str | None] = mapped_column(String(64), index=True)
    seq: Mapped[int | None] = mapped_column(BigInteger)
    record_hash: Mapped[str | None] = mapped_column(String(71))
    digest: Mapped[str | None] = mapped_column(String(71), index=True)
    dock: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text)
