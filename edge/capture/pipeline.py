"""The capture pipeline: source → stamp → H.264/AAC → pre-event ring or fMP4 segments.

``CapturePipeline`` is what the recorder agent holds: it opens the sources and encoders, runs the
capture thread (session.py) and turns the buttons into requests for it. Every method may be called
from any thread (the control socket's, a timer's); an error in the capture thread is kept and raised
by every later call, so it cannot go unnoticed.

The timeline: frame slot ``n`` is at ``n / fps`` seconds after the first frame, whose UTC time is the
clock read when it arrived (``t0``); a frame's stamp and a segment's start/end are ``t0`` plus that.
Live sources are slotted by their own timestamps, so a frame the camera or the feed dropped leaves a
gap in the slots (counted in ``frames_dropped``) instead of shifting every later frame's time. In fast
mode (``realtime=False``) slots are simply consecutive and the footage runs ahead of the wall clock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.capture.api import SegmentFile, SegmentSink, StampProvider
from edge.capture.audio_sources import AudioSource, open_audio_source
from edge.capture.encoder import Encoders
from edge.capture.errors import CaptureError
from edge.capture.feed import FrameFeed
from edge.capture.session import CaptureSession, Controls, RecordingRequest, SessionSettings
from edge.capture.video_sources import VideoSource, open_video_source
from edge.config import AudioConfig, OverlayConfig, PreEventConfig, VideoConfig

_EPS = 1e-9


def _utc_now() -> datetime:
    return datetime.now(UTC)


class CapturePipeline:
    """Captures continuously into the pre-event ring; records into segments between start and stop."""

    def __init__(
        self,
        *,
        video: VideoConfig,
        audio: AudioConfig,
        pre_event: PreEventConfig,
        overlay: OverlayConfig,
        segment_seconds: int,
        work_dir: Path,
        stamp: StampProvider,
        sink: SegmentSink,
        realtime: bool = True,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if segment_seconds % video.keyframe_interval_s:
            raise CaptureError(
                f"segment_seconds ({segment_seconds}) must be a multiple of keyframe_interval_s "
                f"({video.keyframe_interval_s}): segments are cut at keyframes"
            )
        self.video, self.audio, self.realtime = video, audio, realtime
        self.work_dir = work_dir
        self.fps = video.fps
        self._settings = SessionSettings(
            video=video,
            pre_event=pre_event,
            overlay=overlay,
            segment_seconds=segment_seconds,
            work_dir=work_dir,
            stamp=stamp,
            sink=sink,
            clock=clock,
        )
        self._ctl = Controls()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- state ---------------------------------------------------------------------------------------

    @property
    def recording(self) -> bool:
        """True from start_recording until the last segment of the recording has been sealed."""
        with self._ctl.cond:
            return self._ctl.current is not None or bool(self._ctl.closing)

    @property
    def recording_id(self) -> str | None:
        """The id of the recording the buttons can still stop, if any."""
        with self._ctl.cond:
            current = self._ctl.current
            return current.recording_id if current is not None else None

    @property
    def frames_captured(self) -> int:
        """Frames encoded so far (recording or not)."""
        return self._ctl.frames

    @property
    def frames_dropped(self) -> int:
        """Frame slots of the nominal rate with no picture: dropped by the camera, or by us being behind."""
        return self._ctl.dropped

    @property
    def media_time(self) -> float:
        """Seconds of footage captured so far (the end of the last frame on the timeline)."""
        return self._ctl.media_time

    @property
    def t0(self) -> datetime | None:
        """UTC of the first frame (the timeline's zero), once it has arrived."""
        return self._ctl.t0

    @property
    def last_trigger(self) -> datetime | None:
        """UTC of the frame at which the last recording began (the press of the button)."""
        return self._ctl.last_trigger

    @property
    def error(self) -> BaseException | None:
        """The failure that stopped the capture thread, if any (also raised by every call)."""
        return self._error

    @property
    def packet_tap(self) -> Callable[[str, Any], None] | None:
        """Tests and benchmarks: called with ("v" | "a", av.Packet) for every packet the encoders emit."""
        return self._ctl.packet_tap

    @packet_tap.setter
    def packet_tap(self, tap: Callable[[str, Any], None] | None) -> None:
        self._ctl.packet_tap = tap

    # -- the agent's side ----------------------------------------------------------------------------

    def start(self) -> None:
        """Open the sources and encoders (errors raise here) and start capturing; the ring fills."""
        if self._thread is not None:
            raise CaptureError("the capture pipeline was started already")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        source = open_video_source(self.video, realtime=self.realtime)
        audio: AudioSource | None = None
        try:
            audio = open_audio_source(self.audio)
            encoders = Encoders(self.video, self.audio)
        except BaseException:
            if audio is not None:
                audio.close()
            source.close()
            raise
        self._ctl.running = True
        self._thread = threading.Thread(
            target=self._run, args=(source, audio, encoders), name="capture", daemon=True
        )
        self._thread.start()

    def start_recording(self, recording_id: str) -> None:
        """Begin a recording at the next frame: the pre-event ring becomes its start."""
        if not recording_id or "/" in recording_id or recording_id.startswith("."):
            raise CaptureError(f"recording id {recording_id!r} cannot name a file")
        if next(self.work_dir.glob(f"{recording_id}-*.mp4"), None) is not None:
            # Footage is written once: refuse here, before the capture thread would have to.
            raise CaptureError(
                f"recording id {recording_id!r} was used already (its segments are in {self.work_dir})"
            )
        with self._ctl.cond:
            self._raise()
            if not self._ctl.running:
                raise CaptureError("the capture pipeline is not running")
            if self._ctl.current is not None:
                raise CaptureError(f"already recording ({self._ctl.current.recording_id})")
            self._ctl.current = RecordingRequest(recording_id)

    def stop_recording(self, *, after: float | None = None, timeout: float = 60.0) -> list[SegmentFile]:
        """End the recording now, or after ``after`` seconds of footage from the trigger.

        Returns once its last segment has been sealed and handed to the sink (the segments, in order).
        """
        with self._ctl.cond:
            self._raise()
            req = self._ctl.current
            if req is None:
                raise CaptureError("not recording")
            if after is None:
                req.stop_now = True
            else:
                req.stop_after = after
                timeout = max(timeout, after * 10)
        if not req.sealed.wait(timeout):
            self._raise()
            raise CaptureError(f"the last segment of {req.recording_id} was not sealed within {timeout:g} s")
        self._raise()
        return list(req.segments)

    def wait_media(self, seconds: float, timeout: float | None = None) -> None:
        """Block until ``seconds`` more footage have been captured (wall time live, faster in fast mode)."""
        ctl = self._ctl
        limit = timeout if timeout is not None else max(60.0, seconds * 10)
        with ctl.cond:
            target = ctl.media_time + seconds
            done = ctl.cond.wait_for(
                lambda: ctl.media_time >= target - _EPS or not ctl.running, timeout=limit
            )
            self._raise()
            if not done:
                raise CaptureError(f"capture stalled: {seconds:g} s of footage did not arrive in {limit:g} s")
            if ctl.media_time < target - _EPS:
                raise CaptureError(f"the video source ended after {ctl.media_time:.2f} s of footage")

    def close(self, timeout: float = 30.0) -> None:
        """Stop capturing; a recording still running is stopped and sealed first. Raises a thread error."""
        with self._ctl.cond:
            self._ctl.close_requested = True
            self._ctl.cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise CaptureError(f"the capture thread did not stop within {timeout:g} s")
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise CaptureError(f"capture failed: {self._error}") from self._error

    # -- the capture thread --------------------------------------------------------------------------

    def _run(self, source: VideoSource, audio: AudioSource | None, encoders: Encoders) -> None:
        session = CaptureSession(controls=self._ctl, settings=self._settings, audio=audio, encoders=encoders)
        feed = FrameFeed(source, fps=self.fps, on_first=session.first_frame, prepare=session.stamp)
        try:
            session.run(feed)
        except BaseException as exc:  # kept, and raised by the agent's next call: never lost
            self._error = exc
        finally:
            for closer in (feed.close, *([audio.close] if audio is not None else []), encoders.close):
                try:
                    closer()
                except Exception as exc:  # a failure to release is noted, not masking
                    if self._error is not None:
                        self._error.add_note(f"also, while releasing the sources: {exc}")
            ctl = self._ctl
            with ctl.cond:
                ctl.running = False
                # Whoever waits for a seal is woken: to its segments, or to the error.
                for req in [*ctl.closing, *([ctl.current] if ctl.current is not None else [])]:
                    req.sealed.set()
                ctl.closing.clear()
                ctl.current = None
                ctl.cond.notify_all()
