"""The case domain on both databases: the GB 32100 validator, subjects, officers, cases and assignments,
text records uploaded and downloaded byte for byte, restricted records and access requests, who may do
what (docs/case-file.md), and the custody events each of these writes."""

from __future__ import annotations

import hashlib
import io
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from server.auth.principal import Role
from server.cases.models import TextRecord
from server.cases.uscc import ALPHABET, UsccError, check_character, is_valid_uscc, validate_uscc
from server.evidence.models import EvidenceFile
from tests.server.case_helpers import CASE_A, CASE_B, USCC_A, USCC_B, CaseApi, make_api
from tests.server.conftest import Fleet

# -- the unified social credit code (GB 32100-2015) ---------------------------------------------------

# Check characters worked by hand from the standard's rule: Σ value(Ci)·3^(i−1) mod 31 over the first 17,
# C18 = 31 − that (31 → 0). E.g. 91350100M000100Y4: 9·1 + 1·3 + 3·9 + 5·27 + 0 + 1·26 + 0 + 0 + 21·20 +
# 0 + 0 + 0 + 1·8 + 0 + 0 + 30·30 + 4·28 = 1640; 1640 mod 31 = 28; 31 − 28 = 3 → "3".
VALID = [
    "91350100M000100Y43",  # the example printed in GB 32100-2015
    "911100001000044477",
    "91110000600037341L",
    "91310000775785552L",
    USCC_A,
    "12100000400000624D",
]


def test_check_character_by_hand() -> None:
    assert check_character("91350100M000100Y4") == "3"
    assert check_character("00000000000000000") == "0"  # Σ = 0 → 31 − 0 = 31 → 0


@pytest.mark.parametrize("code", VALID)
def test_valid_codes(code: str) -> None:
    assert validate_uscc(code) == code
    assert is_valid_uscc(code)


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("91120116MA05JQ2X4U", "check character"),  # one character off: the check character should be C
        ("91350100M000100Y44", "check character"),
        ("91350100M000100Y4", "18 characters"),
        ("91350100M000100Y433", "18 characters"),
        ("91350100m000100Y43", "not allowed"),  # capitals only
        ("91350100I000100Y43", "not allowed"),  # I, O, Z, S, V are not in the alphabet
        ("91350100O000100Y43", "not allowed"),
        ("9135A100M000100Y43", "six digits"),
        ("91350100M000100Y4 ", "not allowed"),
        ("", "18 characters"),
    ],
)
def test_invalid_codes(code: str, why: str) -> None:
    with pytest.raises(UsccError, match=why):
        validate_uscc(code)
    assert not is_valid_uscc(code)


@given(st.sampled_from(VALID), st.integers(0, 16), st.sampled_from(ALPHABET))
def test_any_single_substitution_is_caught(code: str, position: int, char: str) -> None:
    changed = code[:position] + char + code[position + 1 :]
    if changed != code and changed[2:8].isdigit():
        assert not is_valid_uscc(changed)


@given(st.sampled_from(VALID), st.integers(0, 15))
def test_any_adjacent_transposition_is_caught(code: str, position: int) -> None:
    swapped = code[:position] + code[position + 1] + code[position] + code[position + 2 :]
    if swapped != code and swapped[2:8].isdigit():
        assert not is_valid_uscc(swapped)


# -- API: subjects, officers, cases --------------------------------------------------------------------


@pytest.fixture
def api(tmp_path: Path, database_url: str, fleet: Fleet) -> CaseApi:
    return make_api(tmp_path, database_url, fleet)


def _subject(client: object, uscc: str = USCC_A, name: str = "天津某劳务派遣有限公司") -> int:
    got = client.post(  # type: ignore[attr-defined]
        "/api/v1/subjects",
        json={
            "uscc": uscc,
            "name": name,
            "address": "天津市滨海新区",
            "contacts": [{"name": "张三", "phone": "022-1"}],
        },
    )
    assert got.status_code == 201, got.text
    return int(got.json()["id"])


def _case(client: object, subject_id: int, number: str = CASE_A, **extra: object) -> dict[str, object]:
    body = {
        "number": number,
        "subject_id": subject_id,
        "matter_code": "CF-02",
        "title": "劳务派遣检查",
        **extra,
    }
    got = client.post("/api/v1/cases", json=body)  # type: ignore[attr-defined]
    assert got.status_code == 201, got.text
    return dict(got.json())


