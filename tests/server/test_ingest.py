"""Ingest through a real Mosquitto (mutual TLS, provisioning's config): a dock uploads signed spools."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from edge.sync.protocol import chunk_properties
from server.config import ServerSettings
from server.custody_log.models import CustodyEvent
from server.custody_log.service import events_for
from server.db import make_engine, session_factory
from server.evidence.backend import make_blob_store
from server.evidence.models import EvidenceFile, Segment
from server.ingest.models import Record
from server.ingest.worker import IngestWorker
from tests.server.case_helpers import assert_write_once, staged_leftovers, stored_digest
from tests.server.conftest import Fleet, RunningIngest
from tests.server.dock import TestDock, spool_records


def _session(settings: ServerSettings):
    return session_factory(make_engine(settings.db_url))()


def test_upload_files_every_segment_once_with_signed_stored_acks(
    tmp_path: Path, fleet: Fleet, settings: ServerSettings, ingest: RunningIngest, dock: TestDock
) -> None:
    spool = fleet.make_spool(tmp_path / "spool", segments=3)
    records = spool_records(spool)
    answers = dock.upload(spool, "REC-0001", certs=[fleet.cert("REC-0001")])

    # Every record acked `stored`, with the record's own hash; parse_ack already checked each signature.
    assert [a["status"] for a in answers] == ["stored"] * len(records)
    assert [(a["seq"], a["hash"]) for a in answers] == [
        (r["seq"], "sha256:" + hashlib.sha256(_record_bytes(line)).hexdigest()) for line, r in records
    ]
    assert not dock.forged
    segs = [(line, r) for line, r in records if r["kind"] == "segment"]
    assert [a["received"] for a in answers if a["seq"] in {r["seq"] for _, r in segs}] == [
        r["body"]["size"] for _, r in segs
    ]

    store = make_blob_store(settings)
    with _session(settings) as s:
        assert s.scalar(select(func.count()).select_from(Record)) == len(records)
        files = s.scalars(select(EvidenceFile).order_by(EvidenceFile.digest)).all()
        assert sorted(f.digest for f in files) == sorted(r["body"]["digest"] for _, r in segs)
        for f in files:
            assert f.status == "stored"
            assert f.stored_at is not None
            # The stored blob's bytes hash to the signed digest, and equal the spool's file.
            assert f.blob_key == store.key(f.digest)
            assert stored_digest(store, f.digest) == (f.digest, f.size)
            assert_write_once(store, f.digest)
        for _, r in segs:
            with store.open(r["body"]["digest"]) as blob:
                assert blob.read() == (spool / "media" / r["body"]["file"]).read_bytes()
        filed = events_for(session=s, kind="filed")
        assert sorted(e.seq for e in filed) == [r["seq"] for _, r in records]  # once each
        # The annotation in the sample chain set the first segment's case number after capture.
        first = s.scalars(select(Segment).order_by(Segment.seq)).first()
        assert first is not None
        assert first.case_number == "津人社监察〔2026〕17号"
        assert first.case_set_by is not None
    assert staged_leftovers(store) == []  # staging emptied

    # The same spool again: every record is a duplicate, nothing changes.
    again = dock.upload(spool, "REC-0001")
    assert [a["status"] for a in again] == ["duplicate"] * len(records)
    with _session(settings) as s:
        assert s.scalar(select(func.count()).select_from(Record)) == len(records)
        assert s.scalar(select(func.count()).select_from(EvidenceFile)) == len(segs)
        assert len(events_for(session=s, kind="filed")) == len(records)
        assert len(events_for(session=s, kind="duplicate")) == len(records)
    answer = dock.have("REC-0001")
    assert answer["next_seq"] == len(records)
    assert answer["pending"] == {}
    assert ingest.alive()


def _record_bytes(line: bytes) -> bytes:
    # The journal line is {"record":JCS(R),"sig":…}: the record's canonical bytes sit between the two.
    return line[len(b'{"record":') : line.rindex(b',"sig":')]


def test_resume_with_have_after_a_partial_upload(
    tmp_path: Path, fleet: Fleet, settings: ServerSettings, ingest: RunningIngest, dock: TestDock
) -> None:
    spool = fleet.make_spool(tmp_path / "spool", segments=2, size=600_000)
    records = spool_records(spool)
    first_seg = next(i for i, (_, r) in enumerate(records) if r["kind"] == "segment")
    for i, (line, _) in enumerate(records[: first_seg + 1]):
        ack = dock.send_record("REC-0001", line, [fleet.cert("REC-0001")] if i == 0 else None)
    assert ack["status"] == "pending"
    assert ack["received"] == 0
    rec = records[first_seg][1]
    data = (spool / "media" / rec["body"]["file"]).read_bytes()
    partial = dock.send_chunks(
        "REC-0001", rec["seq"], rec["body"]["digest"], data, stop=320_000, chunk=64 * 1024
    )
    assert partial["status"] == "pending"

    # The dock "restarts": it asks what the server has, and resumes from there.
    answer = dock.have("REC-0001")
    assert answer["next_seq"] == rec["seq"] + 1
    assert answer["last_hash"] == partial["hash"]
    assert answer["pending"] == {rec["body"]["digest"]: 320_000}
    done = dock.send_chunks(
        "REC-0001", rec["seq"], rec["body"]["digest"], data, start=answer["pending"][rec["body"]["digest"]]
    )
    assert done["status"] == "stored"
    assert done["received"] == len(data)
    # A chunk sent again after the file is stored changes nothing.
    again = dock.send_chunks("REC-0001", rec["seq"], rec["body"]["digest"], data, stop=64 * 1024)
    assert again["status"] == "duplicate"
    rest = dock.upload(spool, "REC-0001")
    assert [a["status"] for a in rest[: first_seg + 1]] == ["duplicate"] * (first_seg + 1)
    assert all(a["status"] == "stored" for a in rest[first_seg + 1 :])
    with _session(settings) as s:
        assert (
            s.scalar(select(func.count()).select_from(EvidenceFile).where(EvidenceFile.status == "stored"))
            == 2
        )
        kinds = [e.kind for e in s.scalars(select(CustodyEvent).where(CustodyEvent.seq == rec["seq"]))]
        assert kinds.count("filed") == 1


def test_gap_is_filed_and_recorded(
    tmp_path: Path, fleet: Fleet, settings: ServerSettings, ingest: RunningIngest, dock: TestDock
) -> None:
    spool = fleet.make_spool(tmp_path / "spool", segments=2)
    records = spool_records(spool)
    dock.send_record("REC-0001", records[0][0], [fleet.cert("REC-0001")])
    # Records 1..2 never arrive (lost on the recorder): record 3 is still evidence.
    ack = dock.send_record("REC-0001", records[3][0])
    assert ack["status"] in ("pending", "stored")
    with _session(settings) as s:
        gaps = events_for(session=s, kind="gap")
        assert [
            (g.seq, json.loads(g.detail)["missing_from"], json.loads(g.detail)["missing_to"]) for g in gaps
        ] == [(3, 1, 2)]
    answer = dock.have("REC-0001")
    assert answer["next_seq"] == 1  # the first hole: the dock resends what it still has from there
    # The lost records turn up after all: they fill the hole and link on both sides.
    assert dock.send_record("REC-0001", records[1][0])["status"] in ("pending", "stored")
    assert dock.send_record("REC-0001", records[2][0])["status"] == "stored"
    assert dock.have("REC-0001")["next_seq"] == 4


def test_backlog_is_bounded_by_bytes(settings: ServerSettings, dock: TestDock) -> None:
    """Mosquitto 2.0.11 does not hold to the Receive Maximum after the first PUBACK; the worker's own
    byte bound keeps a slow handler from piling up a dock's chunks in memory."""
    settings.check_data_dir()
    worker = IngestWorker(settings, client_id="test-backlog", max_backlog_bytes=1_000_000)
    real = worker.handler.handle

    def slow(*args: Any) -> Any:
        time.sleep(0.02)
        return real(*args)

    worker.handler.handle = slow  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert worker.subscribed.wait(5)
        chunk = b"c" * 200_000
        since = dock.mark()
        for i in range(30):
            props = chunk_properties(
                recorder="REC-0001", seq=i, digest="sha256:" + "0" * 64, offset=0, size=len(chunk)
            )
            dock.mqtt.publish_with(dock.topics.up("chunk"), chunk, props)
        dock.wait_ack(since, timeout=15, seq=29, status="rejected")
        assert len(dock.acks[since:]) == 30  # every chunk answered (unannounced), none lost
        assert 600_000 <= worker.peak_backlog_bytes <= 1_000_000
    finally:
        stop.set()
        thread.join(5)
