"""One recording cut into self-contained fragmented-MP4 segments.

Cuts fall on keyframes, once a segment holds ``segment_seconds``. AAC packets leave their encoder after
the video of the same moment, so a segment stays open after the cut until the audio has passed it
(FACTS); then it is closed, fsynced, and handed to the sink. Each segment's timeline starts at zero.
Why fMP4 with ``flush_packets``: a crash (even kill -9) leaves every fragment but the one being
written readable; plain MP4 would leave nothing (no moov).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from edge.capture.api import SegmentFile, SegmentOpened, SegmentSink
from edge.capture.audio_sources import FRAME_SAMPLES
from edge.capture.encoder import EncodedPacket, Encoders
from edge.capture.errors import CaptureError
from edge.capture.ring import MAX_PRE_EVENT_S

# A fragment at every keyframe and at least every half second: a crash loses at most the fragment
# being written, so half a second of footage plus what was still in flight, not a whole GOP.
MP4_OPTIONS = {
    "movflags": "frag_keyframe+empty_moov+default_base_moof",
    "frag_duration": "500000",
    "flush_packets": "1",
}
# If audio stops arriving (a microphone gone), a segment waiting for it is sealed anyway after this.
AUDIO_GRACE_S = 2.0
_EPS = 1e-6


@dataclass
class _Segment:
    container: Any
    vstream: Any
    astream: Any
    path: Path
    index: int
    start: float  # capture time of its first frame
    vbase: int  # video pts of its first packet
    abase: int  # audio pts (samples) of its start
    vlast: int = -1
    frames: int = 0
    audio_muxed: bool = False
    end: float | None = None  # capture time where the next segment (or the stop) takes over


def fsync_path(path: Path) -> None:
    """Flush a file (or a directory entry) to the storage device."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Recording:
    """Routes one recording's packets into segments and seals them in order."""

    def __init__(
        self,
        *,
        recording_id: str,
        work_dir: Path,
        encoders: Encoders,
        width: int,
        height: int,
        segment_seconds: int,
        t0: datetime,
        trigger: float,
        sink: SegmentSink,
        audio_before_trigger: bool = False,
    ) -> None:
        self.recording_id = recording_id
        self.work_dir = work_dir
        self.encoders = encoders
        self.width, self.height = width, height
        self.fps = encoders.fps
        self.segment_seconds = segment_seconds
        self.t0 = t0
        self.trigger = trigger  # capture time the inspector pressed record
        # Pre-event audio is withheld unless configured: no sound from before the press, beyond the
        # AAC frame (21 ms at 48 kHz) that straddles it.
        self.audio_from = float("-inf") if audio_before_trigger else trigger - FRAME_SAMPLES / encoders.rate
        self.sink = sink
        self.index = -1
        self.cur: _Segment | None = None
        self.prev: _Segment | None = None  # cut, waiting for its audio
        self.stopping = False
        self.finished = False
        self.sealed: list[SegmentFile] = []

    # -- routing ------------------------------------------------------------------------------------

    def add(self, p: EncodedPacket) -> None:
        """Take the next packet of the session (video and audio in encoder output order)."""
        if self.finished:
            return
        if p.kind == "v":
            self._video(p)
        else:
            self._audio(p)

    def _video(self, p: EncodedPacket) -> None:
        if self.stopping:
            return
        seg = self.cur
        if seg is None:
            if not p.key:
                return  # a segment starts at a keyframe
            seg = self.cur = self._open(p)
        elif p.key and p.t >= seg.start + self.segment_seconds - _EPS:
            if self.prev is not None:
                self._seal(self.prev)  # its audio never passed the cut (grace below was too long)
            seg.end = p.t
            self.prev, seg = seg, self._open(p)
            self.cur = seg
            if self.encoders.audio_template is None:
                self._seal(self.prev)
        self._mux(seg, p)

    def _audio(self, p: EncodedPacket) -> None:
        prev = self.prev
        if prev is not None and prev.end is not None and p.t < prev.end:
            self._mux(prev, p)
            return
        if prev is not None:
            self._seal(prev)
        seg = self.cur
        if seg is None or p.t < seg.start - _EPS or p.t <= self.audio_from:
            return  # before the recording's first frame or its audio (or late: its segment is sealed)
        if self.stopping and seg.end is not None and p.t >= seg.end:
            self._seal(seg)  # the audio has passed the stop: the recording is complete
            return
        self._mux(seg, p)

    def tick(self, now: float) -> None:
        """Seal segments whose audio is overdue (the pipeline calls it once per frame)."""
        for seg in (self.prev, self.cur if self.stopping else None):
            if seg is not None and seg.end is not None and now - seg.end > AUDIO_GRACE_S:
                self._seal(seg)

    def stop(self, at: float) -> None:
        """No video from ``at`` on; the last segment is sealed once its audio has passed ``at``."""
        self.stopping = True
        seg = self.cur
        if seg is None:
            self.finished = True
            return
        seg.end = at
        if self.encoders.audio_template is None:
            if self.prev is not None:
                self._seal(self.prev)
            self._seal(seg)

    def finish(self) -> None:
        """Seal whatever is open, now (end of the session, or after an error)."""
        for seg in (self.prev, self.cur):
            if seg is not None:
                self._seal(seg)
        self.finished = True

    # -- files --------------------------------------------------------------------------------------

    def _open(self, first: EncodedPacket) -> _Segment:
        import av

        self.index += 1
        path = self.work_dir / f"{self.recording_id}-{self.index:04d}.mp4"
        if path.exists():
            # Footage is written once: a reused recording id must not truncate what is there.
            raise CaptureError(f"{path} exists already; a recording id must be new")
        # The sink hears of the file before its first byte: a crash can then be recovered with context.
        self.sink.segment_opened(
            SegmentOpened(
                path=path,
                recording=self.recording_id,
                index=self.index,
                start=self.t0 + timedelta(seconds=first.t),
            )
        )
        container = av.open(str(path), "w", format="mp4", options=MP4_OPTIONS)
        vstream = container.add_stream_from_template(self.encoders.video_template)
        atpl = self.encoders.audio_template
        astream = container.add_stream_from_template(atpl) if atpl is not None else None
        # The new name must survive a power cut too, not only its bytes.
        fsync_path(self.work_dir)
        return _Segment(
            container=container,
            vstream=vstream,
            astream=astream,
            path=path,
            index=self.index,
            start=first.t,
            vbase=first.packet.pts,
            abase=round(first.t * self.encoders.rate),
        )

    def _mux(self, seg: _Segment, p: EncodedPacket) -> None:
        if p.kind == "v":
            seg.vlast = p.packet.pts
            seg.frames += 1
            self._write(seg, p, seg.vstream, seg.vbase)
            return
        if seg.astream is None:
            return
        if not seg.audio_muxed:
            seg.audio_muxed = True
            # Audio starting later than the segment (pre-event footage without audio, or a late
            # microphone): silence fills the gap, on the encoder's own frame grid, so the track is
            # continuous from the segment's start and every later packet keeps its true time.
            pts = p.packet.pts - FRAME_SAMPLES
            fill = []
            while pts >= seg.abase:
                fill.append(self.encoders.silence(pts))
                pts -= FRAME_SAMPLES
            for s in reversed(fill):
                self._write(seg, s, seg.astream, seg.abase)
        self._write(seg, p, seg.astream, seg.abase)

    @staticmethod
    def _write(seg: _Segment, p: EncodedPacket, stream: Any, base: int) -> None:
        pkt = p.packet
        saved = (pkt.pts, pkt.dts, pkt.time_base, pkt.stream)
        pkt.pts, pkt.dts = pkt.pts - base, pkt.dts - base
        pkt.stream = stream
        try:
            seg.container.mux(pkt)
        finally:
            # mux() rescales the packet's timing to the file's; the ring and the next segment need
            # the encoder's, so restore them (FACTS).
            pkt.pts, pkt.dts, pkt.time_base = saved[:3]
            if saved[3] is not None:
                pkt.stream = saved[3]

    def _seal(self, seg: _Segment) -> None:
        if seg is self.prev:
            self.prev = None
        if seg is self.cur:
            self.cur = None
            self.finished = self.stopping
        seg.container.close()  # writes the last fragment
        fsync_path(seg.path)
        first = seg.start
        last = (seg.vlast + 1) / self.fps
        pre = max(0, min(round(self.trigger - first), round(last - first), MAX_PRE_EVENT_S))
        audio = None
        if seg.astream is not None:
            audio = {"codec": "aac", "rate": self.encoders.rate, "channels": self.encoders.channels}
        segment = SegmentFile(
            path=seg.path,
            recording=self.recording_id,
            index=seg.index,
            start=self.t0 + timedelta(seconds=first),
            end=self.t0 + timedelta(seconds=last),
            media={
                "container": "mp4-fragmented",
                "duration_ms": round((last - first) * 1000),
                "video": {
                    "codec": "h264",
                    "width": self.width,
                    "height": self.height,
                    "fps": f"{self.fps}/1",
                },
                "audio": audio,
            },
            pre_event_s=pre,
            frames=seg.frames,
        )
        self.sealed.append(segment)
        self.sink.segment_sealed(segment)
