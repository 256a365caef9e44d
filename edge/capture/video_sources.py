"""Video sources: a synthetic pattern, a file replayed as if live, a V4L2 camera, the Pi camera.

Each source yields writable yuv420p frames of the configured size, each with its capture time in
seconds on the source's own clock since its first frame. Live sources (a camera; a synthetic or file
source in real time) are paced by a clock; in fast mode (``realtime=False``) synthetic and file
sources go as fast as the pipeline takes their frames and their times are exactly ``i / fps``.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from edge.capture.errors import CaptureError
from edge.config import FileSource, VideoConfig


@dataclass(slots=True)
class CapturedFrame:
    """One picture from a source: a writable yuv420p VideoFrame and its capture time."""

    frame: Any
    t: float  # seconds since the source's first frame, on the source's clock
    slot: int = 0  # its place on the pipeline's timeline: round(t × fps), set by the feed


class VideoSource(ABC):
    """What the pipeline reads frames from; ``frames()`` runs on the feed's own thread."""

    live: bool = True  # paced by a clock: the feed drops a frame when the pipeline is behind

    @abstractmethod
    def frames(self) -> Iterator[CapturedFrame]:
        """Frames as they are captured, until the source ends."""

    def close(self) -> None:  # noqa: B027 — an optional hook; nothing to release by default
        """Release the device or file."""


def _needs_reformat(frame: Any, video: VideoConfig) -> bool:
    return bool(frame.format.name != "yuv420p" or frame.width != video.width or frame.height != video.height)


def fit(frame: Any, video: VideoConfig) -> Any:
    """The frame as yuv420p of the configured size, safe to draw into."""
    if _needs_reformat(frame, video):
        return frame.reformat(width=video.width, height=video.height, format="yuv420p")
    # A decoder may still hold this picture as a reference: drawing into it would smear the stamp
    # into later frames. make_writable copies only when the buffer is shared.
    frame.make_writable()
    return frame


class Pacer:
    """Hands out frame slots on the wall clock, skipping the slots a late pipeline missed."""

    def __init__(self, fps: int) -> None:
        self.fps = fps
        self.start: float | None = None
        self.next_slot = 0

    def wait(self) -> int:
        """Sleep until the next slot is due; returns its index."""
        now = time.monotonic()
        if self.start is None:
            self.start = now
        due = self.start + self.next_slot / self.fps
        if now > due + 1 / self.fps:
            # More than a frame late: the frames in between were never taken, as a camera drops them.
            self.next_slot = math.floor((now - self.start) * self.fps)
        elif now < due:
            time.sleep(due - now)
        slot = self.next_slot
        self.next_slot += 1
        return slot


class SyntheticVideo(VideoSource):
    """An FFmpeg lavfi test pattern (CI has no camera)."""

    def __init__(self, video: VideoConfig, *, realtime: bool) -> None:
        import av

        assert video.source.type == "synthetic"
        self.video, self.live = video, realtime
        spec = f"{video.source.pattern}=size={video.width}x{video.height}:rate={video.fps}"
        try:
            self._container = av.open(spec, format="lavfi")
        except av.error.FFmpegError as exc:
            raise CaptureError(f"cannot open the synthetic video source {spec}: {exc}") from exc

    def frames(self) -> Iterator[CapturedFrame]:
        """The pattern, one frame per slot (paced when live)."""
        pacer = Pacer(self.video.fps) if self.live else None
        for i, frame in enumerate(self._container.decode(video=0)):
            slot = pacer.wait() if pacer is not None else i
            yield CapturedFrame(fit(frame, self.video), slot / self.video.fps)

    def close(self) -> None:
        """Close the lavfi graph."""
        self._container.close()


