"""The capture thread: frames in, packets routed to the pre-event ring or to a recording's segments.

It works in frame order, so video and audio packets reach the segmenter in a known order. The
buttons (start/stop, from any thread) are requests in ``Controls`` that take effect here, at the next
frame boundary. The video source is read, and the stamp drawn, a few frames ahead on the feed's
thread (feed.py), in parallel with encoding.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from edge.capture.api import SegmentFile, SegmentSink, StampProvider
from edge.capture.audio_sources import AudioSource
from edge.capture.audio_thread import AudioThread
from edge.capture.encoder import EncodedPacket, Encoders
from edge.capture.errors import CaptureError
from edge.capture.feed import FrameFeed
from edge.capture.overlay import Overlay, luma_plane, stamp_lines
from edge.capture.ring import PreEventRing
from edge.capture.segmenter import Recording
from edge.capture.video_sources import CapturedFrame
from edge.config import OverlayConfig, PreEventConfig, VideoConfig

_EPS = 1e-9


@dataclass
class RecordingRequest:
    """One recording as the buttons see it: asked for, then stopped, then sealed."""

    recording_id: str
    stop_now: bool = False
    stop_after: float | None = None  # seconds of footage after the trigger, then stop
    recording: Recording | None = None  # set by the capture thread at the trigger
    sealed: threading.Event = field(default_factory=threading.Event)
    segments: list[SegmentFile] = field(default_factory=list)


@dataclass
class Controls:
    """What the buttons and the capture thread share; fields change only under ``cond``."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    current: RecordingRequest | None = None  # the recording the buttons can still stop
    closing: list[RecordingRequest] = field(default_factory=list)  # stopped, last segment not sealed
    close_requested: bool = False
    running: bool = False
    frames: int = 0
    dropped: int = 0
    media_time: float = 0.0
    t0: datetime | None = None  # UTC of the first frame
    last_trigger: datetime | None = None
    packet_tap: Callable[[str, Any], None] | None = None


@dataclass(frozen=True)
class SessionSettings:
    """The configuration the capture thread works with."""

    video: VideoConfig
    pre_event: PreEventConfig
    overlay: OverlayConfig
    segment_seconds: int
    work_dir: Path
    stamp: StampProvider
    sink: SegmentSink
    clock: Callable[[], datetime]


