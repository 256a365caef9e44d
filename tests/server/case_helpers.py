"""Helpers of the case-file tests: the API over a fresh migrated database with the fleet's CA (for the
server-signing key), users with API tokens, and footage filed by the real ingest handler from signed
spools written like a recorder writes them."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from custody.timefmt import utc_timestamp
from edge.journal import SpoolWriter
from edge.sync.protocol import chunk_properties, record_message
from fieldproof.sample_chain import segment_body
from server.api.app import create_app
from server.auth import service as auth
from server.auth.passwords import Passwords
from server.auth.principal import Role
from server.auth.settings import AuthSettings
from server.config import ServerSettings
from server.custody_log.models import CustodyEvent
from server.db import make_engine, session_factory, transaction
from server.devices.registry import DeviceRegistry
from server.evidence.store import LocalBlobStore
from server.ingest.acks import AckSigner
from server.ingest.handler import IngestHandler
from tests.server.conftest import Fleet
from tests.server.dock import spool_records

PW = "correct horse battery staple"
FAST = Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
#: Valid unified social credit codes (check characters computed by GB 32100's rule).
USCC_A = "91120116MA05JQ2X4C"  # the demo's subject with its right check character
USCC_B = "91350100M000100Y43"
CASE_A = "津人社监察〔2026〕17号"
CASE_B = "津人社监察〔2026〕18号"
OFFICER_1 = "12010019001"
OFFICER_2 = "12010019002"
#: Tianjin, as the sample chain (fieldproof/sample_chain.py): 1e-7 degree units.
LAT_E7, LON_E7 = 391_244_000, 1_171_907_000


@dataclass
class CaseApi:
    """The app, a session factory, the fleet, and clients per user (bearer tokens)."""

    app: FastAPI
    factory: sessionmaker[Session]
    settings: ServerSettings
    fleet: Fleet
    users: dict[str, int] = field(default_factory=dict)

    def user(self, username: str, *roles: Role, officer_id: int | None = None) -> TestClient:
        """A new user with ``roles``, and a client sending their API token."""
        with transaction(self.factory) as s:
            u = auth.create_user(
                s, username=username, password=PW, roles=roles, passwords=FAST, officer_id=officer_id
            )
            s.flush()
            self.users[username] = u.id
            token = auth.issue_token(
                s, user_id=u.id, name="test", expires_at=datetime.now(UTC) + timedelta(days=1)
            )
        client = TestClient(self.app)
        client.headers["Authorization"] = f"Bearer {token}"
        return client

    def events(self, kind: str) -> list[dict[str, Any]]:
        """Custody events of ``kind`` in order, detail parsed, columns merged in."""
        with self.factory() as s:
            rows = s.scalars(select(CustodyEvent).where(CustodyEvent.kind == kind).order_by(CustodyEvent.id))
            return [
                {
                    "actor": r.actor,
                    "device": r.device,
                    "seq": r.seq,
                    "digest": r.digest,
                    "record_hash": r.record_hash,
                    **json.loads(r.detail),
                }
                for r in rows
            ]


def make_api(tmp_path: Path, database_url: str, fleet: Fleet) -> CaseApi:
    """The API over ``database_url`` with the fleet's CA directory (annotations are signed with its key)."""
    settings = ServerSettings(data_dir=tmp_path / "data", database_url=database_url, ca_dir=fleet.ca)
    settings.check_data_dir()
    engine = make_engine(database_url)
    app = create_app(settings, engine=engine, auth=AuthSettings(cookie_secure=False))
    app.state.passwords = FAST
    return CaseApi(app=app, factory=session_factory(engine), settings=settings, fleet=fleet)


@dataclass(frozen=True)
class Seg:
    """What one segment of a test spool records."""

    case: str = ""
    subject: str = ""
    officer: str = OFFICER_1
    matter: str = "CF-02"
    scene: str = "onsite-inspection"
    proof: str = "用人单位违反劳务派遣规定的现场情况"
    lat_offset_e7: int = 0  # moves the segment's fixes north


def write_spool(
    root: Path, fleet: Fleet, device: str, segs: list[Seg], *, start: datetime, size: int = 40_000
) -> list[dict[str, Any]]:
    """A signed spool: boot, then one recording of ``segs``; returns the segment records."""
    spool = SpoolWriter.create(
        root, signer=fleet.signer(device), device=device, ca_chain=(fleet.ca / "ca-chain.pem").read_bytes()
    )
    clock = {"source": "gps", "offset_ms": 12, "uncertainty_ms": 50}
    spool.append(
        "boot",
        {"boot": 1, "firmware": "fieldproof-0.1.0", "config": "test", "reason": "power-on", "clock": clock},
        time=utc_timestamp(start),
    )
    recording = os.urandom(8).hex()
    out = []
    for i, seg in enumerate(segs):
        seg_start = start + timedelta(seconds=1 + 10 * i)
        tmp = root / "tmp" / f"{i}.mp4"
        tmp.write_bytes(os.urandom(size + 1000 * i))
        digest, length = spool.store_media(tmp, f"{recording}/{i:04d}.mp4")
        body = segment_body(
            recording=recording,
            index=i,
            file=f"{recording}/{i:04d}.mp4",
            digest=digest,
            size=length,
            start=seg_start,
            case=seg.case,
            subject=seg.subject,
            matter=seg.matter,
            scene=seg.scene,
            proof=seg.proof,
            officer=seg.officer,
        )
        for fix in body["location"]["fixes"]:
            fix["lat_e7"] += seg.lat_offset_e7
        rec = spool.append("segment", body, time=utc_timestamp(seg_start + timedelta(seconds=11)))
        out.append(rec.record | {"hash": rec.hash})
    return out


def ingest(api: CaseApi, spool: Path, device: str) -> None:
    """Feed a spool to the ingest handler (records, then each file in one chunk)."""
    settings = api.settings
    handler = IngestHandler(
        prefix=settings.topic_prefix,
        factory=session_factory(make_engine(settings.db_url, immediate=True)),
        store=LocalBlobStore(settings.store_root, settings.staging_dir),
        registry=DeviceRegistry(api.fleet.ca),
        signer=AckSigner.from_ca_dir(api.fleet.ca),
        actor="test",
    )
    up = f"{settings.topic_prefix}/dev/DOCK-01/up/"
    for i, (line, rec) in enumerate(spool_records(spool)):
        certs = [api.fleet.cert(device)] if i == 0 else None
        assert handler.handle(up + "record", record_message(device, line, certs))
        if rec["kind"] == "segment":
            data = (spool / "media" / rec["body"]["file"]).read_bytes()
            props = chunk_properties(
                recorder=device, seq=rec["seq"], digest=rec["body"]["digest"], offset=0, size=len(data)
            )
            assert handler.handle(up + "chunk", data, props)


def media_bytes(spool: Path, rec: dict[str, Any]) -> bytes:
    """The bytes of a segment's file in the spool."""
    return (spool / "media" / rec["body"]["file"]).read_bytes()
