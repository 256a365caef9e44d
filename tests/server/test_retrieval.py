"""Retrieval on both databases, over footage filed by the real ingest handler from signed spools: footage
by case number (as captured, as the device annotated it, as a user linked it), signed annotations that
leave the capture record alone, search, HTTP Range on media, recordings in order, and the custody event
every access writes."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from server.auth.principal import Role
from server.cases.annotations import CONTEXT, verify_signature
from server.cases.errors import AnnotationSignatureError
from server.cases.models import FootageAnnotation
from server.evidence.models import Segment
from server.evidence.service import RangeNotSatisfiableError, iter_blob, parse_range
from server.evidence.store import LocalBlobStore
from server.ingest.models import Record
from tests.server.case_helpers import (
    CASE_A,
    CASE_B,
    LAT_E7,
    LON_E7,
    OFFICER_1,
    OFFICER_2,
    USCC_A,
    USCC_B,
    CaseApi,
    Seg,
    ingest,
    make_api,
    media_bytes,
    write_spool,
)
from tests.server.conftest import SAMPLE_START, Fleet

# -- ranges, without a database ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", (0, 99)),
        ("bytes=100-199", (100, 199)),
        ("bytes=-100", (900, 999)),
        ("bytes=-5000", (0, 999)),  # a suffix longer than the file: all of it
        ("bytes=900-", (900, 999)),
        ("bytes=990-5000", (990, 999)),  # cut to the end
        ("items=0-5", None),  # another unit: ignored
        ("bytes=0-1,5-6", None),  # several ranges: ignored, the whole file is sent
    ],
)
def test_parse_range(header: str | None, expected: tuple[int, int] | None) -> None:
    got = parse_range(header, 1000)
    assert (got.start, got.end) == expected if got is not None else expected is None


@pytest.mark.parametrize(
    "header", ["bytes=1000-", "bytes=5-2", "bytes=-0", "bytes=abc", "bytes=-", "bytes=1-2-3"]
)
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiableError):
        parse_range(header, 1000)


def test_blobs_are_streamed_in_chunks(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "store", tmp_path / "staging")
    data = bytes(range(256)) * 100
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    store.begin(digest, len(data))
    store.write_at(digest, 0, data)
    store.commit(digest)
    chunks = list(iter_blob(store, digest, start=1000, length=5000, chunk=1024))
    assert [len(c) for c in chunks] == [1024, 1024, 1024, 1024, 904]
    assert b"".join(chunks) == data[1000:6000]


# -- footage in the case file ------------------------------------------------------------------------------


class World:
    """Two recorders' footage filed by ingest; a subject with two cases; users."""

    def __init__(self, tmp_path: Path, api: CaseApi) -> None:
        self.api = api
        self.admin = api.user("admin1", Role.IT_ADMIN)
        ids = {}
        for cert, name in ((OFFICER_1, "李明"), (OFFICER_2, "王芳")):
            got = self.admin.post(
                "/api/v1/officers",
                json={"certificate_no": cert, "name": name, "department": "劳动保障监察总队"},
            )
            ids[cert] = got.json()["id"]
        self.h1 = api.user("handler1", Role.CASE_HANDLER)
        self.h2 = api.user("handler2", Role.CASE_HANDLER)
        self.custodian = api.user("custodian1", Role.CUSTODIAN)
        self.inspector1 = api.user("inspector1", Role.INSPECTOR, officer_id=ids[OFFICER_1])
        # An inspector who also handles cases (as many do): assigned to case B below.
        self.inspector2 = api.user("inspector2", Role.INSPECTOR, Role.CASE_HANDLER, officer_id=ids[OFFICER_2])
        self.auditor = api.user("auditor1", Role.AUDITOR)
        for uscc in (USCC_A, USCC_B):
            assert (
                self.h1.post(
                    "/api/v1/subjects", json={"uscc": uscc, "name": f"用人单位{uscc[-2:]}"}
                ).status_code
                == 201
            )
        self.subject_a = self.h1.get("/api/v1/subjects", params={"q": USCC_A}).json()[0]["id"]
        self.case_a = self._case(self.h1, CASE_A, self.subject_a)
        self.case_b = self._case(self.h2, CASE_B, self.subject_a)
        assigned = self.h2.post(
            f"/api/v1/cases/{self.case_b}/assignments",
            json={"user_id": api.users["inspector2"], "role": "handler"},
        )
        assert assigned.status_code == 201, assigned.text

        # REC-0001: case A as captured (index 1, 2), the first segment without a case; officer 1; Tianjin.
        self.spool1 = tmp_path / "spool1"
        self.rec1 = write_spool(
            self.spool1,
            api.fleet,
            "REC-0001",
            [
                Seg(case="", subject=USCC_A),
                Seg(case=CASE_A, subject=USCC_A),
                Seg(case=CASE_A, subject=USCC_A),
            ],
            start=SAMPLE_START,
        )
        # REC-0002: no case at capture, officer 2, an inquiry two hours later and 5 km north.
        self.spool2 = tmp_path / "spool2"
        self.rec2 = write_spool(
            self.spool2,
            api.fleet,
            "REC-0002",
            [
                Seg(
                    officer=OFFICER_2,
                    scene="inquiry",
                    matter="JC-01",
                    proof="询问劳动者工资发放情况",
                    lat_offset_e7=450_000,
                ),
                Seg(
                    officer=OFFICER_2,
                    scene="inquiry",
                    matter="JC-01",
                    proof="询问劳动者工资发放情况",
                    lat_offset_e7=450_000,
                ),
            ],
            start=SAMPLE_START + timedelta(hours=2),
        )
        ingest(api, self.spool1, "REC-0001")
        ingest(api, self.spool2, "REC-0002")

    @staticmethod
    def _case(client: Any, number: str, subject_id: int) -> int:
        got = client.post(
            "/api/v1/cases", json={"number": number, "subject_id": subject_id, "matter_code": "CF-02"}
        )
        assert got.status_code == 201, got.text
        return int(got.json()["id"])

    def link(self, client: Any, **body: Any) -> Any:
        return client.post("/api/v1/annotations", json=body)


