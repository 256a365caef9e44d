"""The recent track: a bounded ring of fixes, and the thinned slice of it that a segment records."""

from __future__ import annotations

import dataclasses
from collections import deque
from datetime import datetime, timedelta

from edge.location.fix import Fix, reception_of

_ONE_SECOND = timedelta(seconds=1)


class FixTrack:
    """Fixes received in the last ``seconds`` (by the monotonic clock), oldest first. Not thread-safe."""

    def __init__(self, seconds: float = 600.0, max_rate_hz: int = 20) -> None:
        self.seconds = seconds
        # The count bound protects memory from a receiver flooding fixes; the time bound is the rule.
        self._fixes: deque[Fix] = deque(maxlen=max(1, int(seconds * max_rate_hz)))

    def __len__(self) -> int:
        return len(self._fixes)

    def add(self, fix: Fix) -> None:
        """Append a fix (it must carry its reception); a repeat of the same epoch replaces the last."""
        received = reception_of(fix)  # a tracked fix must say when it was received
        if self._fixes and self._fixes[-1].time == fix.time and self._fixes[-1].source == fix.source:
            # gpsd sends several TPVs per epoch, each more complete: keep the newest content but the
            # first arrival, which is what the clock-offset measurement wants.
            fix = dataclasses.replace(fix, received=self._fixes[-1].received)
            self._fixes[-1] = fix
        else:
            self._fixes.append(fix)
        self.prune(received.mono)

    def prune(self, now_mono: float) -> None:
        """Forget fixes older than the ring's span."""
        horizon = now_mono - self.seconds
        while self._fixes and reception_of(self._fixes[0]).mono < horizon:
            self._fixes.popleft()

    def latest(self) -> Fix | None:
        """The newest fix, however old."""
        return self._fixes[-1] if self._fixes else None

    def last_received_by(self, when: datetime) -> Fix | None:
        """The newest fix received at or before a system-clock time."""
        return next((f for f in reversed(self._fixes) if reception_of(f).wall <= when), None)

    def received_since(self, since_mono: float) -> list[Fix]:
        """Fixes received at or after a monotonic time."""
        return [f for f in self._fixes if reception_of(f).mono >= since_mono]

    def between(self, start: datetime, end: datetime) -> list[Fix]:
        """Fixes received between two system-clock times: the first, the last, at most one a second between."""
        inside = [f for f in self._fixes if start <= reception_of(f).wall <= end]
        return thin(inside)


def thin(fixes: list[Fix]) -> list[Fix]:
    """Keep the first and last fix and, between them, none closer than a second to the previous kept."""
    if len(fixes) <= 2:
        return list(fixes)
    kept = [fixes[0]]
    for fix in fixes[1:-1]:
        if abs(fix.time - kept[-1].time) >= _ONE_SECOND:
            kept.append(fix)
    last = fixes[-1]
    if len(kept) > 1 and abs(last.time - kept[-1].time) < _ONE_SECOND:
        kept[-1] = last  # the last fix of the segment counts more than a sample just before it
    else:
        kept.append(last)
    return kept
