"""The sync client against a real Mosquitto (mTLS, ACL from provisioning) and a server stand-in."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from custody.spool import Spool
from edge.dock.intake import journal_items
from edge.sync.client import AckDelay, SyncClient, TlsFiles
from edge.sync.outbox import Outbox, OutboxRow
from edge.sync.protocol import Topics, signed_ack
from provisioning import init_ca, revoke
from tests.edge.dock.conftest import Fleet
from tests.edge.dock.helpers import PREFIX, Responder, journal_facts, wait_for
from tests.provisioning.helpers import Broker, Client, free_port


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    ob = Outbox(tmp_path / "outbox.sqlite")
    yield ob
    ob.close()


@pytest.fixture
def make_client(fleet: Fleet, outbox: Outbox) -> Iterator[Callable[..., SyncClient]]:
    made: list[SyncClient] = []

    def make(ports: list[int], spools: dict[str, Path], *, dock: str = "DOCK-01", **kw: Any) -> SyncClient:
        b = fleet.bundle(kw.pop("identity", dock))
        ob = kw.pop("outbox", outbox)
        settings: dict[str, Any] = {
            "chunk_bytes": 64 * 1024,
            "retry_min_s": 0.1,
            "retry_max_s": 1.0,
            "ack_timeout_s": 1.0,
            "connect_timeout_s": 2.0,
            "keepalive_s": 5,
        }
        settings.update(kw)
        client = SyncClient(
            dock_id=dock,
            brokers=[("127.0.0.1", p) for p in ports],
            outbox=ob,
            server_keys=fleet.server_keys(),  # type: ignore[arg-type]
            files=spools.get,
            tls=TlsFiles(b / "ca-chain.pem", b / "tls.pem", b / "tls.key"),
            **settings,
        )
        made.append(client)
        return client

    yield make
    for c in made:
        c.stop()


def enqueue(outbox: Outbox, spool: Path) -> int:
    sp = Spool.open(spool)
    intake = journal_items(sp, sp.read_journal())
    assert not intake.unsendable
    return outbox.enqueue(intake.items).added


def done(outbox: Outbox, *recorders: str) -> Callable[[], bool]:
    return lambda: all(not outbox.open_rows(r) for r in recorders)


def assert_delivered(responder: Responder, spool: Path, outbox: Outbox) -> None:
    """The stand-in holds every record once, with its exact hash, and every file byte for byte."""
    facts = journal_facts(spool)
    device = Spool.open(spool).device
    with responder.lock:
        held = {s: h for (r, s), h in responder.records.items() if r == device}
        assert held == {f.seq: f.hash for f in facts}
        assert not responder.forks
        for f in facts:
            if f.file:
                data = bytes(responder.files[f.digest])
                assert "sha256:" + hashlib.sha256(data).hexdigest() == f.digest
                assert data == (spool / "media" / f.file).read_bytes()
    rows = outbox.rows(device)
    assert {r.state for r in rows} <= {"stored", "duplicate"}
    assert all(json.loads(r.ack)["sig"]["alg"] == "ed25519" for r in rows)


def retained_state(fleet: Fleet, broker: Broker, dock: str) -> dict[str, Any] | None:
    """The retained state of a dock, read as the server would (None when there is none)."""
    import queue

    c = Client(
        broker.port, fleet.ca / "ca-chain.pem", fleet.ca / "ingest.pem", fleet.ca / "ingest.key", "watch"
    )
    c.connect()
    try:
        c.subscribe(Topics(PREFIX, dock).state)
        try:
            return json.loads(c.messages.get(timeout=1.0).payload)
        except queue.Empty:
            return None
    finally:
        c.close()


def test_two_recorders_sync_completely_with_no_resends(
    fleet: Fleet,
    broker: Broker,
    make_responder: Callable[..., Responder],
    make_client: Callable[..., SyncClient],
    outbox: Outbox,
    tmp_path: Path,
) -> None:
    s1 = fleet.make_spool(tmp_path / "s1", "REC-0001", segments=5, size=200_000)
    s2 = fleet.make_spool(tmp_path / "s2", "REC-0002", segments=3, size=100_000)
    responder = make_responder(broker)
    n = enqueue(outbox, s1) + enqueue(outbox, s2)
    client = make_client([broker.port], {"REC-0001": s1, "REC-0002": s2}, ack_timeout_s=5.0)
    client.start()
    client.wake("REC-0001", docked=True)
    client.wake("REC-0002", docked=True)
    wait_for("both recorders synced", done(outbox, "REC-0001", "REC-0002"))
    assert_delivered(responder, s1, outbox)
    assert_delivered(responder, s2, outbox)
    with responder.lock:
        assert sum(responder.record_msgs.values()) == n  # a clean run sends each record once
        assert set(responder.chunk_msgs.values()) == {1}  # and each chunk once
        assert responder.have_msgs >= 2
    assert client.stats.acks_bad_signature == 0
    assert client.stats.connects == 1
    assert retained_state(fleet, broker, "DOCK-01")["online"] is True
    client.stop()
    assert retained_state(fleet, broker, "DOCK-01")["online"] is False


def test_loaded_rows_are_kept_up_to_date_not_read_back_after_every_ack(
    fleet: Fleet,
    broker: Broker,
    make_responder: Callable[..., Responder],
    make_client: Callable[..., SyncClient],
    outbox: Outbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """More open rows than one load holds (window 2: loads of 72 rows): the client applies acks and
    sends to the rows it loaded, reads them again only when a load runs low, and still delivers every
    record and chunk exactly once."""
    spool = fleet.make_spool(tmp_path / "s", "REC-0001", segments=90, size=3_000)
    responder = make_responder(broker)
    n = enqueue(outbox, spool)
    assert n > 72
    loads = []
    open_rows = outbox.open_rows

    def counted(recorder: str, limit: int = -1) -> list[OutboxRow]:
        if threading.current_thread().name.startswith("sync-"):
            loads.append(limit)
        return open_rows(recorder, limit)

    monkeypatch.setattr(outbox, "open_rows", counted)
    client = make_client([broker.port], {"REC-0001": spool}, window=2, ack_timeout_s=5.0)
    client.start()
    client.wake("REC-0001", docked=True)
    wait_for("the recorder synced", done(outbox, "REC-0001"))
    assert_delivered(responder, spool, outbox)
    with responder.lock:
        assert sum(responder.record_msgs.values()) == n  # each record once
        assert set(responder.chunk_msgs.values()) == {1}  # each chunk once
    assert set(loads) == {72}
    # Every record gets at least one answer (files two: pending, then stored); reading the rows back
    # after each, as before, made at least n loads.
    assert client.stats.acks >= n
    assert len(loads) <= n // 8


def test_fails_over_past_a_dead_and_a_foreign_broker(
    fleet: Fleet,
    start_broker: Callable[..., Broker],
    make_responder: Callable[..., Responder],
    make_client: Callable[..., SyncClient],
    outbox: Outbox,
    tmp_path: Path,
) -> None:
    foreign_ca = tmp_path / "foreign-ca"
    init_ca(foreign_ca)
    foreign = start_broker(ca=foreign_ca)  # its server certificate is not from our fleet: refused
    good = start_broker()
    responder = make_responder(good)
    spool = fleet.make_spool(tmp_path / "s", "REC-0001", segments=2, size=50_000)
    enqueue(outbox, spool)
    client = make_client([foreign.port, free_port(), good.port], {"REC-0001": spool})
    client.start()
    wait_for("sync through the third broker", done(outbox, "REC-0001"))
    assert_delivered(responder, spool, outbox)
    assert client.stats.broker == f"127.0.0.1:{good.port}"
    assert client.stats.refused >= 2
    assert client.stats.connects == 1


def test_a_refused_dock_is_never_marked_connected(
    fleet: Fleet,
    start_broker: Callable[..., Broker],
    make_client: Callable[..., SyncClient],
    outbox: Outbox,
    tmp_path: Path,
) -> None:
    revoke(fleet.ca, device="DOCK-03", reason="keyCompromise")  # only this test uses DOCK-03
    broker = start_broker()  # its CRL lists DOCK-03: the TLS handshake fails with "certificate revoked"
    spool = fleet.make_spool(tmp_path / "s", "REC-0003", segments=1, size=1000)
    enqueue(outbox, spool)
    client = make_client([broker.port], {"REC-0003": spool}, dock="DOCK-03")
    client.start()
    wait_for("a few refusals", lambda: client.stats.refused >= 3)
    assert not client.connected.is_set()
    assert client.stats.connects == 0
    assert "revoked" in client.stats.last_error or "connection" in client.stats.last_error.lower()
    assert retained_state(fleet, broker, "DOCK-03") is None  # never announced itself online
    rows = outbox.rows("REC-0003")
    assert {r.state for r in rows} == {"queued"}  # nothing taken for sent, nothing lost
    assert {r.attempts for r in rows} == {0}


def test_publishes_the_acl_denies_are_seen_not_dropped(
    fleet: Fleet,
    broker: Broker,
    make_responder: Callable[..., Responder],
    make_client: Callable[..., SyncClient],
    outbox: Outbox,
    tmp_path: Path,
) -> None:
    make_responder(broker)
    spool = fleet.make_spool(tmp_path / "s", "REC-0001", segments=1, size=1000)
    enqueue(outbox, spool)
    # DOCK-01's certificate, but DOCK-02's topics: the ACL lets a device touch only its own subtree.
    client = make_client([broker.port], {"REC-0001": spool}, dock="DOCK-02", identity="DOCK-01")
    client.start()
    wait_for("a denied publish", lambda: client.stats.publish_denied >= 3)
    rows = outbox.rows("REC-0001")
    assert not any(r.final for r in rows)
    assert any("Not authorized" in r.last_error for r in rows)


def test_forged_acks_are_ignored_and_rejections_kept(
    fleet: Fleet,
    broker: Broker,
    make_responder: Callable[..., Responder],
    make_client: Callable[..., SyncClient],
    outbox: Outbox,
    tmp_path: Path,
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    spool = fleet.make_spool(tmp_path / "s", "REC-0001", segments=2, size=30_000)
    facts = journal_facts(spool)
    responder = make_responder(broker, reject={2: "bad-signature: the signature does not verify"})
    enqueue(outbox, spool)
    # Before the dock even connects: a stored ack for every record, signed by a key that is not the server's.
    forger = Client(
        broker.port, fleet.ca / "ca-chain.pem", fleet.ca / "ingest.pem", fleet.ca / "ingest.key", "f"
    )
    forger.connect()
    client = make_client([broker.port], {"REC-0001": spool})
    client.start()
    wait_for("connected", client.connected.is_set)
    key = Ed25519PrivateKey.generate()
    for f in facts:
        forged = signed_ack(
            key,
            responder.key_id,
            recorder="REC-0001",
            seq=f.seq,
            hash=f.hash,
            status="stored",
            reason="",
            received=f.size or 0,
            server_time="2026-11-26T00:00:00.000Z",
        )
        forger.publish(Topics(PREFIX, "DOCK-01").down("ack"), forged)
    forger.close()
    wait_for("synced", done(outbox, "REC-0001"))
    assert client.stats.acks_bad_signature == len(facts)
    rows = {r.seq: r for r in outbox.rows("REC-0001")}
    assert rows[2].state == "rejected"
    assert rows[2].last_error.startswith("bad-signature")
    assert all(r.state == "stored" for s, r in rows.items() if s != 2)
    # Every row's ack is the genuine one.
    assert all(json.loads(r.ack)["sig"]["key"] == responder.key_id for r in rows.values())
    time.sleep(1.5)  # longer than the ack timeout: a rejected record is not sent again
    assert responder.record_msgs[("REC-0001", 2)] == 1


def _sync_through_an_outage(
    fleet: Fleet,
    broker: Broker,
    responder: Responder,
    client: SyncClient,
    outbox: Outbox,
    spool: Path,
    outage: Callable[[], None],
) -> None:
    client.start()
    wait_for("part of the transfer", lambda: len(responder.stored) >= 3)
    assert not responder.holds("REC-0001", len(journal_facts(spool)))  # still mid-transfer
    outage()
    wait_for("the sync to complete after the outage", done(outbox, "REC-0001"), timeout=30)
    assert_delivered(responder, spool, outbox)
    assert client.stats.connects >= 2
    with responder.lock:
        distinct = len(responder.chunk_msgs)
        total = sum(responder.chunk_msgs.values())
    # Resends are whole messages the server treats idempotently, and bounded.
    assert total < 3 * distinct, responder.chunk_msgs


def test_broker_down_longer_than_the_retry_window_then_back(
    fleet: Fleet,
    broker: Broker,
    make_responder: Callable[..., Responder],
    make_client: Callable[..., SyncClient],
    outbox: Outbox,
    tmp_path: Path,
) -> None:
    spool = fleet.make_spool(tmp_path / "s", "REC-0001", segments=12, size=300_000)
    responder = make_responder(broker, chunk_delay=0.01)
    enqueue(outbox, spool)
    client = make_client([broker.port], {"REC-0001": spool}, retry_max_s=1.0)

    def outage() -> None:
        broker.stop()
        wait_for("the dock to notice", lambda: not client.connected.is_set(), timeout=15)
        time.sleep(3.0)  # three times the longest back-off
        assert not client.connected.is_set()
        broker.start()

    _sync_through_an_outage(fleet, broker, responder, client, outbox, spool, outage)


def test_broker_killed_9_mid_sync(
    fleet: Fleet,
    broker: Broker,
    make_responder: Callable[..., Responder],
    make_client: Callable[..., SyncClient],
    outbox: Outbox,
    tmp_path: Path,
) -> None:
    spool = fleet.make_spool(tmp_path / "s", "REC-0001", segments=12, size=300_000)
    responder = make_responder(broker, chunk_delay=0.01)
    enqueue(outbox, spool)
    client = make_client([broker.port], {"REC-0001": spool})

    def outage() -> None:
        assert broker.proc is not None
        os.kill(broker.proc.pid, signal.SIGKILL)
        broker.proc.wait(timeout=5)
        broker.start()

    _sync_through_an_outage(fleet, broker, responder, client, outbox, spool, outage)


@contextlib.contextmanager
def frozen(broker: Broker) -> Iterator[None]:
    """SIGSTOP the broker (its sockets stay open, nothing answers); SIGCONT on the way out, whatever happened."""
    assert broker.proc is not None
    os.kill(broker.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(broker.proc.pid, signal.SIGCONT)


def test_a_frozen_broker_is_left_for_the_next_after_broker_stall_s(
    fleet: Fleet,
    start_broker: Callable[..., Broker],
    make_responder: Callable[..., Responder],
    make_client: Callable[..., SyncClient],
    outbox: Outbox,
    tmp_path: Path,
) -> None:
    a, b = start_broker(), start_broker()
    responder = make_responder(a, chunk_delay=0.01)
    make_responder(b)
    spool = fleet.make_spool(tmp_path / "s", "REC-0001", segments=12, size=300_000)
    enqueue(outbox, spool)
    # keepalive 30: paho alone would notice the frozen broker after about a minute.
    client = make_client([a.port, b.port], {"REC-0001": spool}, keepalive_s=30, broker_stall_s=2.0)
    client.start()
    wait_for("part of the transfer through A", lambda: len(responder.stored) >= 3)
    with frozen(a):
        t = time.monotonic()
        wait_for("the dock on B", lambda: client.stats.broker == f"127.0.0.1:{b.port}", timeout=30)
        switched_s = time.monotonic() - t
        wait_for("the sync to complete through B", done(outbox, "REC-0001"), timeout=60)
    assert {r.state for r in outbox.rows("REC-0001")} <= {"stored", "duplicate"}
    assert client.stats.connects == 2
    # The watchdog, not keepalive, dropped A; the round started at B, so the hung A was not tried again.
    assert "no answer for" in client.stats.last_error
    assert client.stats.refused == 0
    assert switched_s < 20, switched_s  # a loose bound: 2 s of silence, then a local CONNACK


def test_an_idle_dock_does_not_leave_a_frozen_broker_before_keepalive(
    fleet: Fleet,
    broker: Broker,
    make_responder: Callable[..., Responder],
    make_client: Callable[..., SyncClient],
    outbox: Outbox,
    tmp_path: Path,
) -> None:
    responder = make_responder(broker)
    spool = fleet.make_spool(tmp_path / "s", "REC-0001", segments=2, size=50_000)
    enqueue(outbox, spool)
    client = make_client([broker.port], {"REC-0001": spool}, keepalive_s=30, broker_stall_s=2.0)
    client.start()
    wait_for("synced", done(outbox, "REC-0001"))
    assert_delivered(responder, spool, outbox)
    wait_for("every PUBACK", lambda: not client._unanswered)
    with frozen(broker):
        time.sleep(5.0)  # 2.5 × broker_stall_s with nothing outstanding: keepalive alone governs
        assert client.connected.is_set()
    time.sleep(0.5)
    assert client.connected.is_set()
    assert client.stats.connects == 1


def test_ack_delay_estimate_follows_the_server_and_never_undercuts_the_floor() -> None:
    d = AckDelay()
    assert d.timeout(10.0) == 10.0  # no sample yet: the configured ack_timeout_s
    for _ in range(50):
        d.sample(2.0)
    assert 2.0 <= d.timeout(0.5) < 2.2  # a steady server: about its delay
    assert d.timeout(10.0) == 10.0  # never below the floor
    rising = AckDelay()
    for s in (0.5, 1.0, 2.0, 4.0, 8.0):  # answers later and later (a queue building up)
        rising.sample(s)
    assert rising.timeout(1.0) > 8.0  # the deviation grows with them: wait past the latest


def _sync_against_a_slow_server(
    broker: Broker,
    make_responder: Callable[..., Responder],
    make_client: Callable[..., SyncClient],
    spool: Path,
    tmp_path: Path,
    dock: str,
) -> int:
    """``dock`` syncs ``spool`` to a stand-in answering each chunk 80 ms after the one before (a queue):
    every record and file arrives once and whole; returns how many messages the dock sent again. (Each
    run its own dock and outbox: the broker keeps a dock's session, and late answers to one run's
    resends would reach the next run's dock — valid signed answers for the same records.)"""
    responder = make_responder(broker, chunk_delay=0.08)
    with Outbox(tmp_path / f"outbox-{dock}.sqlite") as ob:
        n = enqueue(ob, spool)
        client = make_client(
            [broker.port], {"REC-0001": spool}, dock=dock, outbox=ob, retry_max_s=8.0, ack_timeout_s=0.4
        )
        client.start()
        try:
            client.wake("REC-0001", docked=True)
            wait_for("the recorder synced", done(ob, "REC-0001"), timeout=60)
            assert_delivered(responder, spool, ob)
        finally:
            client.stop()
            responder.stop()
        with responder.lock:
            return (
                sum(responder.record_msgs.values())
                - n
                + sum(responder.chunk_msgs.values())
                - len(responder.chunk_msgs)
            )


def test_a_slow_server_is_waited_for_not_flooded_with_resends(
    fleet: Fleet,
    broker: Broker,
    make_responder: Callable[..., Responder],
    make_client: Callable[..., SyncClient],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server whose answers queue up (here a stand-in taking 80 ms per chunk, 20 chunks at once)
    answers later than ``ack_timeout_s``: with a fixed timer the dock resends what is only queued;
    timing the answers (AckDelay) it waits for them. Counted, not timed."""
    spool = fleet.make_spool(tmp_path / "s", "REC-0001", segments=4, size=300_000)
    adaptive = _sync_against_a_slow_server(broker, make_responder, make_client, spool, tmp_path, "DOCK-01")
    monkeypatch.setattr(AckDelay, "timeout", lambda _self, floor: floor)  # the fixed timer, as before
    fixed = _sync_against_a_slow_server(broker, make_responder, make_client, spool, tmp_path, "DOCK-02")
    assert fixed > 0  # the stand-in is slow enough for a fixed 0.4 s timer to resend
    assert adaptive < fixed
