"""Fixes straight from a receiver's NMEA serial output (no gpsd), reopening the port when it vanishes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge.location.fix import NoFix, Reception, Report
from edge.location.nmea import NmeaParser

if TYPE_CHECKING:
    import serial

log = logging.getLogger(__name__)

ReportSink = Callable[[Report], None]
# NMEA sentences are at most 82 characters; a longer "line" is noise (wrong baud rate, a binary
# protocol) and is dropped rather than buffered without bound.
_LINE_MAX = 512


@dataclass(slots=True)
class SerialStats:
    """What the reader saw on the port."""

    opens: int = 0
    losses: int = 0
    lines: int = 0
    overlong: int = 0


class NmeaSerialReader:
    """A thread reading NMEA lines from a serial port (or pty) into an NmeaParser, then a sink."""

    source = "nmea"
    # Receivers start sending an epoch's sentences some time after the epoch; the first timed
    # sentence is what the clock-offset measurement uses. Assumed bound, not measured per receiver.
    LATENCY_MS = 500

    def __init__(
        self,
        port: str | Path,
        baud: int = 9600,
        *,
        parser: NmeaParser | None = None,
        read_timeout_s: float = 0.2,
        retry_s: float = 1.0,
        silence_s: float = 5.0,
        latency_ms: int = LATENCY_MS,
    ) -> None:
        self.port = str(port)
        self.baud = baud
        self.parser = parser or NmeaParser()
        # NMEA arrives in one burst per epoch: a read timeout with nothing to read means the burst
        # is over, so the epoch is concluded then instead of one epoch later.
        self.read_timeout_s = read_timeout_s
        self.retry_s = retry_s
        self.silence_s = silence_s
        self.latency_ms = latency_ms
        self.stats = SerialStats()
        self._sink: ReportSink | None = None
        self._stop = threading.Event()
        self._open = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def connected(self) -> bool:
        """Whether the port is open right now."""
        return self._open.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until the port is open (or the timeout); True if open."""
        return self._open.wait(timeout_s)

    def start(self, sink: ReportSink) -> None:
        """Open (and keep reopening) the port in a background thread, sending reports to ``sink``."""
        if self._thread is not None:
            raise RuntimeError("NmeaSerialReader already started")
        self._sink = sink
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"nmea-{self.port}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 3.0) -> None:
        """End the thread (within one read timeout) and close the port."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        import serial

        outage: str | None = None
        while not self._stop.is_set():
            try:
                # exclusive: a second reader on the same UART would each get half the bytes.
                port = serial.Serial(self.port, self.baud, timeout=self.read_timeout_s, exclusive=True)
            except (serial.SerialException, OSError, ValueError) as exc:
                reason = f"no fix: serial port {self.port} unavailable: {exc}"
                if reason != outage:
                    outage = reason
                    self._emit(NoFix(reason=reason, received=Reception.now()))
                self._stop.wait(self.retry_s)
                continue
            outage = None
            self.stats.opens += 1
            self.parser.reset()  # what was half-read before a loss belongs to no epoch now
            self._open.set()
            try:
                self._read(port)
            except (serial.SerialException, OSError) as exc:
                if not self._stop.is_set():
                    self.stats.losses += 1
                    outage = f"no fix: serial port {self.port} lost: {exc}"
                    self._emit(NoFix(reason=outage, received=Reception.now()))
            finally:
                self._open.clear()
                port.close()
            if not self._stop.is_set():
                self._stop.wait(self.retry_s)
        for report in self.parser.flush():
            self._emit(report)

    def _read(self, port: serial.Serial) -> None:
        buffer = b""
        last_data = time.monotonic()
        silent = False
        while not self._stop.is_set():
            chunk: bytes = port.read(port.in_waiting or 1)
            if not chunk:
                # The line went quiet: the epoch in progress is complete.
                for report in self.parser.flush():
                    self._emit(report)
                if not silent and time.monotonic() - last_data > self.silence_s:
                    silent = True
                    self._emit(
                        NoFix(
                            reason=f"no fix: no data from the receiver on {self.port} for {self.silence_s:g} s",
                            received=Reception.now(),
                        )
                    )
                continue
            received = Reception.now()
            last_data, silent = received.mono, False
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            if len(buffer) > _LINE_MAX:
                self.stats.overlong += 1
                buffer = b""
            for line in lines:
                self.stats.lines += 1
                for report in self.parser.feed(line, received):
                    self._emit(report)

    def _emit(self, report: Report) -> None:
        if self._sink is not None:
            try:
                self._sink(report)
            except Exception:  # the sink's bug must not kill the reader thread
                log.exception("location sink failed on %r", report)
