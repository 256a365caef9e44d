"""GpsdClient against a real gpsd: fed by gpsfake with the eight captures, and going away and back."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path

import pytest

from edge.location import Fix, GpsdClient, NoFix, Report
from edge.location.coords import metres_to_mm
from tests.edge.location.helpers import (
    IDLE_SENTENCE,
    LOGS,
    WAIT_S,
    WEEK_ROLLOVER,
    ChkEpoch,
    Collector,
    GpsdOnPty,
    Proc,
    bursts,
    chk_epochs,
    free_port,
    log_path,
    one_per_epoch,
    retime,
    started,
    tool,
    wait_for,
)

GPSFAKE_LIMIT_S = 25  # `timeout` kills a hung gpsfake after this (FACTS.md: it can hang)
# Epochs where Debian's gpsd 3.22 reports mode 1 but the .chk (gpsd 3.27) has a fix (data README).
GPSD_322_NO_FIX = {"garmin25lp": {dtime(12, 3, 26)}}


def run_gpsfake(name: str, folder: Path) -> tuple[list[Report], str]:
    """Replay one capture through gpsfake's gpsd; returns what GpsdClient reported, and gpsfake's output."""
    port = free_port()
    # Idle sentences first: gpsfake starts feeding as soon as gpsd is up (-n), and our client needs
    # a moment to connect before the capture's first epoch — 2 s of them (at -c 0.005): with 0.5 s, two
    # of the eight parallel runs once lost their whole capture in a CI run (no fix at all; gpsd's first
    # fix comes about 1 s after its start, FACTS.md, and eight gpsfakes start at once on two cores).
    log = folder / f"{name}.log"
    log.write_bytes(IDLE_SENTENCE.encode() * 400 + log_path(name).read_bytes())
    proc = Proc(
        [
            tool("timeout"),
            "-k",
            "2",
            str(GPSFAKE_LIMIT_S),
            tool("gpsfake"),
            "-1",  # once through the log
            "-n",  # gpsd opens the pty at once
            "-q",
            "-P",
            str(port),
            "-c",
            "0.005",  # seconds between sentences
            "-W",
            "1",  # exit 1 s after the log is exhausted
            str(log),
        ],
        folder / f"{name}.gpsfake.out",
    )
    sink = Collector()
    client = GpsdClient(port=port, retry_s=0.05, connect_timeout_s=1.0)
    try:
        with started(client, sink):
            proc.popen.wait(GPSFAKE_LIMIT_S + 3)
    finally:
        proc.stop()
    return sink.reports, proc.output()


@pytest.fixture(scope="module")
def gpsfake_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[Report], str]]:
    """All eight captures through gpsfake at once (each its own gpsd and port): about seven seconds."""
    folder = tmp_path_factory.mktemp("gpsfake")
    with ThreadPoolExecutor(max_workers=len(LOGS)) as pool:
        futures = {name: pool.submit(run_gpsfake, name, folder) for name in LOGS}
        return {name: f.result() for name, f in futures.items()}


def unshifted(name: str, t: datetime) -> datetime:
    """Undo gpsd 3.22's 1024-week error on 2005-2015 captures (the .chk, from gpsd 3.27, is right)."""
    chk_year = int(next(e.time for e in chk_epochs(name) if e.time)[:4])
    return t - WEEK_ROLLOVER if t.year - chk_year > 1 else t


def epoch_at(name: str, tod: dtime) -> ChkEpoch:
    """The .chk epoch with that time of day."""
    return next(e for e in chk_epochs(name) if e.tod == tod)


@pytest.mark.parametrize("name", LOGS)
def test_gpsd_fixes_agree_with_chk(name: str, gpsfake_runs: dict[str, tuple[list[Report], str]]) -> None:
    reports, output = gpsfake_runs[name]
    # gpsd may send several TPVs per epoch, each more complete; the service keeps the last.
    fixes = [r for r in one_per_epoch(reports) if isinstance(r, Fix)]
    expected = {e.tod for e in chk_epochs(name) if e.mode >= 2 and e.time is not None} - GPSD_322_NO_FIX.get(
        name, set()
    )
    assert {f.time.time() for f in fixes} == expected, output
    for fix in fixes:
        epoch = epoch_at(name, fix.time.time())
        when = unshifted(name, fix.time)
        assert when.year < 2021  # every capture is from 2005-2020
        same_time = [
            t for t in epoch.tpvs if t.get("time") == when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        ]
        assert same_time, f"{name}: no .chk TPV at {when}"
        chk = same_time[-1]
        assert (fix.mode, fix.source) == (chk["mode"], "gpsd")
        assert abs(fix.lat_e7 - int((chk["lat"] * 10**7).to_integral_value())) <= 1
        assert abs(fix.lon_e7 - int((chk["lon"] * 10**7).to_integral_value())) <= 1
        if fix.mode == 3:
            assert fix.alt_mm == metres_to_mm(chk["altMSL"])  # read from the raw JSON's altMSL
        assert fix.hacc_mm is not None
        assert fix.hacc_mm > 0
    if name == "ublox-lea-5q":
        assert fixes == []
        assert "no fix: receiver reports mode 1" in [r.reason for r in reports if isinstance(r, NoFix)]


