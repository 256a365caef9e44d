"""What the capture pipeline promises the recorder agent, and what it asks of it.

The pipeline owns sources, stamp, encoder, segmenter and the pre-event ring. It writes each segment as a
fragmented MP4 into the spool's ``tmp/`` folder (packets flushed as written) and hands it over, fsynced,
through ``on_segment``; the agent moves it into ``media/`` and chains its record. Segment times come
from the pipeline's clock: the UTC instant capture started plus each frame's presentation time, so a
source replayed faster than real time still gets consistent times.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Stamp:
    """What the burned-in overlay shows on a frame (the pipeline adds the frame's UTC time)."""

    device: str
    officer: str
    lat_e7: int | None  # None: no fix ("NO FIX" is drawn)
    lon_e7: int | None
    clock_trusted: bool  # False: a visible warning is drawn


StampProvider = Callable[[], Stamp]


@dataclass(frozen=True, slots=True)
class SegmentOpened:
    """A segment file was created under tmp/ (so a crash can be recovered with its context)."""

    path: Path
    recording: str
    index: int
    start: datetime  # UTC of its first frame


@dataclass(frozen=True, slots=True)
class SegmentFile:
    """A finished segment: complete, fsynced, ready to be moved into media/ and chained."""

    path: Path
    recording: str
    index: int
    start: datetime  # UTC of the first frame
    end: datetime  # UTC just after the last frame
    media: dict[str, Any]  # the custody record's "media" object
    pre_event_s: int  # seconds of pre-event footage at its start (0 except the first segment)
    frames: int


class SegmentSink(Protocol):
    """The agent's side: told when a segment opens and when it is sealed."""

    def segment_opened(self, event: SegmentOpened) -> None:
        """Called from the pipeline thread before the first byte of a segment is written."""
        ...

    def segment_sealed(self, segment: SegmentFile) -> None:
        """Called from the pipeline thread once the file is complete and fsynced."""
        ...