@pytest.fixture
def world(tmp_path: Path, database_url: str, fleet: Fleet) -> World:
    return World(tmp_path, make_api(tmp_path, database_url, fleet))


def _seqs(case_file: dict[str, Any]) -> list[tuple[str, int]]:
    return [(s["device"], s["seq"]) for r in case_file["recordings"] for s in r["segments"]]


def test_footage_by_case_number_and_linking(world: World) -> None:
    w, api = world, world.api
    a = w.h1.get(f"/api/v1/cases/by-number/{CASE_A}", params={"reason": "审查证据"})
    assert a.status_code == 200, a.text
    body = a.json()
    assert body["case"]["number"] == CASE_A
    assert body["subject"]["uscc"] == USCC_A
    # The two REC-0001 segments captured with case A; the first was captured without a case number.
    assert _seqs(body) == [("REC-0001", w.rec1[1]["seq"]), ("REC-0001", w.rec1[2]["seq"])]
    rec = body["recordings"][0]
    assert rec["officers"] == [OFFICER_1]
    assert rec["place"] == {"lat_e7": LAT_E7 + 37, "lon_e7": LON_E7 + 53}
    assert rec["start"] == w.rec1[1]["body"]["start"]
    assert rec["end"] == w.rec1[2]["body"]["end"]
    assert {s["case_source"] for s in rec["segments"]} == {"capture"}
    assert rec["segments"][0]["proof"] == "用人单位违反劳务派遣规定的现场情况"
    assert rec["segments"][0]["media_url"] == f"/api/v1/segments/REC-0001/{w.rec1[1]['seq']}/media"

    # Link the first segment and all of REC-0002's recording to case A: one signed annotation each.
    with api.factory() as s:
        lines_before = {(r.device, r.seq): bytes(r.line) for r in s.scalars(select(Record))}
        captured_before = {(g.device, g.seq): g.case_number for g in s.scalars(select(Segment))}
    first = w.link(
        w.h1,
        targets=[{"device": "REC-0001", "seq": w.rec1[0]["seq"]}],
        case_number=CASE_A,
        reason="首段录制时尚未立案",
    )
    assert first.status_code == 201, first.text
    # REC-0002's footage is nobody's case yet: only the inspector who recorded it may link it, and only
    # to a case they handle (inspector2 is also a handler of case B). handler1 cannot even see it.
    recording2 = w.rec2[0]["body"]["recording"]
    target2 = [{"device": "REC-0002", "recording": recording2}]
    assert w.link(w.h1, targets=target2, case_number=CASE_A, reason="x").status_code == 404
    assert w.link(w.inspector2, targets=target2, case_number=CASE_A, reason="x").status_code == 404
    assert (
        w.link(
            w.h1, targets=[{"device": "REC-0001", "seq": 99999}], case_number=CASE_A, reason="x"
        ).status_code
        == 404
    )
    to_b = w.link(
        w.inspector2, targets=target2, case_number=CASE_B, subject=USCC_A, reason="询问笔录对应录像"
    )
    assert to_b.status_code == 201, to_b.text
    # The inspector corrects the proof statement of footage they recorded.
    fixed = w.link(
        w.inspector2, targets=target2, proof="询问劳动者工资发放及加班情况", reason="证明对象表述不全"
    )
    assert fixed.status_code == 201, fixed.text
    linked = api.events("linked")
    assert [(e["device"], e["seq"], e["actor"]) for e in linked] == [
        ("REC-0001", w.rec1[0]["seq"], "user:handler1"),
        *[("REC-0002", r["seq"], "user:inspector2") for r in w.rec2],
    ]
    assert linked[0]["set"] == {"case": CASE_A}
    assert linked[0]["was"]["case"] == ""
    assert linked[0]["annotation"] == first.json()["id"]

    after = w.h1.get(f"/api/v1/cases/by-number/{CASE_A}").json()
    assert _seqs(after) == [("REC-0001", r["seq"]) for r in w.rec1]
    seg0 = after["recordings"][0]["segments"][0]
    assert seg0["case_source"] == "annotation"
    assert seg0["case_annotation"] == first.json()["id"]
    detail = w.h1.get(f"/api/v1/segments/REC-0001/{w.rec1[0]['seq']}").json()
    assert detail["annotations"][0]["set"] == {"case": CASE_A}
    assert detail["annotations"][0]["by"] == "user:handler1"
    assert len(detail["fixes"]) == 2
    seg_view = [e for e in api.events("viewed") if e["target_kind"] == "segment"][-1]
    assert (seg_view["actor"], seg_view["device"], seg_view["seq"]) == (
        "user:handler1",
        "REC-0001",
        w.rec1[0]["seq"],
    )
    corrected = w.custodian.get(f"/api/v1/segments/REC-0002/{w.rec2[0]['seq']}").json()
    assert corrected["proof"] == "询问劳动者工资发放及加班情况"
    assert corrected["proof_annotation"] == fixed.json()["id"]
    assert len(api.events("annotated")) == 2  # the proof correction, one event per segment
    b = w.h2.get(f"/api/v1/cases/by-number/{CASE_B}").json()
    assert _seqs(b) == [("REC-0002", r["seq"]) for r in w.rec2]
    assert {seg["case_source"] for seg in b["recordings"][0]["segments"]} == {"annotation"}
    assert {seg["subject"] for seg in b["recordings"][0]["segments"]} == {USCC_A}

    # The capture records and the segments as ingest filed them are unchanged.
    with api.factory() as s:
        assert {(r.device, r.seq): bytes(r.line) for r in s.scalars(select(Record))} == lines_before
        assert {(g.device, g.seq): g.case_number for g in s.scalars(select(Segment))} == captured_before

    # Unlinking is an annotation too; the segment drops out of the case file.
    gone = w.link(
        w.h1, targets=[{"device": "REC-0001", "seq": w.rec1[0]["seq"]}], case_number="", reason="误关联"
    )
    assert gone.status_code == 201
    assert _seqs(w.h1.get(f"/api/v1/cases/by-number/{CASE_A}").json()) == [
        ("REC-0001", r["seq"]) for r in w.rec1[1:]
    ]
    assert [e["seq"] for e in api.events("unlinked")] == [w.rec1[0]["seq"]]

    # Case B's handler sees nothing of case A's footage.
    assert w.h2.get(f"/api/v1/segments/REC-0001/{w.rec1[1]['seq']}").status_code == 404
    assert w.h2.get(f"/api/v1/segments/REC-0001/{w.rec1[1]['seq']}/media").status_code == 404
    assert w.auditor.get(f"/api/v1/segments/REC-0001/{w.rec1[1]['seq']}").status_code == 403
    viewed = [e for e in api.events("viewed") if e.get("view") == "case-file"]
    assert viewed[0]["actor"] == "user:handler1"
    assert viewed[0]["reason"] == "审查证据"
    assert viewed[0]["segments"] == [f"REC-0001:{w.rec1[1]['seq']}", f"REC-0001:{w.rec1[2]['seq']}"]


