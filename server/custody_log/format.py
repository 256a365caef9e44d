"""What the custody log hashes: the event object of a stored row (one leaf).

The encoding of leaves and checkpoints and their checks are ``custody.logproof`` (re-exported here),
the one implementation the server and ``fieldproof verify BUNDLE`` share. This module adds what only
the server has: a ``custody_events`` row turned into its event object. ``detail`` stays the exact JSON
*text* the server stored (a string member), so that no float or big integer inside it can make an
event unencodable (docs/custody-log.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from custody.canonical import MAX_SAFE_INTEGER, canonical
from custody.logproof import (
    CHECKPOINT_CONTEXT,
    EVENT_MEMBERS,
    LEAF_VERSION,
    LOG_NAME,
    event_leaf_hash,
    signed_checkpoint_bytes,
)
from custody.logproof import SignedCheckpoint as Checkpoint

__all__ = [
    "CHECKPOINT_CONTEXT",
    "EVENT_MEMBERS",
    "LEAF_VERSION",
    "LOG_NAME",
    "Checkpoint",
    "EventRow",
    "event_json",
    "event_leaf_hash",
    "leaf_data",
    "log_time",
    "signed_checkpoint_bytes",
]


class EventRow(Protocol):
    """What :func:`event_json` reads: a ``CustodyEvent`` row, or anything with its columns."""

    id: int
    time: datetime
    kind: str
    code: str | None
    device: str | None
    seq: int | None
    record_hash: str | None
    digest: str | None
    dock: str | None
    actor: str
    detail: str


def log_time(when: datetime) -> str:
    """UTC with microseconds, fixed width (``2026-11-27T08:30:00.123456Z``): text order is time order."""
    if when.tzinfo is None:
        raise ValueError("custody log times must be timezone-aware")
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _safe_int(value: int | None) -> int | str | None:
    # RFC 8785 numbers are IEEE doubles: a larger integer is kept exactly as its decimal text instead.
    if value is None or -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return value
    return str(value)


def event_json(event: EventRow) -> dict[str, Any]:
    """The event object a leaf encodes (and the API serves), from the stored row."""
    return {
        "v": LEAF_VERSION,
        "id": _safe_int(event.id),
        "time": log_time(event.time),
        "kind": event.kind,
        "code": event.code,
        "device": event.device,
        "seq": _safe_int(event.seq),
        "record_hash": event.record_hash,
        "digest": event.digest,
        "dock": event.dock,
        "actor": event.actor,
        "detail": event.detail,
    }


def leaf_data(event: Mapping[str, Any]) -> bytes:
    """The leaf's bytes: RFC 8785 of the event object. ValueError for a value RFC 8785 cannot hold."""
    return canonical(dict(event))
