"""Ingest batches touch their devices in one order (server/ingest/handler.py ``_see_devices_in_order``).

Two transactions that create the same two new device rows in opposite orders deadlock on PostgreSQL
— the second statement of each waits for the other's first. bench/load_bench.py met it with 4 ingest
workers and 50 new docks (``DeadlockDetected … relation "devices"``; the batch's records then got
``error`` events until the docks resent them). The handler now touches a batch's devices first, sorted.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from server.db import make_engine, migrate
from server.devices.models import Device
from server.devices.service import see_device
from server.ingest import handler as handler_module
from server.ingest.handler import IngestHandler
from tests.server.conftest import Postgres

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


@dataclass
class _Facts:
    device: str


@dataclass
class _Incoming:
    facts: _Facts
    dock: str
    device_role: str = "recorder"
    dock_role: str = "dock"
    seen_recently: frozenset[str] = field(default_factory=frozenset)


@dataclass
class _Prepared:
    incoming: _Incoming
    now: datetime = NOW


def _batch(*pairs: tuple[str, str], seen: frozenset[str] = frozenset()) -> list[Any]:
    return [_Prepared(_Incoming(_Facts(rec), dock, seen_recently=seen)) for rec, dock in pairs]


def _two_transactions(url: str, order_a: list[Any], order_b: list[Any], touch: Any) -> dict[str, str]:
    """Run ``touch(session, batch)`` for two batches at once, each holding its rows a moment."""
    engine = make_engine(url)
    started = threading.Barrier(2)
    out: dict[str, str] = {}

    def run(name: str, batch: list[Any]) -> None:
        try:
            with Session(engine) as s, s.begin():
                started.wait()
                touch(s, batch)
            out[name] = "committed"
        except OperationalError as exc:
            out[name] = type(exc.orig).__name__
            if started.n_waiting:
                started.abort()

    threads = [threading.Thread(target=run, args=(n, b)) for n, b in (("a", order_a), ("b", order_b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    engine.dispose()
    return out


def test_a_batch_touches_its_devices_sorted_and_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(
        handler_module, "see_device", lambda *, session, device, role, now: calls.append((device, role))
    )
    batch = _batch(("REC-0009", "DOCK-02"), ("REC-0001", "DOCK-02"), ("REC-0009", "DOCK-01"))
    touched = IngestHandler._see_devices_in_order(None, batch)  # type: ignore[arg-type]
    assert calls == [
        ("DOCK-01", "dock"),
        ("DOCK-02", "dock"),
        ("REC-0001", "recorder"),
        ("REC-0009", "recorder"),
    ]
    assert touched == {"DOCK-01", "DOCK-02", "REC-0001", "REC-0009"}
    # Devices this worker touched within the last second are left alone, as before.
    calls.clear()
    IngestHandler._see_devices_in_order(None, _batch(("REC-0001", "DOCK-01"), seen=frozenset({"DOCK-01"})))  # type: ignore[arg-type]
    assert calls == [("REC-0001", "recorder")]


def test_opposite_orders_deadlock_and_the_sorted_touch_does_not(postgres: Postgres) -> None:
    postgres.create("fp_device_order")
    url = postgres.url("fp_device_order")
    migrate(url)

    def in_arrival_order(s: Session, batch: list[Any]) -> None:
        # What each record's accept did before: its devices, in the batch's arrival order, then a pause
        # (the rest of the batch) while the rows stay locked.
        for p in batch:
            see_device(session=s, device=p.incoming.facts.device, role="recorder", now=NOW)
            s.connection().exec_driver_sql("SELECT pg_sleep(0.3)")

    one = _batch(("REC-0101", "DOCK-09"), ("REC-0102", "DOCK-09"))
    other = list(reversed(_batch(("REC-0101", "DOCK-09"), ("REC-0102", "DOCK-09"))))
    before = _two_transactions(url, one, other, in_arrival_order)
    assert sorted(before.values()) == ["DeadlockDetected", "committed"], before

    def sorted_then_pause(s: Session, batch: list[Any]) -> None:
        IngestHandler._see_devices_in_order(s, batch)
        s.connection().exec_driver_sql("SELECT pg_sleep(0.3)")

    one = _batch(("REC-0201", "DOCK-08"), ("REC-0202", "DOCK-08"))
    other = list(reversed(_batch(("REC-0201", "DOCK-08"), ("REC-0202", "DOCK-08"))))
    after = _two_transactions(url, one, other, sorted_then_pause)
    assert after == {"a": "committed", "b": "committed"}
    with Session(make_engine(url)) as s:
        names = set(s.scalars(select(Device.id).where(Device.id.in_(["REC-0201", "REC-0202", "DOCK-08"]))))
    assert names == {"REC-0201", "REC-0202", "DOCK-08"}