def test_annotation_signature_verifies_and_is_append_only(world: World) -> None:
    w, api = world, world.api
    made = w.link(
        w.h1,
        targets=[{"device": "REC-0001", "recording": w.rec1[0]["body"]["recording"]}],
        subject=USCC_A,
        case_number=CASE_A,
        proof="现场检查：劳务派遣用工比例超过百分之十",
        reason="补充证明对象",
    )
    assert made.status_code == 201, made.text
    ann = made.json()
    assert ann["verified"] is True
    assert ann["targets"] == [{"device": "REC-0001", "seq": r["seq"], "hash": r["hash"]} for r in w.rec1]
    cert = x509.load_pem_x509_certificate((api.fleet.ca / "server-signing.pem").read_bytes())
    signed = verify_signature(ann["signed"].encode(), ann["signature"], cert)
    assert ann["context"].encode() == CONTEXT
    assert signed["by"] == "user:handler1"
    assert signed["set"] == {
        "case": CASE_A,
        "subject": USCC_A,
        "proof": "现场检查：劳务派遣用工比例超过百分之十",
    }
    assert signed["targets"] == ann["targets"]
    # Any change to what was signed fails, and so does the signature without the context.
    tampered = ann["signed"].replace("百分之十", "百分之二十")
    with pytest.raises(AnnotationSignatureError):
        verify_signature(tampered.encode(), ann["signature"], cert)
    raw = base64.b64decode(ann["signature"])
    public = cert.public_key()
    with pytest.raises(InvalidSignature):
        public.verify(raw, ann["signed"].encode())  # type: ignore[union-attr]
    got = w.h1.get(f"/api/v1/annotations/{ann['id']}").json()
    assert got["verified"] is True
    assert got["signature"] == ann["signature"]
    assert w.h2.get(f"/api/v1/annotations/{ann['id']}").status_code == 404

    # Append-only in the database; and a row altered behind the triggers is served as not verifying.
    for stmt in ("UPDATE footage_annotations SET reason = 'x'", "DELETE FROM footage_annotation_targets"):
        with pytest.raises(DBAPIError, match="append-only"), api.factory() as s, s.begin():
            s.execute(text(stmt))
    with api.factory() as s, s.begin():
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("ALTER TABLE footage_annotations DISABLE TRIGGER USER"))
            s.execute(text("UPDATE footage_annotations SET proof = 'x'"))
            s.execute(text("ALTER TABLE footage_annotations ENABLE TRIGGER USER"))
        else:
            s.execute(text("DROP TRIGGER footage_annotations_no_update"))
            s.execute(text("UPDATE footage_annotations SET proof = 'x'"))
    bad = w.h1.get(f"/api/v1/annotations/{ann['id']}").json()
    assert bad["verified"] is False
    assert "differ" in bad["problem"]
    with api.factory() as s:
        assert s.scalars(select(FootageAnnotation)).one().signature == ann["signature"]