def test_subjects_and_officers(api: CaseApi) -> None:
    handler = api.user("handler1", Role.CASE_HANDLER)
    admin = api.user("admin1", Role.IT_ADMIN)
    auditor = api.user("auditor1", Role.AUDITOR)

    sid = _subject(handler)
    got = handler.get(f"/api/v1/subjects/{sid}").json()
    assert got["uscc"] == USCC_A
    assert got["contacts"] == [{"name": "张三", "phone": "022-1", "role": ""}]
    assert handler.get("/api/v1/subjects", params={"q": "劳务"}).json()[0]["id"] == sid
    # The check character is verified; a code is registered once.
    bad = handler.post("/api/v1/subjects", json={"uscc": "91120116MA05JQ2X4U", "name": "x"})
    assert bad.status_code == 422
    assert "check character" in bad.text
    assert handler.post("/api/v1/subjects", json={"uscc": USCC_A, "name": "again"}).status_code == 409
    assert handler.post("/api/v1/subjects", json={"uscc": USCC_B, "name": "x\x00"}).status_code == 422
    # Subjects: case handlers register; auditors and IT admins read no case data.
    assert admin.post("/api/v1/subjects", json={"uscc": USCC_B, "name": "x"}).status_code == 403
    assert auditor.get(f"/api/v1/subjects/{sid}").status_code == 403
    assert handler.get("/api/v1/subjects/999999").status_code == 404

    # Officers: the IT admin keeps the register; everyone reads it.
    body = {"certificate_no": "12010019001", "name": "李明", "department": "劳动保障监察总队"}
    assert handler.post("/api/v1/officers", json=body).status_code == 403
    created = admin.post("/api/v1/officers", json=body)
    assert created.status_code == 201, created.text
    assert admin.post("/api/v1/officers", json=body).status_code == 409
    assert [o["certificate_no"] for o in auditor.get("/api/v1/officers").json()] == ["12010019001"]
    assert handler.get(f"/api/v1/officers/{created.json()['id']}").json()["name"] == "李明"


