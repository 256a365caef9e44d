"""Role × endpoint: every route of the app, called by every role, answers as docs/access.md says.

The routes are enumerated from the app itself, so a route added without a row here fails
``test_every_route_has_a_row``. Each row is one concrete request (real ids of real, ingested footage)
and the status expected per role; state-changing rows build a fresh target per call so that the
order of the roles does not matter. Then: a restricted record opens only with a granted access
request, and every evidence read is in the custody log with an inclusion proof that verifies.
Both databases.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import select

from server.auth.principal import Role
from server.cases.uscc import check_character
from server.custody_log.models import CustodyEvent
from server.custody_log.sequencer import CheckpointSigner, sequence_pending
from server.custody_log.verify import load_signing_certificate, verify_event_answer
from tests.server.case_helpers import (
    CASE_A,
    OFFICER_1,
    OFFICER_2,
    USCC_A,
    CaseApi,
    Seg,
    ingest,
    make_api,
    write_spool,
)
from tests.server.conftest import SAMPLE_START, Fleet
from tests.web.matrix_rows import web_rows

#: The roles of the matrix, in the order of its columns.
ROLES = (
    "inspector",  # recorded REC-0001's footage (officer 1)
    "handler",  # case handler assigned to case A (REC-0001's footage)
    "other_handler",  # case handler, not assigned to case A
    "custodian",
    "legal",  # legal reviewer assigned to review case A
    "admin",  # IT admin
    "auditor",
    "anonymous",
)
CASE_R = "津人社监察〔2026〕99号"  # restricted (personal privacy)
_SERIAL = itertools.count(1)
EVIDENCE = ("viewed", "streamed", "downloaded", "exported")


def expect(default: int, **by_role: int) -> dict[str, int]:
    """The expected status per role: ``default`` for signed-in roles not named, 401 for anonymous."""
    out = {r: default for r in ROLES}
    out["anonymous"] = 401
    out.update(by_role)
    return out


#: Readers of case A and its footage (the inspector through their own recording).
def evidence(ok: int = 200, *, inspector: int | None = None, legal: int | None = None) -> dict[str, int]:
    """Evidence of case A: its handler, reviewer, custodian; the inspector who recorded it; 404 for
    the unassigned handler (no hint it exists); 403 for roles that open no evidence."""
    return expect(
        403,
        inspector=ok if inspector is None else inspector,
        handler=ok,
        other_handler=404,
        custodian=ok,
        legal=ok if legal is None else legal,
    )


Request = tuple[str, dict[str, Any]]  # (url, keyword arguments of TestClient.request)
Build = Callable[["World", str], Request]


@dataclass(frozen=True)
class Row:
    """One route: how to call it as a role, and what each role gets."""

    method: str
    path: str
    build: Build
    expected: dict[str, int]


class World:
    """Users of every role, case A with REC-0001's footage (officer 1), restricted case R with
    REC-0002's footage (officer 2), a text record, an annotation, an access request to decide."""

    def __init__(self, tmp_path: Path, api: CaseApi) -> None:
        self.api = api
        self.tmp_path = tmp_path
        c: dict[str, TestClient] = {}
        c["admin"] = api.user("admin1", Role.IT_ADMIN)
        officers = {}
        for cert, name in ((OFFICER_1, "李明"), (OFFICER_2, "王芳")):
            got = c["admin"].post(
                "/api/v1/officers", json={"certificate_no": cert, "name": name, "department": "监察总队"}
            )
            assert got.status_code == 201, got.text
            officers[cert] = got.json()["id"]
        self.officer_id = officers[OFFICER_1]
        c["inspector"] = api.user("inspector1", Role.INSPECTOR, officer_id=officers[OFFICER_1])
        c["handler"] = api.user("handler1", Role.CASE_HANDLER)
        c["other_handler"] = api.user("handler2", Role.CASE_HANDLER)
        c["custodian"] = api.user("custodian1", Role.CUSTODIAN)
        c["legal"] = api.user("legal1", Role.LEGAL_REVIEWER)
        c["auditor"] = api.user("auditor1", Role.AUDITOR)
        c["anonymous"] = TestClient(api.app)
        self.clients = c
        # Asks for access to restricted footage (the decisions of the matrix are on their requests).
        self.requester = api.user("inspector2", Role.INSPECTOR, officer_id=officers[OFFICER_2])
        self.second_custodian = api.user("custodian2", Role.CUSTODIAN)

        got = c["handler"].post("/api/v1/subjects", json={"uscc": USCC_A, "name": "用人单位A"})
        assert got.status_code == 201, got.text
        self.subject = got.json()["id"]
        self.case_a = self._case(c["handler"], CASE_A)
        self.case_r = self._case(c["handler"], CASE_R, restriction="personal-privacy")
        self._assign(c["handler"], self.case_a, "legal1", "reviewer")
        # REC-0001: case A, officer 1. REC-0002: restricted case R, officer 2.
        self.spool1 = tmp_path / "spool1"
        self.rec1 = write_spool(
            self.spool1, api.fleet, "REC-0001", [Seg(case=CASE_A), Seg(case=CASE_A)], start=SAMPLE_START
        )
        self.spool2 = tmp_path / "spool2"
        self.rec2 = write_spool(
            self.spool2,
            api.fleet,
            "REC-0002",
            [Seg(case=CASE_R, officer=OFFICER_2)],
            start=SAMPLE_START + timedelta(hours=1),
        )
        ingest(api, self.spool1, "REC-0001")
        ingest(api, self.spool2, "REC-0002")
        self.seq = self.rec1[0]["seq"]
        self.recording = self.rec1[0]["body"]["recording"]
        self.text_record = self._upload(c["handler"], self.case_a).json()["id"]
        got = c["handler"].post(
            "/api/v1/annotations",
            json={
                "targets": [{"device": "REC-0001", "seq": self.seq}],
                "proof": "现场检查",
                "reason": "更正",
            },
        )
        assert got.status_code == 201, got.text
        self.annotation = got.json()["id"]
        self.victim = self.user_id(api.user(f"victim{next(_SERIAL)}", Role.INSPECTOR))
        self.export_id: str | None = None
        self.hold_id: int | None = None

    # -- helpers the rows use -------------------------------------------------------------------------

    def _case(self, client: TestClient, number: str, restriction: str | None = None) -> int:
        body: dict[str, Any] = {"number": number, "subject_id": self.subject, "matter_code": "CF-02"}
        if restriction:
            body["restriction"] = restriction
        got = client.post("/api/v1/cases", json=body)
        assert got.status_code == 201, got.text
        return int(got.json()["id"])

    def _assign(self, client: TestClient, case_id: int, username: str, role: str) -> int:
        got = client.post(
            f"/api/v1/cases/{case_id}/assignments", json={"user_id": self.api.users[username], "role": role}
        )
        assert got.status_code == 201, got.text
        return int(got.json()["id"])

    def _upload(self, client: TestClient, case_id: int) -> Any:
        got = client.post(
            f"/api/v1/cases/{case_id}/text-records",
            data={"kind": "inquiry-transcript", "title": "询问笔录"},
            files={"file": ("inquiry.png", PNG, "image/png")},
        )
        assert got.status_code == 201, got.text
        return got

    def user_id(self, client: TestClient) -> int:
        return int(client.get("/api/v1/auth/me").json()["id"])

    def fresh_handler(self) -> int:
        """A new case handler to assign."""
        name = f"newhandler{next(_SERIAL)}"
        self.api.user(name, Role.CASE_HANDLER)
        return self.api.users[name]

    def fresh_assignment(self) -> int:
        """A second handler on case A (the last handler cannot be removed)."""
        got = self.clients["handler"].post(
            f"/api/v1/cases/{self.case_a}/assignments",
            json={"user_id": self.fresh_handler(), "role": "handler"},
        )
        assert got.status_code == 201, got.text
        return int(got.json()["id"])

    def pending_request(self) -> int:
        """A new pending access request of the requester (another target each time)."""
        got = self.requester.post(
            "/api/v1/access-requests",
            json={
                "target_kind": "segment",
                "target_id": f"REC-0002:{1000 + next(_SERIAL)}",
                "restriction": "personal-privacy",
                "purpose": "比对现场情况",
                "until": (datetime.now(UTC) + timedelta(days=2)).isoformat(),
            },
        )
        assert got.status_code == 201, got.text
        return int(got.json()["id"])

    def approved_request(self) -> int:
        rid = self.pending_request()
        got = self.second_custodian.post(f"/api/v1/access-requests/{rid}/approve", json={})
        assert got.status_code == 200, got.text
        return rid

    def export(self) -> str:
        """The id of an export of case A (made once, by a custodian of its own)."""
        if self.export_id is None:
            got = self.second_custodian.post(f"/api/v1/cases/by-number/{CASE_A}/export")
            assert got.status_code == 201, got.text
            self.export_id = got.json()["export_id"]
        return self.export_id

    def hold(self, *, fresh: bool = False) -> int:
        """A legal hold on case A (placed once, or a new one when ``fresh``), by a custodian of its own."""
        if fresh or self.hold_id is None:
            got = self.second_custodian.post(
                "/api/v1/legal-holds", json={"case_id": self.case_a, "reason": "诉讼保全"}
            )
            assert got.status_code == 201, got.text
            self.hold_id = int(got.json()["id"])
        return self.hold_id

    def tree_size(self) -> int:
        """The size of the latest signed checkpoint (the API sequences before it answers)."""
        got = self.second_custodian.get("/api/v1/custody-log/checkpoint")
        assert got.status_code == 200, got.text
        return int(got.json()["tree_size"])

    def own_token(self, role: str) -> int:
        """A new API token of the role's user (to revoke: owners only)."""
        from server.auth import service as auth
        from server.auth.models import ApiToken
        from server.db import transaction

        username = _USERNAMES.get(role, "inspector2")  # anonymous: anyone's (401 before it matters)
        with transaction(self.api.factory) as s:
            secret = auth.issue_token(
                s,
                user_id=self.api.users[username],
                name="spare",
                expires_at=datetime.now(UTC) + timedelta(days=1),
            )
            s.flush()
            return int(s.scalar(select(ApiToken.id).where(ApiToken.token_hash == auth.secret_digest(secret))))