def test_search(world: World) -> None:
    w = world
    c = w.custodian

    def seqs(**params: Any) -> set[tuple[str, int]]:
        got = c.get("/api/v1/search/footage", params=params)
        assert got.status_code == 200, got.text
        return {(s["device"], s["seq"]) for s in got.json()["segments"]}

    one = {("REC-0001", r["seq"]) for r in w.rec1}
    two = {("REC-0002", r["seq"]) for r in w.rec2}
    assert seqs() == one | two
    assert seqs(officer=OFFICER_2) == two
    assert seqs(scene="inquiry") == two
    assert seqs(matter="CF-02") == one
    assert seqs(proof="工资") == two
    assert seqs(proof="不存在的内容") == set()
    assert seqs(proof="%") == set()  # LIKE wildcards are text here
    assert seqs(case_number=CASE_A) == {("REC-0001", r["seq"]) for r in w.rec1[1:]}
    assert seqs(subject=USCC_A) == one
    # Time: footage overlapping the interval.
    t0 = SAMPLE_START
    assert seqs(start_from=(t0 + timedelta(hours=1)).isoformat()) == two
    assert seqs(start_to=(t0 + timedelta(hours=1)).isoformat()) == one
    assert seqs(start_from=t0.isoformat(), start_to=(t0 + timedelta(seconds=12)).isoformat()) == {
        ("REC-0001", w.rec1[0]["seq"]),
        ("REC-0001", w.rec1[1]["seq"]),
    }
    # Place: REC-0002 is 0.045° (≈ 5.0 km) north of REC-0001.
    assert seqs(lat_e7=LAT_E7, lon_e7=LON_E7, radius_m=200) == one
    assert seqs(lat_e7=LAT_E7 + 450_000, lon_e7=LON_E7, radius_m=200) == two
    assert seqs(lat_e7=LAT_E7, lon_e7=LON_E7, radius_m=4_900) == one
    assert seqs(lat_e7=LAT_E7, lon_e7=LON_E7, radius_m=5_100) == one | two
    assert seqs(lat_e7=0, lon_e7=0, radius_m=100_000) == set()
    assert seqs(officer=OFFICER_2, lat_e7=LAT_E7, lon_e7=LON_E7, radius_m=200) == set()
    # Bad searches are 422, never 5xx.
    for params in (
        {"lat_e7": LAT_E7},
        {"radius_m": 0, "lat_e7": 1, "lon_e7": 1},
        {"start_from": "2026-01-01T00:00:00"},  # no time zone
        {"start_from": "0001-01-01T00:00:00+14:00"},
        {"start_from": "2026-02-01T00:00:00Z", "start_to": "2026-01-01T00:00:00Z"},
        {"proof": "\x00"},
    ):
        assert c.get("/api/v1/search/footage", params=params).status_code == 422, params

    # What a user may see bounds the search: handler1 sees case A, inspector2 their own footage.
    assert {s["device"] for s in w.h1.get("/api/v1/search/footage").json()["segments"]} == {"REC-0001"}
    assert {s["device"] for s in w.inspector2.get("/api/v1/search/footage").json()["segments"]} == {
        "REC-0002"
    }
    assert w.auditor.get("/api/v1/search/footage").status_code == 403
    searches = [e for e in w.api.events("viewed") if e["target_kind"] == "search"]
    assert searches[1]["query"] == {"officer": OFFICER_2}
    assert searches[1]["actor"] == "user:custodian1"


