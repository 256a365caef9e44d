"""Audio sources: an ALSA microphone, a synthetic tone, or none.

Every source hands out float-planar AudioFrames of 1024 samples (what the AAC encoder takes), their
``pts`` counted in samples from the first video frame, so audio and video share one timeline.
The pipeline asks for the audio up to the end of each video frame; a source never blocks it.
"""

from __future__ import annotations

import math
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

from edge.capture.errors import CaptureError
from edge.config import AudioConfig

FRAME_SAMPLES = 1024  # AAC-LC frame length


def _layout(channels: int) -> str:
    return "mono" if channels == 1 else "stereo"


class AudioSource(ABC):
    """What the pipeline takes audio from."""

    rate: int
    channels: int

    def begin(self) -> None:  # noqa: B027 — an optional hook; most sources need no start signal
        """The first video frame has arrived: sample 0 of the timeline is now."""

    @abstractmethod
    def frames_until(self, seconds: float) -> Iterator[Any]:
        """The frames ending at or before ``seconds`` on the timeline that are available now."""

    def close(self) -> None:  # noqa: B027 — an optional hook; nothing to release by default
        """Release the device."""


class SineSource(AudioSource):
    """A synthetic tone (CI has no microphone); generated on demand, so it is never late."""

    def __init__(self, *, rate: int, channels: int, frequency_hz: int) -> None:
        self.rate, self.channels, self.frequency_hz = rate, channels, frequency_hz
        self.samples = 0

    def frames_until(self, seconds: float) -> Iterator[Any]:
        """Whole frames of tone up to ``seconds``."""
        import av
        import numpy as np

        while self.samples + FRAME_SAMPLES <= seconds * self.rate:
            # From the absolute sample index, so the phase runs on across frames.
            n = np.arange(self.samples, self.samples + FRAME_SAMPLES, dtype=np.float64)
            wave = (0.2 * np.sin(2 * math.pi * self.frequency_hz * n / self.rate)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(
                np.tile(wave, (self.channels, 1)), format="fltp", layout=_layout(self.channels)
            )
            frame.sample_rate = self.rate
            frame.pts = self.samples
            self.samples += FRAME_SAMPLES
            yield frame


class AlsaMicrophone(AudioSource):
    """An ALSA capture device, read and resampled on its own thread.

    A/V alignment: sample 0 is the first sample read after the first video frame arrived, so audio
    and video line up to within the device's buffering (tens of milliseconds); the two clocks are
    not otherwise reconciled.
    """

    def __init__(self, *, device: str, rate: int, channels: int) -> None:
        import av

        self.rate, self.channels = rate, channels
        try:
            self._container = av.open(
                device, format="alsa", options={"sample_rate": str(rate), "channels": str(channels)}
            )
        except (av.error.FFmpegError, OSError) as exc:
            raise CaptureError(f"cannot open the microphone (ALSA device {device!r}): {exc}") from exc
        self._resampler = av.AudioResampler(
            format="fltp", layout=_layout(channels), rate=rate, frame_size=FRAME_SAMPLES
        )
        # About ten seconds of frames; beyond that the pipeline is stuck and audio is dropped.
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=10 * rate // FRAME_SAMPLES)
        self._stop = threading.Event()
        self._begun = threading.Event()
        self.samples = 0
        self.dropped_frames = 0
        self._held: Any = None
        self._thread = threading.Thread(target=self._read, name="capture-audio", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for raw in self._container.decode(audio=0):
                if self._stop.is_set():
                    return
                for frame in self._resampler.resample(raw):
                    if not self._begun.is_set():
                        continue  # before the first video frame: not on the timeline
                    try:
                        self._queue.put_nowait(frame)
                    except queue.Full:
                        self.dropped_frames += 1
        except BaseException as exc:  # handed to the pipeline thread
            if not self._stop.is_set():
                self._queue.put(exc)

    def begin(self) -> None:
        """Start the timeline at this moment."""
        self._begun.set()

    def frames_until(self, seconds: float) -> Iterator[Any]:
        """Whatever the device has delivered, up to ``seconds``, without waiting for more."""
        while True:
            item = self._held
            self._held = None
            if item is None:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    return
            if isinstance(item, BaseException):
                raise CaptureError(f"the microphone failed: {item}") from item
            if self.samples + item.samples > seconds * self.rate:
                self._held = item  # ahead of the video: keep it for the next video frame
                return
            item.pts = self.samples
            self.samples += item.samples
            yield item

    def close(self) -> None:
        """Stop reading and release the device."""
        self._stop.set()
        self._thread.join(timeout=2)
        if not self._thread.is_alive():
            self._container.close()


def open_audio_source(audio: AudioConfig) -> AudioSource | None:
    """The configured microphone or stand-in, opened; None for no audio."""
    src = audio.source
    if src.type == "none":
        return None
    if src.type == "synthetic":
        return SineSource(rate=audio.rate, channels=audio.channels, frequency_hz=src.frequency_hz)
    return AlsaMicrophone(device=src.device, rate=audio.rate, channels=audio.channels)
