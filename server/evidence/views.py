"""API routes of the evidence domain."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException
from fastapi import Path as PathParam
from pydantic import BaseModel
from sqlalchemy import select

from custody.record import DEVICE_ID_RE
from server.api.deps import SessionDep
from server.devices.models import Device
from server.evidence.service import list_segments

router = APIRouter(tags=["evidence"])


class SegmentOut(BaseModel):
    """A filed segment: its place in the device's chain, its file and what it records."""

    seq: int
    kind: str
    sha256: str
    size: int
    status: str  # pending: announced, file incomplete; stored: verified and durable
    recording: str
    index: int
    case_number: str
    subject: str
    officer: str
    start: str
    end: str
    stored_at: datetime | None


@router.get("/devices/{device}/segments", response_model=list[SegmentOut])
def device_segments(
    session: SessionDep,
    # pydantic checks patterns with Rust regex, where "$" matches only at the very end.
    device: Annotated[str, PathParam(pattern=DEVICE_ID_RE.pattern, max_length=32)],
) -> list[SegmentOut]:
    """Every segment of a device the server accepted, in chain order."""
    if session.scalar(select(Device.id).where(Device.id == device)) is None:
        raise HTTPException(status_code=404, detail=f"no device {device} has sent records to this server")
    return [SegmentOut(**s.__dict__) for s in list_segments(session=session, device=device)]
