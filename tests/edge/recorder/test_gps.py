"""GPS into the footage: a BeiDou receiver's capture, replayed live through a pty, lands in the records."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.edge.location.helpers import PtyPair, bursts, retime
from tests.edge.recorder.conftest import fieldproof, records, verify


def test_segments_carry_fixes_and_a_gps_clock(make_recorder: Any, recorder_ca: Path, tmp_path: Path) -> None:
    pty = PtyPair(tmp_path, "bd")
    pty.start()
    stop = threading.Event()

    def feed() -> None:
        # One epoch a second, stamped with the present, as a receiver with a fix would send it.
        epochs = [b for b in bursts("beidou-bd") if any("RMC" in s and ",A," in s for s in b)]
        i = 0
        while not stop.is_set():
            now = datetime.now(UTC)
            pty.write("".join(retime(s, now) + "\r\n" for s in epochs[i % len(epochs)]))
            i += 1
            stop.wait(1.0)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        cfg, spool = make_recorder(
            segment_seconds=2,
            pre_event_seconds=0,
            width=320,
            height=240,
            fps=15,
            location={"type": "nmea-serial", "port": str(pty.device), "baud": 9600},
            clock={"trusted_sources": ["gps"], "max_offset_ms": 1000},
        )
        time.sleep(0.5)
        fieldproof("recorder", "record", "--config", str(cfg), "--pre-roll", "3", "--seconds", "4")
    finally:
        stop.set()
        feeder.join(timeout=5)
        pty.stop()
    assert verify(spool, recorder_ca)["exit"] == 0
    segs = [r["body"] for r in records(spool) if r["kind"] == "segment"]
    assert segs
    located = [s for s in segs if s["location"]["fix"]]
    assert located, [s["location"] for s in segs]
    for s in located:
        for fix in s["location"]["fixes"]:
            assert fix["source"] == "nmea"
            # The capture was made in China: BeiDou talkers, positions within the country.
            assert 180_000_000 < fix["lat_e7"] < 540_000_000
            assert 730_000_000 < fix["lon_e7"] < 1_360_000_000
    assert any(s["clock"]["source"] == "gps" and s["clock"]["offset_ms"] is not None for s in segs)
