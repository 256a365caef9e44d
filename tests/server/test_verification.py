"""Verification for the custodian, on both databases, over footage filed by the real ingest handler: a
sound case (JSON and text), a blob altered in the store (red, "altered"), a device revoked mid-recording
(its later segments red), who may ask, and the custody event every answer writes."""

from __future__ import annotations

import os
import stat
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from provisioning import revoke
from server.auth.principal import Role
from server.evidence.backend import make_blob_store
from server.evidence.s3 import S3BlobStore
from server.evidence.store import LocalBlobStore
from tests.server.case_helpers import CASE_A, USCC_A, CaseApi, Seg, ingest, make_api, write_spool
from tests.server.conftest import SAMPLE_START, Fleet
from tests.server.seaweed import Seaweed


@dataclass
class CaseWorld:
    """Case A with one recording of ``device`` filed by ingest, and users around it."""

    api: CaseApi
    device: str
    spool: Path
    recs: list[dict[str, Any]]
    handler: TestClient
    other_handler: TestClient
    custodian: TestClient
    auditor: TestClient
    reviewer: TestClient

    def verification(self, client: TestClient, **params: Any) -> Any:
        return client.get(f"/api/v1/cases/by-number/{CASE_A}/verification", params=params)


def make_world(
    tmp_path: Path, database_url: str, fleet: Fleet, device: str = "REC-0001", n: int = 3
) -> CaseWorld:
    api = make_api(tmp_path, database_url, fleet)
    handler = api.user("handler1", Role.CASE_HANDLER)
    other = api.user("handler2", Role.CASE_HANDLER)
    custodian = api.user("custodian1", Role.CUSTODIAN)
    auditor = api.user("auditor1", Role.AUDITOR)
    reviewer = api.user("reviewer1", Role.LEGAL_REVIEWER)
    assert handler.post("/api/v1/subjects", json={"uscc": USCC_A, "name": "用人单位"}).status_code == 201
    subject = handler.get("/api/v1/subjects", params={"q": USCC_A}).json()[0]["id"]
    got = handler.post(
        "/api/v1/cases", json={"number": CASE_A, "subject_id": subject, "matter_code": "CF-02"}
    )
    assert got.status_code == 201, got.text
    case_id = got.json()["id"]
    assigned = handler.post(
        f"/api/v1/cases/{case_id}/assignments", json={"user_id": api.users["reviewer1"], "role": "reviewer"}
    )
    assert assigned.status_code == 201, assigned.text
    spool = tmp_path / f"spool-{device}"
    recs = write_spool(spool, fleet, device, [Seg(case=CASE_A, subject=USCC_A)] * n, start=SAMPLE_START)
    ingest(api, spool, device)
    return CaseWorld(api, device, spool, recs, handler, other, custodian, auditor, reviewer)


@pytest.fixture
def world(tmp_path: Path, database_url: str, fleet: Fleet) -> CaseWorld:
    return make_world(tmp_path, database_url, fleet)


def test_sound_case_as_json_and_text(world: CaseWorld) -> None:
    w = world
    got = w.verification(w.custodian, reason="移送前核验")
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["case_number"] == CASE_A
    assert body["all_sound"] is True
    assert body["summary"] == {"green": 3, "amber": 0, "red": 0}
    assert [(s["device"], s["seq"]) for s in body["segments"]] == [(w.device, r["seq"]) for r in w.recs]
    assert all(s["record_hash"] == r["hash"] for s, r in zip(body["segments"], w.recs, strict=True))
    device = body["devices"][w.device]
    assert device["all_sound"] is True
    assert device["records"] == 4
    assert device["gaps"] == []
    assert device["findings"] == []

    text = w.verification(w.custodian, format="text")
    assert text.status_code == 200
    assert text.headers["content-type"].startswith("text/plain")
    assert f"Verification of case {CASE_A}" in text.text
    assert "Result: ALL SOUND" in text.text
    assert f"Chain of custody: device {w.device}" in text.text

    # Each answer is a custody event: who, what, the result.
    viewed = [e for e in w.api.events("viewed") if e["target_kind"] == "case-verification"]
    assert len(viewed) == 2
    assert viewed[0]["actor"] == "user:custodian1"
    assert viewed[0]["target_id"] == CASE_A
    assert viewed[0]["reason"] == "移送前核验"
    assert viewed[0]["result"] == {"green": 3, "amber": 0, "red": 0}


def test_device_verification_is_the_chain_report(world: CaseWorld) -> None:
    w = world
    got = w.auditor.get(f"/api/v1/devices/{w.device}/verification")
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["device"] == w.device
    assert body["all_sound"] is True
    assert body["records"] == 4
    assert body["sound_ranges"] == [[0, 3]]
    text = w.custodian.get(f"/api/v1/devices/{w.device}/verification", params={"format": "text"})
    assert "Result: ALL SOUND" in text.text
    assert w.handler.get(f"/api/v1/devices/{w.device}/verification").status_code == 403
    assert w.custodian.get("/api/v1/devices/REC-9999/verification").status_code == 404
    events = [e for e in w.api.events("viewed") if e["target_kind"] == "device-verification"]
    assert [(e["actor"], e["device"]) for e in events] == [
        ("user:auditor1", w.device),
        ("user:custodian1", w.device),
    ]


