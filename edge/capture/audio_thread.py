"""Audio taken from its source and AAC-encoded on a thread of its own, in step with the video.

The capture thread says how far the video has got (``advance``) and collects what is ready
(``drain``), never waiting: AAC encoding then overlaps x264 instead of adding to it. The segmenter
places audio by its time, not by when it arrives, so a packet that turns up a frame late still lands
in the right segment (a segment stays open until the audio has passed its end).
"""

from __future__ import annotations

import queue
import threading

from edge.capture.audio_sources import AudioSource
from edge.capture.encoder import EncodedPacket, Encoders
from edge.capture.errors import CaptureError

MAX_LAG_S = 0.5  # media seconds the audio may trail the video (well inside the segmenter's 2 s grace)


class AudioThread:
    """Encodes the audio source up to the media time the video has reached."""

    def __init__(self, source: AudioSource, encoders: Encoders) -> None:
        self.source, self.encoders = source, encoders
        self._out: queue.SimpleQueue[EncodedPacket] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._target = 0.0
        self._done = 0.0
        self._finishing = False
        self._stopped = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="capture-audio", daemon=True)
        self._thread.start()

    def advance(self, seconds: float) -> None:
        """Let the audio be encoded up to ``seconds`` on the capture timeline.

        Waits only if the audio is more than ``MAX_LAG_S`` behind, which happens in fast mode, where
        nothing else holds the video back: a segment must never be sealed before its audio is in.
        """
        with self._cond:
            self._target = max(self._target, seconds)
            self._cond.notify_all()
            self._cond.wait_for(
                lambda: (
                    self._done >= seconds - MAX_LAG_S
                    or self._error is not None
                    or not self._thread.is_alive()
                ),
                timeout=10,
            )

    def drain(self) -> list[EncodedPacket]:
        """The packets encoded so far, in order (never blocks). Raises the thread's error."""
        if self._error is not None:
            raise CaptureError(f"audio capture failed: {self._error}") from self._error
        out = []
        while True:
            try:
                out.append(self._out.get_nowait())
            except queue.Empty:
                return out

    def finish(self, timeout: float = 10.0) -> list[EncodedPacket]:
        """Encode up to the last target, flush the encoder's tail, stop; returns what was left."""
        with self._cond:
            self._finishing = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise CaptureError(f"the audio encoder did not finish within {timeout:g} s")
        return self.drain()

    def close(self) -> None:
        """Stop without flushing (after an error)."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._stopped or self._finishing or self._target > self._done)
                    if self._stopped:
                        return
                    target, finishing = self._target, self._finishing
                for frame in self.source.frames_until(target):
                    for p in self.encoders.audio(frame):
                        self._out.put(p)
                with self._cond:
                    self._done = target
                    self._cond.notify_all()
                if finishing:
                    for p in self.encoders.audio(None):  # the encoder's tail
                        self._out.put(p)
                    return
        except BaseException as exc:  # raised on the capture thread by the next drain()
            with self._cond:
                self._error = exc
                self._cond.notify_all()
