"""Parallel ingest under load: N docks syncing at once through one broker into 1, 2, 4 … ingest workers.

    .venv/bin/python bench/load_bench.py [--docks 50] [--segments 4] [--segment-mib 2] [--workers 1,2,4]
                                         [--kill-workers 2 | --no-kill] [--quick] [--seed N] [--keep]

Every piece is the real thing (``tests/faults/parallel.py``): Mosquitto from the provisioning's
broker-config (mutual TLS), ``fieldproof server ingest`` processes on one MQTT v5 shared subscription
(``$share/<group>/…``, checked in their logs) on PostgreSQL 15 and the local evidence store, and
``fieldproof dock sync-once`` processes — each an enrolled dock identity docked with its own enrolled
recorder and a signed spool (only camera and microphone are simulated: random bytes).

Per worker count, on a fresh database with the same spools: throughput (MB/s and segments/s, from the
docks' start to the last dock's exit), the time from a segment's last chunk to its ``stored`` ack (taps:
``mosquitto_sub`` on the chunk and ack topics, receive time first — p50/p90/p99), CPU seconds per process
(broker, each worker, PostgreSQL with its backends, the docks, the taps; from ``/proc``), and the verdict:
every record of every recorder on the server exactly once, every blob re-hashed, the outbox final, the
spool empty, the chain sound (``tests/faults/judge.py``). The baseline is the 1-worker run of the same
invocation: ratios are against it. Then one run with ``--kill-workers`` workers where one is killed -9
(by PID) at 40 % of the bytes acknowledged: still exactly once.

``--quick`` (CI): 10 docks × 2 segments × 1 MiB, workers 1,2, the kill run with 2. ``--store s3``: the
same runs with the S3 evidence store on a SeaweedFS started here for each run (tests/server/seaweed.py:
one bucket with Object Lock, fsync on; blobs re-hashed through the S3 store for the verdict).

Prints one JSON object (stdout) and a table (stderr). Exit 0 when every run held exactly once, 1 when a
check failed, 2 when a run could not finish. Working files in a temporary folder, removed unless
``--keep`` or a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.faults.judge import MIB  # noqa: E402
from tests.faults.parallel import ParallelRun, ParallelSettings, make_spools, provision_fleet  # noqa: E402
from tests.faults.postgres import running_postgres  # noqa: E402
from tests.faults.processes import CampaignError  # noqa: E402


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docks", type=int, default=50, help="docks syncing at once (default 50)")
    ap.add_argument("--segments", type=int, default=4, help="segments per recorder (default 4)")
    ap.add_argument("--segment-mib", type=float, default=2.0, help="MiB per segment (default 2)")
    ap.add_argument(
        "--workers", default="1,2,4", help="worker counts to run, comma-separated (default 1,2,4)"
    )
    ap.add_argument("--kill-workers", type=int, default=2, help="workers in the kill run (default 2)")
    ap.add_argument("--kill-at", type=float, default=0.4, help="fraction acknowledged at the kill (0.4)")
    ap.add_argument("--no-kill", action="store_true", help="skip the run that kills a worker")
    ap.add_argument("--ack-timeout", type=float, default=10.0, help="the docks' --ack-timeout (default 10 s)")
    ap.add_argument("--retry-max", type=float, default=20.0, help="the docks' --retry-max (default 20 s)")
    ap.add_argument(
        "--dock-nice",
        type=int,
        default=0,
        help="run the docks under nice -n N, so the server side gets the CPU first (default 0)",
    )
    ap.add_argument("--quick", action="store_true", help="CI size: 10 docks × 2 × 1 MiB, workers 1,2")
    ap.add_argument("--seed", type=int, default=None, help="media and kill choice (default: fresh)")
    ap.add_argument("--deadline", type=float, default=900.0, help="bound on each run (s)")
    ap.add_argument(
        "--store", choices=("local", "s3"), default="local", help="evidence store (default local)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the working folder")
    args = ap.parse_args()
    if args.quick:
        args.docks, args.segments, args.segment_mib, args.workers = 10, 2, 1.0, "1,2"
    args.counts = [int(n) for n in args.workers.split(",") if n.strip()]
    return args


def _row(name: str, r: dict[str, Any], base: dict[str, Any] | None) -> str:
    lat = r["latency_last_chunk_to_stored_ack"]
    ratio = f"{r['mb_per_s'] / base['mb_per_s']:.2f}×" if base else "—"
    cpu = r["cpu_s"]
    workers = sum(v for k, v in cpu.items() if k.startswith("ingest"))
    resent = r["chunk_msgs_relayed_again"] / max(1, r["chunk_msgs_relayed"] - r["chunk_msgs_relayed_again"])
    return (
        f"{name:<20} {r['mb_per_s']:>6.1f} {r['segments_per_s']:>6.1f} {ratio:>6} {r['sync_s']:>6.1f}"
        f" {lat['p50_s']!s:>6} {lat['p99_s']!s:>6} {lat['from_first_publication']['p99_s']!s:>6}"
        f" {resent:>6.0%}  {cpu.get('broker', 0):>6.1f} {workers:>7.1f} {cpu.get('postgres', 0):>5.1f}"
        f" {cpu['docks (all)']:>6.1f} {r['machine']['busy_not_ours_core_s']:>6.1f}"
        f"  {'exactly once' if r['exactly_once'] else 'PROBLEMS'}"
    )


class _S3:
    """A fresh SeaweedFS per run (tests/server/seaweed.py), one Object Lock bucket with fsync on.

    Fresh per run because the starter's SeaweedFS has a fixed number of 256 MB volumes and reclaims the
    space of deleted staging versions only when it vacuums: three 400 MiB runs in one instance ran out
    of writable volumes (the workers then got ``InternalError`` for every staged chunk and the docks
    waited, resending — measured, see docs/server-ingest.md).
    """

    BUCKET = "evidence"

    def __init__(self, work: Path) -> None:
        self.work = work
        self.sw: Any = None

    def for_run(self, name: str, run_dir: Path, ca: Path) -> dict[str, Any]:
        """ParallelRun's keywords: the workers' FIELDPROOF_S3_* settings, the store to judge, staging."""
        from server.config import ServerSettings
        from server.evidence.backend import make_blob_store
        from tests.server.seaweed import ACCESS_KEY, Seaweed

        self.stop()
        self.sw = Seaweed(self.work / f"seaweed-{name}").start()
        self.sw.make_bucket(self.BUCKET)
        env = {
            "FIELDPROOF_STORE_BACKEND": "s3",
            "FIELDPROOF_S3_ENDPOINT": self.sw.endpoint,
            "FIELDPROOF_S3_BUCKET": self.BUCKET,
            "FIELDPROOF_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "FIELDPROOF_S3_SECRET_ACCESS_KEY": self.sw.secret_key,
            "FIELDPROOF_S3_OBJECT_LOCK_DAYS": "1",
        }
        settings = ServerSettings(
            data_dir=run_dir / "server",
            ca_dir=ca,
            **{k.removeprefix("FIELDPROOF_").lower(): v for k, v in env.items()},  # type: ignore[arg-type]
        )
        client = self.sw.client()

        def staging_left() -> list[str]:
            got = client.list_objects_v2(Bucket=self.BUCKET, Prefix="staging/")
            return [o["Key"] for o in got.get("Contents", [])]

        return {
            "extra_env": env,
            "blobs": make_blob_store(settings),
            "staging_left": staging_left,
            "watch_pids": {"seaweedfs": self.sw.service.proc.pid},
        }

    def stop(self) -> None:
        if self.sw is not None:
            self.sw.stop()
            shutil.rmtree(self.sw.root, ignore_errors=True)
            self.sw = None


@contextlib.contextmanager
def _object_store(kind: str, work: Path) -> Iterator[_S3 | None]:
    if kind != "s3":
        yield None
        return
    s3 = _S3(work)
    try:
        yield s3
    finally:
        s3.stop()


def main() -> int:
    args = _args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    work = Path(tempfile.mkdtemp(prefix="fieldproof-load-"))
    out: dict[str, Any] = {"bench": "load_bench", "seed": seed, "runs": {}}
    t0 = time.monotonic()
    try:
        print(f"load_bench: provisioning {args.docks} recorders and {args.docks} docks", file=sys.stderr)
        fleet = provision_fleet(work / "ca", args.docks)
        seg_bytes = int(args.segment_mib * MIB)
        total = make_spools(
            fleet, work / "spools", args.docks, segments=args.segments, segment_bytes=seg_bytes, seed=seed
        )
        out["data"] = {
            "docks": args.docks,
            "segments_per_dock": args.segments,
            "segment_bytes": seg_bytes,
            "mib": round(total / MIB, 1),
            "mb": round(total / 1e6, 1),
        }
        print(f"load_bench: spools ready, {total / MIB:.0f} MiB; seed {seed}", file=sys.stderr)
        plan: list[tuple[str, int, float | None]] = [(f"{n} worker(s)", n, None) for n in args.counts]
        if not args.no_kill:
            plan.append((f"{args.kill_workers} workers, 1 killed", args.kill_workers, args.kill_at))
        with running_postgres() as (pg, pg_pid), _object_store(args.store, work) as s3:
            out["store"] = args.store
            for i, (name, workers, kill_at) in enumerate(plan):
                db = f"load_{i}"
                pg.create(db)
                run_dir = work / f"run-{i}"
                store_kw = {} if s3 is None else s3.for_run(f"run{i}", run_dir, fleet.ca)
                settings = ParallelSettings(
                    docks=args.docks,
                    workers=workers,
                    ack_timeout_s=args.ack_timeout,
                    retry_max_s=args.retry_max,
                    kill_worker_at=kill_at,
                    deadline_s=args.deadline,
                    seed=seed,
                    dock_nice=args.dock_nice,
                )
                r = ParallelRun(
                    fleet,
                    run_dir,
                    work / "spools",
                    settings,
                    database_url=pg.url(db),
                    postgres_pid=pg_pid,
                    **store_kw,  # type: ignore[arg-type]
                ).run()
                out["runs"][name] = r
                print(
                    json.dumps({name: {k: r[k] for k in ("mb_per_s", "sync_s", "problems")}}), file=sys.stderr
                )
                if r["exactly_once"]:
                    shutil.rmtree(run_dir, ignore_errors=True)  # the blobs and spools need not stay
    except CampaignError as exc:
        out["error"] = str(exc)
        print(json.dumps(out, indent=1, ensure_ascii=False))
        print(f"load_bench: a run could not finish; files kept in {work}", file=sys.stderr)
        return 2
    runs = out["runs"]
    base_name = f"{min(args.counts)} worker(s)" if args.counts else None
    base = runs.get(base_name) if base_name else None
    out["baseline"] = base_name
    out["ratios_vs_baseline_mb_per_s"] = {
        k: round(r["mb_per_s"] / base["mb_per_s"], 2) for k, r in runs.items() if base
    }
    out["exactly_once"] = all(r["exactly_once"] for r in runs.values())
    out["total_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(out, indent=1, ensure_ascii=False))
    print(
        f"\n{'run':<20} {'MB/s':>6} {'seg/s':>6} {'ratio':>6} {'sync s':>6} {'p50 s':>6} {'p99 s':>6}"
        f" {'p99 1st':>6} {'resent':>6}  {'broker':>6} {'workers':>7} {'pg':>5} {'docks':>6} {'others':>6}"
        "   (CPU in core-seconds; others: busy time no process of the run used)",
        file=sys.stderr,
    )
    for name, r in runs.items():
        print(_row(name, r, base), file=sys.stderr)
    if out["exactly_once"] and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"load_bench: files kept in {work}", file=sys.stderr)
    return 0 if out["exactly_once"] else 1


if __name__ == "__main__":
    sys.exit(main())
