"""The sync fault campaign (tests/faults/) from the command line, at sizes and counts beyond CI's.

    .venv/bin/python bench/sync_faults.py [--size-mb 1000] [--kills 20] [--cuts 2] [--seed N]

First a baseline — the same sync (same size, same processes, same settings) with no fault — then the
campaign: kill -9 of the broker, the ingest and the dock, ``--kills`` of each, at random moments, and
``--cuts`` link cuts (the broker stopped for three times the dock's longest back-off). Prints one JSON
object: per run the kills per kind, bytes, seconds, segments and records, resends, and the exactly-once
verdict; and the campaign's sync time as a ratio of the baseline's. Progress goes to stderr.

Sizes are MiB (2^20 bytes). Exit 0 when both runs left every record on the server exactly once and all
checks held, 1 when a check failed, 2 when the campaign could not run. Working files go to a temporary
folder, removed afterwards unless ``--keep`` (or a failure: then its path is printed).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.faults.campaign import Campaign, CampaignError, CampaignSettings, provision  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1000, help="MiB of segments to sync (default 1000)")
    ap.add_argument(
        "--kills", type=int, default=20, help="kill -9 of each: broker, ingest, dock (default 20)"
    )
    ap.add_argument("--cuts", type=int, default=2, help="link cuts (default 2)")
    ap.add_argument("--segment-mb", type=float, default=5.0, help="mean segment size in MiB (default 5)")
    ap.add_argument("--retry-max", type=float, default=2.0, help="the dock's --retry-max (default 2 s)")
    ap.add_argument("--seed", type=int, default=None, help="repeat a schedule (default: a fresh seed)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the fault-free baseline run")
    ap.add_argument("--deadline", type=float, default=3600.0, help="bound on each run (s)")
    ap.add_argument("--keep", action="store_true", help="keep the working folder")
    args = ap.parse_args()

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    work = Path(tempfile.mkdtemp(prefix="fieldproof-sync-faults-"))
    out: dict[str, Any] = {"bench": "sync_faults"}
    ok = False
    try:
        fleet = provision(work / "ca")

        def settings(kills: int, cuts: int) -> CampaignSettings:
            return CampaignSettings(
                size_mib=args.size_mb,
                broker_kills=kills,
                ingest_kills=kills,
                dock_kills=kills,
                link_cuts=cuts,
                segment_mib=args.segment_mb,
                retry_max_s=args.retry_max,
                seed=seed,  # one seed: the same media for the baseline and the campaign
                deadline_s=args.deadline,
            )

        if not args.no_baseline:
            base = Campaign(fleet, work / "baseline", settings(0, 0)).run()
            out["baseline"] = base
            shutil.rmtree(work / "baseline" / "server" / "store", ignore_errors=True)
        run = Campaign(fleet, work / "campaign", settings(args.kills, args.cuts)).run()
        out["campaign"] = run
        if "baseline" in out:
            out["campaign_vs_baseline_sync_time"] = round(run["sync_s"] / out["baseline"]["sync_s"], 2)
        ok = run["exactly_once"] and out.get("baseline", {}).get("exactly_once", True)
        out["exactly_once"] = ok
    except CampaignError as exc:
        out["error"] = str(exc)
        print(json.dumps(out, indent=1, ensure_ascii=False))
        print(f"sync_faults: the campaign could not run; files kept in {work}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=1, ensure_ascii=False))
    if ok and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"sync_faults: files kept in {work}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
