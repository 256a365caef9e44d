"""NmeaSerialReader on a socat pty pair: the eight captures, and the port vanishing and returning."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.location import Fix, NmeaSerialReader
from tests.edge.location.helpers import (
    LOGS,
    MODE_2D_BY_RECEIVER,
    WAIT_S,
    Collector,
    PtyPair,
    bursts,
    chk_epochs,
    compare_with_chk,
    log_path,
    one_per_epoch,
    retime,
    started,
    wait_for,
)


@pytest.fixture
def pty(tmp_path: Path) -> PtyPair:
    """A socat pty pair, stopped by PID afterwards."""
    pair = PtyPair(tmp_path)
    pair.start()
    yield pair  # type: ignore[misc]
    pair.stop()


@pytest.mark.parametrize("name", LOGS)
def test_capture_through_a_pty_agrees_with_chk(name: str, pty: PtyPair) -> None:
    sink = Collector()
    reader = NmeaSerialReader(pty.device, 9600, retry_s=0.1)
    with started(reader, sink):
        assert reader.wait_connected(WAIT_S)
        pty.write(log_path(name).read_bytes())
        epochs = len(chk_epochs(name))
        # The last epoch is concluded when the line goes quiet (read timeout), not by a next epoch.
        wait_for(lambda: len(one_per_epoch(sink.reports)) >= epochs, f"{epochs} epochs from {name}")
        time.sleep(reader.read_timeout_s * 2)  # nothing more may arrive
    reports = one_per_epoch(sink.reports)
    assert compare_with_chk(name, reports, MODE_2D_BY_RECEIVER.get(name, frozenset())) == []
    assert reader.parser.stats.checksum_errors == 0
    assert reader.stats.opens == 1
    assert reader.stats.losses == 0


def write_now(pty: PtyPair, name: str, epochs: int, pause_s: float = 0.05) -> None:
    """Write the first epochs of a capture with their times set to now."""
    for burst in bursts(name)[:epochs]:
        now = datetime.now(UTC)
        pty.write("".join(retime(line, now) for line in burst))
        time.sleep(pause_s)


def test_port_vanishing_and_returning(tmp_path: Path) -> None:
    pair = PtyPair(tmp_path)
    pair.start()
    sink = Collector()
    reader = NmeaSerialReader(pair.device, 9600, retry_s=0.1)
    try:
        with started(reader, sink):
            assert reader.wait_connected(WAIT_S)
            write_now(pair, "mt3339", 3)
            wait_for(lambda: len(sink.fixes()) >= 3, "three fixes")

            pair.stop()  # the receiver's USB adapter is pulled: the pty and its link disappear
            wait_for(lambda: any("lost" in r for r in sink.reasons()), "the loss report")
            wait_for(lambda: any("unavailable" in r for r in sink.reasons()), "the unavailable report")
            assert not reader.connected

            pair.start()  # plugged back: same path
            assert reader.wait_connected(WAIT_S)
            write_now(pair, "mt3339", 3)
            wait_for(lambda: len(sink.fixes()) >= 6, "fixes after the port came back")
    finally:
        pair.stop()
    lost = next(r for r in sink.reasons() if "lost" in r)
    assert lost.startswith(f"no fix: serial port {pair.device} lost:")
    assert reader.stats.opens == 2
    assert reader.stats.losses == 1
    fresh = sink.fixes()[-1]
    assert isinstance(fresh, Fix)
    assert abs((datetime.now(UTC) - fresh.time).total_seconds()) < WAIT_S


def test_missing_port_is_reported_and_stop_is_prompt(tmp_path: Path) -> None:
    sink = Collector()
    reader = NmeaSerialReader(tmp_path / "ttyNOPE", 9600, retry_s=0.1)
    with started(reader, sink):
        wait_for(lambda: sink.reasons(), "the unavailable report")
        begun = time.monotonic()
    assert time.monotonic() - begun < 1.0
    assert sink.reasons()[0].startswith(f"no fix: serial port {tmp_path / 'ttyNOPE'} unavailable")
    assert len(sink.reasons()) == 1  # said once, not once per retry
