"""GET /api/v1/devices/{device}/segments on both databases, with data put there by the ingest handler."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from edge.sync.protocol import chunk_properties, record_message
from server.api.app import create_app
from server.auth import service as auth
from server.auth.principal import Role
from server.config import ServerSettings
from server.db import make_engine, session_factory, transaction
from server.devices.registry import DeviceRegistry
from server.evidence.backend import make_blob_store
from server.ingest.acks import AckSigner
from server.ingest.handler import IngestHandler
from tests.server.case_helpers import FAST, PW
from tests.server.conftest import Fleet
from tests.server.dock import spool_records

_USERS = itertools.count(1)


def client_as(app: FastAPI, *roles: Role) -> TestClient:
    """A client of ``app`` sending the API token of a new user holding ``roles``."""
    with transaction(app.state.session_factory) as s:
        user = auth.create_user(s, username=f"user{next(_USERS)}", password=PW, roles=roles, passwords=FAST)
        s.flush()
        token = auth.issue_token(
            s, user_id=user.id, name="test", expires_at=datetime.now(UTC) + timedelta(days=1)
        )
    client = TestClient(app)
    client.headers["Authorization"] = f"Bearer {token}"
    return client


def _ingest_spool(
    settings: ServerSettings, fleet: Fleet, spool: Path, *, skip_file_of: int | None = None
) -> None:
    """Feed a spool to the handler directly (the broker path is covered by test_ingest)."""
    settings.check_data_dir()
    handler = IngestHandler(
        prefix=settings.topic_prefix,
        factory=session_factory(make_engine(settings.db_url, immediate=True)),
        store=make_blob_store(settings),
        registry=DeviceRegistry(fleet.ca),
        signer=AckSigner.from_ca_dir(fleet.ca),
        actor="test",
    )
    up = f"{settings.topic_prefix}/dev/DOCK-01/up/"
    for i, (line, rec) in enumerate(spool_records(spool)):
        certs = [fleet.cert("REC-0001")] if i == 0 else None
        assert handler.handle(up + "record", record_message("REC-0001", line, certs))
        if rec["kind"] == "segment" and rec["seq"] != skip_file_of:
            data = (spool / "media" / rec["body"]["file"]).read_bytes()
            props = chunk_properties(
                recorder="REC-0001", seq=rec["seq"], digest=rec["body"]["digest"], offset=0, size=len(data)
            )
            assert handler.handle(up + "chunk", data, props)


def test_segments_of_a_device(tmp_path: Path, fleet: Fleet, settings: ServerSettings) -> None:
    spool = fleet.make_spool(tmp_path / "spool", segments=3, size=50_000)
    records = spool_records(spool)
    segs = [r for _, r in records if r["kind"] == "segment"]
    _ingest_spool(settings, fleet, spool, skip_file_of=segs[2]["seq"])
    app = create_app(settings)
    client = client_as(app, Role.CUSTODIAN)  # every segment of the device

    got = client.get("/api/v1/devices/REC-0001/segments")
    assert got.status_code == 200
    body = got.json()
    assert [s["seq"] for s in body] == [r["seq"] for r in segs]
    assert [s["sha256"] for s in body] == [r["body"]["digest"] for r in segs]
    assert [s["size"] for s in body] == [r["body"]["size"] for r in segs]
    assert [s["status"] for s in body] == ["stored", "stored", "pending"]
    assert {s["recording"] for s in body} == {segs[0]["body"]["recording"]}
    assert [s["start"] for s in body] == [r["body"]["start"] for r in segs]
    assert [s["end"] for s in body] == [r["body"]["end"] for r in segs]
    # Captured without a case number, set by the chain's later annotation; the others as captured.
    assert segs[0]["body"]["case"] == ""
    assert {s["case_number"] for s in body} == {"津人社监察〔2026〕17号"}
    assert body[0]["stored_at"] is not None
    assert body[2]["stored_at"] is None

    assert client.get("/api/v1/devices/REC-0404/segments").status_code == 404
    assert client.get("/api/v1/devices/rec-0001/segments").status_code == 422
    assert client.get("/api/v1/devices/REC-0001%0A/segments").status_code == 422
    # Evidence: not without a principal, not for roles that open no evidence.
    assert TestClient(app).get("/api/v1/devices/REC-0001/segments").status_code == 401
    for role in (Role.AUDITOR, Role.IT_ADMIN):
        assert client_as(app, role).get("/api/v1/devices/REC-0001/segments").status_code == 403


def test_an_undecodable_body_is_bad_input(settings: ServerSettings) -> None:
    """Bytes that are not UTF-8 JSON: 422 naming the body (as the schema documents), not a bare 400."""
    got = TestClient(create_app(settings)).post(
        "/api/v1/auth/login", content=b"\x03\xff\x00\xfe", headers={"Content-Type": "application/json"}
    )
    assert got.status_code == 422
    assert got.json()["detail"][0]["loc"] == ["body"]
