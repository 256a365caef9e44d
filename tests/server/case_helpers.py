"""Helpers of the case-file tests: the API over a fresh migrated database with the fleet's CA (for the
server-signing key), users with API tokens, and footage filed by the real ingest handler from signed
spools written like a recorder writes them.

The evidence store is the one the settings choose (``make_blob_store``): the local store, or with
``FIELDPROOF_TEST_STORE=s3`` the session's SeaweedFS under a key prefix of this test's own. The
helpers at the end check blobs through the store's own ``open`` (and what it says of its locks and
staging), so the same assertions hold on both."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
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
from server.evidence.backend import make_blob_store
from server.evidence.s3 import S3BlobStore
from server.evidence.store import BlobStore, LocalBlobStore
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
    _store: BlobStore | None = None

    @property
    def store(self) -> BlobStore:
        """The evidence store of these settings (its own instance, not the app's)."""
        if self._store is None:
            self._store = make_blob_store(self.settings)
        return self._store

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


def s3_overrides(**more: object) -> dict[str, object]:
    """With FIELDPROOF_TEST_STORE=s3: a key prefix of this test's own in the session's bucket (and
    ``more``); else nothing (the local store under the data directory)."""
    if os.environ.get("FIELDPROOF_TEST_STORE", "local") != "s3":
        return {}
    return {"s3_prefix": f"api-{secrets.token_hex(6)}/", **more}


def make_api(tmp_path: Path, database_url: str, fleet: Fleet, **store: object) -> CaseApi:
    """The API over ``database_url`` with the fleet's CA directory (annotations are signed with its key).
    ``store``: settings of the S3 store (e.g. ``s3_object_lock_days``), used only on S3."""
    settings = ServerSettings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        ca_dir=fleet.ca,
        **s3_overrides(**store),  # type: ignore[arg-type]
    )
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
        store=api.store,
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


def stored_digest(store: BlobStore, digest: str) -> tuple[str, int]:
    """SHA-256 and length of the bytes the store serves for ``digest`` (streamed through ``open``)."""
    h = hashlib.sha256()
    length = 0
    with store.open(digest) as f:
        while data := f.read(1024 * 1024):
            h.update(data)
            length += len(data)
    return "sha256:" + h.hexdigest(), length


def assert_write_once(store: BlobStore, digest: str) -> None:
    """The committed blob cannot be changed through the store: a local blob is read-only (0444); an S3
    blob, on a bucket with retention, is under COMPLIANCE retention."""
    if isinstance(store, LocalBlobStore):
        assert (store.root / store.key(digest)).stat().st_mode & 0o777 == 0o444
    else:
        assert isinstance(store, S3BlobStore)
        state = store.lock_state(digest)
        if store.lock_days:
            assert state.lock_mode == "COMPLIANCE"
            assert state.retain_until is not None


def staged_leftovers(store: BlobStore) -> list[str]:
    """What the store still holds in staging (local: blob directories; S3: staging objects)."""
    if isinstance(store, LocalBlobStore):
        return [p.name for p in store.staging.glob("[0-9a-f]*")]
    assert isinstance(store, S3BlobStore)
    page = store.client.list_object_versions(Bucket=store.bucket, Prefix=f"{store.prefix}staging/")
    return [v["Key"] for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]]
