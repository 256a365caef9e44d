"""The capture pipeline: source → stamp → H.264/AAC → pre-event ring or fMP4 segments.

One thread does it all, in frame order, so video and audio packets reach the segmenter in a known
order. The encoders run for the whole session (the pre-event ring holds their *encoded* packets);
each segment is its own fragmented MP4 whose streams copy the encoders' parameters, so packets from
the ring are muxed into a recording without re-encoding.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

from edge.capture.api import SegmentFile, SegmentOpened, SegmentSink, StampProvider
from edge.capture.errors import CaptureError
from edge.capture.overlay import Overlay, stamp_lines
from edge.capture.sources import audio_source, prefetched, video_frames
from edge.config import AudioConfig, OverlayConfig, PreEventConfig, VideoConfig

# Fragments flushed as written: a crash loses at most the fragment being written (FACTS).
_MP4_OPTIONS = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}


@dataclass
class _Segment:
    container: Any
    vstream: Any
    astream: Any
    path: Path
    index: int
    vbase: int  # video pts of its first packet (encoder time base, 1/fps)
    abase: int | None = None
    vlast: int = -1
    frames: int = 0
    end: float | None = None  # capture-timeline seconds where the next segment takes over


@dataclass
class _Packet:
    packet: Any
    kind: str  # "v" or "a"
    t: float  # seconds on the capture timeline
    key: bool


class _AudioWorker:
    """Encodes audio on its own thread, up to the media time the video has reached (AAC overlaps x264)."""

    def __init__(self, source: Any, stream: Any, rate: int) -> None:
        import queue

        self.source, self.stream, self.rate = source, stream, rate
        self.out: queue.SimpleQueue[_Packet] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._target = 0.0
        self._done = 0.0
        self._stop = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="capture-audio", daemon=True)
        self._thread.start()

    def advance(self, seconds: float) -> None:
        """Let the worker encode up to ``seconds`` on the capture timeline."""
        with self._cond:
            self._target = seconds
            self._cond.notify()

    def drain(self) -> list[_Packet]:
        """The packets encoded so far (never blocks)."""
        if self.error is not None:
            raise CaptureError(f"audio capture failed: {self.error}") from self.error
        out = []
        while not self.out.empty():
            out.append(self.out.get_nowait())
        return out

    def close(self) -> None:
        """Stop the worker."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._stop or self._target > self._done)
                    if self._stop:
                        return
                    target = self._target
                for frame in self.source.frames_until(target):
                    for p in self.stream.encode(frame):
                        self.out.put(_Packet(p, "a", p.pts / self.rate, True))
                self._done = target
        except BaseException as exc:  # surfaced to the capture thread by drain()
            self.error = exc