#: A minimal valid PNG (signature, IHDR, IDAT, IEND): a text record's scan.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


def _uscc() -> str:
    first17 = f"91120116MA{next(_SERIAL):07d}"
    return first17 + check_character(first17)


def _req(url: str, **kwargs: Any) -> Build:
    return lambda w, role: (url.format(w=w), kwargs)


def _until(days: int = 2) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


SEG = "/api/v1/segments/REC-0001/{w.seq}"


def _issue(w: World) -> dict[str, Any]:
    """A fresh recorder id issued to officer 1 (配发), as a body for POST /recorder-assignments."""
    return {"recorder": f"REC-I{next(_SERIAL):05d}", "officer_id": w.officer_id, "valid_from": "2026-01-01"}


def _fresh_issue(w: World) -> int:
    got = w.clients["admin"].post("/api/v1/recorder-assignments", json=_issue(w))
    assert got.status_code == 201, got.text
    return int(got.json()["id"])


ROWS: list[Row] = [
    # -- sign-in, own tokens -----------------------------------------------------------------------------
    Row(
        "POST",
        "/api/v1/auth/login",
        lambda w, role: (
            "/api/v1/auth/login",
            {"json": {"username": f"nobody-{role}", "password": "wrong password!"}},
        ),
        expect(401),  # anyone may try; wrong credentials
    ),
    Row("POST", "/api/v1/auth/logout", _req("/api/v1/auth/logout"), expect(204, anonymous=204)),
    Row("GET", "/api/v1/auth/me", _req("/api/v1/auth/me"), expect(200)),
    # A token cannot mint tokens (session only): every token-holder gets 403.
    Row(
        "POST",
        "/api/v1/auth/tokens",
        _req("/api/v1/auth/tokens", json={"name": "x", "expires_at": _until()}),
        expect(403),
    ),
    Row("GET", "/api/v1/auth/tokens", _req("/api/v1/auth/tokens"), expect(200)),
    Row(
        "DELETE",
        "/api/v1/auth/tokens/{token_id}",
        lambda w, role: (f"/api/v1/auth/tokens/{w.own_token(role)}", {}),
        expect(204),
    ),
    # -- users: IT admins -----------------------------------------------------------------------------
    Row(
        "POST",
        "/api/v1/users",
        lambda w, role: (
            "/api/v1/users",
            {
                "json": {
                    "username": f"made{next(_SERIAL)}",
                    "password": "a long new password",
                    "roles": ["inspector"],
                }
            },
        ),
        expect(403, admin=201),
    ),
    Row("GET", "/api/v1/users", _req("/api/v1/users"), expect(403, admin=200)),
    Row("GET", "/api/v1/users/{user_id}", _req("/api/v1/users/{w.victim}"), expect(403, admin=200)),
    Row(
        "POST",
        "/api/v1/users/{user_id}/disable",
        _req("/api/v1/users/{w.victim}/disable"),
        expect(403, admin=200),
    ),
    Row(
        "POST",
        "/api/v1/users/{user_id}/enable",
        _req("/api/v1/users/{w.victim}/enable"),
        expect(403, admin=200),
    ),
    Row(
        "PUT",
        "/api/v1/users/{user_id}/roles",
        _req("/api/v1/users/{w.victim}/roles", json={"roles": ["inspector"]}),
        expect(403, admin=200),
    ),
    Row(
        "PUT",
        "/api/v1/users/{user_id}/password",
        _req("/api/v1/users/{w.victim}/password", json={"password": "another long password"}),
        expect(403, admin=204),
    ),
    # -- access requests ---------------------------------------------------------------------------------
    Row(
        "POST",
        "/api/v1/access-requests",
        lambda w, role: (
            "/api/v1/access-requests",
            {
                "json": {
                    "target_kind": "case",
                    "target_id": CASE_R,
                    "restriction": "personal-privacy",
                    "purpose": f"核对 {role}",
                    "until": _until(),
                }
            },
        ),
        expect(201, admin=403, auditor=403),
    ),
    Row("GET", "/api/v1/access-requests", _req("/api/v1/access-requests"), expect(200)),
    Row(
        "GET",
        "/api/v1/access-requests/{request_id}",
        lambda w, role: (f"/api/v1/access-requests/{w.pending_request()}", {}),
        expect(404, custodian=200, legal=200, auditor=200),
    ),
    Row(
        "POST",
        "/api/v1/access-requests/{request_id}/approve",
        lambda w, role: (f"/api/v1/access-requests/{w.pending_request()}/approve", {"json": {}}),
        expect(403, custodian=200, legal=200),
    ),
    Row(
        "POST",
        "/api/v1/access-requests/{request_id}/refuse",
        lambda w, role: (
            f"/api/v1/access-requests/{w.pending_request()}/refuse",
            {"json": {"note": "不需要"}},
        ),
        expect(403, custodian=200, legal=200),
    ),
    Row(
        "POST",
        "/api/v1/access-requests/{request_id}/withdraw",
        lambda w, role: (f"/api/v1/access-requests/{w.pending_request()}/withdraw", {}),
        expect(404, custodian=403, legal=403, auditor=403),  # only the requester (another user)
    ),
    Row(
        "POST",
        "/api/v1/access-requests/{request_id}/revoke",
        lambda w, role: (
            f"/api/v1/access-requests/{w.approved_request()}/revoke",
            {"json": {"note": "结案"}},
        ),
        expect(403, custodian=200, legal=200),
    ),
    # -- evidence ---------------------------------------------------------------------------------------
    Row("GET", "/api/v1/devices/{device}/segments", _req("/api/v1/devices/REC-0001/segments"), evidence()),
    Row("GET", "/api/v1/segments/{device}/{seq}", _req(SEG), evidence()),
    Row("GET", "/api/v1/segments/{device}/{seq}/media", _req(SEG + "/media"), evidence()),
    Row(
        "GET",
        "/api/v1/recordings/{device}/{recording}",
        _req("/api/v1/recordings/REC-0001/{w.recording}"),
        evidence(),
    ),
    # -- verification and export (custody) ---------------------------------------------------------------
    Row(
        "GET",
        "/api/v1/cases/by-number/{number:path}/verification",
        _req(f"/api/v1/cases/by-number/{CASE_A}/verification"),
        evidence(inspector=404),  # the readers of the case (server/verification)
    ),
    Row(
        "GET",
        "/api/v1/devices/{device}/verification",
        _req("/api/v1/devices/REC-0001/verification"),
        expect(403, custodian=200, auditor=200),
    ),
    Row(
        "POST",
        "/api/v1/cases/by-number/{number:path}/export",
        _req(f"/api/v1/cases/by-number/{CASE_A}/export"),
        expect(403, custodian=201),
    ),
    Row(
        "GET",
        "/api/v1/cases/by-number/{number:path}/exports/{export_id}",
        lambda w, role: (f"/api/v1/cases/by-number/{CASE_A}/exports/{w.export()}", {}),
        expect(403, custodian=200),
    ),
    # -- the case file --------------------------------------------------------------------------------------
    Row(
        "POST",
        "/api/v1/subjects",
        lambda w, role: ("/api/v1/subjects", {"json": {"uscc": _uscc(), "name": "新用人单位"}}),
        expect(403, handler=201, other_handler=201),
    ),
    Row("GET", "/api/v1/subjects", _req("/api/v1/subjects"), expect(200, admin=403, auditor=403)),
    Row(
        "GET",
        "/api/v1/subjects/{subject_id}",
        _req("/api/v1/subjects/{w.subject}"),
        expect(200, admin=403, auditor=403),
    ),
    Row(
        "GET",
        "/api/v1/subjects/{subject_id}/dossier",
        _req("/api/v1/subjects/{w.subject}/dossier"),
        expect(200, admin=403, auditor=403),
    ),
    Row(
        "POST",
        "/api/v1/officers",
        lambda w, role: (
            "/api/v1/officers",
            {"json": {"certificate_no": f"9{next(_SERIAL):010d}", "name": "新", "department": "总队"}},
        ),
        expect(403, admin=201),
    ),
    Row("GET", "/api/v1/officers", _req("/api/v1/officers"), expect(200)),
    # -- 配发: recorders issued to officers (IT admins) ---------------------------------------------------
    Row(
        "POST",
        "/api/v1/recorder-assignments",
        lambda w, role: ("/api/v1/recorder-assignments", {"json": _issue(w)}),
        expect(403, admin=201),
    ),
    Row("GET", "/api/v1/recorder-assignments", _req("/api/v1/recorder-assignments"), expect(403, admin=200)),
    Row(
        "POST",
        "/api/v1/recorder-assignments/{assignment_id}/end",
        lambda w, role: (
            f"/api/v1/recorder-assignments/{_fresh_issue(w)}/end",
            {"json": {"valid_until": "2026-06-30"}},
        ),
        expect(403, admin=200),
    ),
    Row("GET", "/api/v1/officers/{officer_id}", _req("/api/v1/officers/{w.officer_id}"), expect(200)),
    Row(
        "POST",
        "/api/v1/cases",
        lambda w, role: (
            "/api/v1/cases",
            {
                "json": {
                    "number": f"津人社监察〔2026〕{100 + next(_SERIAL)}号",
                    "subject_id": w.subject,
                    "matter_code": "CF-02",
                }
            },
        ),
        expect(403, handler=201, other_handler=201),
    ),
    Row("GET", "/api/v1/cases", _req("/api/v1/cases"), expect(200, admin=403, auditor=403)),
    Row(
        "GET",
        "/api/v1/cases/by-number/{number:path}",
        _req(f"/api/v1/cases/by-number/{CASE_A}"),
        evidence(inspector=404),
    ),
    Row("GET", "/api/v1/cases/{case_id}", _req("/api/v1/cases/{w.case_a}"), evidence(inspector=404)),
    Row(
        "PATCH",
        "/api/v1/cases/{case_id}",
        _req("/api/v1/cases/{w.case_a}", json={"status": "open"}),
        evidence(inspector=404, legal=403, ok=200) | {"custodian": 403},
    ),
    Row(
        "POST",
        "/api/v1/cases/{case_id}/assignments",
        lambda w, role: (
            f"/api/v1/cases/{w.case_a}/assignments",
            {"json": {"user_id": w.fresh_handler(), "role": "handler"}},
        ),
        evidence(201, inspector=403, legal=403),
    ),
    Row(
        "DELETE",
        "/api/v1/cases/{case_id}/assignments/{assignment_id}",
        lambda w, role: (f"/api/v1/cases/{w.case_a}/assignments/{w.fresh_assignment()}", {}),
        evidence(200, inspector=403, legal=403),
    ),
    Row(
        "POST",
        "/api/v1/cases/{case_id}/text-records",
        _req(
            "/api/v1/cases/{w.case_a}/text-records",
            data={"kind": "inquiry-transcript", "title": "询问笔录"},
            files={"file": ("inquiry.png", PNG, "image/png")},
        ),
        evidence(201, inspector=404, legal=403) | {"custodian": 403},
    ),
    Row(
        "GET",
        "/api/v1/cases/{case_id}/text-records",
        _req("/api/v1/cases/{w.case_a}/text-records"),
        evidence(inspector=404),
    ),
    Row(
        "GET",
        "/api/v1/text-records/{record_id}",
        _req("/api/v1/text-records/{w.text_record}"),
        evidence(inspector=404),
    ),
    Row(
        "GET",
        "/api/v1/text-records/{record_id}/content",
        _req("/api/v1/text-records/{w.text_record}/content"),
        evidence(inspector=404),
    ),
    Row(
        "GET",
        "/api/v1/search/footage",
        _req("/api/v1/search/footage", params={"matter": "CF-02"}),
        expect(200, admin=403, auditor=403),
    ),
    Row(
        "POST",
        "/api/v1/annotations",
        lambda w, role: (
            "/api/v1/annotations",
            {
                "json": {
                    "targets": [{"device": "REC-0001", "seq": w.seq}],
                    "proof": f"现场检查情况 {role}",
                    "reason": "补正",
                }
            },
        ),
        evidence(201, legal=403) | {"custodian": 403},
    ),
    Row("GET", "/api/v1/annotations/{annotation_id}", _req("/api/v1/annotations/{w.annotation}"), evidence()),
    # -- retention and legal holds: custodians and legal reviewers (server/retention) --------------------------
    Row(
        "POST",
        "/api/v1/legal-holds",
        lambda w, role: ("/api/v1/legal-holds", {"json": {"case_id": w.case_a, "reason": "诉讼保全"}}),
        expect(403, custodian=201, legal=201),
    ),
    Row("GET", "/api/v1/legal-holds", _req("/api/v1/legal-holds"), expect(403, custodian=200, legal=200)),
    Row(
        "GET",
        "/api/v1/legal-holds/{hold_id}",
        lambda w, role: (f"/api/v1/legal-holds/{w.hold()}", {}),
        expect(403, custodian=200, legal=200),
    ),
    Row(
        "POST",
        "/api/v1/legal-holds/{hold_id}/release",
        lambda w, role: (
            f"/api/v1/legal-holds/{w.hold(fresh=True)}/release",
            {"json": {"reason": "保全解除"}},
        ),
        expect(403, custodian=200, legal=200),
    ),
    Row(
        "PUT",
        "/api/v1/retention/cases/{case_id}/archive-rule",
        _req(
            "/api/v1/retention/cases/{w.case_a}/archive-rule", json={"keep_years": 30, "reason": "档案规定"}
        ),
        expect(403, custodian=200, legal=200),
    ),
    Row(
        "GET",
        "/api/v1/retention/cases/{case_id}",
        _req("/api/v1/retention/cases/{w.case_a}"),
        expect(403, custodian=200, legal=200),
    ),
    Row(
        "GET",
        "/api/v1/retention/segments/{device}/{seq}",
        _req("/api/v1/retention/segments/REC-0001/{w.seq}"),
        expect(403, custodian=200, legal=200),
    ),
    # -- the custody log: custodians and auditors -------------------------------------------------------------
    Row(
        "GET",
        "/api/v1/custody-log/checkpoint",
        _req("/api/v1/custody-log/checkpoint"),
        expect(403, custodian=200, auditor=200),
    ),
    Row(
        "GET",
        "/api/v1/custody-log/checkpoints/{tree_size}",
        lambda w, role: (f"/api/v1/custody-log/checkpoints/{w.tree_size()}", {}),
        expect(403, custodian=200, auditor=200),
    ),
    Row(
        "GET",
        "/api/v1/custody-log/events/{event_id}",
        _req("/api/v1/custody-log/events/1"),
        expect(403, custodian=200, auditor=200),
    ),
    Row(
        "GET",
        "/api/v1/custody-log/leaves/{leaf_index}",
        _req("/api/v1/custody-log/leaves/0"),
        expect(403, custodian=200, auditor=200),
    ),
    Row(
        "GET",
        "/api/v1/custody-log/consistency",
        lambda w, role: (
            "/api/v1/custody-log/consistency",
            {"params": {"first": w.tree_size(), "second": w.tree_size()}},
        ),
        expect(403, custodian=200, auditor=200),
    ),
]