def test_case_lifecycle_and_assignment(api: CaseApi) -> None:
    h1 = api.user("handler1", Role.CASE_HANDLER)
    h2 = api.user("handler2", Role.CASE_HANDLER)
    reviewer = api.user("reviewer1", Role.LEGAL_REVIEWER)
    custodian = api.user("custodian1", Role.CUSTODIAN)
    admin = api.user("admin1", Role.IT_ADMIN)
    sid = _subject(h1)

    case = _case(h1, sid)
    assert case["status"] == "open"
    assert case["matter_title"] == "对违反有关劳务派遣规定行为的处罚"
    assert [(a["username"], a["role"]) for a in case["assignments"]] == [("handler1", "handler")]
    cid = case["id"]
    # A case number is unique; the matter must be in the bureau's catalogue; the subject must exist.
    dup = h1.post("/api/v1/cases", json={"number": CASE_A, "subject_id": sid, "matter_code": "CF-02"})
    assert dup.status_code == 409
    bad = h1.post("/api/v1/cases", json={"number": CASE_B, "subject_id": sid, "matter_code": "CF-99"})
    assert bad.status_code == 422
    assert "catalogue" in bad.text
    assert (
        h1.post(
            "/api/v1/cases", json={"number": CASE_B, "subject_id": 4242, "matter_code": "CF-02"}
        ).status_code
        == 422
    )
    assert (
        reviewer.post(
            "/api/v1/cases", json={"number": CASE_B, "subject_id": sid, "matter_code": "CF-02"}
        ).status_code
        == 403
    )

    # An unassigned handler reads no case: 404, as if it did not exist. IT admins: 403 (no evidence).
    assert h2.get(f"/api/v1/cases/{cid}").status_code == 404
    assert h2.get(f"/api/v1/cases/by-number/{CASE_A}").status_code == 404
    assert h2.get("/api/v1/cases").json() == []
    assert admin.get(f"/api/v1/cases/{cid}").status_code == 403
    assert custodian.get(f"/api/v1/cases/{cid}").status_code == 200  # custody reads every case
    assert (
        h2.post(
            f"/api/v1/cases/{cid}/assignments", json={"user_id": api.users["handler2"], "role": "handler"}
        ).status_code
        == 404
    )

    # The handler assigns a second handler and a reviewer; roles must fit the part.
    assert (
        h1.post(
            f"/api/v1/cases/{cid}/assignments", json={"user_id": api.users["reviewer1"], "role": "handler"}
        ).status_code
        == 422
    )
    a2 = h1.post(
        f"/api/v1/cases/{cid}/assignments", json={"user_id": api.users["handler2"], "role": "handler"}
    )
    assert a2.status_code == 201, a2.text
    ar = h1.post(
        f"/api/v1/cases/{cid}/assignments", json={"user_id": api.users["reviewer1"], "role": "reviewer"}
    )
    assert ar.status_code == 201
    assert (
        h1.post(
            f"/api/v1/cases/{cid}/assignments", json={"user_id": api.users["reviewer1"], "role": "reviewer"}
        ).status_code
        == 409
    )
    assert h2.get(f"/api/v1/cases/{cid}").status_code == 200
    assert [c["number"] for c in h2.get("/api/v1/cases").json()] == [CASE_A]
    # A reviewer reads but does not change the case.
    assert reviewer.get(f"/api/v1/cases/by-number/{CASE_A}").status_code == 200
    assert reviewer.patch(f"/api/v1/cases/{cid}", json={"status": "closed"}).status_code == 403
    granted = [e for e in api.events("access-granted") if e["target_kind"] == "case"]
    assert [(e["user"], e["role"], e["actor"]) for e in granted] == [
        ("user:handler1", "handler", "user:handler1"),
        ("user:handler2", "handler", "user:handler1"),
        ("user:reviewer1", "reviewer", "user:handler1"),
    ]

    # Ending an assignment: kept, logged; the handler no longer reads the case.
    ended = h1.delete(f"/api/v1/cases/{cid}/assignments/{a2.json()['id']}")
    assert ended.status_code == 200
    assert ended.json()["ended_at"] is not None
    assert h2.get(f"/api/v1/cases/{cid}").status_code == 404
    assert [e["user"] for e in api.events("access-revoked")] == ["user:handler2"]
    first = case["assignments"][0]["id"]  # type: ignore[index]
    assert h1.delete(f"/api/v1/cases/{cid}/assignments/{first}").status_code == 409  # the last handler

    # open → closed → archived; archived is final.
    assert h1.patch(f"/api/v1/cases/{cid}", json={"status": "archived"}).status_code == 409
    closed = h1.patch(f"/api/v1/cases/{cid}", json={"status": "closed"})
    assert closed.status_code == 200
    assert closed.json()["closed_on"] is not None
    assert h1.patch(f"/api/v1/cases/{cid}", json={"status": "archived"}).json()["status"] == "archived"
    assert h1.patch(f"/api/v1/cases/{cid}", json={"status": "open"}).status_code == 409
    # Case views are logged.
    assert {e["target_id"] for e in api.events("viewed") if e["target_kind"] == "case"} == {CASE_A}


# -- text records ----------------------------------------------------------------------------------------


def _pdf(text: str = "询问笔录") -> bytes:
    return b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n" + text.encode() + b"\n%%EOF\n"


def _docx() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("word/document.xml", "<w:document>检查笔录</w:document>")
    return buf.getvalue()


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


def _upload(client: object, cid: object, data: bytes, name: str, ctype: str, **form: str) -> object:
    fields = {"kind": "inquiry-transcript", "title": "询问笔录（第一次）", **form}
    return client.post(  # type: ignore[attr-defined]
        f"/api/v1/cases/{cid}/text-records", data=fields, files={"file": (name, data, ctype)}
    )