def test_media_range_requests(world: World) -> None:
    w, api = world, world.api
    rec = w.rec1[1]
    data = media_bytes(w.spool1, rec)
    size = len(data)
    url = f"/api/v1/segments/REC-0001/{rec['seq']}/media"
    etag = '"' + rec["body"]["digest"].removeprefix("sha256:") + '"'

    whole = w.h1.get(url)
    assert whole.status_code == 200
    assert whole.content == data
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.headers["etag"] == etag
    for header, (start, end) in {
        "bytes=0-99": (0, 99),
        "bytes=1000-1999": (1000, 1999),
        "bytes=-500": (size - 500, size - 1),
        "bytes=5000-": (5000, size - 1),
    }.items():
        got = w.h1.get(url, headers={"Range": header})
        assert got.status_code == 206, header
        assert got.content == data[start : end + 1]
        assert got.headers["content-range"] == f"bytes {start}-{end}/{size}"
        assert got.headers["content-length"] == str(end - start + 1)
    for header in (f"bytes={size}-", "bytes=9-3", "bytes=-0", "bytes=x-y"):
        got = w.h1.get(url, headers={"Range": header})
        assert got.status_code == 416, header
        assert got.headers["content-range"] == f"bytes */{size}"
    # If-Range with another validator: the whole file.
    assert w.h1.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'}).status_code == 200
    assert w.h1.get(url, headers={"Range": "bytes=0-9", "If-Range": etag}).status_code == 206
    down = w.h1.get(url, params={"download": "true", "reason": "出具证据"})
    assert down.content == data
    assert "attachment" in down.headers["content-disposition"]

    streamed = api.events("streamed")
    assert len(streamed) == 1 + 4 + 2  # 416s send nothing and log nothing
    assert {e["actor"] for e in streamed} == {"user:handler1"}
    assert streamed[1]["range"] == f"bytes 0-99/{size}"
    assert (streamed[0]["device"], streamed[0]["seq"], streamed[0]["digest"], streamed[0]["record_hash"]) == (
        "REC-0001",
        rec["seq"],
        rec["body"]["digest"],
        rec["hash"],
    )
    downloaded = api.events("downloaded")
    assert [(e["target_id"], e["reason"]) for e in downloaded] == [(f"REC-0001:{rec['seq']}", "出具证据")]

    # The inspector who recorded it may play it; another inspector may not know it exists.
    assert w.inspector1.get(url, headers={"Range": "bytes=0-0"}).content == data[:1]
    assert w.inspector2.get(url).status_code == 404
    assert w.auditor.get(url).status_code == 403
    assert w.h1.get("/api/v1/segments/REC-0001/99999/media").status_code == 404


