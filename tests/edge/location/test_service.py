"""LocationService: current fix and its age, a segment's track, no-fix reasons, clock offset, outages."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from custody.record import BODIES
from custody.timefmt import utc_timestamp
from edge.config import LocationConfig
from edge.location import (
    NO_GPS_CONFIGURED,
    Fix,
    GpsdClient,
    LocationService,
    NmeaSerialReader,
    NoFix,
    NoLocation,
    Reception,
)
from edge.location.offset import estimate_offset
from edge.location.service import ReportSink
from tests.edge.location.helpers import (
    WAIT_S,
    GpsdOnPty,
    PtyPair,
    bursts,
    free_port,
    log_path,
    retime,
    wait_for,
)

T0 = datetime(2026, 11, 26, 8, 30, tzinfo=UTC)


class Clock:
    """A controllable system clock (wall and monotonic move together unless stepped)."""

    def __init__(self) -> None:
        self.wall = T0
        self.mono = 1000.0

    def __call__(self) -> Reception:
        return Reception(wall=self.wall, mono=self.mono)

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds


class Manual:
    """A provider the test drives by hand."""

    source = "nmea"
    latency_ms = 500

    def __init__(self) -> None:
        self.sink: ReportSink | None = None
        self.stopped = False

    def start(self, sink: ReportSink) -> None:
        self.sink = sink

    def stop(self, timeout_s: float = 3.0) -> None:
        self.stopped = True


def fix_at(clock: Clock, *, offset_s: float = 0.0, lat_e7: int = 312304167, mode: int = 3) -> Fix:
    """A fix whose receiver time is the clock's wall time plus an offset, received now."""
    return Fix(
        time=clock.wall + timedelta(seconds=offset_s),
        lat_e7=lat_e7,
        lon_e7=1214737017,
        alt_mm=4500 if mode == 3 else None,
        hacc_mm=3500,
        mode=mode,  # type: ignore[arg-type]
        sats=9,
        source="nmea",
        received=clock(),
    )


def valid_location(location: dict[str, Any]) -> list[str]:
    """Problems the custody format finds in a location object (via a marker record body)."""
    body = {
        "recording": "",
        "at": utc_timestamp(T0),
        "label": "x",
        "note": "",
        "officer": "",
        "location": location,
    }
    problems: list[str] = []
    BODIES["marker"](body, "body", problems)
    return problems


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def manual() -> Manual:
    return Manual()


@pytest.fixture
def service(clock: Clock, manual: Manual) -> LocationService:
    svc = LocationService(manual, max_fix_age_s=10, ring_s=600, now=clock)
    svc.start()
    return svc


def test_current_respects_max_age_and_later_no_fix(service: LocationService, clock: Clock) -> None:
    assert service.current() is None
    fix = fix_at(clock)
    service.receive(fix)
    assert service.current() == fix
    clock.advance(10)
    assert service.current() == fix
    clock.advance(0.5)
    assert service.current() is None  # stale: older than max_fix_age_s
    assert service.status() == "no fix: the last fix is stale"
    service.receive(fix_at(clock))
    assert service.current() is not None
    service.receive(NoFix(reason="no fix: receiver reports mode 1", received=clock()))
    assert service.current() is None  # the receiver said since that it has none
    assert service.status() == "no fix: receiver reports mode 1"


def test_fixes_between_thins_to_one_per_second(service: LocationService, clock: Clock) -> None:
    start = clock.wall
    fixes = []
    for i in range(50):  # 10 Hz for 5 s
        fixes.append(fix_at(clock, lat_e7=312304167 + i))
        service.receive(fixes[-1])
        clock.advance(0.1)
    track = service.fixes_between(start, clock.wall)
    assert track[0] == fixes[0]
    assert track[-1] == fixes[-1]
    gaps = [(b.time - a.time).total_seconds() for a, b in itertools.pairwise(track)]
    assert all(g >= 1.0 for g in gaps), gaps
    assert len(track) == 5  # 0 s, 1 s, 2 s, 3 s, then the last (4.9 s) replacing the 4 s sample
    # A sub-interval selects by reception time (the system clock the segments use).
    assert service.fixes_between(start + timedelta(seconds=2), start + timedelta(seconds=2.05)) == [fixes[20]]
    location = service.location_for(start, clock.wall)
    assert location["fix"] is True
    assert [f["lat_e7"] for f in location["fixes"]] == [f.lat_e7 for f in track]
    assert valid_location(location) == []


def test_repeated_epoch_replaces_but_keeps_first_arrival(service: LocationService, clock: Clock) -> None:
    first = fix_at(clock, mode=2)
    service.receive(first)
    clock.advance(0.3)
    fuller = Fix(**{**{f: getattr(first, f) for f in ("time", "lat_e7", "lon_e7", "sats", "source")},
                    "alt_mm": 4500, "hacc_mm": 2000, "mode": 3}, received=clock())  # fmt: skip
    service.receive(fuller)
    (kept,) = service.fixes_between(T0, clock.wall)
    assert (kept.mode, kept.alt_mm) == (3, 4500)
    assert kept.received == first.received


