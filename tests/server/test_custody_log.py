"""The custody log as a Merkle log, on SQLite and PostgreSQL: events appended by ``log_event`` (and by a
real ingest run), sequenced, checkpoints signed with the server key; every inclusion and consistency
proof verifies with ``custody.merkle`` and fails when an event, a proof or a checkpoint is altered;
concurrent writers and sequencers give a contiguous log; the API serves proofs that verify."""

from __future__ import annotations

import base64
import itertools
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, event, func, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from custody.merkle import (
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from server.api.app import create_app
from server.auth.principal import Role
from server.config import ServerSettings
from server.custody_log import service
from server.custody_log.errors import LogProofError, NotInLogError, NotSequencedError
from server.custody_log.format import Checkpoint, event_json, leaf_data, signed_checkpoint_bytes
from server.custody_log.models import (
    EVENT_KINDS,
    CustodyEvent,
    LogCheckpoint,
    LogHead,
    LogLeaf,
    LogNode,
    PendingEvent,
)
from server.custody_log.sequencer import CheckpointSigner, sequence_pending
from server.custody_log.service import log_event
from server.custody_log.tree import StoredTree
from server.custody_log.verify import (
    load_signing_certificate,
    verify_checkpoint,
    verify_consistency_answer,
    verify_event,
    verify_event_answer,
)
from server.db import make_engine, migrate, session_factory, transaction
from tests.server.conftest import Fleet, Postgres
from tests.server.test_api import _ingest_spool, client_as

ACCESS_KINDS = (
    "linked",
    "unlinked",
    "viewed",
    "streamed",
    "downloaded",
    "exported",
    "access-granted",
    "access-revoked",
)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    e = make_engine(database_url)
    yield e
    e.dispose()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture(scope="module")
def signer(fleet: Fleet) -> CheckpointSigner:
    return CheckpointSigner.from_ca_dir(fleet.ca)


@pytest.fixture(scope="module")
def cert(fleet: Fleet) -> x509.Certificate:
    return load_signing_certificate((fleet.ca / "server-signing.pem").read_bytes())


def _log(factory: sessionmaker[Session], n: int, *, start: int = 0) -> list[int]:
    """``n`` events of every kind and shape, in one transaction; their ids."""
    with transaction(factory) as s:
        events = [
            log_event(
                session=s,
                kind=(*EVENT_KINDS, *ACCESS_KINDS)[(start + i) % (len(EVENT_KINDS) + len(ACCESS_KINDS))],
                actor=f"user:{start + i}",
                detail={"n": start + i, "case": "津人社监察〔2026〕17号", "ratio": 0.5, "big": 2**70},
                code="fork" if i % 3 == 0 else None,
                device="REC-0001" if i % 2 else None,
                seq=start + i if i % 2 else None,
                record_hash="sha256:" + "ab" * 32 if i % 2 else None,
                digest="sha256:" + "cd" * 32 if i % 4 == 1 else None,
                dock="DOCK-01" if i % 2 else None,
            )
            for i in range(n)
        ]
        s.flush()
        return [e.id for e in events]


def _leaf_hashes(s: Session) -> list[bytes]:
    return [bytes(h) for h in s.scalars(select(LogLeaf.leaf_hash).order_by(LogLeaf.leaf_index))]


def _check_log_whole(s: Session) -> None:
    """Contiguous leaves 0..n-1, each event exactly once, none queued, each leaf hash = its event."""
    leaves = list(s.scalars(select(LogLeaf).order_by(LogLeaf.leaf_index)))
    event_ids = list(s.scalars(select(CustodyEvent.id).order_by(CustodyEvent.id)))
    assert [leaf.leaf_index for leaf in leaves] == list(range(len(event_ids)))
    assert sorted(leaf.event_id for leaf in leaves) == event_ids
    assert s.scalar(select(func.count()).select_from(PendingEvent)) == 0
    assert s.scalar(select(LogHead.tree_size)) == len(event_ids)
    events = {e.id: e for e in s.scalars(select(CustodyEvent))}
    for leaf in leaves:
        assert bytes(leaf.leaf_hash) == leaf_hash(leaf_data(event_json(events[leaf.event_id])))


# -- proofs verify, with custody/ code ---------------------------------------------------------------


def test_every_event_and_checkpoint_is_proven(
    factory: sessionmaker[Session], signer: CheckpointSigner, cert: x509.Certificate
) -> None:
    sizes = []
    n = 0
    for batch in (1, 1, 3, 2, 8, 1, 17, 31):  # sizes 1 2 5 7 15 16 33 64: every shape of right edge
        _log(factory, batch, start=n)
        n += batch
        made = sequence_pending(factory=factory, signer=signer)
        assert made is not None
        assert made.tree_size == n
        sizes.append(n)
    assert sequence_pending(factory=factory, signer=signer) is None  # nothing new: no new checkpoint

    with factory() as s:
        _check_log_whole(s)
        leaves = _leaf_hashes(s)
        tree = StoredTree(s, n)
        for size in sizes:
            cp = service.checkpoint_at(session=s, tree_size=size)
            verify_checkpoint(cp, cert)
            assert cp.root_hash == root_from_leaf_hashes(leaves[:size]) == tree.root(size)
            for index in range(size):
                proof = tree.inclusion_proof(index, size)
                assert proof == inclusion_proof(leaves[:size], index)
                verify_inclusion(
                    leaf_hash=leaves[index], index=index, tree_size=size, proof=proof, root=cp.root_hash
                )
        for event_id in s.scalars(select(CustodyEvent.id)):
            for size in sizes:
                try:
                    answer = service.event_proof(session=s, event_id=event_id, tree_size=size)
                except NotInLogError:
                    leaf = s.scalar(select(LogLeaf.leaf_index).where(LogLeaf.event_id == event_id))
                    assert leaf is not None
                    assert leaf >= size
                    continue
                assert verify_event_answer(answer.to_json(), cert)["id"] == event_id
        for a in sizes:
            for b in sizes:
                if a <= b:
                    got = service.consistency(session=s, first=a, second=b)
                    assert got.proof == consistency_proof(leaves[:b], a)
                    verify_consistency_answer(got.to_json(), cert)
                    verify_consistency(
                        size1=a,
                        size2=b,
                        root1=got.first.root_hash,
                        root2=got.second.root_hash,
                        proof=got.proof,
                    )


def test_proofs_read_a_few_stored_hashes_not_every_leaf(
    engine: Engine, factory: sessionmaker[Session], signer: CheckpointSigner
) -> None:
    for i, n in enumerate((300, 300, 300, 300, 900)):
        _log(factory, n, start=300 * i)
        sequence_pending(factory=factory, signer=signer, limit=700)  # the last: two batches, two checkpoints
    with factory() as s:
        sizes = list(s.scalars(select(LogCheckpoint.tree_size).order_by(LogCheckpoint.tree_size)))
        leaves = _leaf_hashes(s)
    assert sizes == [300, 600, 900, 1200, 1900, 2100]
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(engine, "after_cursor_execute", count)
    try:
        with factory() as s:
            tree = StoredTree(s, 2100)
            proof = tree.inclusion_proof(1234, 2099)
            cproof = tree.consistency_proof(901, 2100)
    finally:
        event.remove(engine, "after_cursor_execute", count)
    assert proof == inclusion_proof(leaves[:2099], 1234)
    assert cproof == consistency_proof(leaves, 901)
    # Two queries per proof (leaves, interior nodes), each for O(log n) rows.
    selects = [st for st in statements if st.startswith("SELECT")]
    assert len(selects) == 4
    with factory() as s:
        nodes = s.scalar(select(func.count()).select_from(LogNode))
    assert nodes == 2100 - bin(2100).count("1")  # every completed perfect subtree, stored once


# -- alterations are caught --------------------------------------------------------------------------


def _later(log_time: str) -> str:
    """The same log time one microsecond's digit later (wrapping 9 to 0)."""
    return log_time[:-2] + str((int(log_time[-2]) + 1) % 10) + "Z"


def _answer(factory: sessionmaker[Session], signer: CheckpointSigner, event_id: int) -> dict[str, Any]:
    sequence_pending(factory=factory, signer=signer)
    with factory() as s:
        return service.event_proof(session=s, event_id=event_id).to_json()


def test_any_altered_member_of_an_event_fails_its_proof(
    factory: sessionmaker[Session], signer: CheckpointSigner, cert: x509.Certificate
) -> None:
    ids = _log(factory, 11)
    answer = _answer(factory, signer, ids[5])  # device, seq, hashes, dock all set
    assert verify_event_answer(answer, cert)["kind"] == EVENT_KINDS[5]
    ev = answer["event"]
    changes: dict[str, list[Any]] = {
        "id": [ev["id"] + 1, str(ev["id"])],
        "time": [_later(ev["time"])],
        "kind": ["verified", "rejected"],
        "code": ["forked", "fork"],
        "device": [None, "REC-0002"],
        "seq": [ev["seq"] + 1, None],
        "record_hash": [ev["record_hash"][:-1] + "c"],
        "digest": [None, "sha256:" + "ce" * 32],
        "dock": ["DOCK-02"],
        "actor": [ev["actor"] + " "],
        "detail": [ev["detail"].replace("17", "18"), ev["detail"] + " "],
    }
    assert set(changes) == set(ev) - {"v"}
    for member, values in changes.items():
        for value in values:
            if value == ev[member]:
                continue
            altered = {**answer, "event": {**ev, member: value}}
            with pytest.raises(LogProofError, match="not proven to be leaf"):
                verify_event_answer(altered, cert)
    # A member added or dropped is refused before hashing.
    for bad in ({**ev, "note": "x"}, {k: v for k, v in ev.items() if k != "detail"}, {**ev, "v": 2}):
        with pytest.raises(LogProofError, match="exactly the members"):
            verify_event_answer({**answer, "event": bad}, cert)
    # So are an altered proof or leaf index.
    proof = answer["inclusion_proof"]
    for i in range(len(proof)):
        flipped = proof[i][:10] + ("0" if proof[i][10] != "0" else "1") + proof[i][11:]
        with pytest.raises(LogProofError):
            verify_event_answer({**answer, "inclusion_proof": [*proof[:i], flipped, *proof[i + 1 :]]}, cert)
    for wrong in (answer["leaf_index"] + 1, answer["leaf_index"] - 1, 11, -1):
        with pytest.raises(LogProofError):
            verify_event_answer({**answer, "leaf_index": wrong}, cert)
    with pytest.raises(LogProofError):
        verify_event_answer({**answer, "inclusion_proof": proof[:-1]}, cert)


def test_an_event_altered_in_the_database_no_longer_verifies(
    database_url: str,
    engine: Engine,
    factory: sessionmaker[Session],
    signer: CheckpointSigner,
    cert: x509.Certificate,
) -> None:
    ids = _log(factory, 9)
    before = _answer(factory, signer, ids[4])
    verify_event_answer(before, cert)
    # Someone with the database's owner account disables the append-only trigger and rewrites an event.
    with engine.begin() as conn:
        if database_url.startswith("postgresql"):
            conn.execute(text("ALTER TABLE custody_events DISABLE TRIGGER custody_events_append_only"))
        else:
            conn.execute(text("DROP TRIGGER custody_events_no_update"))
        conn.execute(
            update(CustodyEvent).where(CustodyEvent.id == ids[4]).values(detail='{"case": "another case"}')
        )
    after = _answer(factory, signer, ids[4])
    assert after["event"]["detail"] == '{"case": "another case"}'
    assert after["checkpoint"] == before["checkpoint"]  # the signed root did not move
    with pytest.raises(LogProofError, match="not proven to be leaf 4"):
        verify_event_answer(after, cert)
    # Every other event still verifies.
    for other in ids:
        if other != ids[4]:
            verify_event_answer(_answer(factory, signer, other), cert)


def test_forged_or_altered_checkpoints_fail(
    factory: sessionmaker[Session], signer: CheckpointSigner, cert: x509.Certificate, fleet: Fleet
) -> None:
    _log(factory, 6)
    sequence_pending(factory=factory, signer=signer)
    _log(factory, 5, start=6)
    sequence_pending(factory=factory, signer=signer)
    with factory() as s:
        cp = service.latest_checkpoint(session=s)
        answer = service.event_proof(session=s, event_id=1).to_json()
        cons = service.consistency(session=s, first=6, second=11).to_json()
    verify_checkpoint(cp, cert)
    # Another key signing a checkpoint that names the server's key id: the signature fails.
    other = Ed25519PrivateKey.generate()
    forged = replace(cp, signature=other.sign(cp.signed_bytes()))
    with pytest.raises(LogProofError, match=r"signature .* does not verify"):
        verify_checkpoint(forged, cert)
    # The right signature over a body with one member changed fails too.
    for changed in (
        replace(cp, tree_size=cp.tree_size + 1),
        replace(cp, root_hash=bytes(32)),
        replace(cp, time=_later(cp.time)),
    ):
        with pytest.raises(LogProofError, match="does not verify"):
            verify_checkpoint(changed, cert)
    # A signature over the same bytes without the checkpoint context (e.g. one made for an ack) fails.
    bare = signed_checkpoint_bytes(
        tree_size=cp.tree_size, root_hash=cp.root_hash, time=cp.time, key_id=cp.key_id
    )
    no_context = replace(cp, signature=signer.sign(bare[len(b"fieldproof/checkpoint/v1\n") :]))
    with pytest.raises(LogProofError, match="does not verify"):
        verify_checkpoint(no_context, cert)
    # A checkpoint checked against another server's certificate is refused by its key id.
    foreign = load_signing_certificate((fleet.foreign_ca / "server-signing.pem").read_bytes())
    with pytest.raises(LogProofError, match="names key"):
        verify_checkpoint(cp, foreign)
    # A forged checkpoint inside a proof answer fails the whole answer.
    fake = {**answer["checkpoint"], "signature": base64.b64encode(other.sign(b"x")).decode()}
    with pytest.raises(LogProofError, match="does not verify"):
        verify_event_answer({**answer, "checkpoint": fake}, cert)
    # A consistency proof against a forged later root fails, even re-signed with a stranger's key.
    verify_consistency_answer(cons, cert)
    second = Checkpoint.from_json(cons["second"])
    moved = replace(second, root_hash=bytes(32))
    with pytest.raises(LogProofError):
        verify_consistency_answer({**cons, "second": moved.to_json()}, cert)
    resigned = replace(moved, signature=signer.sign(moved.signed_bytes()))  # as if the server key leaked
    with pytest.raises(LogProofError, match="not proven to extend"):
        verify_consistency_answer({**cons, "second": resigned.to_json()}, cert)
    with pytest.raises(LogProofError):
        verify_consistency_answer({**cons, "consistency_proof": cons["consistency_proof"][:-1]}, cert)


# -- sequencing: contiguous, in commit order, under concurrency ------------------------------------------


def test_concurrent_appenders_and_sequencers_give_one_contiguous_log(
    factory: sessionmaker[Session], signer: CheckpointSigner, cert: x509.Certificate
) -> None:
    writers, per_writer = 6, 40
    done = threading.Event()
    errors: list[BaseException] = []

    def write(w: int) -> None:
        try:
            i = 0
            while i < per_writer:
                k = 1 + (i + w) % 3
                with transaction(factory) as s:
                    for j in range(min(k, per_writer - i)):
                        log_event(session=s, kind="viewed", actor=f"writer-{w}", detail={"i": i + j})
                    s.flush()
                    if (i + w) % 4 == 0:
                        time.sleep(0.01)  # hold the transaction open: later ids commit first
                i += k
        except BaseException as exc:
            errors.append(exc)

    def sequence() -> None:
        try:
            while not done.is_set():
                sequence_pending(factory=factory, signer=signer, limit=17)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    sequencers = [threading.Thread(target=sequence) for _ in range(2)]
    for t in [*threads, *sequencers]:
        t.start()
    for t in threads:
        t.join(120)
    done.set()
    for t in sequencers:
        t.join(120)
    assert not errors, errors
    sequence_pending(factory=factory, signer=signer)
    with factory() as s:
        _check_log_whole(s)
        assert s.scalar(select(LogHead.tree_size)) == writers * per_writer
        leaves = _leaf_hashes(s)
        sizes = list(s.scalars(select(LogCheckpoint.tree_size).order_by(LogCheckpoint.tree_size)))
        for a, b in itertools.pairwise(sizes):
            verify_consistency_answer(service.consistency(session=s, first=a, second=b).to_json(), cert)
        latest = service.latest_checkpoint(session=s)
        assert latest.root_hash == root_from_leaf_hashes(leaves)


@pytest.fixture
def pg_factory(postgres: Postgres, postgres_template: str) -> Iterator[sessionmaker[Session]]:
    """A fresh migrated PostgreSQL database only: SQLite has one writer, so ids commit in id order there."""
    name = f"fp_log_{uuid.uuid4().hex[:12]}"
    postgres.create(name, template=postgres_template)
    engine = make_engine(postgres.url(name))
    yield session_factory(engine)
    engine.dispose()


def test_an_event_committed_late_gets_the_next_leaf_not_its_id(
    pg_factory: sessionmaker[Session], signer: CheckpointSigner, cert: x509.Certificate
) -> None:
    factory = pg_factory
    early = factory()
    early.begin()
    slow = log_event(session=early, kind="viewed", actor="slow", detail={})
    early.flush()  # id taken, not committed
    (fast,) = _log(factory, 1)
    assert fast > slow.id
    sequence_pending(factory=factory, signer=signer)
    with factory() as s:
        # Not visible to the sequencer, so not skipped either: no leaf was spent on it.
        assert list(s.scalars(select(LogLeaf.event_id))) == [fast]
        with pytest.raises(NotInLogError, match="no custody event"):
            service.event_proof(session=s, event_id=slow.id)
    early.commit()
    early.close()
    sequence_pending(factory=factory, signer=signer)
    with factory() as s:
        order = list(s.scalars(select(LogLeaf.event_id).order_by(LogLeaf.leaf_index)))
        assert order == [fast, slow.id]
        verify_event_answer(service.event_proof(session=s, event_id=slow.id).to_json(), cert)
        verify_consistency_answer(service.consistency(session=s, first=1, second=2).to_json(), cert)


# -- the schema --------------------------------------------------------------------------------------------


def test_the_log_tables_only_grow(
    database_url: str, factory: sessionmaker[Session], signer: CheckpointSigner
) -> None:
    _log(factory, 3)
    sequence_pending(factory=factory, signer=signer)
    for stmt in (
        update(LogLeaf).values(leaf_hash=bytes(32)),
        delete(LogLeaf),
        update(LogNode).values(hash=bytes(32)),
        delete(LogNode),
        update(LogCheckpoint).values(root_hash=bytes(32)),
        delete(LogCheckpoint),
        update(CustodyEvent).values(kind="filed"),
        delete(CustodyEvent),
    ):
        with pytest.raises(DBAPIError, match="append-only"), transaction(factory) as s:
            s.execute(stmt)
    if database_url.startswith("postgresql"):
        for table in ("custody_log_leaves", "custody_log_nodes", "custody_log_checkpoints"):
            with pytest.raises(DBAPIError, match="append-only"), transaction(factory) as s:
                s.execute(text(f"TRUNCATE {table} CASCADE"))
    # Every event is queued by the database itself, however it is inserted.
    with transaction(factory) as s:
        s.execute(
            text(
                "INSERT INTO custody_events (time, kind, actor, detail) "
                "VALUES (CURRENT_TIMESTAMP, 'access-granted', 'sql', '{}')"
            )
        )
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(PendingEvent)) == 1
    with pytest.raises(IntegrityError), transaction(factory) as s:
        log_event(session=s, kind="deleted", actor="x", detail={})
    with pytest.raises(IntegrityError), transaction(factory) as s:  # one head row only
        s.add(LogHead(id=2, tree_size=0))
    sequence_pending(factory=factory, signer=signer)
    with factory() as s:
        _check_log_whole(s)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with no tables yet, of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    pg: Postgres = request.getfixturevalue("postgres")
    name = f"fp_empty_{uuid.uuid4().hex[:12]}"
    pg.create(name)
    return pg.url(name)


