"""Frame and sample sources: V4L2 camera, Pi camera, a file replayed as if live, a synthetic pattern;
ALSA microphone, a synthetic tone, or none. Only the camera and microphone are ever simulated.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from edge.capture.errors import CaptureError
from edge.config import AudioConfig, VideoConfig


def video_frames(video: VideoConfig) -> Iterator[Any]:
    """Frames from the configured source, as yuv420p VideoFrames of the configured size."""
    import av

    src = video.source
    size = f"{video.width}x{video.height}"
    if src.type == "picamera2":
        try:
            import picamera2  # noqa: F401  (only on a Pi with the camera stack)
        except ImportError:
            raise CaptureError(
                "video.source picamera2 was chosen but picamera2 is not installed on this board"
            ) from None
        raise CaptureError(
            "the picamera2 source needs the Pi camera stack; use v4l2 (libcamera's v4l2 compat) meanwhile"
        )
    loop = src.type == "file" and src.loop
    while True:
        try:
            if src.type == "synthetic":
                container = av.open(f"{src.pattern}=size={size}:rate={video.fps}", format="lavfi")
            elif src.type == "file":
                container = av.open(str(src.path))
            else:  # v4l2
                options = {"video_size": size, "framerate": str(video.fps)}
                if src.pixel_format:
                    options["input_format"] = src.pixel_format
                container = av.open(str(src.device), format="video4linux2", options=options)
        except (av.error.FFmpegError, OSError) as exc:
            raise CaptureError(f"cannot open the video source {src.type}: {exc}") from exc
        with container:
            for frame in container.decode(video=0):
                if (
                    frame.format.name != "yuv420p"
                    or frame.width != video.width
                    or frame.height != video.height
                ):
                    frame = frame.reformat(width=video.width, height=video.height, format="yuv420p")
                yield frame
        if not loop:
            return


def prefetched(frames: Iterator[Any], depth: int = 4) -> Iterator[Any]:
    """Read frames on their own thread, a few ahead: decoding overlaps encoding (both release the GIL)."""
    import queue
    import threading

    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def reader() -> None:
        try:
            for f in frames:
                while not stop.is_set():
                    try:
                        q.put(f, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # handed to the consumer, which raises it
            q.put(exc)

    t = threading.Thread(target=reader, name="capture-source", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


class SineSource:
    """A synthetic tone in 1024-sample float planar frames (stands in for the microphone)."""

    def __init__(self, *, rate: int, channels: int, frequency_hz: int) -> None:
        self.rate, self.channels, self.freq = rate, channels, frequency_hz
        self.samples = 0

    def frames_until(self, seconds: float) -> Iterator[Any]:
        """AudioFrames covering the timeline up to ``seconds`` from the start."""
        import av
        import numpy as np

        layout = "mono" if self.channels == 1 else "stereo"
        while self.samples + 1024 <= seconds * self.rate:
            t = (np.arange(self.samples, self.samples + 1024) / self.rate).astype(np.float32)
            wave = (0.2 * np.sin(2 * math.pi * self.freq * t)).astype(np.float32)
            data = np.tile(wave, (self.channels, 1))
            frame = av.AudioFrame.from_ndarray(data, format="fltp", layout=layout)
            frame.sample_rate = self.rate
            frame.pts = self.samples
            self.samples += 1024
            yield frame


class AlsaSource:
    """Samples from an ALSA capture device, resampled to the encoder's format (read on the capture thread)."""

    def __init__(self, *, device: str, rate: int, channels: int) -> None:
        import av

        try:
            self.container = av.open(
                device, format="alsa", options={"sample_rate": str(rate), "channels": str(channels)}
            )
        except (av.error.FFmpegError, OSError) as exc:
            raise CaptureError(f"cannot open the ALSA device {device}: {exc}") from exc
        layout = "mono" if channels == 1 else "stereo"
        self.resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate, frame_size=1024)
        self.samples = 0
        self._frames = self.container.decode(audio=0)

    def frames_until(self, seconds: float) -> Iterator[Any]:
        """Whatever the device has delivered, re-timed on the capture timeline."""
        rate = self.resampler.rate
        while self.samples + 1024 <= seconds * rate:
            frame = next(self._frames)
            for out in self.resampler.resample(frame):
                out.pts = self.samples
                self.samples += out.samples
                yield out


def audio_source(audio: AudioConfig) -> SineSource | AlsaSource | None:
    """The configured audio source, or None."""
    src = audio.source
    if src.type == "none":
        return None
    if src.type == "synthetic":
        return SineSource(rate=audio.rate, channels=audio.channels, frequency_hz=src.frequency_hz)
    return AlsaSource(device=src.device, rate=audio.rate, channels=audio.channels)
