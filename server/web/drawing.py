"""Figures drawn on the server as SVG: a GPS track with a scale bar (no map tiles: none are reachable
offline), a time axis of a case's footage and records, and bar charts of the oversight rates.

Each function returns plain numbers for the template to place; nothing here touches the database.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from server.cases.footage import M_PER_DEGREE

#: 1e-7 degree units (the custody format's lat_e7/lon_e7) in metres along a meridian.
_M_PER_E7 = M_PER_DEGREE / 1e7


@dataclass(frozen=True)
class Track:
    """A track fitted into a ``width`` × ``height`` box: the polyline, its ends, the scale bar."""

    width: int
    height: int
    points: list[tuple[float, float]]
    scale_px: float
    scale_m: int
    extent_m: float

    @property
    def polyline(self) -> str:
        """The SVG ``points`` attribute."""
        return " ".join(f"{x:.1f},{y:.1f}" for x, y in self.points)

    @property
    def scale_label(self) -> str:
        """The scale bar's length in words (metres or kilometres)."""
        return f"{self.scale_m // 1000} km" if self.scale_m >= 1000 else f"{self.scale_m} m"


def nice_length(metres: float) -> int:
    """The largest 1, 2 or 5 × 10^k metres not longer than ``metres`` (at least 1 m)."""
    if metres < 1:
        return 1
    power = 10 ** math.floor(math.log10(metres))
    for step in (5, 2, 1):
        if step * power <= metres:
            return int(step * power)
    return int(power)  # pragma: no cover - step 1 always fits


def track(
    fixes: list[tuple[int, int]], *, width: int = 480, height: int = 320, pad: int = 24
) -> Track | None:
    """The fixes (lat_e7, lon_e7) on a local flat projection (east = right, north = up), or None."""
    if not fixes:
        return None
    lat0 = sum(lat for lat, _ in fixes) / len(fixes)
    k = math.cos(math.radians(lat0 / 1e7))
    xs = [lon * k * _M_PER_E7 for _, lon in fixes]
    ys = [lat * _M_PER_E7 for lat, _ in fixes]
    # At least 20 m across, so that one fix or a standing inspector is a dot, not a division by zero.
    span = max(max(xs) - min(xs), max(ys) - min(ys), 20.0)
    px_per_m = min(width - 2 * pad, height - 2 * pad - 24) / span
    cx, cy = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    points = [
        (width / 2 + (x - cx) * px_per_m, (height - 24) / 2 - (y - cy) * px_per_m)
        for x, y in zip(xs, ys, strict=True)
    ]
    scale_m = nice_length(span / 4)
    return Track(width, height, points, scale_m * px_per_m, scale_m, span)


@dataclass(frozen=True)
class Span:
    """One item on a time axis: from x to x + w pixels."""

    x: float
    w: float
    label: str
    href: str
    kind: str


def time_axis(
    items: list[tuple[datetime, datetime, str, str, str]],
    *,
    width: int = 800,
    left: int = 10,
    right: int = 10,
) -> tuple[list[Span], datetime | None, datetime | None]:
    """Items (start, end, label, link, kind) placed on one axis from the earliest start to the latest end."""
    if not items:
        return [], None, None
    t0 = min(i[0] for i in items)
    t1 = max(i[1] for i in items)
    total = max((t1 - t0).total_seconds(), 1.0)
    usable = width - left - right
    spans = []
    for start, end, label, href, kind in items:
        x = left + (start - t0).total_seconds() / total * usable
        w = max((end - start).total_seconds() / total * usable, 3.0)
        spans.append(Span(x, w, label, href, kind))
    return spans, t0, t1


@dataclass(frozen=True)
class Bar:
    """One bar of a chart: its label, value (0–1, or None when nothing is counted) and geometry."""

    label: str
    value: float | None
    y: float
    w: float


def bars(values: list[tuple[str, float | None]], *, width: int = 360, row: int = 22) -> list[Bar]:
    """Horizontal bars for shares between 0 and 1, one row each."""
    return [Bar(label, value, i * row, (value or 0.0) * width) for i, (label, value) in enumerate(values)]
