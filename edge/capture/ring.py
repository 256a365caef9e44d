"""The pre-event ring: the last seconds of *encoded* packets before the inspector presses record.

It holds whole GOPs and always starts at a keyframe, so its packets become the start of the first
segment as they are, without re-encoding. It keeps at least the configured seconds (whole GOPs, so up
to one keyframe interval more) and never more than the 120 s a capture record can state.
Memory: seconds × bitrate, e.g. 30 s at 2.5 Mb/s ≈ 9.4 MB.
"""

from __future__ import annotations

from collections import deque

from edge.capture.encoder import EncodedPacket

MAX_PRE_EVENT_S = 120  # the capture record's limit for pre_event_s


class PreEventRing:
    """Encoded packets of the last ``seconds`` (video only unless ``include_audio``)."""

    def __init__(self, *, seconds: int, include_audio: bool) -> None:
        self.seconds = seconds
        self.include_audio = include_audio
        self._packets: deque[EncodedPacket] = deque()

    def __len__(self) -> int:
        return len(self._packets)

    def add(self, p: EncodedPacket) -> None:
        """Keep a packet (silently refused when it cannot be part of pre-event footage)."""
        if self.seconds == 0 or (p.kind == "a" and not self.include_audio):
            return
        if not self._packets and not (p.kind == "v" and p.key):
            return  # the ring starts at a keyframe, or a recording could not start with it
        self._packets.append(p)

    def trim(self, now: float) -> None:
        """Drop leading GOPs no longer needed to cover ``seconds`` before ``now``."""
        ring = self._packets
        while ring:
            second_key = next(
                (i for i, p in enumerate(ring) if i > 0 and p.kind == "v" and p.key),
                None,
            )
            if second_key is None:
                return
            held = now - ring[0].t
            if now - ring[second_key].t < self.seconds and held <= MAX_PRE_EVENT_S:
                return
            for _ in range(second_key):
                ring.popleft()

    def start(self) -> float | None:
        """Capture time of the first packet held (a keyframe), or None when empty."""
        return self._packets[0].t if self._packets else None

    def drain(self) -> list[EncodedPacket]:
        """Everything held, oldest first; the ring is empty afterwards."""
        out = list(self._packets)
        self._packets.clear()
        return out
