"""Docks' retained state messages (docs/sync-protocol.md §1a): checked as untrusted input, stored
idempotently (the newest wins), on both databases; and through a real ingest worker and Mosquitto,
forged and malformed ones are rejected and logged while ingest keeps running."""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from custody.timefmt import utc_timestamp
from provisioning import enroll
from server.config import ServerSettings
from server.db import make_engine, session_factory
from server.devices.models import DockState, RecorderStatus
from server.devices.registry import DeviceRegistry
from server.ingest.state import MAX_STATE_MESSAGE, StateHandler
from tests.server.conftest import Fleet, RunningIngest
from tests.server.dock import PREFIX, TestDock

T0 = "2026-11-27T01:00:00.000Z"
_DOCKS = itertools.count(1)


def _ts(minute: int) -> str:
    return f"2026-11-27T01:{minute:02d}:00.000Z"


def _rec(recorder: str = "REC-0001", **over: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "recorder": recorder,
        "read_at": _ts(1),
        "battery_pct": 80,
        "charging": True,
        "spool_used_bytes": 1000,
        "spool_total_bytes": 4000,
        "files_waiting": 2,
        "clock_offset_ms": -12,
    }
    entry.update(over)
    return entry


def _state(dock: str = "DOCK-01", **over: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"online": True, "dock": dock, "at": _ts(1), "conn": T0, "broker": "127.0.0.1:8883"}
    msg["recorders"] = [_rec()]
    msg.update(over)
    return msg


def _topic(dock: str = "DOCK-01") -> str:
    return f"{PREFIX}/dev/{dock}/state"


