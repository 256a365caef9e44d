"""The kill -9 campaign at full count (CI runs 20 kills; this runs as many as asked, default 100).

    .venv/bin/python bench/crash_campaign.py [--runs N]

Prints the campaign's figures: kills, segments recovered, footage lost per kill (max, median).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=100)
    args = ap.parse_args()
    env = {**os.environ, "FIELDPROOF_CRASH_RUNS": str(args.runs)}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-s",
        "-p",
        "no:cacheprovider",
        str(ROOT / "tests/edge/recorder/test_crash.py"),
    ]
    return subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
