"""Reading a video source on a thread of its own, a few frames ahead of the encoder.

Decoding or generating a picture, and drawing the stamp into it (``prepare``), then overlap with
encoding the previous one: the encoder thread has the CPU to itself for what only it can do.
A live source never waits for the pipeline: when the queue is full the new frame is dropped, as a
camera driver drops frames nobody collected, and the gap shows in the frame times. In fast mode the
source waits instead, so no frame is lost and the run is reproducible.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from edge.capture.errors import CaptureError
from edge.capture.video_sources import CapturedFrame, VideoSource

_END = object()


class FrameFeed:
    """A bounded queue of captured frames filled by a reader thread."""

    def __init__(
        self,
        source: VideoSource,
        *,
        fps: int,
        on_first: Callable[[], None] | None = None,
        prepare: Callable[[CapturedFrame], None] | None = None,
        depth: int = 4,
        stall_s: float = 10.0,
    ) -> None:
        self.source = source
        self.fps = fps
        self.on_first = on_first  # called as the first frame arrives: the timeline's zero
        self.prepare = prepare  # called on this thread for each frame that will be delivered
        self.stall_s = stall_s  # a live source silent this long is a failure, not a pause
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="capture-source", daemon=True)

    def start(self) -> None:
        """Start reading."""
        self._thread.start()

    def _read(self) -> None:
        try:
            first = True
            for captured in self.source.frames():
                if self._stop.is_set():
                    return
                captured.slot = round(captured.t * self.fps)
                if first and self.on_first is not None:
                    self.on_first()
                first = False
                if self.source.live and self._queue.full():
                    continue  # dropped (this thread alone fills the queue): the pipeline counts the gap
                if self.prepare is not None:
                    self.prepare(captured)
                if self.source.live:
                    self._queue.put_nowait(captured)
                elif not self._put(captured):
                    return
            self._put(_END)
        except BaseException as exc:  # handed to the pipeline thread, which raises it
            self._put(exc)

    def _put(self, item: Any) -> bool:
        # Blocks while the pipeline is behind, but gives up when the feed is closed.
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def get(self) -> CapturedFrame | None:
        """The next frame; None when the source has ended. Raises the source's error."""
        try:
            item = self._queue.get(timeout=self.stall_s)
        except queue.Empty:
            raise CaptureError(
                f"no frame from the video source for {self.stall_s:g} s (camera unplugged or stalled?)"
            ) from None
        if item is _END:
            return None
        if isinstance(item, BaseException):
            if isinstance(item, CaptureError):
                raise item
            raise CaptureError(f"the video source failed: {item}") from item
        return item

    def close(self) -> None:
        """Stop the reader, then release the source (never while the reader is inside it)."""
        self._stop.set()
        while True:  # unblock a reader waiting to put
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.source.close()
