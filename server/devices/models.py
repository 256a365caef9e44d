"""Devices (recorders whose records arrived, docks that carried them) and learnt signing certificates."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, UTCDateTime, one_of

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
