"""Devices (recorders whose records arrived, docks that carried them) and learnt signing certificates."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Date, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, UTCDateTime, one_of

ROLES = ("recorder", "dock", "unknown")


class Device(Base):
    """A recorder or dock, by its id (the CN of its certificates)."""

    __tablename__ = "devices"
    __table_args__ = (CheckConstraint(one_of("role", ROLES), name="role"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime())


class SigningCertificate(Base):
    """A device's evidence-signing certificate learnt from a record message (judged against the fleet
    root when it arrived, and again at every use), so that later messages may omit it."""

    __tablename__ = "signing_certificates"

    key_id: Mapped[str] = mapped_column(String(71), primary_key=True)
    device: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    pem: Mapped[str] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime())


class DockState(Base):
    """A dock's retained state message as last stored (protocol §1a): online or not, and when.

    Ordered by (``conn``, ``ended``, ``at``): a later connection wins; within one connection the last
    will (``ended``) wins over the online states it ends; then the newer ``at``. Storing the same
    message again changes nothing, so every ingest worker may store what it sees."""

    __tablename__ = "dock_states"

    dock: Mapped[str] = mapped_column(String(32), primary_key=True)
    online: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    conn: Mapped[datetime] = mapped_column(UTCDateTime())
    ended: Mapped[bool] = mapped_column(Boolean)
    broker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RecorderStatus(Base):
    """A recorder's status as a dock last read it over the control link (battery, spool use); the
    newest ``read_at`` wins. What a dock measured, not evidence."""

    __tablename__ = "recorder_statuses"

    recorder: Mapped[str] = mapped_column(String(32), primary_key=True)
    dock: Mapped[str] = mapped_column(String(32))
    read_at: Mapped[datetime] = mapped_column(UTCDateTime())
    battery_pct: Mapped[int | None] = mapped_column(Integer, nullable=True)
    charging: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    spool_used_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    spool_total_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    files_waiting: Mapped[int | None] = mapped_column(Integer, nullable=True)
    clock_offset_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RecorderAssignment(Base):
    """配发: a recorder issued to an officer from ``valid_from`` until ``valid_until`` (inclusive; None:
    still issued). The base of 使用率 per department and officer."""

    __tablename__ = "recorder_assignments"
    __table_args__ = (
        CheckConstraint("valid_until IS NULL OR valid_until >= valid_from", name="period"),
        Index("ix_recorder_assignments_recorder_valid_from", "recorder", "valid_from"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    recorder: Mapped[str] = mapped_column(String(32))
    officer_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("officers.id"), index=True)
    valid_from: Mapped[date] = mapped_column(Date)
    valid_until: Mapped[date | None] = mapped_column(Date, nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
