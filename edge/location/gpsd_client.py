"""Fixes from a gpsd daemon, read over its JSON socket protocol, reconnecting when gpsd goes away.

Why not gpsd-py3 (the library the project first chose): it keeps one module-global socket with no
timeout and never reconnects. After gpsd restarts, ``get_current()`` raises JSONDecodeError and then
BrokenPipeError forever; a silent gpsd blocks the caller's thread for good (gpsfake can hang exactly
so); and it samples with ``?POLL`` (the latest TPV only), losing epochs and the arrival time of each
fix, which the clock-offset measurement needs. Its GpsResponse also drops ``altMSL``, ``eph`` and
``uSat``. The protocol itself is small (a ``?WATCH`` command, then one JSON object per line), so this
module speaks it directly, with its own socket per client, timeouts everywhere, and reconnection.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from edge.location.coords import degrees_to_e7, metres_to_mm
from edge.location.fix import Fix, NoFix, Reception, Report

log = logging.getLogger(__name__)

_WATCH = b'?WATCH={"enable":true,"json":true};\n'
_LINE_MAX = 1 << 20  # gpsd's longest object (a SKY with many satellites) is a few KiB
_TIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?Z$")
# gpsd documents epx/epy as 95 % confidence per axis (1.96 sigma) and eph as a 2D 95 % radius
# (2.4477 sigma per axis for a circular normal error). hacc_mm in a record is the 1-sigma horizontal
# DRMS, sqrt(sigma_x^2 + sigma_y^2); these divisors convert.
_PER_AXIS_95 = Decimal("1.96")
_EPH_TO_DRMS = Decimal("2.4477") / Decimal(2).sqrt()

ReportSink = Callable[[Report], None]


@dataclass(slots=True)
class GpsdStats:
    """What the client saw, for diagnosing gpsd."""

    connects: int = 0
    disconnects: int = 0
    lines: int = 0
    bad_lines: int = 0
    tpv: int = 0
    fixes: int = 0
    untimed: int = 0  # TPVs with a position but no time: not recordable, skipped


class GpsdClient:
    """A thread streaming gpsd's TPV and SKY reports into a sink as Fix / NoFix."""

    source = "gpsd"
    # gpsd sends a TPV after the receiver's sentences for the epoch have arrived and been decoded:
    # up to about a second after the epoch at 4800-9600 baud. Used for the clock-offset uncertainty.
    LATENCY_MS = 1000

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 2947,
        *,
        connect_timeout_s: float = 2.0,
        retry_s: float = 1.0,
        silence_s: float = 5.0,
        latency_ms: int = LATENCY_MS,
    ) -> None:
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self.retry_s = retry_s
        self.silence_s = silence_s
        self.latency_ms = latency_ms
        self.stats = GpsdStats()
        self._sink: ReportSink | None = None
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._sats: int | None = None

    @property
    def connected(self) -> bool:
        """Whether a gpsd connection is open right now."""
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until connected (or the timeout); True if connected."""
        return self._connected.wait(timeout_s)

    def start(self, sink: ReportSink) -> None:
        """Connect (and keep reconnecting) in a background thread, sending reports to ``sink``."""
        if self._thread is not None:
            raise RuntimeError("GpsdClient already started")
        self._sink = sink
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"gpsd-{self.host}:{self.port}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 3.0) -> None:
        """Close the connection and end the thread."""
        self._stop.set()
        sock = self._sock
        if sock is not None:
            # Wakes a blocked recv at once; OSError means gpsd already closed it.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    # -- the connection loop ---------------------------------------------------------------------

    def _run(self) -> None:
        outage: str | None = None
        while not self._stop.is_set():
            try:
                sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
            except OSError as exc:
                reason = f"gpsd unreachable at {self.host}:{self.port}: {_describe(exc)}"
                if reason != outage:  # once per outage, not once per retry
                    outage = reason
                    self._emit(NoFix(reason=reason, received=Reception.now()))
                self._stop.wait(self.retry_s)
                continue
            outage = None
            self.stats.connects += 1
            self._sock = sock
            try:
                # A short timeout lets the loop notice stop() and a silent gpsd.
                sock.settimeout(0.25)
                sock.sendall(_WATCH)
                self._connected.set()
                lost = self._read(sock)
            except OSError as exc:
                lost = _describe(exc)
            finally:
                self._connected.clear()
                self._sock = None
                sock.close()
            if self._stop.is_set():
                break
            self.stats.disconnects += 1
            outage = f"gpsd unreachable at {self.host}:{self.port}: {lost}"
            self._emit(NoFix(reason=outage, received=Reception.now()))
            self._stop.wait(self.retry_s)

    def _read(self, sock: socket.socket) -> str:
        """Read reports until the connection ends; returns why it ended."""
        buffer = b""
        last_report = time.monotonic()
        silent = False
        while not self._stop.is_set():
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if not silent and time.monotonic() - last_report > self.silence_s:
                    silent = True
                    self._emit(
                        NoFix(
                            reason=f"no fix: no reports from gpsd for {self.silence_s:g} s",
                            received=Reception.now(),
                        )
                    )
                continue
            if not chunk:
                return "gpsd closed the connection"
            received = Reception.now()
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            if len(buffer) > _LINE_MAX:
                return "gpsd sent an over-long line"
            for line in lines:
                report = self._line(line, received)
                if report is not None:
                    last_report, silent = received.mono, False
                    self._emit(report)
        return "stopped"

    def _line(self, line: bytes, received: Reception) -> Report | None:
        self.stats.lines += 1
        try:
            obj = json.loads(line, parse_float=Decimal)  # keep gpsd's decimal text exact
        except ValueError:
            self.stats.bad_lines += 1
            return None
        if not isinstance(obj, dict):
            self.stats.bad_lines += 1
            return None
        return self.handle(obj, received)

    def _emit(self, report: Report) -> None:
        if self._sink is not None:
            try:
                self._sink(report)
            except Exception:  # the sink's bug must not kill the reader thread
                log.exception("location sink failed on %r", report)

    # -- gpsd objects ------------------------------------------------------------------------------

    def handle(self, obj: dict[str, Any], received: Reception | None = None) -> Report | None:
        """Turn one gpsd JSON object into a report (TPV), or remember what it says (SKY, DEVICE)."""
        kind = obj.get("class")
        if kind == "SKY":
            self._sats = _used_satellites(obj, self._sats)
            return None
        if kind == "DEVICES" and not obj.get("devices"):
            return NoFix(reason="no fix: gpsd has no receiver attached", received=received)
        if kind == "DEVICE" and obj.get("activated") in (0, "0", ""):
            return NoFix(reason=f"no fix: gpsd closed the receiver {obj.get('path', '')}", received=received)
        if kind != "TPV":
            return None
        self.stats.tpv += 1
        mode = obj.get("mode", 0)
        when = _gpsd_time(obj.get("time"))
        if mode not in (2, 3):
            reason = (
                "no fix: receiver reports mode 1"
                if mode == 1
                else f"no fix: gpsd does not know the fix mode yet (mode {mode})"
            )
            return NoFix(reason=reason, time=when, received=received)
        if when is None or "lat" not in obj or "lon" not in obj:
            # gpsd reports a position before it has the epoch's time (first epoch of a fix):
            # a record needs the time, and the next TPV of the same epoch carries it.
            self.stats.untimed += 1
            return None
        try:
            fix = Fix(
                time=when,
                lat_e7=degrees_to_e7(obj["lat"], latitude=True),
                lon_e7=degrees_to_e7(obj["lon"], latitude=False),
                # altMSL since gpsd 3.20; "alt" (also MSL in 3.2x) before. A 2D fix's altitude is assumed.
                alt_mm=_mm(obj.get("altMSL", obj.get("alt"))) if mode == 3 else None,
                hacc_mm=_hacc_mm(obj),
                mode=mode,
                sats=self._sats,
                source="gpsd",
                received=received,
            )
        except (ValueError, TypeError) as exc:
            self.stats.bad_lines += 1
            return NoFix(
                reason=f"no fix: gpsd sent an unusable position ({exc})", time=when, received=received
            )
        self.stats.fixes += 1
        return fix


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _gpsd_time(text: Any) -> datetime | None:
    m = _TIME.match(text) if isinstance(text, str) else None
    if not m:
        return None
    year, month, day, hour, minute, second = (int(m[i]) for i in range(1, 7))
    micro = int((m[7] or "0").ljust(6, "0")[:6])
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
    except ValueError:
        return None


def _mm(value: Any) -> int | None:
    if isinstance(value, Decimal | int):
        return metres_to_mm(Decimal(value))
    return None


def _hacc_mm(tpv: dict[str, Any]) -> int | None:
    epx, epy, eph = tpv.get("epx"), tpv.get("epy"), tpv.get("eph")
    if isinstance(epx, Decimal | int) and isinstance(epy, Decimal | int):
        return metres_to_mm((Decimal(epx) ** 2 + Decimal(epy) ** 2).sqrt() / _PER_AXIS_95)
    if isinstance(eph, Decimal | int):
        return metres_to_mm(Decimal(eph) / _EPH_TO_DRMS)
    return None


def _used_satellites(sky: dict[str, Any], previous: int | None) -> int | None:
    if isinstance(sky.get("uSat"), int):
        return int(sky["uSat"])
    satellites = sky.get("satellites")
    if isinstance(satellites, list):
        return sum(1 for s in satellites if isinstance(s, dict) and s.get("used") is True)
    return previous  # a SKY with only DOPs says nothing about the count