def test_recording_in_order_and_restricted_footage(world: World) -> None:
    w, api = world, world.api
    recording = w.rec1[0]["body"]["recording"]
    got = w.custodian.get(f"/api/v1/recordings/REC-0001/{recording}")
    assert got.status_code == 200, got.text
    body = got.json()
    assert [s["index"] for s in body["segments"]] == [0, 1, 2]
    assert [s["seq"] for s in body["segments"]] == [r["seq"] for r in w.rec1]
    assert body["missing_indexes"] == []
    assert body["start"] == w.rec1[0]["body"]["start"]
    for s, r in zip(body["segments"], w.rec1, strict=True):
        assert w.custodian.get(s["media_url"]).content == media_bytes(w.spool1, r)
    # handler1 sees the recording whole: two segments of case A, and the first, of no case yet.
    part = w.h1.get(f"/api/v1/recordings/REC-0001/{recording}").json()
    assert [(s["index"], s["case_number"]) for s in part["segments"]] == [(0, ""), (1, CASE_A), (2, CASE_A)]
    assert w.h2.get(f"/api/v1/recordings/REC-0001/{recording}").status_code == 404

    # Case A restricted: its footage opens only with a grant (the case, the segment or the recording).
    assert (
        w.h1.patch(f"/api/v1/cases/{w.case_a}", json={"restriction": "personal-privacy"}).status_code == 200
    )
    seg = w.rec1[1]["seq"]
    assert w.h1.get(f"/api/v1/segments/REC-0001/{seg}/media").status_code == 403
    withheld = w.h1.get(f"/api/v1/recordings/REC-0001/{recording}").json()
    assert ([s["index"] for s in withheld["segments"]], withheld["withheld"]) == ([0], 2)
    found = w.custodian.get("/api/v1/search/footage", params={"device": "REC-0001"}).json()
    assert found["withheld"] == 2
    assert [s["seq"] for s in found["segments"]] == [w.rec1[0]["seq"]]
    reviewer = api.user("reviewer9", Role.LEGAL_REVIEWER)
    req = w.h1.post(
        "/api/v1/access-requests",
        json={
            "target_kind": "recording",
            "target_id": f"REC-0001:{recording}",
            "restriction": "personal-privacy",
            "purpose": "听证前复核录像",
            "until": (SAMPLE_START + timedelta(days=30)).isoformat(),
        },
    )
    assert req.status_code == 201, req.text
    assert reviewer.post(f"/api/v1/access-requests/{req.json()['id']}/approve", json={}).status_code == 200
    assert w.h1.get(f"/api/v1/segments/REC-0001/{seg}/media").status_code == 200
    assert len(w.h1.get(f"/api/v1/recordings/REC-0001/{recording}").json()["segments"]) == 3
    streamed = api.events("streamed")[-1]
    assert streamed["access_requests"][0]["purpose"] == "听证前复核录像"
    views = [e for e in api.events("viewed") if e["target_kind"] == "recording"]
    assert [(e["actor"], e["target_id"], len(e["segments"]), e["withheld_segments"]) for e in views] == [
        ("user:custodian1", f"REC-0001:{recording}", 3, 0),
        ("user:handler1", f"REC-0001:{recording}", 3, 0),
        ("user:handler1", f"REC-0001:{recording}", 1, 2),
        ("user:handler1", f"REC-0001:{recording}", 3, 0),
    ]