@pytest.fixture
def factory(settings: ServerSettings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings.db_url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def states(fleet: Fleet, factory: sessionmaker[Session]) -> StateHandler:
    return StateHandler(prefix=PREFIX, factory=factory, registry=DeviceRegistry(fleet.ca))


def _counts(factory: sessionmaker[Session]) -> tuple[int, int]:
    with factory() as s:
        return (
            s.scalar(select(func.count()).select_from(DockState)) or 0,
            s.scalar(select(func.count()).select_from(RecorderStatus)) or 0,
        )


def _send(states: StateHandler, msg: dict[str, Any] | bytes, dock: str = "DOCK-01") -> bool:
    payload = msg if isinstance(msg, bytes) else json.dumps(msg).encode()
    return states.handle(_topic(dock), payload)


def test_a_state_is_stored_and_the_newest_wins(states: StateHandler, factory: sessionmaker[Session]) -> None:
    assert _send(states, _state(extra="ignored", recorders=[_rec(future="ignored")]))
    with factory() as s:
        d = s.get(DockState, "DOCK-01")
        r = s.get(RecorderStatus, "REC-0001")
        assert d is not None
        assert d.online
        assert d.broker == "127.0.0.1:8883"
        assert r is not None
        assert (r.spool_used_bytes, r.spool_total_bytes, r.battery_pct) == (1000, 4000, 80)
        assert (r.files_waiting, r.clock_offset_ms, r.charging, r.dock) == (2, -12, True, "DOCK-01")
    # The same message again, or an older one: nothing changes.
    assert _send(states, _state())
    assert _send(states, _state(at=T0, recorders=[_rec(read_at=T0, spool_used_bytes=1)]))
    assert states.stored == 1
    with factory() as s:
        r = s.get(RecorderStatus, "REC-0001")
        assert r is not None
        assert r.spool_used_bytes == 1000
    # The will of that connection (dated at its start) ends it: offline, though its `at` is older.
    assert _send(states, {"online": False, "dock": "DOCK-01", "at": T0, "conn": T0, "will": True})
    with factory() as s:
        d = s.get(DockState, "DOCK-01")
        assert d is not None
        assert not d.online
        r = s.get(RecorderStatus, "REC-0001")
        assert r is not None
        assert r.spool_used_bytes == 1000
    # A late online state of the ended connection does not bring it back…
    assert _send(states, _state(at=_ts(5)))
    with factory() as s:
        d = s.get(DockState, "DOCK-01")
        assert d is not None
        assert not d.online
    # …a new connection does; a newer reading replaces the recorder's status.
    assert _send(
        states, _state(at=_ts(11), conn=_ts(10), recorders=[_rec(read_at=_ts(11), spool_used_bytes=3000)])
    )
    with factory() as s:
        d = s.get(DockState, "DOCK-01")
        r = s.get(RecorderStatus, "REC-0001")
        assert d is not None
        assert d.online
        assert r is not None
        assert r.spool_used_bytes == 3000
    # An old dock's will (no `at`) is dated when received, and stored.
    assert _send(states, {"online": False, "dock": "DOCK-01"})


def test_recorders_not_enrolled_as_recorders_are_left_out(
    states: StateHandler, factory: sessionmaker[Session]
) -> None:
    assert _send(states, _state(recorders=[_rec(), _rec("REC-9999"), _rec("DOCK-02")]))
    with factory() as s:
        assert s.scalars(select(RecorderStatus.recorder)).all() == ["REC-0001"]


def _oversize() -> bytes:
    return json.dumps(_state(pad="x" * MAX_STATE_MESSAGE)).encode()


BAD: dict[str, tuple[str, Callable[[], dict[str, Any] | bytes], str]] = {
    "oversize": ("DOCK-01", _oversize, "too-large"),
    "not-json": ("DOCK-01", lambda: b"{online: true", "not UTF-8 JSON"),
    "not-utf8": ("DOCK-01", lambda: b'{"online": true, "dock": "\xff"}', "not UTF-8 JSON"),
    "array": ("DOCK-01", lambda: b"[1, 2]", "not a JSON object"),
    "other-dock": ("DOCK-01", lambda: _state("DOCK-02"), "forged"),
    "recorder-as-dock": ("REC-0001", lambda: _state("REC-0001"), "not enrolled as a dock"),
    "unknown-dock": ("DOCK-99", lambda: _state("DOCK-99"), "not enrolled as a dock"),
    "online-string": ("DOCK-01", lambda: _state(online="yes"), "online"),
    "no-at": ("DOCK-01", lambda: {"online": True, "dock": "DOCK-01"}, "without at"),
    "bad-at": ("DOCK-01", lambda: _state(at="2026-11-27 01:00"), "timestamp"),
    "bad-date": ("DOCK-01", lambda: _state(at="2026-13-45T01:00:00.000Z"), "valid time"),
    "will-online": ("DOCK-01", lambda: _state(will=True), "will"),
    "broker-junk": ("DOCK-01", lambda: _state(broker="<script>"), "broker"),
    "recorders-object": ("DOCK-01", lambda: _state(recorders={"REC-0001": {}}), "recorders"),
    "too-many": ("DOCK-01", lambda: _state(recorders=[_rec(f"REC-{i:04d}") for i in range(33)]), "at most"),
    "twice": ("DOCK-01", lambda: _state(recorders=[_rec(), _rec()]), "twice"),
    "battery-150": ("DOCK-01", lambda: _state(recorders=[_rec(battery_pct=150)]), "battery_pct"),
    "battery-bool": ("DOCK-01", lambda: _state(recorders=[_rec(battery_pct=True)]), "battery_pct"),
    "negative-used": ("DOCK-01", lambda: _state(recorders=[_rec(spool_used_bytes=-1)]), "spool_used_bytes"),
    "used-over-total": ("DOCK-01", lambda: _state(recorders=[_rec(spool_used_bytes=5000)]), "exceeds"),
    "huge": ("DOCK-01", lambda: _state(recorders=[_rec(spool_total_bytes=2**70)]), "spool_total_bytes"),
    "charging-str": ("DOCK-01", lambda: _state(recorders=[_rec(charging="no")]), "charging"),
    "no-read-at": ("DOCK-01", lambda: _state(recorders=[{"recorder": "REC-0001"}]), "read_at"),
    "bad-recorder": ("DOCK-01", lambda: _state(recorders=[_rec("rec 1")]), "device id"),
    "entry-string": ("DOCK-01", lambda: _state(recorders=["REC-0001"]), "not an object"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_state_messages_are_rejected_logged_and_store_nothing(
    case: str, states: StateHandler, factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    dock, make, why = BAD[case]
    with caplog.at_level(logging.WARNING, logger="server.ingest.state"):
        assert not _send(states, make(), dock)
    assert states.rejected == 1
    assert any(
        "rejected, nothing stored" in r.getMessage() and why in r.getMessage() for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
    assert _counts(factory) == (0, 0)


def test_a_state_topic_that_is_not_a_dock_id_is_rejected(
    states: StateHandler, factory: sessionmaker[Session]
) -> None:
    assert not states.handle(f"{PREFIX}/dev/dock 1/state", json.dumps(_state("dock 1")).encode())
    assert _counts(factory) == (0, 0)


# -- through the real worker and broker --------------------------------------------------------------------


def _publish(dock: TestDock, topic: str, payload: bytes) -> ReasonCode:
    mqtt = dock.mqtt
    return mqtt.wait_puback(mqtt.publish_with(topic, payload, None))


def test_ingest_rejects_forged_and_malformed_states_and_keeps_running(
    ingest: RunningIngest,
    settings: ServerSettings,
    fleet: Fleet,
    make_dock: Callable[..., TestDock],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A dock of its own: the session's broker may hold other tests' retained DOCK-01 states.
    name = f"DOCK-S{next(_DOCKS):03d}{os.getpid() % 1000:03d}"
    enroll(fleet.ca, device=name, role="dock")
    time.sleep(1.1)  # the worker looks at the CA's devices/ again at most once a second
    dock = make_dock(name)
    recorder = make_dock("REC-0002")  # a recorder's broker identity: the ACL lets it write its own state
    caplog.set_level(logging.WARNING, logger="server.ingest.state")
    engine = make_engine(settings.db_url)
    factory = session_factory(engine)

    def held() -> tuple[DockState | None, DockState | None, RecorderStatus | None]:
        with factory() as s:
            return s.get(DockState, name), s.get(DockState, "REC-0002"), s.get(RecorderStatus, "REC-0001")

    try:
        # The ACL (provision broker-config: `pattern readwrite P/dev/%u/#`) refuses another dock's topic.
        assert _publish(dock, _topic("DOCK-02"), json.dumps(_state("DOCK-02")).encode()).is_failure
        before = ingest.worker.states.rejected
        for who, topic, payload in (
            (recorder, _topic("REC-0002"), json.dumps(_state("REC-0002")).encode()),  # not a dock
            (dock, _topic(name), json.dumps(_state("DOCK-02")).encode()),  # names another dock
            (dock, _topic(name), b"\x00" * (MAX_STATE_MESSAGE + 1)),
            (dock, _topic(name), b"not json"),
        ):
            assert not _publish(who, topic, payload).is_failure
        deadline = time.monotonic() + 20
        while ingest.worker.states.rejected < before + 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ingest.worker.states.rejected >= before + 4
        assert held()[:2] == (None, None)
        assert sum("rejected, nothing stored" in r.getMessage() for r in caplog.records) >= 4
        # Ingest is still running: a good state is stored next.
        now = utc_timestamp(datetime.now(UTC))
        good = _state(name, at=now, conn=now, recorders=[_rec(read_at=now, spool_used_bytes=1234)])
        assert not _publish(dock, _topic(name), json.dumps(good).encode()).is_failure
        deadline = time.monotonic() + 20
        while held()[0] is None and time.monotonic() < deadline:
            time.sleep(0.05)
        state, forged, status = held()
        assert state is not None
        assert state.online
        assert forged is None
        assert status is not None
        assert status.dock == name
        assert status.spool_used_bytes == 1234
        assert ingest.alive()
    finally:
        # Clear the retained messages this test left on the session's broker.
        for who, topic in ((dock, _topic(name)), (recorder, _topic("REC-0002"))):
            _publish(who, topic, b"")
        engine.dispose()