def test_events_written_before_the_log_existed_are_sequenced(
    empty_database_url: str, signer: CheckpointSigner, cert: x509.Certificate
) -> None:
    migrate(empty_database_url, "0001")
    engine = make_engine(empty_database_url)
    with engine.begin() as conn:
        for i in range(5):
            conn.execute(
                text(
                    "INSERT INTO custody_events (time, kind, actor, detail) VALUES (:t, 'received', 'old', '{}')"
                ),
                {"t": datetime(2026, 11, 1, 8, i, tzinfo=UTC).replace(tzinfo=None)},
            )
    migrate(empty_database_url, "0002")
    factory = session_factory(engine)
    with factory() as s:
        assert list(s.scalars(select(PendingEvent.event_id).order_by(PendingEvent.event_id))) == [
            1,
            2,
            3,
            4,
            5,
        ]
    migrate(empty_database_url)
    _log(factory, 3)
    sequence_pending(factory=factory, signer=signer)
    with factory() as s:
        _check_log_whole(s)
        for event_id in range(1, 9):
            verify_event_answer(service.event_proof(session=s, event_id=event_id).to_json(), cert)
        # Append-only after SQLite's rebuild of custody_events too.
        with pytest.raises(DBAPIError, match="append-only"):
            s.execute(update(CustodyEvent).values(actor="new"))
    engine.dispose()