class CaptureSession:
    """The capture thread's state from the first frame to the last."""

    def __init__(
        self,
        *,
        controls: Controls,
        settings: SessionSettings,
        audio: AudioSource | None,
        encoders: Encoders,
    ) -> None:
        self.ctl, self.cfg, self.audio, self.encoders = controls, settings, audio, encoders
        self.fps = settings.video.fps
        pre = settings.pre_event
        self.ring = PreEventRing(seconds=pre.seconds, include_audio=pre.include_audio)
        self.active: RecordingRequest | None = None
        self.closing: list[RecordingRequest] = []
        self.overlay: Overlay | None = None
        if settings.overlay.enabled:
            self.overlay = Overlay(
                width=settings.video.width,
                height=settings.video.height,
                font_scale=settings.overlay.font_scale,
                thickness=settings.overlay.thickness,
                position=settings.overlay.position,
            )
        self.lines: list[str] = []
        self.stamp_second: datetime | None = None
        self.force_key = False

    def run(self, feed: FrameFeed) -> None:
        """Capture until the source ends or the pipeline is closed, then seal what is open."""
        ctl = self.ctl
        audio = AudioThread(self.audio, self.encoders) if self.audio is not None else None
        feed.start()
        last_slot = -1
        t = 0.0
        try:
            while True:
                with ctl.cond:
                    if ctl.close_requested:
                        break
                captured = feed.get()
                if captured is None:
                    break
                slot = captured.slot
                if slot <= last_slot:
                    ctl.dropped += 1  # a second picture for the same slot
                    continue
                ctl.dropped += slot - last_slot - 1
                last_slot, t = slot, slot / self.fps
                self._buttons(t)
                keyframe, self.force_key = self.force_key, False
                packets = self.encoders.video(captured.frame, slot, keyframe=keyframe)
                if audio is not None:
                    audio.advance(t + 1 / self.fps)
                    packets += audio.drain()
                self._route(packets)
                self.ring.trim(t + 1 / self.fps)
                self._settle(t)
                with ctl.cond:
                    ctl.frames += 1
                    ctl.media_time = t + 1 / self.fps
                    ctl.cond.notify_all()
            # The end: the encoders' tails, then everything open is sealed.
            end = ctl.media_time
            self._route(self.encoders.flush_video() + (audio.finish() if audio is not None else []))
            if self.active is not None:
                self._stop(self.active, end)
        except BaseException as exc:
            if audio is not None:
                audio.close()
            self._salvage(exc)
            raise
        for req in self.closing:
            if req.recording is not None:
                req.recording.finish()
        self._settle(float("inf"))

    # -- on the feed's thread -----------------------------------------------------------------------

    def first_frame(self) -> None:
        """The first frame is here: its UTC time is the timeline's zero, for video and audio."""
        self.ctl.t0 = self.cfg.clock()
        if self.audio is not None:
            self.audio.begin()

    def stamp(self, captured: CapturedFrame) -> None:
        """Burn the stamp into a frame (on the feed's thread, in parallel with encoding)."""
        if self.overlay is None:
            return
        ctl, cfg = self.ctl, self.cfg
        assert ctl.t0 is not None
        # The frame's own time, to the second; the stamp (officer, fix, clock) is asked for once a second.
        when = (ctl.t0 + timedelta(seconds=captured.slot / self.fps)).replace(microsecond=0)
        if when != self.stamp_second:
            try:
                stamp = cfg.stamp()
            except Exception as exc:
                raise CaptureError(f"the stamp provider failed: {exc}") from exc
            self.stamp_second = when
            self.lines = stamp_lines(
                stamp, when, show_officer=cfg.overlay.show_officer, show_location=cfg.overlay.show_location
            )
        self.overlay.apply(luma_plane(captured.frame, cfg.video.width, cfg.video.height), self.lines)

    # -- on the capture thread ------------------------------------------------------------------------

    def _buttons(self, t: float) -> None:
        # Requests from other threads take effect here, between two frames.
        ctl = self.ctl
        with ctl.cond:
            req = ctl.current
        if req is not None and req.recording is None:
            self._trigger(req, t)
        active = self.active
        if active is not None and active.recording is not None:
            trigger = active.recording.trigger
            if active.stop_now or (active.stop_after is not None and t - trigger >= active.stop_after - _EPS):
                self._stop(active, t)

    def _trigger(self, req: RecordingRequest, t: float) -> None:
        ctl, cfg = self.ctl, self.cfg
        assert ctl.t0 is not None
        req.recording = Recording(
            recording_id=req.recording_id,
            work_dir=cfg.work_dir,
            encoders=self.encoders,
            width=cfg.video.width,
            height=cfg.video.height,
            segment_seconds=cfg.segment_seconds,
            t0=ctl.t0,
            trigger=t,
            sink=cfg.sink,
            audio_before_trigger=cfg.pre_event.include_audio,
        )
        self.active = req
        ctl.last_trigger = ctl.t0 + timedelta(seconds=t)
        held = self.ring.drain()
        if not held:
            self.force_key = True  # nothing buffered: the recording starts with a keyframe now
        for p in held:
            req.recording.add(p)

    def _stop(self, req: RecordingRequest, t: float) -> None:
        assert req.recording is not None
        req.recording.stop(t)
        self.active = None
        self.closing.append(req)
        with self.ctl.cond:
            if self.ctl.current is req:
                self.ctl.current = None
            self.ctl.closing.append(req)

    def _route(self, packets: list[EncodedPacket]) -> None:
        tap = self.ctl.packet_tap
        for p in packets:
            if tap is not None:
                tap(p.kind, p.packet)
            if p.kind == "a":
                for req in self.closing:
                    assert req.recording is not None
                    req.recording.add(p)
            if self.active is not None:
                assert self.active.recording is not None
                self.active.recording.add(p)
            else:
                self.ring.add(p)

    def _settle(self, now: float) -> None:
        # A segment whose audio is overdue is sealed anyway; recordings whose last segment is sealed
        # are reported to the waiting button.
        if self.active is not None and self.active.recording is not None:
            self.active.recording.tick(now)
        for req in list(self.closing):
            rec = req.recording
            assert rec is not None
            rec.tick(now)
            if rec.finished:
                self.closing.remove(req)
                req.segments = list(rec.sealed)
                with self.ctl.cond:
                    if req in self.ctl.closing:
                        self.ctl.closing.remove(req)
                req.sealed.set()

    def _salvage(self, exc: BaseException) -> None:
        # After a failure, seal what can be sealed: the footage written so far is evidence.
        reqs = [*self.closing, *([self.active] if self.active is not None else [])]
        for req in reqs:
            if req.recording is None:
                continue
            try:
                req.recording.finish()
            except Exception as again:  # noted on the error that is raised
                exc.add_note(f"sealing {req.recording_id} after the failure also failed: {again}")
            req.segments = list(req.recording.sealed)
