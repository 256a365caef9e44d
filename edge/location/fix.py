"""A position fix, an explicit "no fix", and when either reached the recorder."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from custody.timefmt import utc_timestamp
from edge.location.coords import LAT_E7_MAX, LON_E7_MAX

FixSource = Literal["gpsd", "nmea"]
# The custody format bounds a no-fix reason to 200 characters.
REASON_MAX = 200


@dataclass(frozen=True, slots=True)
class Reception:
    """The system clock (wall and monotonic) at the moment a report arrived from the receiver.

    Both are kept: the wall time places a fix inside a segment (segments are timed by the same system
    clock), the monotonic time ages fixes and notices a stepped system clock.
    """

    wall: datetime
    mono: float

    @classmethod
    def now(cls) -> Reception:
        """The current system time."""
        return cls(wall=datetime.now(UTC), mono=time.monotonic())


@dataclass(frozen=True, slots=True)
class Fix:
    """One position from the receiver, in the units the custody record uses."""

    time: datetime  # receiver (GPS) time of the fix, UTC
    lat_e7: int
    lon_e7: int
    alt_mm: int | None  # above mean sea level; None in a 2D fix, whose altitude the receiver assumed
    hacc_mm: int | None  # horizontal accuracy, 1-sigma estimate
    mode: Literal[2, 3]
    sats: int | None
    source: FixSource
    # How the fix reached us; not part of the record, and not part of equality.
    received: Reception | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # A Fix is built from checked receiver text; these guard against a bug producing a record
        # that the custody verifier would later reject.
        if self.time.tzinfo is None:
            raise ValueError("fix times must be timezone-aware")
        if not -LAT_E7_MAX <= self.lat_e7 <= LAT_E7_MAX or not -LON_E7_MAX <= self.lon_e7 <= LON_E7_MAX:
            raise ValueError(f"position out of range: {self.lat_e7}, {self.lon_e7}")
        if self.mode not in (2, 3):
            raise ValueError(f"fix mode must be 2 or 3, not {self.mode}")
        if self.sats is not None and not 0 <= self.sats <= 255:
            raise ValueError(f"satellite count out of range: {self.sats}")
        if self.hacc_mm is not None and self.hacc_mm < 0:
            raise ValueError(f"negative accuracy: {self.hacc_mm}")
        if self.source not in ("gpsd", "nmea"):
            raise ValueError(f"unknown fix source {self.source!r}")

    def to_record(self) -> dict[str, Any]:
        """The custody record's fix object (docs/custody-format.md §4.1)."""
        return {
            "t": utc_timestamp(self.time),
            "lat_e7": self.lat_e7,
            "lon_e7": self.lon_e7,
            "alt_mm": self.alt_mm,
            "hacc_mm": self.hacc_mm,
            "mode": "3d" if self.mode == 3 else "2d",
            "sats": self.sats,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class NoFix:
    """An explicit "no position": the receiver said so, or could not be read."""

    reason: str
    time: datetime | None = None  # receiver time of the epoch, when it gave a usable one
    received: Reception | None = field(default=None, compare=False)

    def to_record(self) -> dict[str, Any]:
        """The custody record's no-fix location object."""
        return no_fix_record(self.reason)


def no_fix_record(reason: str) -> dict[str, Any]:
    """``{"fix": false, "reason": ...}`` with the reason cut to what the format allows."""
    text = reason.strip() or "no fix"
    if len(text) > REASON_MAX:
        text = text[: REASON_MAX - 1] + "…"
    return {"fix": False, "reason": text}


Report = Fix | NoFix


def reception_of(report: Fix | NoFix) -> Reception:
    """When a report arrived; raises if it was built without one (a bug in the provider)."""
    if report.received is None:
        raise ValueError(f"report has no reception time: {report!r}")
    return report.received
