"""Keeping track of devices and of the signing certificates learnt from their messages."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.db import insert_ignore
from server.devices.models import Device, SigningCertificate


def see_device(*, session: Session, device: str, role: str, now: datetime) -> None:
    """Record that ``device`` was seen now (created on first sight)."""
    if not insert_ignore(
        session, Device, {"id": device, "role": role, "first_seen": now, "last_seen": now}, "id"
    ):
        session.execute(
            update(Device).where(Device.id == device, Device.last_seen < now).values(last_seen=now)
        )


def learnt_certificate(*, session: Session, key_id: str) -> str | None:
    """The PEM of a certificate learnt earlier for ``key_id``, if any."""
    return session.scalar(select(SigningCertificate.pem).where(SigningCertificate.key_id == key_id))


def learn_certificate(*, session: Session, key_id: str, device: str, pem: str, now: datetime) -> None:
    """Remember a signing certificate (the device row must exist); a known key id is left as it is."""
    insert_ignore(
        session,
        SigningCertificate,
        {"key_id": key_id, "device": device, "pem": pem, "first_seen": now},
        "key_id",
    )