def test_who_may_verify_a_case(world: CaseWorld) -> None:
    w = world
    assert w.verification(w.handler).status_code == 200  # its handler
    assert w.verification(w.reviewer).status_code == 200  # assigned for review
    assert w.verification(w.other_handler).status_code == 404  # not theirs: no hint it exists
    assert w.verification(w.auditor).status_code == 403  # auditors read the log, not cases
    assert TestClient(w.api.app).get(f"/api/v1/cases/by-number/{CASE_A}/verification").status_code == 401


def _alter_blob(api: CaseApi, digest: str) -> None:
    store = api.store
    assert isinstance(store, LocalBlobStore)
    path = store.root / store.key(digest)
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


ON_S3 = os.environ.get("FIELDPROOF_TEST_STORE", "local") == "s3"


@pytest.mark.skipif(
    ON_S3,
    reason="local store only: alters a blob file in place on disk; on S3 Object Lock refuses that "
    "through the API, and test_blob_replaced_behind_the_s3_api_is_red does it behind the API",
)
def test_blob_altered_in_the_store_is_red(world: CaseWorld) -> None:
    w = world
    altered = w.recs[1]
    _alter_blob(w.api, altered["body"]["digest"])
    body = w.verification(w.custodian).json()
    assert body["all_sound"] is False
    assert body["summary"] == {"green": 2, "amber": 0, "red": 1}
    by_seq = {s["seq"]: s for s in body["segments"]}
    bad = by_seq[altered["seq"]]
    assert bad["status"] == "red"
    assert bad["reasons"] == ["altered"]
    assert [f["code"] for f in bad["findings"]] == ["hash-mismatch"]
    assert "differs from what the device signed" in bad["findings"][0]["advice"]
    assert {by_seq[r["seq"]]["status"] for r in (w.recs[0], w.recs[2])} == {"green"}
    text = w.verification(w.custodian, format="text").text
    assert f"{w.device}:{altered['seq']}" in text
    assert "RED  altered" in text


def test_revoked_device_later_segments_are_red(tmp_path: Path, database_url: str, fleet: Fleet) -> None:
    device = fleet.enroll_recorder()
    w = make_world(tmp_path, database_url, fleet, device=device)
    # The device was lost between its first and second segment (records dated start+12 s, +22 s, +32 s).
    revoke(fleet.ca, device=device, at=SAMPLE_START + timedelta(seconds=15), reason="keyCompromise")
    body = w.verification(w.custodian).json()
    status = [(s["seq"], s["status"], s["reasons"]) for s in body["segments"]]
    assert status == [
        (w.recs[0]["seq"], "green", []),
        (w.recs[1]["seq"], "red", ["revoked-device"]),
        (w.recs[2]["seq"], "red", ["revoked-device"]),
    ]
    codes = {f["code"] for f in body["devices"][device]["findings"]}
    assert codes == {"signed-after-revocation"}


def replace_behind_s3_api(w: CaseWorld, rec: dict[str, Any], seaweed: Seaweed) -> None:
    """Delete the blob's COMPLIANCE-locked version through SeaweedFS's filer port (which bypasses Object
    Lock), then lock a forgery (one bit flipped) under its key through the S3 API."""
    store = w.api.store
    assert isinstance(store, S3BlobStore)
    digest = rec["body"]["digest"]
    state = store.lock_state(digest)
    assert state.lock_mode == "COMPLIANCE"
    version_file = f"/buckets/{store.bucket}/{store.object_key(digest)}.versions/v_{state.version_id}"
    req = urllib.request.Request(f"http://127.0.0.1:{seaweed.ports['filer']}{version_file}", method="DELETE")
    with urllib.request.urlopen(req, timeout=10) as answer:  # noqa: S310 - our own loopback filer
        assert answer.status == 204
    forged = bytearray((w.spool / "media" / rec["body"]["file"]).read_bytes())
    forged[len(forged) // 2] ^= 0x01
    store.client.put_object(
        Bucket=store.bucket,
        Key=store.object_key(digest),
        Body=bytes(forged),
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=1),
    )


@pytest.mark.skipif(not ON_S3, reason="S3 store only (FIELDPROOF_TEST_STORE=s3): uses SeaweedFS's filer")
def test_blob_replaced_behind_the_s3_api_is_red(world: CaseWorld, evidence_s3: Seaweed | None) -> None:
    """The hole docs/object-store.md names: SeaweedFS's filer port deletes a COMPLIANCE-locked version,
    and a forgery is then locked under the key through the S3 API. Verification hashes what the store
    serves now: the sealed blob is gone and the forgery is never taken for it — red, file missing."""
    w = world
    assert evidence_s3 is not None
    altered = w.recs[1]
    assert w.verification(w.custodian).json()["all_sound"] is True  # the API's store has answered for it
    replace_behind_s3_api(w, altered, evidence_s3)
    body = w.verification(w.custodian).json()
    assert body["all_sound"] is False
    assert body["summary"] == {"green": 2, "amber": 0, "red": 1}
    bad = {s["seq"]: s for s in body["segments"]}[altered["seq"]]
    assert bad["status"] == "red"
    assert bad["reasons"] == ["missing"]
    assert [f["code"] for f in bad["findings"]] == ["missing-file"]
    # A fresh server process (no memory of the sealed version) finds the forgery and says so.
    w.api.app.state.blob_store = make_blob_store(w.api.settings)
    body = w.verification(w.custodian).json()
    bad = {s["seq"]: s for s in body["segments"]}[altered["seq"]]
    assert (bad["status"], bad["reasons"]) == ("red", ["missing"])
    assert any("tampered" in n and "tampering" in n for n in body["devices"][w.device]["notes"])
