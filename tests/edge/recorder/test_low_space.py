"""Low space: below the reserve, recording stops cleanly with a record saying why; the chain verifies."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.edge.recorder.conftest import EXE, fieldproof, records, verify


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 40 MB tmpfs standing in for a nearly full spool partition (root only; CI runs as root)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_recording_stops_cleanly_at_the_reserve(
    make_recorder: Any, recorder_ca: Path, small_disk: Path
) -> None:
    cfg, spool = make_recorder(
        spool=small_disk / "spool", segment_seconds=2, spool_limits={"min_free_mb": 20, "reserve_mb": 12}
    )
    proc = subprocess.Popen(
        [EXE, "recorder", "record", "--config", str(cfg), "--seconds", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not list((spool / "media").glob("*/*.mp4")):  # a first segment is sealed
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # Something else fills the partition: leave 8 MB, below the 12 MB reserve.
        free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
        (small_disk / "ballast").write_bytes(b"\0" * (free - 8 * 2**20))
        out, err = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped early: recording stopped" in out
    assert "below the reserve of 12 MB" in out
    recs = records(spool)
    gap = [r for r in recs if r["kind"] == "gap"]
    assert len(gap) == 1
    assert "below the reserve" in gap[0]["body"]["reason"]
    assert [r["kind"] for r in recs[-2:]] == ["segment", "gap"]  # the last segment sealed, then the reason
    assert verify(spool, recorder_ca)["exit"] == 0
    # A new recording is refused while space stays short, with a clear message and nothing recorded.
    again = fieldproof("recorder", "record", "--config", str(cfg), "--fast", "--seconds", "2", check=False)
    assert again.returncode == 2
    assert "not enough space to start" in again.stderr