class FileVideo(VideoSource):
    """A video file replayed as if live, at the configured rate (demos, field-trial reconstructions).

    Slot ``k`` shows the file's last picture due by ``(k + ½) / fps``: a file recorded at another rate
    plays at its own speed, with pictures repeated or skipped, as a camera at the configured rate would.
    """

    def __init__(self, video: VideoConfig, *, realtime: bool) -> None:
        assert isinstance(video.source, FileSource)
        self.video, self.live, self.source = video, realtime, video.source
        self._container = self._open()
        self._offset = 0.0  # seconds added to this pass's frame times (loop)

    def _open(self) -> Any:
        import av

        try:
            container = av.open(str(self.source.path))
        except (av.error.FFmpegError, OSError) as exc:
            raise CaptureError(f"cannot open the video file {self.source.path}: {exc}") from exc
        if not container.streams.video:
            container.close()
            raise CaptureError(f"{self.source.path} holds no video stream")
        return container

    def _decoded(self) -> Iterator[tuple[Any, float]]:
        # The file's pictures with their times, pass after pass when looping.
        while True:
            stream = self._container.streams.video[0]
            step = 1 / float(stream.average_rate or self.video.fps)
            first: float | None = None
            last = 0.0
            for i, frame in enumerate(self._container.decode(stream)):
                ft = frame.time if frame.time is not None else i * step
                first = ft if first is None else first
                last = ft - first
                yield frame, self._offset + last
            if first is None:
                raise CaptureError(f"{self.source.path} has no picture to replay")
            if not self.source.loop:
                return
            self._offset += last + step
            self._container.close()
            self._container = self._open()

    def frames(self) -> Iterator[CapturedFrame]:
        """One picture per slot of the configured rate."""
        fps = self.video.fps
        pacer = Pacer(fps) if self.live else None
        pictures = self._decoded()
        current, shown = None, False
        upcoming = next(pictures, None)
        slot = 0
        while True:
            if pacer is not None:
                slot = pacer.wait()
            # Advance to the last picture due at this slot (half a frame of tolerance for rounding).
            while upcoming is not None and upcoming[1] <= (slot + 0.5) / fps:
                current, shown = upcoming[0], False
                upcoming = next(pictures, None)
            if current is None or (upcoming is None and shown):
                return  # the file ended (no loop) and its last picture was shown
            shown = True
            yield CapturedFrame(self._private(current), slot / fps)
            slot += 1

    def _private(self, picture: Any) -> Any:
        # The stamp is drawn in place, and a picture may be shown twice: never hand out the decoder's.
        import av

        if _needs_reformat(picture, self.video):
            return picture.reformat(width=self.video.width, height=self.video.height, format="yuv420p")
        return av.VideoFrame.from_ndarray(picture.to_ndarray(), format="yuv420p")

    def close(self) -> None:
        """Close the file."""
        self._container.close()


class V4l2Video(VideoSource):
    """A V4L2 camera (USB, or CSI through libcamera's V4L2 compatibility)."""

    def __init__(self, video: VideoConfig) -> None:
        import av

        assert video.source.type == "v4l2"
        self.video = video
        options = {"video_size": f"{video.width}x{video.height}", "framerate": str(video.fps)}
        if video.source.pixel_format:
            options["input_format"] = video.source.pixel_format
        try:
            self._container = av.open(str(video.source.device), format="video4linux2", options=options)
        except (av.error.FFmpegError, OSError) as exc:
            raise CaptureError(
                f"cannot open the camera {video.source.device} at {options['video_size']}@{video.fps}: {exc}"
            ) from exc

    def frames(self) -> Iterator[CapturedFrame]:
        """Frames timed by the driver's timestamps (so a dropped frame shows as a gap)."""
        first: float | None = None
        for frame in self._container.decode(video=0):
            t = frame.time if frame.time is not None else time.monotonic()
            first = t if first is None else first
            yield CapturedFrame(fit(frame, self.video), t - first)

    def close(self) -> None:
        """Release the camera."""
        self._container.close()


class Picamera2Video(VideoSource):
    """A Raspberry Pi camera through picamera2 (imported only when chosen; absent off the Pi)."""

    def __init__(self, video: VideoConfig) -> None:
        assert video.source.type == "picamera2"
        try:
            from picamera2 import Picamera2  # only on a Pi with the libcamera stack
        except ImportError:
            raise CaptureError(
                "video.source is picamera2, but the picamera2 package is not installed on this board; "
                'install python3-picamera2 (Raspberry Pi OS) or use type = "v4l2"'
            ) from None
        self.video = video
        self._cam = Picamera2(video.source.camera_num)
        frame_us = round(1_000_000 / video.fps)
        config = self._cam.create_video_configuration(
            main={"size": (video.width, video.height), "format": "YUV420"},
            controls={"FrameDurationLimits": (frame_us, frame_us)},
        )
        self._cam.configure(config)
        self._cam.start()

    def frames(self) -> Iterator[CapturedFrame]:
        """Frames timed by the sensor's timestamps."""
        import av

        w, h = self.video.width, self.video.height
        first: int | None = None
        while True:
            request = self._cam.capture_request()
            try:
                ns = int(request.get_metadata().get("SensorTimestamp") or time.monotonic_ns())
                array = request.make_array("main")
            finally:
                request.release()
            if array.shape != (h * 3 // 2, w):
                raise CaptureError(
                    f"the Pi camera gave YUV420 of shape {array.shape} for {w}x{h}; "
                    "use a width that is a multiple of 64 (no row padding)"
                )
            first = ns if first is None else first
            yield CapturedFrame(av.VideoFrame.from_ndarray(array, format="yuv420p"), (ns - first) / 1e9)

    def close(self) -> None:
        """Stop and release the camera."""
        self._cam.stop()
        self._cam.close()


def open_video_source(video: VideoConfig, *, realtime: bool) -> VideoSource:
    """The configured camera or stand-in, opened (a missing device is a CaptureError here, not later)."""
    kind = video.source.type
    if kind == "synthetic":
        return SyntheticVideo(video, realtime=realtime)
    if kind == "file":
        return FileVideo(video, realtime=realtime)
    if kind == "v4l2":
        return V4l2Video(video)
    return Picamera2Video(video)
