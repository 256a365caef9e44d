"""The dock's retained state → the real ingest → the server's table and the fleet page (protocol §1a).

A real Mosquitto (the generated broker config, mutual TLS), a real dock agent syncing a recorder over
its serial control link (socat pty), a real ingest worker on SQLite; then the fleet page is rendered by
the real app for an IT admin."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from server.api.app import create_app
from server.auth.principal import Role
from server.auth.service import create_user
from server.config import ServerSettings
from server.db import make_engine, session_factory
from server.devices.models import DockState, RecorderStatus
from tests.edge.dock import test_ingest as dock_ingest
from tests.edge.dock.conftest import Docked, Fleet
from tests.edge.dock.helpers import settled, wait_for
from tests.provisioning.helpers import Broker

ingest = dock_ingest.ingest  # the fixture: one real ingest worker on SQLite
_run_agent = dock_ingest._run_agent


def _status(url: str, recorder: str) -> RecorderStatus | None:
    engine = make_engine(url)
    try:
        with session_factory(engine)() as s:
            return s.get(RecorderStatus, recorder)
    finally:
        engine.dispose()


def test_a_docked_recorders_spool_use_reaches_the_table_and_the_fleet_page(
    fleet: Fleet, broker: Broker, ingest: ServerSettings, dock_recorder: Callable[..., Docked], tmp_path: Path
) -> None:
    mount = tmp_path / "media"
    spool = fleet.make_spool(mount / "sdb1", "REC-0003", segments=2, size=200_000)
    agent, halt = _run_agent(fleet, broker, tmp_path / "dock", mount, "DOCK-01")
    try:
        docked = dock_recorder(spool, "REC-0003", "acm0")
        wait_for("the spool settled", settled(agent.config.outbox.path, "REC-0003", spool), 60)
        wait_for("the recorder's status stored", lambda: _status(ingest.db_url, "REC-0003") is not None, 30)
        docked.undock()
    finally:
        halt()
    row = _status(ingest.db_url, "REC-0003")
    assert row is not None
    assert row.dock == "DOCK-01"
    # What the recorder itself answered over the link (its spool's file system).
    answer_total = row.spool_total_bytes
    assert answer_total is not None
    assert answer_total > 0
    assert row.spool_used_bytes is not None
    assert 0 <= row.spool_used_bytes <= answer_total
    engine = make_engine(ingest.db_url)

    def said_goodbye() -> bool:  # the offline state travels dock → broker → worker after the stop
        with session_factory(engine)() as s:
            state = s.get(DockState, "DOCK-01")
            return state is not None and state.online is False

    wait_for("the dock's goodbye stored", said_goodbye, 15)
    with session_factory(engine)() as s:
        state = s.get(DockState, "DOCK-01")
        assert state is not None
        assert state.online is False  # the dock said goodbye when it stopped
        assert s.scalars(select(DockState.dock)).all() == ["DOCK-01"]
        create_user(s, username="itadmin", password="a long enough password", roles=[Role.IT_ADMIN])
        s.commit()
    app = create_app(ingest, engine=engine)
    with TestClient(app, base_url="https://testserver") as client:
        got = client.post(
            "/api/v1/auth/login", json={"username": "itadmin", "password": "a long enough password"}
        )
        assert got.status_code == 200, got.text
        page = client.get("/fleet")
        assert page.status_code == 200
    html = page.text
    assert 'data-device="REC-0003"' in html, html[-3000:]
    rec = html[html.index('data-device="REC-0003"') :]
    rec = rec[: rec.index("</tr>")]
    assert f'data-total="{answer_total}"' in rec
    assert f'data-used="{row.spool_used_bytes}"' in rec
    assert "spoolbar" in rec
    assert "未上报" not in rec
    dock = html[html.index('data-device="DOCK-01"') :]
    dock = dock[: dock.index("</tr>")]
    assert 'data-online="no"' in dock
    assert "离线" in dock
    engine.dispose()
