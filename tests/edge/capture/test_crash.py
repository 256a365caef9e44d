"""kill -9 in the middle of a segment: every complete fragment of the fMP4 file stays readable.

This is the premise of the recorder's crash recovery (edge/journal/recovery.py trims a torn file back
to its last whole fragment): the pipeline's writer must leave such a file behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.edge.capture.helpers import FFMPEG, ffprobe, video_packets

ROOT = Path(__file__).resolve().parents[3]

# A recorder in miniature: real time, one long segment, then it waits to be killed.
SCRIPT = """
import sys, time
from pathlib import Path
from tests.edge.capture.helpers import make_pipeline
pipe, sink = make_pipeline(Path(sys.argv[1]), segment_seconds=60, realtime=True)
pipe.start()
pipe.start_recording("killed")
while True:
    time.sleep(0.1)
    print(round(pipe.media_time, 2), flush=True)
"""


def test_kill_9_mid_segment_leaves_all_complete_fragments_readable(tmp_path: Path) -> None:
    work = tmp_path / "work"
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(work)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        media = 0.0
        deadline = time.monotonic() + 30
        assert proc.stdout is not None
        while media < 3.5 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "the recorder script died before it was killed"
            media = float(line)
        os.kill(proc.pid, signal.SIGKILL)  # no flush, no close, no atexit: a crash
    finally:
        proc.kill()
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    (torn,) = work.glob("killed-*.mp4")
    info = ffprobe(torn)  # check=True: ffprobe reads the torn file without failing
    video = video_packets(info)
    # Fragments end at keyframes (one a second); all but the one being written survive.
    assert len(video) >= (media - 1.5) * 30, (len(video), media)
    assert video[0]["flags"].startswith("K")
    slots = [round(float(p["pts_time"]) * 30) for p in video]
    assert slots == list(range(len(video))), "no frame missing inside the surviving fragments"
    # And the surviving frames decode: only the torn tail may draw a complaint.
    r = subprocess.run(
        [str(FFMPEG), "-v", "error", "-i", str(torn), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
