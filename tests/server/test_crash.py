"""The ingest command killed with SIGKILL in the middle of a file, then restarted: the dock's resent data
completes the file, and nothing is filed twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from fieldproof.cli import COMPONENTS
from server.config import ServerSettings
from server.custody_log.service import events_for
from server.db import make_engine, session_factory
from server.evidence.backend import make_blob_store
from server.evidence.models import EvidenceFile
from server.ingest.models import Record
from tests.server.case_helpers import staged_leftovers, stored_digest
from tests.server.conftest import Fleet
from tests.server.dock import TestDock, spool_records


def _command() -> list[str]:
    # The lead registers server.cli in fieldproof's command; until then the module runs the same code.
    if "server.cli" in COMPONENTS:
        return [str(Path(sys.executable).with_name("fieldproof")), "server", "ingest"]
    return [sys.executable, "-m", "server.ingest"]


@pytest.fixture
def start_ingest(settings: ServerSettings, tmp_path: Path) -> Iterator[object]:
    procs: list[subprocess.Popen[bytes]] = []
    env = {
        **os.environ,
        "FIELDPROOF_DATA_DIR": str(settings.data_dir),
        "FIELDPROOF_DATABASE_URL": settings.db_url,
        "FIELDPROOF_CA_DIR": str(settings.ca_dir),
        "FIELDPROOF_MQTT_PORT": str(settings.mqtt_port),
        "FIELDPROOF_SHARE_GROUP": settings.share_group,
        "FIELDPROOF_S3_PREFIX": settings.s3_prefix,  # the test's own prefix, when the store is S3
    }

    def start() -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"ingest-{len(procs)}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(_command(), env=env, stdout=log, stderr=log, cwd=Path(__file__).parents[2])
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_ingest_killed_mid_file_and_restarted(
    tmp_path: Path, fleet: Fleet, settings: ServerSettings, dock: TestDock, start_ingest: object
) -> None:
    spool = fleet.make_spool(tmp_path / "spool", segments=2, size=3_000_000)
    records = spool_records(spool)
    seg = next(r for _, r in records if r["kind"] == "segment")
    data = (spool / "media" / seg["body"]["file"]).read_bytes()
    first = start_ingest()  # type: ignore[operator]
    dock.have("REC-0001")  # answered once the worker is up and subscribed
    for i, (line, _) in enumerate(records[: seg["seq"] + 1]):
        ack = dock.send_record("REC-0001", line, [fleet.cert("REC-0001")] if i == 0 else None)
    assert ack["status"] == "pending"
    half = dock.send_chunks(
        "REC-0001", seg["seq"], seg["body"]["digest"], data, stop=1_500_000, chunk=100_000
    )
    assert half["received"] == 1_500_000
    # More chunks are on their way when the worker dies.
    for off in range(1_500_000, len(data), 100_000):
        from edge.sync.protocol import chunk_properties

        props = chunk_properties(
            recorder="REC-0001", seq=seg["seq"], digest=seg["body"]["digest"], offset=off, size=len(data)
        )
        dock.mqtt.publish_with(dock.topics.up("chunk"), data[off : off + 100_000], props)
    time.sleep(0.02)
    first.kill()
    first.wait(5)
    assert first.returncode == -signal.SIGKILL

    second = start_ingest()  # type: ignore[operator]
    answer = dock.have("REC-0001")
    received = answer["pending"].get(seg["body"]["digest"], len(data))
    print(f"after the kill the server held {received} of {len(data)} bytes")
    assert received >= 1_500_000  # everything acked before the kill survived it
    if received < len(data):
        done = dock.send_chunks(
            "REC-0001", seg["seq"], seg["body"]["digest"], data, start=received, chunk=100_000
        )
        assert done["status"] == "stored"
    answers = dock.upload(spool, "REC-0001")  # the dock resends from its outbox: all of it
    assert all(a["status"] in ("stored", "duplicate") for a in answers)
    second.send_signal(signal.SIGTERM)
    assert second.wait(10) == 0

    store = make_blob_store(settings)
    with session_factory(make_engine(settings.db_url))() as s:
        assert s.scalar(select(func.count()).select_from(Record)) == len(records)
        files = list(s.scalars(select(EvidenceFile)))
        assert len(files) == 2
        assert all(f.status == "stored" for f in files)
        for f in files:
            assert f.blob_key == store.key(f.digest)
            assert stored_digest(store, f.digest) == (f.digest, f.size)
        filed = [e.seq for e in events_for(session=s, kind="filed")]
        assert sorted(filed) == [r["seq"] for _, r in records]  # each record filed exactly once
        assert events_for(session=s, kind="error") == []
    assert staged_leftovers(store) == []
