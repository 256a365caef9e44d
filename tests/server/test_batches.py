"""Chunks handled in batches (docs/sync-protocol.md §8 rule 10): one flush for the lot, every chunk
answered with what is durable, a file completed by a batch committed and acked only afterwards, and the
worker's PUBACKs still in arrival order."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from edge.sync.protocol import chunk_properties, record_message
from server.config import ServerSettings
from server.custody_log.service import events_for
from server.db import make_engine, session_factory
from server.evidence.store import LocalBlobStore
from server.ingest.acks import AckSigner
from server.ingest.handler import Outgoing
from server.ingest.worker import IngestWorker, _Ticket
from tests.server.case_helpers import stored_digest
from tests.server.conftest import Fleet
from tests.server.dock import spool_records
from tests.server.test_handler import UP, _acks, _handler

CHUNK = 64 * 1024


def test_a_batch_is_answered_by_what_is_durable_and_a_completing_batch_only_after_commit(
    tmp_path: Path, fleet: Fleet, settings: ServerSettings
) -> None:
    keys = dict(AckSigner.from_ca_dir(fleet.ca).public_keys)
    h = _handler(settings, fleet, "ingest:batch")
    spool = fleet.make_spool(tmp_path / "spool", segments=1, size=5 * CHUNK - 100)
    (l0, _), (l1, seg) = spool_records(spool)[:2]
    h.handle(UP + "record", record_message("REC-0001", l0, [fleet.cert("REC-0001")]))
    assert _acks(h.handle(UP + "record", record_message("REC-0001", l1)), keys)[0]["status"] == "pending"
    digest, data = seg["body"]["digest"], (spool / "media" / seg["body"]["file"]).read_bytes()

    def chunks(*offsets: int) -> list[tuple[str, bytes, list[tuple[str, str]]]]:
        return [
            (
                UP + "chunk",
                data[o : o + CHUNK],
                chunk_properties(
                    recorder="REC-0001", seq=seg["seq"], digest=digest, offset=o, size=len(data)
                ),
            )
            for o in offsets
        ]

    # Three chunks, one of them twice: one flush, and four answers with the count durable after them.
    answers, completion = h.handle_batch(chunks(CHUNK, 0, 2 * CHUNK, 0), defer=True)
    acks = _acks(answers, keys)
    assert completion is None
    assert [(a["status"], a["received"]) for a in acks] == [("pending", 3 * CHUNK)] * 4
    assert h.store.received(digest) == 3 * CHUNK

    # The rest completes the file: no answer yet, and nothing is claimed that is not durable — a worker
    # dying now would leave the file pending. The local store leaves the completing bytes unflushed (to
    # commit) and uncounted; the S3 store, with earlier runs of this blob staged, stages the completing
    # batch too (docs/object-store.md), so another worker counts it: durable objects, not a claim.
    answers, completion = h.handle_batch(chunks(3 * CHUNK, 4 * CHUNK), defer=True)
    assert answers == []
    assert completion is not None
    assert not h.store.exists(digest)
    other = _handler(settings, fleet, "ingest:other").store
    assert other.received(digest) == (3 * CHUNK if isinstance(other, LocalBlobStore) else len(data))
    assert _filed(settings, seg["seq"]) == 0

    acks = _acks(h.complete(completion), keys)
    assert [(a["seq"], a["status"], a["received"]) for a in acks] == [(seg["seq"], "stored", len(data))]
    assert stored_digest(h.store, digest) == (digest, len(data))
    assert _filed(settings, seg["seq"]) == 1
    # And a chunk resent afterwards is a duplicate, as always.
    assert _acks(h.handle_many(chunks(0)), keys)[0]["status"] == "duplicate"


def _filed(settings: ServerSettings, seq: int) -> int:
    engine = make_engine(settings.db_url)
    try:
        with session_factory(engine)() as s:
            return sum(e.seq == seq for e in events_for(session=s, kind="filed", device="REC-0001"))
    finally:
        engine.dispose()


class _Broker:
    """Stands in for the paho client: records PUBACKs."""

    def __init__(self) -> None:
        self.pubacks: list[int] = []

    def ack(self, mid: int, qos: int) -> None:
        self.pubacks.append(mid)

    def publish(self, *_a: Any, **_k: Any) -> Any:
        raise AssertionError("nothing to publish here")


def test_pubacks_go_in_arrival_order_behind_a_deferred_completion(settings: ServerSettings) -> None:
    worker = IngestWorker(settings, client_id="test-puback-order")
    broker = _Broker()
    worker.client = broker  # type: ignore[assignment]
    conn = worker._connection
    waiting = _Ticket([(1, 1, conn), (2, 1, conn)], done=threading.Event())
    worker._tickets.extend([waiting, _Ticket([(3, 1, conn)]), _Ticket([(4, 1, conn + 1)])])
    worker._send_pubacks()
    assert broker.pubacks == []  # 3 waits for 1 and 2, whose file is still being committed
    assert waiting.done is not None
    waiting.done.set()
    worker._send_pubacks()
    assert broker.pubacks == [1, 2, 3]  # 4 came on another connection: no PUBACK is owed on this one
    worker.engine.dispose()


class _Client:
    """Stands in for the paho client: records what is published and PUBACKed."""

    def __init__(self) -> None:
        self.pubacks: list[int] = []
        self.published: list[Outgoing] = []

    def ack(self, mid: int, qos: int) -> None:
        self.pubacks.append(mid)

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> Any:
        self.published.append(Outgoing(topic, payload))
        return type("Info", (), {"rc": 0})()


def test_held_chunks_a_later_batch_completes_still_get_their_pubacks(
    tmp_path: Path, fleet: Fleet, settings: ServerSettings
) -> None:
    """Chunks held back (no flush, no answer yet) whose file a later batch completes are answered by
    the file's stored ack — and their PUBACKs, which waited for a release, still go out (in order)."""
    from server.ingest.worker import _Incoming

    keys = dict(AckSigner.from_ca_dir(fleet.ca).public_keys)
    worker = IngestWorker(settings, client_id="test-held-release")
    client = _Client()
    worker.client = client  # type: ignore[assignment]
    worker._committers = [threading.Thread(target=lambda: None)]  # hold and defer, as run() does
    spool = fleet.make_spool(tmp_path / "spool", segments=1, size=5 * CHUNK - 100)
    (l0, _), (l1, seg) = spool_records(spool)[:2]
    digest, data = seg["body"]["digest"], (spool / "media" / seg["body"]["file"]).read_bytes()
    conn = worker._connection
    mids = iter(range(1, 100))

    def put(what: str, payload: bytes, props: list[tuple[str, str]] | None = None) -> None:
        worker.queue.put(_Incoming(UP + what, payload, props, 1, next(mids), conn))

    def chunk(o: int) -> None:
        props = chunk_properties(recorder="REC-0001", seq=seg["seq"], digest=digest, offset=o, size=len(data))
        put("chunk", data[o : o + CHUNK], props)

    put("record", record_message("REC-0001", l0, [fleet.cert("REC-0001")]))
    put("record", record_message("REC-0001", l1))
    assert worker.process_one(0.01)  # both records, one transaction
    assert client.pubacks == [1, 2]
    for o in (0, CHUNK, 2 * CHUNK):
        chunk(o)
    assert worker.process_one(0.01)  # held: written, not flushed, not answered, not PUBACKed
    assert client.pubacks == [1, 2]
    assert worker.handler.holding
    for o in (3 * CHUNK, 4 * CHUNK):
        chunk(o)
    assert worker.process_one(0.01)  # completes the file: the held chunks are the completion's now
    assert not worker.handler.holding
    worker._commits.put(None)
    worker._commit_files()  # the committer: commit, file, stored ack
    statuses = [a["status"] for a in _acks(client.published, keys)]
    assert statuses.count("stored") == 2  # the record 0 (no file) and the segment's file
    assert "pending" in statuses  # the segment's record, before its chunks
    assert client.pubacks == [1, 2]  # the held batch still waits for a release, and so does the next
    assert worker.process_one(0.01)  # nothing waiting: the release
    assert client.pubacks == [1, 2, 3, 4, 5, 6, 7]
    assert _filed(settings, seg["seq"]) == 1
    worker.engine.dispose()