# -- real ingest, the API, the command ---------------------------------------------------------------------


def test_ingested_events_and_the_api(
    tmp_path: Path, fleet: Fleet, settings: ServerSettings, cert: x509.Certificate
) -> None:
    spool = fleet.make_spool(tmp_path / "spool", segments=2, size=20_000)
    _ingest_spool(settings, fleet, spool)
    factory = session_factory(make_engine(settings.db_url))
    with factory() as s:
        ingested = list(s.scalars(select(CustodyEvent.id).order_by(CustodyEvent.id)))
        kinds = set(s.scalars(select(CustodyEvent.kind)))
    assert {"received", "verified", "filed"} <= kinds
    app = create_app(settings)
    assert TestClient(app).get("/api/v1/custody-log/checkpoint").status_code == 401
    assert client_as(app, Role.CASE_HANDLER).get("/api/v1/custody-log/checkpoint").status_code == 403
    client = client_as(app, Role.AUDITOR)

    got = client.get("/api/v1/custody-log/checkpoint")  # sequences what ingest committed, then answers
    assert got.status_code == 200, got.text
    first = got.json()
    assert first["tree_size"] == len(ingested)
    verify_checkpoint(Checkpoint.from_json(first), cert)
    assert client.get(f"/api/v1/custody-log/checkpoints/{len(ingested)}").json() == first

    with transaction(factory) as s:
        for kind in ACCESS_KINDS:
            log_event(session=s, kind=kind, actor="officer:7", detail={"case": "津人社监察〔2026〕17号"})
    with factory() as s:
        all_ids = list(s.scalars(select(CustodyEvent.id).order_by(CustodyEvent.id)))
    for event_id in all_ids:
        answer = client.get(f"/api/v1/custody-log/events/{event_id}")
        assert answer.status_code == 200, answer.text
        assert verify_event_answer(answer.json(), cert)["id"] == event_id
    latest = client.get("/api/v1/custody-log/checkpoint").json()
    assert latest["tree_size"] == len(all_ids)
    for event_id in ingested:  # proofs against the earlier checkpoint too
        answer = client.get(
            f"/api/v1/custody-log/events/{event_id}", params={"tree_size": first["tree_size"]}
        )
        assert answer.json()["checkpoint"] == first
        verify_event_answer(answer.json(), cert)
    walked = [client.get(f"/api/v1/custody-log/leaves/{i}").json() for i in range(len(all_ids))]
    assert sorted(verify_event_answer(w, cert)["id"] for w in walked) == all_ids
    cons = client.get(
        "/api/v1/custody-log/consistency", params={"first": first["tree_size"], "second": latest["tree_size"]}
    )
    assert cons.status_code == 200
    verify_consistency_answer(cons.json(), cert)
    body = cons.json()
    body["first"]["root_hash"] = body["second"]["root_hash"]
    with pytest.raises(LogProofError):
        verify_consistency_answer(body, cert)

    assert client.get("/api/v1/custody-log/events/999999").status_code == 404
    assert client.get("/api/v1/custody-log/checkpoints/999999").status_code == 404
    assert client.get("/api/v1/custody-log/leaves/999999").status_code == 404
    late = client.get(f"/api/v1/custody-log/events/{all_ids[-1]}", params={"tree_size": first["tree_size"]})
    assert late.status_code == 404
    assert "after the checkpoint" in late.json()["detail"]
    assert client.get("/api/v1/custody-log/consistency", params={"first": 5, "second": 2}).status_code == 422
    assert client.get("/api/v1/custody-log/events/0").status_code == 422


