"""The data the page tests look at, built as the server would hold it: users of every role, officers,
a subject, a case, a text record, and footage filed by the real ingest handler from a signed spool
whose segments are real H.264/AAC fragmented MP4 (ffmpeg's test pattern: only the camera and the
microphone are simulated). Then the app served by uvicorn on 127.0.0.1 for Chromium to open.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvicorn
from fastapi.testclient import TestClient

from custody.timefmt import utc_timestamp
from edge.journal import SpoolWriter
from fieldproof.sample_chain import segment_body
from server.auth.principal import Role
from tests.provisioning.helpers import free_port
from tests.server.case_helpers import (
    CASE_A,
    CASE_B,
    OFFICER_1,
    OFFICER_2,
    PW,
    USCC_A,
    CaseApi,
    ingest,
    make_api,
)
from tests.server.conftest import Fleet

#: Seconds of each test segment (short, so that the suite stays quick; the recorder's default is 10).
SEGMENT_S = 4
#: The users of the tests, by role (password: case_helpers.PW).
USERS = {
    "inspector": ("inspector1", (Role.INSPECTOR,)),
    "handler": ("handler1", (Role.CASE_HANDLER,)),
    "other_handler": ("handler2", (Role.CASE_HANDLER,)),
    "custodian": ("custodian1", (Role.CUSTODIAN,)),
    "legal": ("legal1", (Role.LEGAL_REVIEWER,)),
    "admin": ("admin1", (Role.IT_ADMIN,)),
    "auditor": ("auditor1", (Role.AUDITOR,)),
}
PASSWORD = PW
#: A PDF as small as a reader accepts (the case file checks the bytes against the declared type).
PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj 2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)


def make_segment_media(path: Path, *, seconds: int = SEGMENT_S, tone: int = 440) -> None:
    """One self-contained fragmented-MP4 segment: H.264 (keyframe each second) + AAC, as the recorder cuts them."""
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=25:duration={seconds}",
            "-f", "lavfi", "-i", f"sine=frequency={tone}:sample_rate=48000:duration={seconds}",
            "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "64k", "-shortest",
            "-movflags", "frag_keyframe+empty_moov+default_base_moof", "-flush_packets", "1",
            "-f", "mp4", str(path),
        ],
        check=True,
        timeout=120,
    )  # fmt: skip


def write_media_spool(
    root: Path, fleet: Fleet, device: str, cases: list[str], *, start: datetime, officer: str = OFFICER_1
) -> list[dict[str, Any]]:
    """A signed spool: boot, a marker, then one recording of real segments, one per entry of ``cases``."""
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
    for i, case in enumerate(cases):
        seg_start = start + timedelta(seconds=1 + SEGMENT_S * i)
        tmp = root / "tmp" / f"{i}.mp4"
        make_segment_media(tmp, tone=440 + 110 * i)
        digest, length = spool.store_media(tmp, f"{recording}/{i:04d}.mp4")
        body = segment_body(
            recording=recording,
            index=i,
            file=f"{recording}/{i:04d}.mp4",
            digest=digest,
            size=length,
            start=seg_start,
            seconds=SEGMENT_S,
            case=case,
            subject=USCC_A if case else "",
            matter="CF-02",
            proof="用人单位未依法签订劳动合同的现场情况" if case else "",
            officer=officer,
            media={
                "container": "mp4-fragmented",
                "duration_ms": SEGMENT_S * 1000,
                "video": {"codec": "h264", "width": 320, "height": 240, "fps": "25/1"},
                "audio": {"codec": "aac", "rate": 48_000, "channels": 1},
            },
        )
        for fix in body["location"]["fixes"]:  # walk north-east, ~30 m per segment
            fix["lat_e7"] += 2_700 * i
            fix["lon_e7"] += 1_500 * i
        rec = spool.append("segment", body, time=utc_timestamp(seg_start + timedelta(seconds=SEGMENT_S + 1)))
        out.append(rec.record | {"hash": rec.hash})
        if i == 0:
            spool.append(
                "marker",
                {
                    "recording": recording,
                    "at": utc_timestamp(seg_start + timedelta(seconds=2)),
                    "label": "show-credentials",
                    "note": "出示执法证件",
                    "officer": officer,
                    "location": {"fix": False, "reason": "no fix yet"},
                },
                time=utc_timestamp(seg_start + timedelta(seconds=SEGMENT_S + 1, milliseconds=50)),
            )
    return out


@dataclass
class LiveServer:
    """The app under uvicorn on a free loopback port, on a thread of the test process."""

    server: uvicorn.Server
    thread: threading.Thread
    url: str

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def serve(app: Any) -> LiveServer:
    """Start uvicorn for ``app`` and wait until it listens."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    return LiveServer(server, thread, f"http://127.0.0.1:{port}")


