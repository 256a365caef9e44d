"""Reading media facts back from a file (for segments recovered after a crash)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def probe_media(path: Path) -> tuple[dict[str, Any], float]:
    """The custody ``media`` object of a file and its duration in seconds (0 when unreadable)."""
    import av  # only the recorder pays for PyAV

    media: dict[str, Any] = {"container": "mp4-fragmented", "duration_ms": 0, "video": None, "audio": None}
    try:
        with av.open(str(path)) as c:
            duration = 0.0
            for s in c.streams:
                if s.type == "video" and media["video"] is None:
                    rate = s.average_rate or s.guessed_rate
                    media["video"] = {
                        "codec": s.codec_context.name,
                        "width": s.codec_context.width,
                        "height": s.codec_context.height,
                        "fps": f"{rate.numerator}/{rate.denominator}" if rate else "30/1",
                    }
                elif s.type == "audio" and media["audio"] is None:
                    media["audio"] = {
                        "codec": s.codec_context.name,
                        "rate": s.codec_context.sample_rate,
                        "channels": s.codec_context.channels,
                    }
            # A fragmented file carries no global duration: the last packet's end tells it.
            for packet in c.demux():
                if packet.pts is not None and packet.duration is not None and packet.time_base is not None:
                    duration = max(duration, float((packet.pts + packet.duration) * packet.time_base))
    except (av.error.FFmpegError, OSError, ValueError):
        return media, 0.0
    media["duration_ms"] = int(duration * 1000)
    return media, duration
