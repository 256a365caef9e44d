"""Parallel ingest, CI size: 10 docks syncing at once into two ``fieldproof server ingest`` processes on one
MQTT v5 shared subscription, on PostgreSQL — every record of every recorder exactly once; the two workers
really split the load; and with one worker killed -9 mid-sync, still exactly once. (The big run:
bench/load_bench.py.)
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.edge.dock.conftest import Fleet
from tests.faults.judge import MIB
from tests.faults.parallel import ParallelRun, ParallelSettings, make_spools, provision_fleet
from tests.faults.postgres import running_postgres
from tests.server.conftest import Postgres

DOCKS = 10
SEGMENTS = 6  # 120 MiB: long enough (over a second at 80 MB/s) for the kill to land mid-sync
SEGMENT_BYTES = 2 * MIB


@dataclass(frozen=True)
class Prepared:
    fleet: Fleet
    spools: Path
    total: int
    pg: Postgres
    pg_pid: int
    names: Iterator[int]

    def run(self, where: Path, settings: ParallelSettings) -> dict[str, Any]:
        """One run on a fresh PostgreSQL database."""
        db = f"parallel_{next(self.names)}"
        self.pg.create(db)
        return ParallelRun(
            self.fleet, where, self.spools, settings, database_url=self.pg.url(db), postgres_pid=self.pg_pid
        ).run()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prepared]:
    """Ten recorders and ten docks enrolled in a fresh CA, one signed spool per recorder (copied per run),
    and PostgreSQL 15 (a database per run)."""
    root = tmp_path_factory.mktemp("parallel")
    fleet = provision_fleet(root / "ca", DOCKS)
    total = make_spools(fleet, root / "spools", DOCKS, segments=SEGMENTS, segment_bytes=SEGMENT_BYTES, seed=7)
    with running_postgres() as (pg, pid):
        yield Prepared(fleet, root / "spools", total, pg, pid, itertools.count(1))


def _settings(**kw: object) -> ParallelSettings:
    # A short resend timer so that what a killed worker took with it comes back within the test's time.
    return ParallelSettings(
        docks=DOCKS, workers=2, ack_timeout_s=2.0, retry_max_s=4.0, deadline_s=120.0, stall_s=40.0, **kw
    )  # type: ignore[arg-type]


def test_two_workers_on_a_shared_subscription_split_the_load_and_file_every_record_once(
    prepared: Prepared, tmp_path: Path
) -> None:
    r = prepared.run(tmp_path / "run", _settings())
    print(json.dumps(r, indent=1, ensure_ascii=False))

    assert r["problems"] == [], f"seed {r['seed']}"
    assert r["exactly_once"] is True
    assert r["bytes"] == prepared.total
    assert r["segments"] == DOCKS * SEGMENTS
    assert r["rehashed_bytes"] == prepared.total
    # Both workers staged chunk bytes of their own (pwrite into the staging area, /proc/<pid>/io): the
    # broker dealt the messages between them. Each got at least a few segments' worth.
    assert set(r["worker_io"]) == {"ingest1", "ingest2"}
    for name, io in r["worker_io"].items():
        assert io["wchar_mib"] >= 4 * SEGMENT_BYTES / MIB / 2, f"{name} wrote only {io['wchar_mib']} MiB"
    assert r["latency_last_chunk_to_stored_ack"]["segments_timed"] == DOCKS * SEGMENTS


def test_one_worker_killed_mid_sync_nothing_lost_nothing_filed_twice(
    prepared: Prepared, tmp_path: Path
) -> None:
    r = prepared.run(tmp_path / "run", _settings(kill_worker_at=0.3))
    print(json.dumps(r, indent=1, ensure_ascii=False))

    assert r["problems"] == [], f"seed {r['seed']}"
    assert r["exactly_once"] is True
    assert len(r["killed"]) == 1
    kill = r["killed"][0]
    assert kill["struck"] is True  # the worker was running: -9 ended it
    assert 0.3 <= kill["acked"] < 0.9, kill  # mid-sync: most bytes were still to come
    assert r["segments"] == DOCKS * SEGMENTS
    assert r["rehashed_bytes"] == prepared.total
    assert set(r["worker_io"]) == {n for n in ("ingest1", "ingest2") if n != kill["worker"]}