def test_gpsd_322_dates_old_captures_1024_weeks_late(
    gpsfake_runs: dict[str, tuple[list[Report], str]],
) -> None:
    """The rollover error is real here, and the client passes gpsd's time on unchanged (it cannot know)."""
    years = {n: {f.time.year for f in gpsfake_runs[n][0] if isinstance(f, Fix)} for n in LOGS}
    assert years["mt3339"] == {2034}  # 2015 + 1024 weeks
    assert years["garmin25lp"] == {2024}  # 2005 + 1024 weeks
    assert years["quectelLC79D-1"] == {2020}  # after 2015: not affected


# -- gpsd going away and coming back --------------------------------------------------------------


@pytest.fixture
def gpsd(tmp_path: Path) -> GpsdOnPty:
    """A real gpsd on a socat pty pair, stopped by PID afterwards."""
    daemon = GpsdOnPty(tmp_path, free_port())
    daemon.start()
    yield daemon  # type: ignore[misc]
    daemon.stop()


def replay_now(daemon: GpsdOnPty, name: str, epochs: int, pause_s: float = 0.05) -> None:
    """Write the first epochs of a capture with their times set to now, one burst per pause."""
    for burst in bursts(name)[:epochs]:
        now = datetime.now(UTC)
        daemon.pty.write("".join(retime(line, now) for line in burst))
        time.sleep(pause_s)


def test_client_reconnects_when_gpsd_restarts(gpsd: GpsdOnPty) -> None:
    sink = Collector()
    client = GpsdClient(port=gpsd.port, retry_s=0.1)
    with started(client, sink):
        assert client.wait_connected(WAIT_S)
        replay_now(gpsd, "mt3339", 5)
        wait_for(lambda: len(sink.fixes()) >= 3, "fixes through gpsd")
        before = len(sink.fixes())

        gpsd.stop_gpsd()
        wait_for(lambda: any(r.startswith("gpsd unreachable") for r in sink.reasons()), "the outage report")
        assert not client.connected
        reason = next(r for r in sink.reasons() if r.startswith("gpsd unreachable"))
        assert f"127.0.0.1:{gpsd.port}" in reason

        gpsd.start()  # same port, same pty
        assert client.wait_connected(WAIT_S)
        replay_now(gpsd, "mt3339", 5)
        wait_for(lambda: len(sink.fixes()) >= before + 3, "fixes after gpsd came back")
    # Replayed "now": gpsd 3.22 dates a current epoch correctly (its rollover error is for old dates).
    assert abs((datetime.now(UTC) - sink.fixes()[-1].time).total_seconds()) < WAIT_S
    assert client.stats.connects >= 2
    assert client.stats.disconnects >= 1
    # One outage report per outage, not one per retry.
    assert len([r for r in sink.reasons() if r.startswith("gpsd unreachable")]) <= 2


def test_unreachable_and_silent_gpsd_are_reported_and_stop_is_prompt() -> None:
    sink = Collector()
    port = free_port()  # nothing listens here
    client = GpsdClient(port=port, retry_s=0.1)
    with started(client, sink):
        wait_for(lambda: sink.reasons(), "the unreachable report")
    assert sink.reasons()[0].startswith(f"gpsd unreachable at 127.0.0.1:{port}: ConnectionRefusedError")

    # A server that accepts and then says nothing (a hung gpsd or gpsfake): gpsd-py3 would block
    # forever in readline(); the client says so and still stops promptly.
    with socket.create_server(("127.0.0.1", 0)) as server:
        accepted: list[socket.socket] = []
        threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
        silent = Collector()
        mute = GpsdClient(port=server.getsockname()[1], silence_s=0.3)
        mute.start(silent)
        wait_for(lambda: silent.reasons(), "the silence report")
        begun = time.monotonic()
        mute.stop()
        assert time.monotonic() - begun < 1.0
        for conn in accepted:
            conn.close()
    assert silent.reasons() == ["no fix: no reports from gpsd for 0.3 s"]


def test_handle_reads_raw_json_fields() -> None:
    import json

    client = GpsdClient()
    client.handle({"class": "SKY", "uSat": 7})
    tpv = json.loads(
        '{"class":"TPV","mode":3,"time":"2026-11-26T08:30:00.250Z","lat":31.230416667,"lon":121.473701667,'
        '"alt":0.0,"altMSL":4.5,"epx":3.0,"epy":4.0,"eph":12.0}',
        parse_float=Decimal,
    )
    fix = client.handle(tpv)
    assert isinstance(fix, Fix)
    assert fix.to_record() == {
        "t": "2026-11-26T08:30:00.250Z",
        "lat_e7": 312304167,
        "lon_e7": 1214737017,
        "alt_mm": 4500,  # altMSL, not the 0.0 "alt"
        "hacc_mm": 2551,  # sqrt(3^2 + 4^2) / 1.96: per-axis 95 % to 1-sigma DRMS
        "mode": "3d",
        "sats": 7,
        "source": "gpsd",
    }
    del tpv["epx"], tpv["epy"]
    eph_only = client.handle(tpv)
    assert isinstance(eph_only, Fix)
    assert eph_only.hacc_mm == 6933  # eph 12 m (2D 95 %) x sqrt(2) / 2.4477
    no_fix = client.handle({"class": "TPV", "mode": 1, "time": "2026-11-26T08:30:01.000Z"})
    assert isinstance(no_fix, NoFix)
    assert no_fix.reason == "no fix: receiver reports mode 1"
    # A 2D TPV without time (gpsd's first TPV of a fix) cannot be recorded: skipped and counted.
    assert client.handle({"class": "TPV", "mode": 2, "lat": Decimal("31.2"), "lon": Decimal("121.4")}) is None
    assert client.stats.untimed == 1