def test_text_records_round_trip(api: CaseApi) -> None:
    h1 = api.user("handler1", Role.CASE_HANDLER)
    reviewer = api.user("reviewer1", Role.LEGAL_REVIEWER)
    h2 = api.user("handler2", Role.CASE_HANDLER)
    cid = _case(h1, _subject(h1))["id"]
    h1.post(f"/api/v1/cases/{cid}/assignments", json={"user_id": api.users["reviewer1"], "role": "reviewer"})

    uploaded = {}
    for data, name, ctype in (
        (_pdf(), "询问笔录.pdf", "application/pdf"),
        (_docx(), "检查笔录.docx", "application/octet-stream"),
        (PNG, "现场照片.png", "image/png"),
    ):
        got = _upload(h1, cid, data, name, ctype)
        assert got.status_code == 201, got.text  # type: ignore[attr-defined]
        body = got.json()  # type: ignore[attr-defined]
        assert body["sha256"] == "sha256:" + hashlib.sha256(data).hexdigest()
        assert body["size"] == len(data)
        assert body["uploaded_by"] == "handler1"
        uploaded[body["id"]] = (data, name, body)
    assert [b["media_type"] for _, _, b in uploaded.values()] == [
        "application/pdf",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "image/png",
    ]

    # Downloaded byte for byte, by the reviewer too; the store holds the blob under its hash.
    store = api.store
    for rid, (data, _name, body) in uploaded.items():
        got = reviewer.get(f"/api/v1/text-records/{rid}/content", params={"reason": "法制审核"})
        assert got.status_code == 200
        assert got.content == data
        assert got.headers["content-type"].startswith(body["media_type"])
        assert "attachment" in got.headers["content-disposition"]
        with store.open(body["sha256"]) as f:
            assert hashlib.sha256(f.read()).hexdigest() == body["sha256"].removeprefix("sha256:")
    rid = next(iter(uploaded))
    part = reviewer.get(f"/api/v1/text-records/{rid}/content", headers={"Range": "bytes=0-7"})
    assert part.status_code == 206
    assert part.content == _pdf()[:8]
    listed = h1.get(f"/api/v1/cases/{cid}/text-records").json()
    assert [r["id"] for r in listed] == list(uploaded)
    assert all(r["openable"] for r in listed)
    with api.factory() as s:
        assert (
            s.scalar(select(EvidenceFile.status).where(EvidenceFile.digest == listed[0]["sha256"]))
            == "stored"
        )

    # Custody: filed once per upload, downloaded per download with the reason given.
    filed = api.events("filed")
    assert [(e["target_id"], e["digest"], e["actor"]) for e in filed] == [
        (str(rid), b["sha256"], "user:handler1") for rid, (_, _, b) in uploaded.items()
    ]
    downloads = api.events("downloaded")
    assert len(downloads) == 4
    assert downloads[0]["actor"] == "user:reviewer1"
    assert downloads[0]["reason"] == "法制审核"
    assert downloads[3]["range"] == f"bytes 0-7/{len(_pdf())}"

    # Refused: bytes of another type, a declared type that disagrees, a reviewer or stranger uploading.
    assert _upload(h1, cid, b"MZ\x90\x00" * 10, "x.exe", "application/pdf").status_code == 422  # type: ignore[attr-defined]
    assert _upload(h1, cid, _pdf(), "x.pdf", "image/png").status_code == 422  # type: ignore[attr-defined]
    assert _upload(h1, cid, b"PK\x03\x04 not a zip", "x.docx", "application/octet-stream").status_code == 422  # type: ignore[attr-defined]
    assert _upload(h1, cid, _pdf(), "x.pdf", "application/pdf", kind="memo").status_code == 422  # type: ignore[attr-defined]
    assert _upload(reviewer, cid, _pdf(), "x.pdf", "application/pdf").status_code == 403  # type: ignore[attr-defined]
    assert _upload(h2, cid, _pdf(), "x.pdf", "application/pdf").status_code == 404  # type: ignore[attr-defined]
    assert h2.get(f"/api/v1/text-records/{rid}/content").status_code == 404
    with api.factory() as s:
        assert len(s.scalars(select(TextRecord)).all()) == 3


def test_restricted_record_needs_a_granted_request(api: CaseApi) -> None:
    h1 = api.user("handler1", Role.CASE_HANDLER)
    decider = api.user("reviewer1", Role.LEGAL_REVIEWER)
    cid = _case(h1, _subject(h1))["id"]
    got = _upload(h1, cid, _pdf("个人隐私"), "p.pdf", "application/pdf", restriction="personal-privacy")
    assert got.status_code == 201  # type: ignore[attr-defined]
    body = got.json()  # type: ignore[attr-defined]
    rid = body["id"]
    # Even its uploader and assigned handler sees only that it exists, not its title or hash.
    assert body["openable"] is False
    assert body["title"] is None
    assert body["sha256"] is None
    denied = h1.get(f"/api/v1/text-records/{rid}/content")
    assert denied.status_code == 403
    assert "access-requests" in denied.text
    assert h1.get(f"/api/v1/text-records/{rid}").status_code == 403

    until = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    req = h1.post(
        "/api/v1/access-requests",
        json={
            "target_kind": "text-record",
            "target_id": str(rid),
            "restriction": "personal-privacy",
            "purpose": "核对劳动者身份信息",
            "until": until,
        },
    )
    assert req.status_code == 201, req.text
    assert h1.get(f"/api/v1/text-records/{rid}/content").status_code == 403  # pending opens nothing
    assert decider.post(f"/api/v1/access-requests/{req.json()['id']}/approve", json={}).status_code == 200
    opened = h1.get(f"/api/v1/text-records/{rid}/content")
    assert opened.status_code == 200
    assert opened.content == _pdf("个人隐私")
    download = api.events("downloaded")[-1]
    assert download["access_requests"][0]["purpose"] == "核对劳动者身份信息"
    assert download["access_requests"][0]["id"] == req.json()["id"]
    listed = h1.get(f"/api/v1/cases/{cid}/text-records").json()
    assert listed[0]["openable"] is True
    assert listed[0]["title"] == "询问笔录（第一次）"