def test_ring_is_bounded_in_time(clock: Clock, manual: Manual) -> None:
    svc = LocationService(manual, ring_s=60, now=clock)
    svc.start()
    start = clock.wall
    for _ in range(180):
        svc.receive(fix_at(clock))
        clock.advance(1)
    kept = svc.fixes_between(start, clock.wall)
    assert kept[0].time >= clock.wall - timedelta(seconds=61)
    assert len(kept) <= 61


def test_no_fix_reasons(clock: Clock, manual: Manual) -> None:
    svc = LocationService(manual, now=clock)
    assert svc.location_for(T0, T0) == {"fix": False, "reason": "location service not started"}
    svc.start()
    assert svc.location_for(T0, T0)["reason"] == "no fix: no data from the receiver yet"
    svc.receive(NoFix(reason="gpsd unreachable at 127.0.0.1:2947: ConnectionRefusedError", received=clock()))
    clock.advance(5)
    assert svc.location_for(clock.wall, clock.wall)["reason"].startswith("gpsd unreachable")
    svc.receive(fix_at(clock))
    clock.advance(30)
    later = svc.location_for(clock.wall - timedelta(seconds=10), clock.wall)
    assert later == {
        "fix": False,
        "reason": "no fix during this interval: the last fix arrived 20 s before it",
    }
    assert valid_location(later) == []
    svc.receive(NoFix(reason="x" * 300, received=clock()))
    long = svc.location_for(clock.wall, clock.wall)
    assert len(long["reason"]) == 200  # the format's bound
    assert valid_location(long) == []
    with pytest.raises(ValueError, match="timezone-aware"):
        svc.fixes_between(T0.replace(tzinfo=None), T0)


def test_source_none_says_no_gps_configured() -> None:
    svc = LocationService.from_config(LocationConfig(source={"type": "none"}))
    assert isinstance(svc.provider, NoLocation)
    svc.start()
    now = datetime.now(UTC)
    assert svc.location_for(now - timedelta(seconds=10), now) == {"fix": False, "reason": NO_GPS_CONFIGURED}
    assert svc.current() is None
    assert svc.clock_offset() == ("unset", None, None)
    svc.stop()


def test_from_config_builds_the_configured_provider(tmp_path: Path) -> None:
    gpsd = LocationService.from_config(
        LocationConfig(source={"type": "gpsd", "host": "10.0.0.2", "port": 2948}, max_fix_age_s=5)
    )
    assert isinstance(gpsd.provider, GpsdClient)
    assert (gpsd.provider.host, gpsd.provider.port, gpsd.max_fix_age_s) == ("10.0.0.2", 2948, 5)
    serial = LocationService.from_config(
        LocationConfig(source={"type": "nmea-serial", "port": str(tmp_path / "ttyS9"), "baud": 4800})
    )
    assert isinstance(serial.provider, NmeaSerialReader)
    assert (serial.provider.port, serial.provider.baud) == (str(tmp_path / "ttyS9"), 4800)


def test_clock_offset_estimate(service: LocationService, clock: Clock) -> None:
    assert service.clock_offset() == ("unset", None, None)
    # GPS is 2 s ahead of the system clock; each fix arrives 40-160 ms after its epoch.
    for i in range(20):
        delay = 0.04 + 0.12 * ((i * 7) % 11) / 10
        clock.advance(delay)
        service.receive(fix_at(clock, offset_s=2.0 - delay))
        clock.advance(1 - delay)
    source, offset, uncertainty = service.clock_offset()
    assert source == "gps"
    assert offset is not None
    assert uncertainty is not None
    assert abs(offset - 2000) <= uncertainty
    assert uncertainty <= 500 / 2 + 120  # half the latency bound plus the spread of the samples
    # A stepped system clock (the dock set it): samples from before the step are not mixed in.
    clock.wall += timedelta(seconds=2)  # now the system clock agrees with GPS
    for _ in range(3):
        service.receive(fix_at(clock, offset_s=-0.05))
        clock.advance(1)
    _, after, _ = service.clock_offset()
    assert after is not None
    assert abs(after) <= 300
    assert estimate_offset([], latency_ms=500) is None