@dataclass
class WebWorld:
    """Everything a page test needs: the API (for checks), the footage, the live server."""

    api: CaseApi
    tmp: Path
    clients: dict[str, TestClient]
    usernames: dict[str, str]
    segments: list[dict[str, Any]]
    recording: str
    subject_id: int
    case_id: int
    live: LiveServer | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def build_world(tmp: Path, database_url: str, fleet: Fleet) -> WebWorld:
    """Users, officers, a subject, case A with a text record, and REC-0001's recording: two segments of
    case A and a third of no case (to be linked from the player)."""
    api = make_api(tmp, database_url, fleet)
    clients: dict[str, TestClient] = {}
    clients["admin"] = api.user("admin1", Role.IT_ADMIN)
    officers = {}
    for cert, name, dept in ((OFFICER_1, "李明", "监察一支队"), (OFFICER_2, "王芳", "监察二支队")):
        got = clients["admin"].post(
            "/api/v1/officers", json={"certificate_no": cert, "name": name, "department": dept}
        )
        assert got.status_code == 201, got.text
        officers[cert] = got.json()["id"]
    for role, (username, roles) in USERS.items():
        if role == "admin":
            continue
        officer_id = officers[OFFICER_1] if role == "inspector" else None
        clients[role] = api.user(username, *roles, officer_id=officer_id)
    got = clients["handler"].post(
        "/api/v1/subjects",
        json={"uscc": USCC_A, "name": "天津市某建筑劳务有限公司", "address": "天津市河西区"},
    )
    assert got.status_code == 201, got.text
    subject_id = got.json()["id"]
    got = clients["handler"].post(
        "/api/v1/cases",
        json={
            "number": CASE_A,
            "subject_id": subject_id,
            "matter_code": "CF-02",
            "title": "未依法签订劳动合同",
            "opened_on": (datetime.now(UTC) - timedelta(days=1)).date().isoformat(),
        },
    )
    assert got.status_code == 201, got.text
    case_id = got.json()["id"]
    got = clients["handler"].post(
        f"/api/v1/cases/{case_id}/assignments", json={"user_id": api.users["legal1"], "role": "reviewer"}
    )
    assert got.status_code == 201, got.text
    got = clients["handler"].post(
        f"/api/v1/cases/{case_id}/text-records",
        files={"file": ("检查笔录.pdf", PDF, "application/pdf")},
        data={"kind": "inspection-note", "title": "现场检查笔录"},
    )
    assert got.status_code == 201, got.text
    # An inquiry was held too (its transcript is filed) but not recorded: the policy warns of it.
    got = clients["handler"].post(
        f"/api/v1/cases/{case_id}/text-records",
        files={"file": ("询问笔录.pdf", PDF, "application/pdf")},
        data={"kind": "inquiry-transcript", "title": "询问笔录（法定代表人）"},
    )
    assert got.status_code == 201, got.text
    # Case B: opened, nothing recorded yet.
    got = clients["handler"].post(
        "/api/v1/cases",
        json={
            "number": CASE_B,
            "subject_id": subject_id,
            "matter_code": "CF-02",
            "title": "未按时足额支付劳动报酬",
            "opened_on": datetime.now(UTC).date().isoformat(),
        },
    )
    assert got.status_code == 201, got.text
    spool = tmp / "spool1"
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    segments = write_media_spool(spool, fleet, "REC-0001", [CASE_A, CASE_A, ""], start=start)
    ingest(api, spool, "REC-0001")
    return WebWorld(
        api=api,
        tmp=tmp,
        clients=clients,
        usernames={role: name for role, (name, _r) in USERS.items()},
        segments=segments,
        recording=segments[0]["body"]["recording"],
        subject_id=subject_id,
        case_id=case_id,
    )