def test_restricted_case_needs_a_grant_for_its_case_file(api: CaseApi) -> None:
    h1 = api.user("handler1", Role.CASE_HANDLER)
    custodian = api.user("custodian1", Role.CUSTODIAN)
    cid = _case(h1, _subject(h1), restriction="trade-secret")["id"]
    assert _upload(h1, cid, PNG, "a.png", "image/png").status_code == 201  # type: ignore[attr-defined]
    # Metadata of the case stays readable to its people; its file and records need a grant.
    assert h1.get(f"/api/v1/cases/{cid}").status_code == 200
    for client in (h1, custodian):
        assert client.get(f"/api/v1/cases/by-number/{CASE_A}").status_code == 403
    rid = h1.get(f"/api/v1/cases/{cid}/text-records").json()[0]["id"]
    assert h1.get(f"/api/v1/text-records/{rid}/content").status_code == 403
    until = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    req = custodian.post(
        "/api/v1/access-requests",
        json={
            "target_kind": "case",
            "target_id": CASE_A,
            "restriction": "trade-secret",
            "purpose": "出具证据副本",
            "until": until,
        },
    )
    decider = api.user("reviewer1", Role.LEGAL_REVIEWER)
    assert decider.post(f"/api/v1/access-requests/{req.json()['id']}/approve", json={}).status_code == 200
    assert custodian.get(f"/api/v1/cases/by-number/{CASE_A}").status_code == 200
    assert custodian.get(f"/api/v1/text-records/{rid}/content").content == PNG
    assert h1.get(f"/api/v1/cases/by-number/{CASE_A}").status_code == 403  # the grant is the custodian's
    # Lifting the restriction is the handler's decision.
    assert h1.patch(f"/api/v1/cases/{cid}", json={"clear_restriction": True}).json()["restriction"] is None
    assert h1.get(f"/api/v1/cases/by-number/{CASE_A}").status_code == 200


def test_dossier_across_two_cases(api: CaseApi) -> None:
    h1 = api.user("handler1", Role.CASE_HANDLER)
    h2 = api.user("handler2", Role.CASE_HANDLER)
    custodian = api.user("custodian1", Role.CUSTODIAN)
    sid = _subject(h1)
    a = _case(h1, sid, CASE_A, opened_on="2026-03-01")
    b = _case(h2, sid, CASE_B, opened_on="2026-06-01")
    assert _upload(h1, a["id"], _pdf("A"), "a.pdf", "application/pdf").status_code == 201  # type: ignore[attr-defined]
    assert _upload(h2, b["id"], _pdf("B"), "b.pdf", "application/pdf", kind="decision").status_code == 201  # type: ignore[attr-defined]

    whole = custodian.get(f"/api/v1/subjects/{sid}/dossier").json()
    assert [c["number"] for c in whole["cases"]] == [CASE_A, CASE_B]
    kinds = [(i["kind"], i["case_number"]) for i in whole["timeline"]]
    assert kinds == [
        ("case-opened", CASE_A),
        ("case-opened", CASE_B),
        ("text-record", CASE_A),
        ("text-record", CASE_B),
    ]
    times = [i["time"] for i in whole["timeline"]]
    assert times == sorted(times)
    # Each handler sees the part of the dossier they are assigned to.
    mine = h1.get(f"/api/v1/subjects/{sid}/dossier").json()
    assert {i["case_number"] for i in mine["timeline"]} == {CASE_A}
    viewed = [e for e in api.events("viewed") if e["target_kind"] == "subject"]
    assert [(e["actor"], e["cases"]) for e in viewed] == [
        ("user:custodian1", [CASE_A, CASE_B]),
        ("user:handler1", [CASE_A]),
    ]
