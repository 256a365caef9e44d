"""The recorder agent's view of location: current fix, a segment's track, and the clock offset."""

from __future__ import annotations

import dataclasses
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from edge.location.errors import LocationError
from edge.location.fix import Fix, NoFix, Reception, Report, no_fix_record, reception_of
from edge.location.offset import estimate_offset
from edge.location.track import FixTrack

if TYPE_CHECKING:
    from edge.config import LocationConfig

NO_GPS_CONFIGURED = "no GPS configured"
ReportSink = Callable[[Report], None]


class LocationProvider(Protocol):
    """A source of fixes: started with a sink, stopped within a bounded time."""

    source: str
    latency_ms: int  # bound on the delay from a fix's epoch to its arrival (clock-offset uncertainty)

    def start(self, sink: ReportSink) -> None:
        """Begin delivering reports to the sink (from any thread)."""
        ...

    def stop(self, timeout_s: float = 3.0) -> None:
        """Stop delivering and release the device or connection."""
        ...


class NoLocation:
    """The provider for ``source.type = "none"``: no receiver, said explicitly in every record."""

    source = "none"
    latency_ms = 0

    def start(self, sink: ReportSink) -> None:
        """Report, once, that there is no receiver."""
        sink(NoFix(reason=NO_GPS_CONFIGURED, received=Reception.now()))

    def stop(self, timeout_s: float = 3.0) -> None:
        """Nothing to release."""


class LocationService:
    """Keeps the recent fixes of one provider and answers the recorder's questions. Thread-safe."""

    def __init__(
        self,
        provider: LocationProvider,
        *,
        max_fix_age_s: float = 10.0,
        ring_s: float = 600.0,
        offset_window_s: float = 60.0,
        now: Callable[[], Reception] = Reception.now,
    ) -> None:
        self.provider = provider
        self.max_fix_age_s = max_fix_age_s
        self.offset_window_s = offset_window_s
        self._now = now
        self._lock = threading.Lock()
        self._track = FixTrack(seconds=ring_s)
        # Recent "no fix" reports, so that a segment without fixes can say why.
        self._no_fixes: deque[NoFix] = deque(maxlen=1024)
        self._last: Report | None = None
        self._started = False

    @classmethod
    def from_config(cls, config: LocationConfig) -> LocationService:
        """The service for a recorder's ``[location]`` settings."""
        source = config.source
        provider: LocationProvider
        if source.type == "gpsd":
            from edge.location.gpsd_client import GpsdClient

            provider = GpsdClient(source.host, source.port)
        elif source.type == "nmea-serial":
            from edge.location.serial_reader import NmeaSerialReader

            provider = NmeaSerialReader(source.port, source.baud)
        elif source.type == "none":
            provider = NoLocation()
        else:  # pragma: no cover - the config model admits no other type
            raise LocationError(f"unknown location source type {source.type!r}")
        return cls(provider, max_fix_age_s=config.max_fix_age_s)

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the provider (idempotent)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        self.provider.start(self.receive)

    def stop(self) -> None:
        """Stop the provider; what was received stays queryable."""
        with self._lock:
            if not self._started:
                return
            self._started = False
        self.provider.stop()

    def receive(self, report: Report) -> None:
        """The providers' sink: record a fix or a no-fix (stamped now if it carries no reception)."""
        if report.received is None:
            report = dataclasses.replace(report, received=self._now())
        received = reception_of(report)
        with self._lock:
            self._last = report
            if isinstance(report, Fix):
                self._track.add(report)
            else:
                self._no_fixes.append(report)
            self._track.prune(received.mono)
            horizon = received.mono - self._track.seconds
            while self._no_fixes and reception_of(self._no_fixes[0]).mono < horizon:
                self._no_fixes.popleft()

    # -- questions ---------------------------------------------------------------------------------

    def current(self) -> Fix | None:
        """The latest fix, unless something said "no fix" since or it is older than max_fix_age_s."""
        now = self._now()
        with self._lock:
            last = self._last
        if isinstance(last, Fix) and now.mono - reception_of(last).mono <= self.max_fix_age_s:
            return last
        return None

    def status(self) -> str:
        """One line for the status display: "fix", or why there is none."""
        with self._lock:
            last, started = self._last, self._started
        if isinstance(last, NoFix):
            return last.reason
        if last is None:
            return "no fix: no data from the receiver yet" if started else "location service not started"
        return "fix" if self.current() is not None else "no fix: the last fix is stale"

    def fixes_between(self, start: datetime, end: datetime) -> list[Fix]:
        """The track of a segment: fixes received between start and end (system clock), thinned to 1/s."""
        _check_aware(start, end)
        with self._lock:
            return self._track.between(start, end)

    def location_for(self, start: datetime, end: datetime) -> dict[str, Any]:
        """The custody record's ``location`` object for the interval (a segment, a marker)."""
        fixes = self.fixes_between(start, end)
        if fixes:
            return {"fix": True, "fixes": [f.to_record() for f in fixes]}
        return no_fix_record(self._reason_without_fix(start, end))

    def clock_offset(self) -> tuple[str, int | None, int | None]:
        """("gps", offset_ms, uncertainty_ms) of GPS time minus system time, or ("unset", None, None)."""
        now = self._now()
        with self._lock:
            recent = self._track.received_since(now.mono - self.offset_window_s)
        estimate = estimate_offset(recent[-60:], latency_ms=self.provider.latency_ms)
        if estimate is None:
            return "unset", None, None
        return "gps", estimate[0], estimate[1]

    def _reason_without_fix(self, start: datetime, end: datetime) -> str:
        if self.provider.source == "none":
            return NO_GPS_CONFIGURED
        with self._lock:
            started = self._started
            said = next((n for n in reversed(self._no_fixes) if reception_of(n).wall <= end), None)
            fix = self._track.last_received_by(end)
        # Whichever the provider said last, up to the end of the interval, explains it.
        if fix is not None and (said is None or reception_of(fix).mono > reception_of(said).mono):
            seconds = max((start - reception_of(fix).wall).total_seconds(), 0)
            return f"no fix during this interval: the last fix arrived {seconds:.0f} s before it"
        if said is not None:
            return said.reason
        return "no fix: no data from the receiver yet" if started else "location service not started"


def _check_aware(*times: datetime) -> None:
    for t in times:
        if t.tzinfo is None:
            raise ValueError("interval times must be timezone-aware (UTC)")
