"""Writing custody events. Only appends: there is no function that changes or removes one."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.custody_log.models import CustodyEvent
from server.db import utc_now

#: Detail texts are kept whole up to this size; a payload's excerpt is much shorter (see ingest).
MAX_DETAIL = 512 * 1024


def _clip(text: str | None, n: int) -> str | None:
    return None if text is None else text[:n]


def log_event(
    *,
    session: Session,
    kind: str,
    actor: str,
    detail: dict[str, Any],
    code: str | None = None,
    device: str | None = None,
    seq: int | None = None,
    record_hash: str | None = None,
    digest: str | None = None,
    dock: str | None = None,
    time: datetime | None = None,
) -> CustodyEvent:
    """Append one custody event to the session's transaction (committed with it)."""
    text = json.dumps(detail, ensure_ascii=False, sort_keys=True, default=str)
    if len(text) > MAX_DETAIL:
        text = json.dumps({"truncated": True, "head": text[:MAX_DETAIL]}, ensure_ascii=False)
    event = CustodyEvent(
        time=time or utc_now(),
        kind=kind,
        code=code,
        # Rejected messages may name anything: clip what does not fit instead of failing to log it.
        device=_clip(device, 64),
        seq=seq,
        record_hash=_clip(record_hash, 71),
        digest=_clip(digest, 71),
        dock=_clip(dock, 64),
        actor=actor[:64],
        detail=text,
    )
    session.add(event)
    return event


def events_for(
    *, session: Session, device: str | None = None, kind: str | None = None, code: str | None = None
) -> list[CustodyEvent]:
    """Events in the order they were written, filtered by device, kind and code."""
    q = select(CustodyEvent).order_by(CustodyEvent.id)
    if device is not None:
        q = q.where(CustodyEvent.device == device)
    if kind is not None:
        q = q.where(CustodyEvent.kind == kind)
    if code is not None:
        q = q.where(CustodyEvent.code == code)
    return list(session.scalars(q))