@dataclass
class _Control:
    start: str | None = None
    stop: bool = False
    stop_after: float | None = None  # seconds of footage after the trigger, then stop
    sealed: threading.Event = field(default_factory=threading.Event)


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
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.video, self.audio_cfg, self.pre_event, self.overlay_cfg = video, audio, pre_event, overlay
        self.segment_seconds = segment_seconds
        self.work_dir = work_dir
        self.stamp, self.sink, self.realtime, self.clock = stamp, sink, realtime, clock
        self.fps = video.fps
        self._cond = threading.Condition()
        self._control = _Control()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._error: BaseException | None = None
        self.media_time = 0.0  # seconds captured so far
        self.frames_captured = 0
        self.frames_dropped = 0
        self.recording_id: str | None = None
        self.t0: datetime = clock()
        self.packet_tap: Callable[[str, Any], None] | None = None  # tests: see every encoded packet
        self._index = -1
        self._astream: Any = None
        self._seg: _Segment | None = None
        self._prev: _Segment | None = None
        self._closing_seg: _Segment | None = None
        self._trigger: float | None = None

    # -- the agent's side ------------------------------------------------------------------------

    @property
    def recording(self) -> bool:
        """True between start_recording and the seal of the last segment."""
        return self.recording_id is not None

    def start(self) -> None:
        """Open sources and encoders and start capturing (the pre-event ring fills)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    def start_recording(self, recording_id: str) -> None:
        """Begin a recording: the ring becomes its start."""
        with self._cond:
            self._raise()
            if self.recording_id is not None or self._control.start is not None:
                raise CaptureError("already recording")
            self._control.start = recording_id
            self._control.sealed.clear()

    def stop_recording(self, *, after: float | None = None, timeout: float = 60.0) -> None:
        """End the recording (now, or after ``after`` seconds of footage from the trigger); returns once
        its last segment is sealed and handed to the sink."""
        with self._cond:
            self._raise()
            if self.recording_id is None and self._control.start is None:
                raise CaptureError("not recording")
            if after is None:
                self._control.stop = True
            else:
                self._control.stop_after = after
                timeout = max(timeout, after * 10)
            sealed = self._control.sealed
        if not sealed.wait(timeout):
            self._raise()
            raise CaptureError("the last segment was not sealed in time")
        self._raise()

    def wait_media(self, seconds: float, timeout: float | None = None) -> None:
        """Block until ``seconds`` more of footage have been captured."""
        with self._cond:
            target = self.media_time + seconds
            limit = timeout if timeout is not None else max(60.0, seconds * 10)
            if not self._cond.wait_for(
                lambda: self.media_time >= target or self._error is not None or self._closing, timeout=limit
            ):
                raise CaptureError(f"capture stalled: {seconds:g} s of footage did not arrive in {limit:g} s")
            self._raise()

    def close(self) -> None:
        """Stop capturing (seal a recording first with stop_recording)."""
        with self._cond:
            self._closing = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise CaptureError(f"capture failed: {self._error}") from self._error

    # -- the capture thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._capture()
        except BaseException as exc:  # surfaced by the next call from the agent; never lost
            self._error = exc
            self._control.sealed.set()
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()

    def _encoders(self) -> tuple[Any, Any, Any]:
        import av

        # A throwaway MP4 container gives the encoders the global-header settings MP4 needs; its
        # streams are the templates each segment's streams copy (extradata included).
        holder = av.open(os.devnull, "w", format="mp4")
        enc = self.video.encoder
        options = (
            {"preset": "ultrafast", "tune": "zerolatency", "sc_threshold": "0"} if enc == "libx264" else {}
        )
        vs = holder.add_stream(enc, rate=self.fps, options=options)
        vs.width, vs.height, vs.pix_fmt = self.video.width, self.video.height, "yuv420p"
        vs.bit_rate = self.video.bitrate_kbps * 1000
        vs.codec_context.gop_size = self.fps * self.video.keyframe_interval_s
        a = None
        if self.audio_cfg.source.type != "none":
            a = holder.add_stream("aac", rate=self.audio_cfg.rate)
            a.layout = "mono" if self.audio_cfg.channels == 1 else "stereo"
            a.bit_rate = 64_000
        return holder, vs, a

    def _capture(self) -> None:
        import av
        import numpy as np

        holder, vs, astream = self._encoders()
        self._astream = astream
        audio = audio_source(self.audio_cfg)
        worker: _AudioWorker | None = None
        overlay = None
        if self.overlay_cfg.enabled:
            overlay = Overlay(
                width=self.video.width,
                height=self.video.height,
                font_scale=self.overlay_cfg.font_scale,
                thickness=self.overlay_cfg.thickness,
                position=self.overlay_cfg.position,
            )
        self.t0 = self.clock()
        start_mono = time.monotonic()
        tb = Fraction(1, self.fps)
        ring: deque[_Packet] = deque()
        self._seg = self._prev = self._closing_seg = None
        self._trigger = None
        recording = force_key = False
        stamp_second, lines = -1, [""]
        for n, frame in enumerate(prefetched(video_frames(self.video))):
            ctl = self._control
            if self._closing and not recording and ctl.start is None:
                break
            if self.realtime:
                delay = start_mono + n / self.fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            t = n / self.fps
            if overlay is not None:
                if int(t) != stamp_second:
                    stamp_second = int(t)
                    lines = stamp_lines(
                        self.stamp(),
                        self.t0 + timedelta(seconds=stamp_second),
                        show_officer=self.overlay_cfg.show_officer,
                        show_location=self.overlay_cfg.show_location,
                    )
                plane = frame.planes[0]
                y = np.frombuffer(plane, np.uint8).reshape(self.video.height, plane.line_size)
                overlay.apply(y[:, : self.video.width], lines)
            # Buttons take effect at frame boundaries, on this thread.
            if ctl.start is not None and not recording and self._closing_seg is None:
                self.recording_id, ctl.start, recording = ctl.start, None, True
                self._index, self._trigger = -1, t
                while ring and not (ring[0].kind == "v" and ring[0].key):
                    ring.popleft()
                if not ring:
                    force_key = True  # nothing buffered: start the recording with a keyframe now
                for p in ring:
                    self._route(p)
                ring.clear()
            elif recording and (
                ctl.stop
                or (
                    ctl.stop_after is not None
                    and self._trigger is not None
                    and t - self._trigger >= ctl.stop_after - 1e-9
                )
            ):
                recording = False
                self._stop()
            frame.pts, frame.time_base = n, tb
            frame.pict_type = av.video.frame.PictureType.I if force_key else av.video.frame.PictureType.NONE
            force_key = False
            out = [_Packet(p, "v", p.pts / self.fps, p.is_keyframe) for p in vs.encode(frame)]
            if n == 0:
                holder.start_encoding()  # fills the templates' parameters (SPS/PPS) now the encoders are open
            if worker is None and audio is not None and astream is not None:
                worker = _AudioWorker(audio, astream, self.audio_cfg.rate)  # after the encoders opened
            if worker is not None:
                worker.advance((n + 1) / self.fps)
                out += worker.drain()
            for p in out:
                if self.packet_tap is not None:
                    self.packet_tap(p.kind, p.packet)
                closing = self._closing_seg
                if closing is not None and p.kind == "a":
                    if closing.end is not None and p.t < closing.end:
                        self._mux(closing, p)
                        continue
                    self._seal(closing)
                    self._closing_seg = None
                    self._stopped()
                if recording:
                    self._route(p)
                elif p.kind == "v" or self.pre_event.include_audio:
                    ring.append(p)
            self._trim(ring, t)
            with self._cond:
                self.frames_captured = n + 1
                self.media_time = (n + 1) / self.fps
                self._cond.notify_all()
        # The source ended, or the pipeline closes: seal whatever is open.
        if worker is not None:
            worker.close()
        if recording:
            self._stop()
        if self._closing_seg is not None:
            self._seal(self._closing_seg)
            self._closing_seg = None
            self._stopped()

    def _stop(self) -> None:
        if self._prev is not None:
            self._seal(self._prev)
            self._prev = None
        seg, self._seg = self._seg, None
        if seg is None:
            self._stopped()
            return
        seg.end = (seg.vlast + 1) / self.fps
        if self._astream is None:
            self._seal(seg)
            self._stopped()
        else:
            self._closing_seg = seg  # its audio tail is still in the encoder: sealed when it has passed

    def _stopped(self) -> None:
        self.recording_id = None
        self._control.stop = False
        self._control.stop_after = None
        self._control.sealed.set()

    def _trim(self, ring: deque[_Packet], now: float) -> None:
        # Keep whole GOPs covering at least pre_event seconds; the ring always starts at a keyframe.
        keep = self.pre_event.seconds
        if keep == 0:
            ring.clear()
            return
        while True:
            second_key = next((i for i, p in enumerate(ring) if i > 0 and p.kind == "v" and p.key), None)
            if second_key is None or now - ring[second_key].t < keep:
                break
            for _ in range(second_key):
                ring.popleft()

    def _route(self, p: _Packet) -> None:
        seg = self._seg
        if p.kind == "v":
            if seg is None:
                if not p.key:
                    return  # a segment starts at a keyframe only
                seg = self._seg = self._open(p)
            elif p.key and p.t >= seg.vbase / self.fps + self.segment_seconds - 1e-6:
                if self._prev is not None:
                    self._seal(self._prev)
                seg.end = p.t
                self._prev, seg = seg, self._open(p)
                self._seg = seg
                if self._astream is None:
                    self._seal(self._prev)
                    self._prev = None
            self._mux(seg, p)
            return
        # Audio comes out of its encoder after the video of the same moment: it may belong to the
        # previous segment, which stays open until audio passes the cut (FACTS).
        prev = self._prev
        if prev is not None and prev.end is not None and p.t < prev.end:
            self._mux(prev, p)
            return
        if prev is not None:
            self._seal(prev)
            self._prev = None
        if seg is not None and p.t >= seg.vbase / self.fps - 0.05:
            self._mux(seg, p)

    def _open(self, first: _Packet) -> _Segment:
        import av

        self._index += 1
        assert self.recording_id is not None
        path = self.work_dir / f"{self.recording_id}-{self._index:04d}.mp4"
        start = self.t0 + timedelta(seconds=first.t)
        self.sink.segment_opened(
            SegmentOpened(path=path, recording=self.recording_id, index=self._index, start=start)
        )
        container = av.open(str(path), "w", format="mp4", options=_MP4_OPTIONS)
        vstream = container.add_stream_from_template(first.packet.stream)
        astream = container.add_stream_from_template(self._astream) if self._astream is not None else None
        return _Segment(
            container=container,
            vstream=vstream,
            astream=astream,
            path=path,
            index=self._index,
            vbase=first.packet.pts,
        )

    def _mux(self, seg: _Segment, p: _Packet) -> None:
        pkt = p.packet
        if p.kind == "v":
            stream, base = seg.vstream, seg.vbase
            seg.vlast = pkt.pts
            seg.frames += 1
        else:
            if seg.astream is None:
                return
            if seg.abase is None:
                seg.abase = pkt.pts
            stream, base = seg.astream, seg.abase
        saved = (pkt.pts, pkt.dts, pkt.time_base, pkt.stream)
        # Each segment is self-contained: its timeline starts at zero.
        pkt.pts, pkt.dts = pkt.pts - base, pkt.dts - base
        pkt.stream = stream
        seg.container.mux(pkt)
        # mux() rewrites the packet's timing; restore it (the ring and tests still look at it).
        pkt.pts, pkt.dts, pkt.time_base, pkt.stream = saved

    def _seal(self, seg: _Segment) -> None:
        trigger = self._trigger
        seg.container.close()
        fd = os.open(seg.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        first = seg.vbase / self.fps
        last = (seg.vlast + 1) / self.fps
        pre = 0 if trigger is None else max(0, min(round(trigger - first), round(last - first)))
        media: dict[str, Any] = {
            "container": "mp4-fragmented",
            "duration_ms": round((last - first) * 1000),
            "video": {
                "codec": "h264",
                "width": self.video.width,
                "height": self.video.height,
                "fps": f"{self.fps}/1",
            },
            "audio": (
                None
                if seg.astream is None
                else {"codec": "aac", "rate": self.audio_cfg.rate, "channels": self.audio_cfg.channels}
            ),
        }
        assert self.recording_id is not None
        self.sink.segment_sealed(
            SegmentFile(
                path=seg.path,
                recording=self.recording_id,
                index=seg.index,
                start=self.t0 + timedelta(seconds=first),
                end=self.t0 + timedelta(seconds=last),
                media=media,
                pre_event_s=min(120, pre),
                frames=seg.frames,
            )
        )