def test_held_chunks_of_a_file_another_worker_completed_get_the_files_answers(
    tmp_path: Path, fleet: Fleet, settings: ServerSettings
) -> None:
    """Worker A holds chunks of a file; worker B receives the whole file and commits it (its staging
    goes). A's release then finds nothing staged to flush: it answers with the file's acks, not with
    an ``error`` event or a rejection (met on S3 with 2 workers, bench/load_bench.py)."""
    keys = dict(AckSigner.from_ca_dir(fleet.ca).public_keys)
    a = _handler(settings, fleet, "ingest:a")
    b = _handler(settings, fleet, "ingest:b")
    spool = fleet.make_spool(tmp_path / "spool", segments=1, size=3 * CHUNK - 100)
    (l0, _), (l1, seg) = spool_records(spool)[:2]
    a.handle(UP + "record", record_message("REC-0001", l0, [fleet.cert("REC-0001")]))
    a.handle(UP + "record", record_message("REC-0001", l1))
    digest, data = seg["body"]["digest"], (spool / "media" / seg["body"]["file"]).read_bytes()

    def chunks(*offsets: int) -> list[tuple[str, bytes, list[tuple[str, str]]]]:
        return [
            (
                UP + "chunk",
                data[o : o + CHUNK],
                chunk_properties(
                    recorder="REC-0001", seq=seg["seq"], digest=digest, offset=o, size=len(data)
                ),
            )
            for o in offsets
        ]

    answers, completion = a.handle_batch(chunks(0), defer=False, hold=True)
    assert answers == []
    assert completion is None
    assert a.holding
    got = _acks(b.handle_many(chunks(0, CHUNK, 2 * CHUNK)), keys)
    assert [x["status"] for x in got][-1] == "stored"
    acks = _acks(a.release(), keys)
    assert [(x["seq"], x["status"]) for x in acks] == [(seg["seq"], "stored")]
    assert _filed(settings, seg["seq"]) == 1
    engine = make_engine(settings.db_url)
    try:
        with session_factory(engine)() as s:
            assert events_for(session=s, kind="error") == []
    finally:
        engine.dispose()


