"""Where the recorder's time comes from, and whether it can be trusted on the footage.

The GPS-vs-system offset is measured by the location service from fix times against the system clock
at reception, never assumed. Without GPS: NTP when systemd-timesyncd reports synchronisation, the
board's RTC when it has one, else "unset". The dock later corrects the clock with a signed ``clock``
record.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edge.config import RecorderConfig

_NTP_SYNCED = Path("/run/systemd/timesync/synchronized")
_RTC = Path("/dev/rtc0")


class OffsetSource(Protocol):
    """Anything that can say how far the system clock is from GPS time."""

    def clock_offset(self) -> tuple[str, int | None, int | None]:
        """(source, offset_ms, uncertainty_ms)."""
        ...


@dataclass(frozen=True, slots=True)
class ClockStatus:
    """The clock facts a record carries, and whether the overlay may call the time trusted."""

    source: str
    offset_ms: int | None
    uncertainty_ms: int | None
    trusted: bool

    def as_record(self) -> dict[str, Any]:
        """The custody ``clock`` object."""
        return {"source": self.source, "offset_ms": self.offset_ms, "uncertainty_ms": self.uncertainty_ms}


def clock_status(config: RecorderConfig, gps: OffsetSource | None) -> ClockStatus:
    """The best time source available now."""
    source, offset, uncertainty = gps.clock_offset() if gps is not None else ("unset", None, None)
    if source != "gps":
        offset = uncertainty = None
        if _NTP_SYNCED.exists():
            source = "ntp"
        elif _RTC.exists():
            source = "rtc"
        else:
            source = "unset"
    trusted = source in config.clock.trusted_sources and (
        offset is None or abs(offset) <= config.clock.max_offset_ms
    )
    return ClockStatus(source=source, offset_ms=offset, uncertainty_ms=uncertainty, trusted=trusted)