def test_thread_safety(service: LocationService, clock: Clock) -> None:
    errors: list[BaseException] = []
    lock = threading.Lock()

    def feed() -> None:
        try:
            for _ in range(300):
                with lock:
                    clock.advance(0.01)
                    reception = clock()
                service.receive(Fix(time=reception.wall, lat_e7=1, lon_e7=1, alt_mm=None, hacc_mm=None,
                                    mode=2, sats=None, source="nmea", received=reception))  # fmt: skip
        except BaseException as exc:  # collected, asserted empty below
            errors.append(exc)

    def ask() -> None:
        try:
            for _ in range(300):
                service.current()
                service.location_for(T0, T0 + timedelta(hours=1))
                service.clock_offset()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=f) for f in (feed, feed, ask, ask)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S * 2)
    assert errors == []


# -- with real receivers' output -------------------------------------------------------------------


def serial_service(pty: PtyPair) -> LocationService:
    """The service as a recorder configured for a directly attached NMEA receiver builds it."""
    return LocationService.from_config(
        LocationConfig(
            source={"type": "nmea-serial", "port": str(pty.device), "baud": 9600}, max_fix_age_s=10
        )
    )


@pytest.fixture
def pty(tmp_path: Path) -> PtyPair:
    """A socat pty pair, stopped by PID afterwards."""
    pair = PtyPair(tmp_path)
    pair.start()
    yield pair  # type: ignore[misc]
    pair.stop()


def test_no_fix_capture_gives_fix_false_with_a_reason(pty: PtyPair) -> None:
    svc = serial_service(pty)
    svc.start()
    try:
        assert svc.provider.wait_connected(WAIT_S)  # type: ignore[attr-defined]
        start = datetime.now(UTC)
        pty.write(log_path("ublox-lea-5q").read_bytes())
        wait_for(lambda: "RMC status V" in svc.status(), "the receiver's no-fix")
        location = svc.location_for(start, datetime.now(UTC))
    finally:
        svc.stop()
    assert location == {"fix": False, "reason": "no fix: receiver marks the position invalid (RMC status V)"}
    assert valid_location(location) == []
    assert svc.current() is None
    assert svc.clock_offset() == ("unset", None, None)


def replay(write: Any, name: str, epochs: int, *, skew_s: float = 0.0, pause_s: float = 0.1) -> None:
    """Write epochs of a capture as if live: each stamped with the current time (plus a skew)."""
    for burst in bursts(name)[:epochs]:
        when = datetime.now(UTC) + timedelta(seconds=skew_s)
        write("".join(retime(line, when) for line in burst))
        time.sleep(pause_s)


@pytest.mark.parametrize("skew_s", [0.0, 5.0])
def test_clock_offset_measured_from_a_live_replay(pty: PtyPair, skew_s: float) -> None:
    svc = serial_service(pty)
    svc.start()
    try:
        assert svc.provider.wait_connected(WAIT_S)  # type: ignore[attr-defined]
        replay(pty.write, "mt3339", 8, skew_s=skew_s)
        parsed = svc.provider.parser.stats  # type: ignore[attr-defined]
        wait_for(lambda: parsed.fixes >= 8, "eight fixes")
        source, offset, uncertainty = svc.clock_offset()
        current = svc.current()
    finally:
        svc.stop()
    assert source == "gps"
    assert offset is not None
    assert uncertainty is not None
    # The receiver "is" skew_s ahead of the system clock: measured, within the stated uncertainty.
    assert abs(offset - skew_s * 1000) <= uncertainty
    assert uncertainty <= 400  # half the 500 ms latency bound plus the pty's jitter
    assert current is not None
    assert current.source == "nmea"


def test_gpsd_going_away_and_coming_back(tmp_path: Path) -> None:
    daemon = GpsdOnPty(tmp_path, free_port())
    daemon.start()
    svc = LocationService(GpsdClient(port=daemon.port, retry_s=0.1), max_fix_age_s=10)
    svc.start()
    try:
        assert svc.provider.wait_connected(WAIT_S)  # type: ignore[attr-defined]
        replay(daemon.pty.write, "mt3339", 4, pause_s=0.05)
        wait_for(lambda: svc.current() is not None, "a current fix from gpsd")

        daemon.stop_gpsd()
        gone = datetime.now(UTC)
        wait_for(lambda: svc.status().startswith("gpsd unreachable"), "the outage")
        assert svc.current() is None
        time.sleep(0.2)
        outage = svc.location_for(gone, datetime.now(UTC))
        assert outage["fix"] is False
        assert outage["reason"].startswith(f"gpsd unreachable at 127.0.0.1:{daemon.port}")

        daemon.start()
        assert svc.provider.wait_connected(WAIT_S)  # type: ignore[attr-defined]
        back = datetime.now(UTC)
        replay(daemon.pty.write, "mt3339", 4, pause_s=0.05)
        wait_for(lambda: svc.fixes_between(back, datetime.now(UTC)), "fixes after gpsd came back")
        assert svc.current() is not None
        assert svc.location_for(back, datetime.now(UTC))["fix"] is True
        assert svc.clock_offset()[0] == "gps"
    finally:
        svc.stop()
        daemon.stop()