# The web pages (server/web, docs/web.md): the same roles as the API routes showing the same thing.
ROWS += [Row(*row) for row in web_rows(expect, evidence)]

#: Routes FastAPI adds itself (the schema and its viewers): public, no data.
FRAMEWORK = {"/api/openapi.json", "/api/docs", "/docs/oauth2-redirect", "/redoc"}


def app_routes(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every API route of ``app`` (HEAD and OPTIONS left to the framework)."""
    out = set()
    for ctx in iter_route_contexts(app.routes):
        if ctx.path in FRAMEWORK:
            continue
        assert isinstance(ctx.original_route, APIRoute), ctx.path
        out |= {(m, ctx.path) for m in ctx.methods or () if m not in ("HEAD", "OPTIONS")}
    return out


@pytest.fixture
def world(tmp_path: Path, database_url: str, fleet: Fleet) -> World:
    return World(tmp_path, make_api(tmp_path, database_url, fleet))


def test_every_route_has_a_row(tmp_path: Path, fleet: Fleet, sqlite_template: Path) -> None:
    import shutil

    db = tmp_path / "x.db"
    shutil.copyfile(sqlite_template, db)
    routes = app_routes(make_api(tmp_path, f"sqlite:///{db}", fleet).app)
    rows = {(r.method, r.path) for r in ROWS}
    assert routes - rows == set(), "routes without a row in the matrix (add one, and to docs/access.md)"
    assert rows - routes == set(), "rows for routes the app no longer has"
    assert len(rows) == len(ROWS), "one row per route"


def test_role_by_endpoint_matrix(world: World) -> None:
    got: dict[tuple[str, str], dict[str, int]] = {}
    for row in ROWS:
        for role in ROLES:
            url, kwargs = row.build(world, role)
            answer = world.clients[role].request(row.method, url, **kwargs)
            assert answer.status_code < 500, (row.method, url, role, answer.text)
            got.setdefault((row.method, row.path), {})[role] = answer.status_code
    wrong = {
        key: {r: (got[key][r], row.expected[r]) for r in ROLES if got[key][r] != row.expected[r]}
        for row in ROWS
        if (key := (row.method, row.path)) and got[key] != row.expected
    }
    assert wrong == {}, "(got, expected) per role: " + "\n".join(f"{k}: {v}" for k, v in wrong.items())


def test_restricted_footage_needs_a_granted_request(world: World) -> None:
    seq = world.rec2[0]["seq"]
    url = f"/api/v1/segments/REC-0002/{seq}"
    handler, custodian = world.clients["handler"], world.clients["custodian"]
    # Assigned (handler of case R) or custodian: still no, until a request is granted.
    assert handler.get(url).status_code == 403
    assert custodian.get(url + "/media").status_code == 403
    assert "access-requests" in custodian.get(url).json()["detail"]
    listed = custodian.get("/api/v1/devices/REC-0002/segments")
    assert listed.status_code == 200
    assert listed.json() == []  # withheld, not shown
    asked = handler.post(
        "/api/v1/access-requests",
        json={
            "target_kind": "segment",
            "target_id": f"REC-0002:{seq}",
            "restriction": "personal-privacy",
            "purpose": "比对工资发放现场",
            "until": _until(),
        },
    )
    assert asked.status_code == 201, asked.text
    rid = asked.json()["id"]
    assert handler.post(f"/api/v1/access-requests/{rid}/approve", json={}).status_code == 403  # not their own
    assert custodian.post(f"/api/v1/access-requests/{rid}/approve", json={}).status_code == 200
    assert handler.get(url).status_code == 200
    assert handler.get(url + "/media").status_code == 200
    assert [s["seq"] for s in handler.get("/api/v1/devices/REC-0002/segments").json()] == [seq]
    # The grant is the handler's, not the custodian's; withdrawn, it opens nothing.
    assert custodian.get(url).status_code == 403
    assert handler.post(f"/api/v1/access-requests/{rid}/withdraw").status_code == 200
    assert handler.get(url).status_code == 403
    opened = [e for e in world.api.events("streamed") if e["actor"] == "user:handler1"]
    assert opened
    assert opened[-1]["access_requests"][0]["id"] == rid
    assert opened[-1]["access_requests"][0]["purpose"] == "比对工资发放现场"


def test_every_evidence_read_is_in_the_log_with_a_proof(world: World, fleet: Fleet) -> None:
    reads = [
        ("inspector", "/api/v1/devices/REC-0001/segments", "viewed"),
        ("handler", f"/api/v1/segments/REC-0001/{world.seq}", "viewed"),
        ("legal", f"/api/v1/segments/REC-0001/{world.seq}/media", "streamed"),
        ("custodian", f"/api/v1/recordings/REC-0001/{world.recording}", "viewed"),
        ("handler", f"/api/v1/segments/REC-0001/{world.seq}/media?download=true", "downloaded"),
    ]
    with world.api.factory() as s:
        before = s.scalar(select(CustodyEvent.id).order_by(CustodyEvent.id.desc()).limit(1)) or 0
    for role, url, _kind in reads:
        assert world.clients[role].get(url).status_code == 200, url
    # Denied reads log nothing.
    assert world.clients["other_handler"].get(f"/api/v1/segments/REC-0001/{world.seq}").status_code == 404
    assert world.clients["auditor"].get("/api/v1/devices/REC-0001/segments").status_code == 403
    with world.api.factory() as s:
        new = list(s.scalars(select(CustodyEvent).where(CustodyEvent.id > before).order_by(CustodyEvent.id)))
    assert [(e.actor, e.kind) for e in new] == [(f"user:{_USERNAMES[r]}", k) for r, _, k in reads]

    sequence_pending(factory=world.api.factory, signer=CheckpointSigner.from_ca_dir(fleet.ca))
    cert = load_signing_certificate((fleet.ca / "server-signing.pem").read_bytes())
    auditor = world.clients["auditor"]
    for e in new:
        answer = auditor.get(f"/api/v1/custody-log/events/{e.id}")
        assert answer.status_code == 200, answer.text
        event = verify_event_answer(answer.json(), cert)  # raises unless leaf, path and signature verify
        assert (event["id"], event["kind"], event["actor"]) == (e.id, e.kind, e.actor)
        assert json.loads(event["detail"])["target_id"].startswith("REC-0001")


_USERNAMES = {
    "inspector": "inspector1",
    "handler": "handler1",
    "other_handler": "handler2",
    "custodian": "custodian1",
    "legal": "legal1",
    "admin": "admin1",
    "auditor": "auditor1",
}