def test_records_handed_to_the_records_thread_are_pubacked_in_order_after_their_answers(
    tmp_path: Path, fleet: Fleet, settings: ServerSettings
) -> None:
    """With the records thread running (as ``run`` starts it), the worker's thread hands record batches
    over and goes on: a later message's PUBACK waits for the records' answers; batches that queued up
    meanwhile are filed together; the answers come before the PUBACKs."""
    from server.ingest.worker import _Incoming

    keys = dict(AckSigner.from_ca_dir(fleet.ca).public_keys)
    worker = IngestWorker(settings, client_id="test-records-thread")
    events: list[tuple[str, Any]] = []

    class _Ordered(_Client):
        def ack(self, mid: int, qos: int) -> None:
            events.append(("puback", mid))
            super().ack(mid, qos)

        def publish(self, topic: str, payload: bytes, qos: int = 0) -> Any:
            events.append(("answer", topic))
            return super().publish(topic, payload, qos)

    client = _Ordered()
    worker.client = client  # type: ignore[assignment]
    spool = fleet.make_spool(tmp_path / "spool", segments=3, size=CHUNK)
    lines = [line for line, _ in spool_records(spool)]
    conn = worker._connection
    worker._recorder = threading.Thread(target=lambda: None)  # hand over, but nobody takes them yet
    worker.queue.put(
        _Incoming(
            UP + "record", record_message("REC-0001", lines[0], [fleet.cert("REC-0001")]), None, 1, 1, conn
        )
    )
    assert worker.process_one(0.01)
    for mid, line in enumerate(lines[1:], start=2):
        worker.queue.put(_Incoming(UP + "record", record_message("REC-0001", line), None, 1, mid, conn))
    worker.queue.put(_Incoming(UP + "have", b"{}", None, 1, 99, conn))  # anything else, after them
    assert worker.process_one(0.01)  # the rest of the records: handed over too
    assert worker.process_one(0.01)  # the have?: handled here, its PUBACK owed behind the records'
    assert client.pubacks == []
    assert worker._records.qsize() == 2
    worker._records.put(None)
    worker._handle_records()  # the records thread: both batches in one go, then stops
    acks = _acks(client.published, keys)
    assert sorted(a["seq"] for a in acks if a.get("seq") is not None) == list(range(len(lines)))
    assert client.pubacks == [*range(1, len(lines) + 1), 99]
    last_answer = max(i for i, e in enumerate(events) if e[0] == "answer" and e[1].endswith("/ack"))
    first_puback = min(i for i, e in enumerate(events) if e[0] == "puback")
    assert last_answer < first_puback  # every record answered before any of their PUBACKs
    worker.engine.dispose()


def test_a_failing_records_thread_pubacks_nothing_of_its_batch_and_stops_the_worker(
    tmp_path: Path, fleet: Fleet, settings: ServerSettings
) -> None:
    """A batch the records thread cannot handle (the database gone, say) is not PUBACKed — the broker
    delivers it again, to this worker restarted or another — and the worker's thread stops."""
    import pytest

    from server.ingest.worker import _Incoming

    worker = IngestWorker(settings, client_id="test-records-fail")
    client = _Client()
    worker.client = client  # type: ignore[assignment]
    spool = fleet.make_spool(tmp_path / "spool", segments=1, size=CHUNK)
    (l0, _) = spool_records(spool)[0]
    worker._recorder = threading.Thread(target=lambda: None)
    worker.queue.put(
        _Incoming(
            UP + "record",
            record_message("REC-0001", l0, [fleet.cert("REC-0001")]),
            None,
            1,
            1,
            worker._connection,
        )
    )
    assert worker.process_one(0.01)

    def broken(_messages: Any) -> Any:
        raise OSError(28, "No space left on device")

    worker.handler.handle_records = broken  # type: ignore[method-assign]
    worker._handle_records()  # returns: it failed
    assert client.pubacks == []
    assert client.published == []
    with pytest.raises(RuntimeError, match="records thread failed"):
        worker.process_one(0.01)
    # Nor does the worker's thread hang handing records over to a failed thread whose queue is full.
    while not worker._records.full():
        worker._records.put_nowait(None)
    item = _Incoming(UP + "record", b"{}", None, 1, 2, worker._connection)
    with pytest.raises(RuntimeError, match="records thread failed"):
        worker._hand_records_over([item], 0)
    assert client.pubacks == []
    worker.engine.dispose()