def test_an_api_that_cannot_sign_serves_what_is_sequenced(
    tmp_path: Path, database_url: str, fleet: Fleet, factory: sessionmaker[Session], signer: CheckpointSigner
) -> None:
    app = create_app(ServerSettings(data_dir=tmp_path / "data", database_url=database_url))
    client = client_as(app, Role.CUSTODIAN)
    assert client.get("/api/v1/custody-log/checkpoint").status_code == 404  # empty log
    (one,) = _log(factory, 1)
    sequence_pending(factory=factory, signer=signer)
    (two,) = _log(factory, 1, start=1)
    assert client.get("/api/v1/custody-log/checkpoint").json()["tree_size"] == 1
    assert client.get(f"/api/v1/custody-log/events/{one}").status_code == 200
    pending = client.get(f"/api/v1/custody-log/events/{two}")
    assert pending.status_code == 409
    assert "not in the log yet" in pending.json()["detail"]
    with factory() as s, pytest.raises(NotSequencedError):
        service.event_proof(session=s, event_id=two)


def test_log_sequence_command(
    tmp_path: Path, database_url: str, fleet: Fleet, factory: sessionmaker[Session], cert: x509.Certificate
) -> None:
    _log(factory, 4)
    cmd = [
        sys.executable,
        "-m",
        "server",
        "log-sequence",
        "--database-url",
        database_url,
        "--ca-dir",
        str(fleet.ca),
    ]
    cmd += ["--data-dir", str(tmp_path / "data")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    assert "checkpoint of 4 events" in out.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    assert "nothing new" in again.stdout
    with factory() as s:
        cp = service.latest_checkpoint(session=s)
        verify_checkpoint(cp, cert)
        for event_id in s.scalars(select(CustodyEvent.id)):
            p = service.event_proof(session=s, event_id=event_id)
            verify_event(
                event=p.event, leaf_index=p.leaf_index, proof=p.proof, checkpoint=cp, certificate=cert
            )
    no_ca = subprocess.run([*cmd[:-4], "--data-dir", str(tmp_path / "data")], capture_output=True, text=True)
    assert no_ca.returncode == 2
    assert "FIELDPROOF_CA_DIR" in no_ca.stderr
