"""The README's main job, ``fieldproof demo``, run as a user runs it: every step shows what it should."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

from custody.digest import file_digest


def test_demo_runs_the_whole_path_and_files_every_segment(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    exe = Path(sys.executable).with_name("fieldproof")
    done = subprocess.run(
        [str(exe), "demo", "--out", str(out), "--seconds", "6"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "DEMO OK" in done.stdout
    # What the demo printed as filed is what the server holds: every segment once, its blob intact.
    printed = re.findall(r"^\s+(\d+)\s+stored\s+(\d+)\s+sha256:", done.stdout, flags=re.M)
    assert printed
    db = sqlite3.connect(out / "server" / "fieldproof.db")
    rows = db.execute(
        "SELECT s.seq, f.digest, f.size, f.status FROM segments s JOIN files f ON f.digest = s.digest "
        "WHERE s.device = 'REC-0001' ORDER BY s.seq"
    ).fetchall()
    db.close()
    assert [(int(s), int(n)) for s, n in printed] == [(seq, size) for seq, _, size, _ in rows]
    assert len({sha for _, sha, _, _ in rows}) == len(rows)
    store = out / "server" / "store"
    for _, sha, size, status in rows:
        assert status == "stored"
        blobs = [p for p in store.rglob("*") if p.is_file() and p.name == sha.removeprefix("sha256:")]
        assert len(blobs) == 1, sha
        assert file_digest(blobs[0]) == (sha, size)
    # The recorder kept no file the server had not acknowledged, and freed every one it had.
    assert not [p for p in (out / "spool-REC-0001" / "media").rglob("*") if p.is_file()]
