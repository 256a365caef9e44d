"""kill -9 at random moments while recording: completed segments intact, the interrupted one recovered.

CI runs FIELDPROOF_CRASH_RUNS (default 20) kills on one spool; bench/crash_campaign.py runs more and
reports the figures.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from custody.timefmt import parse_timestamp
from tests.edge.recorder.conftest import EXE, fieldproof, records, verify

RUNS = int(os.environ.get("FIELDPROOF_CRASH_RUNS", "20"))


def crash_once(cfg: Path, spool: Path, rng: random.Random) -> dict[str, Any]:
    """Start a live recording, kill -9 it at a random moment, recover; returns what happened."""
    proc = subprocess.Popen(
        [EXE, "recorder", "record", "--config", str(cfg), "--seconds", "600"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not list((spool / "tmp").glob("*-*.json")):  # a segment has opened: we are recording
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "recording never started"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.2, 6.0))
        killed_at = time.time()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    sidecars = {
        p.stem: json.loads(p.read_text("utf-8")) for p in (spool / "tmp").glob("*-*.json") if p.stat().st_size
    }
    before = len(records(spool))
    fieldproof("recorder", "recover", "--config", str(cfg))
    new = records(spool)[before:]
    return {"killed_at": killed_at, "sidecars": sidecars, "new": new}


def test_kill_9_while_recording(make_recorder: Any, recorder_ca: Path) -> None:
    cfg, spool = make_recorder(segment_seconds=4, pre_event_seconds=2, width=320, height=240, fps=15)
    rng = random.Random(20261126)
    losses: list[float] = []
    recovered_total = 0
    for _ in range(RUNS):
        out = crash_once(cfg, spool, rng)
        new = out["new"]
        assert new[0]["kind"] == "boot"
        assert new[0]["body"]["reason"] == "crash-recovery"
        recovered = [r for r in new if r["kind"] == "recovered"]
        assert recovered, "the interrupted segment must be chained as recovered"
        recovered_total += len(recovered)
        for r in recovered:
            body = r["body"]
            key = f"{body['recording']}-{body['index']:04d}"
            side = out["sidecars"].get(key)
            if side is None or body["recovery"]["reason"].startswith("the segment was sealed"):
                continue  # killed between sealing and chaining: the whole file is there
            recorded_for = out["killed_at"] - parse_timestamp(side["start"]).timestamp()
            losses.append(recorded_for - body["media"]["duration_ms"] / 1000)
        report = verify(spool, recorder_ca)
        assert report["exit"] == 0, report["findings"]
    # Every kill left one boot record and at least one recovered segment; the chain never broke.
    recs = records(spool)
    assert sum(r["kind"] == "boot" for r in recs) == RUNS * 2  # the recording's boot and recovery's boot
    assert recovered_total >= RUNS
    assert losses, "no interrupted segment was measured"
    # All but at most its last second (fragments are at most half a second long, plus what was in flight).
    print(
        f"crash campaign: {RUNS} kills, {recovered_total} recovered; footage lost per kill: "
        f"max {max(losses):.2f} s, median {sorted(losses)[len(losses) // 2]:.2f} s"
    )
    assert max(losses) <= 1.0, losses
