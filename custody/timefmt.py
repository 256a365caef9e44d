"""Times in records: UTC, milliseconds, fixed width (``2026-11-26T08:30:00.000Z``)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_timestamp(when: datetime) -> str:
    """Format an aware datetime as a record timestamp (UTC, milliseconds, ``Z``)."""
    if when.tzinfo is None:
        raise ValueError("record times must be timezone-aware")
    u = when.astimezone(UTC)
    return u.strftime("%Y-%m-%dT%H:%M:%S.") + f"{u.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> datetime:
    """Parse a record timestamp into an aware UTC datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def now_timestamp() -> str:
    """The current system time as a record timestamp."""
    return utc_timestamp(datetime.now(UTC))
