"""The schema on both databases: migrations match the models, constraints hold, the custody log is
append-only, times come back as UTC."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from server.custody_log.models import CustodyEvent
from server.custody_log.service import log_event
from server.db import (
    check_migrated,
    current_revision,
    head_revision,
    make_engine,
    migrate,
    session_factory,
    transaction,
)
from server.devices.models import Device
from server.errors import SettingsError
from server.ingest.models import Record
from server.models import Base
from tests.server.conftest import Postgres


def test_migrations_match_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    if database_url.startswith("sqlite"):
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def test_an_unmigrated_database_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="server migrate"):
        check_migrated(make_engine(f"sqlite:///{tmp_path / 'empty.db'}"))


def _record(seq: int, **kw: object) -> Record:
    now = datetime.now(UTC)
    values: dict[str, object] = {
        "device": "REC-0001",
        "seq": seq,
        "hash": "sha256:" + "1" * 64,
        "prev": None,
        "kind": "boot",
        "time": "2026-11-26T00:00:00.000Z",
        "key_id": "sha256:" + "2" * 64,
        "line": b"{}\n",
        "dock": "DOCK-01",
        "received_at": now,
        "status": "filed",
    }
    values.update(kw)
    return Record(**values)


def test_constraints(database_url: str) -> None:
    factory = session_factory(make_engine(database_url))
    now = datetime.now(timezone(timedelta(hours=8)))  # Beijing time in, UTC out
    with transaction(factory) as s:
        s.add(Device(id="REC-0001", role="recorder", first_seen=now, last_seen=now))
        s.flush()
        s.add(_record(0))
    with factory() as s:
        seen = s.get(Device, "REC-0001")
        assert seen is not None
        assert seen.first_seen.tzinfo == UTC
        assert seen.first_seen == now
    with pytest.raises(IntegrityError), transaction(factory) as s:  # UNIQUE (device, seq)
        s.add(_record(0, hash="sha256:" + "3" * 64))
    with pytest.raises(IntegrityError), transaction(factory) as s:  # a record of an unknown device
        s.add(_record(1, device="REC-9999"))
    with pytest.raises(IntegrityError), transaction(factory) as s:  # statuses are closed lists
        s.add(_record(1, status="maybe"))


def test_custody_events_are_append_only(database_url: str) -> None:
    factory = session_factory(make_engine(database_url))
    with transaction(factory) as s:
        log_event(session=s, kind="received", actor="test", detail={"n": 1}, device="REC-0001")
    for stmt in (update(CustodyEvent).values(kind="filed"), delete(CustodyEvent)):
        with pytest.raises(DBAPIError, match="append-only"), transaction(factory) as s:
            s.execute(stmt)
    if database_url.startswith("postgresql"):
        with pytest.raises(DBAPIError, match="append-only"), transaction(factory) as s:
            s.execute(text("TRUNCATE custody_events"))
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(CustodyEvent)) == 1


def test_concurrent_migrations_on_postgresql_both_succeed(postgres: Postgres) -> None:
    """Two hosts upgrading at once (docs/deployment.md): the advisory lock lets one migrate while the
    other waits, then finds the database at head; without it the second fails on existing tables."""
    postgres.create("fp_concurrent_migrate")
    url = postgres.url("fp_concurrent_migrate")
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def run() -> None:
        start.wait()
        try:
            migrate(url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert current_revision(make_engine(url)) == head_revision()