def test_dossier_with_footage(world: World) -> None:
    w = world
    recording2 = w.rec2[0]["body"]["recording"]
    to_b = w.link(
        w.inspector2,
        targets=[{"device": "REC-0002", "recording": recording2}],
        case_number=CASE_B,
        reason="r",
    )
    assert to_b.status_code == 201
    first = w.link(
        w.h1,
        targets=[{"device": "REC-0001", "seq": w.rec1[0]["seq"]}],
        case_number=CASE_A,
        reason="立案后关联",
    )
    assert first.status_code == 201
    d = w.custodian.get(f"/api/v1/subjects/{w.subject_a}/dossier").json()
    kinds = [(i["kind"], i["case_number"]) for i in d["timeline"]]
    assert ("case-opened", CASE_A) in kinds
    assert ("case-opened", CASE_B) in kinds
    recordings = [i for i in d["timeline"] if i["kind"] == "recording"]
    assert [(i["case_number"], [s["seq"] for s in i["recording"]["segments"]]) for i in recordings] == [
        (CASE_A, [r["seq"] for r in w.rec1]),
        (CASE_B, [r["seq"] for r in w.rec2]),
    ]
    times = [i["time"] for i in d["timeline"]]
    assert times == sorted(times)
    # handler2 (case B only) sees case B's entries and footage, nothing of case A.
    d2 = w.h2.get(f"/api/v1/subjects/{w.subject_a}/dossier").json()
    assert {i["case_number"] for i in d2["timeline"]} == {CASE_B}
    assert [i["kind"] for i in d2["timeline"]] == ["case-opened", "recording"]
