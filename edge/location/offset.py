"""How far the system clock is from GPS time, measured from fixes and the moment each arrived.

Each fix gives one sample: ``s = fix time - system time at reception``. Reception comes after the
epoch by the receiver's output delay plus transport (serial, gpsd), an unknown ``L`` between 0 and a
stated bound ``Lmax`` (the provider's ``latency_ms``), so the true offset is ``s + L``. We take the
median sample (robust to a late burst or a scheduling hiccup) and centre it in that range:

    offset = median(s) + Lmax / 2
    uncertainty = Lmax / 2 + max |s - median(s)|

Samples from before a step of the system clock (seen as a change of wall - monotonic) are dropped, so
that a clock set by the dock does not mix two clocks in one median.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from edge.location.fix import Fix, reception_of

# How far (wall - monotonic) may move between samples before we call it a clock step, in seconds.
# NTP slews by at most 0.5 ms/s, so within a one-minute window anything above this is a step.
_STEP_S = 0.5


def estimate_offset(fixes: Sequence[Fix], *, latency_ms: int, min_samples: int = 3) -> tuple[int, int] | None:
    """(offset_ms, uncertainty_ms) of GPS time minus system time, or None with too few samples."""
    if not fixes:
        return None
    pairs = [(f, reception_of(f)) for f in fixes]
    latest = pairs[-1][1]
    base = latest.wall.timestamp() - latest.mono
    samples = [
        (f.time - r.wall).total_seconds() * 1000
        for f, r in pairs
        if abs(r.wall.timestamp() - r.mono - base) <= _STEP_S
    ]
    if len(samples) < min_samples:
        return None
    middle = statistics.median(samples)
    spread = max(abs(s - middle) for s in samples)
    return round(middle + latency_ms / 2), math.ceil(latency_ms / 2 + spread)
