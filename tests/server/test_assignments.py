"""配发 (recorders issued to officers) and 使用率 per department and officer: the JSON API (IT admins),
the fleet page's form, and the oversight figures and charts over real ingested footage. Both databases."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.auth.principal import Role
from server.web.oversight import oversight
from tests.server.case_helpers import CaseApi, Seg, ingest, make_api, write_spool
from tests.server.conftest import SAMPLE_START, Fleet

TODAY = date.today()


def _day(days: int) -> str:
    return (TODAY + timedelta(days=days)).isoformat()


@pytest.fixture
def api(tmp_path: Path, database_url: str, fleet: Fleet) -> CaseApi:
    return make_api(tmp_path, database_url, fleet)


def _officer(admin: TestClient, cert: str, name: str, dept: str) -> int:
    got = admin.post("/api/v1/officers", json={"certificate_no": cert, "name": name, "department": dept})
    assert got.status_code == 201, got.text
    return int(got.json()["id"])


def _issue(admin: TestClient, **body: Any) -> Any:
    return admin.post("/api/v1/recorder-assignments", json=body)


def test_issuing_recorders_and_use_rate_per_department_and_officer(api: CaseApi, tmp_path: Path) -> None:
    admin = api.user("admin1", Role.IT_ADMIN)
    o1 = _officer(admin, "12010029001", "李明", "一支队")
    o2 = _officer(admin, "12010029002", "王芳", "二支队")
    o3 = _officer(admin, "12010029003", "张伟", "二支队")
    o4 = _officer(admin, "12010029004", "赵丽", "一支队")
    got = _issue(admin, recorder="REC-0001", officer_id=o1, valid_from=_day(-10))
    assert got.status_code == 201, got.text
    assert got.json()["created_by"] == "user:admin1"
    # REC-0002: officer 4 until twelve days ago, then officer 2.
    ended = _issue(admin, recorder="REC-0002", officer_id=o4, valid_from=_day(-20))
    assert ended.status_code == 201
    # Overlapping: refused; its end set, the next one fits.
    assert _issue(admin, recorder="REC-0002", officer_id=o2, valid_from=_day(-10)).status_code == 409
    got = admin.post(
        f"/api/v1/recorder-assignments/{ended.json()['id']}/end", json={"valid_until": _day(-12)}
    )
    assert got.status_code == 200, got.text
    assert _issue(admin, recorder="REC-0002", officer_id=o2, valid_from=_day(-10)).status_code == 201
    # Moving the end over the next assignment is refused too.
    got = admin.post(f"/api/v1/recorder-assignments/{ended.json()['id']}/end", json={"valid_until": _day(-5)})
    assert got.status_code == 409
    # Before the period (30 days): not counted.
    got = _issue(admin, recorder="REC-0003", officer_id=o3, valid_from=_day(-60), valid_until=_day(-40))
    assert got.status_code == 201
    # Bad input changes nothing.
    assert _issue(admin, recorder="REC-0009", officer_id=999999, valid_from=_day(0)).status_code == 404
    bad = _issue(admin, recorder="REC-0009", officer_id=o1, valid_from=_day(0), valid_until=_day(-1))
    assert bad.status_code == 422
    assert _issue(admin, recorder="rec 9", officer_id=o1, valid_from=_day(0)).status_code == 422
    assert _issue(admin, recorder="REC-0009", officer_id=o1, valid_from="1900-01-01").status_code == 422
    listed = admin.get("/api/v1/recorder-assignments", params={"recorder": "REC-0002"})
    assert [a["officer_id"] for a in listed.json()] == [o2, o4]
    assert len(admin.get("/api/v1/recorder-assignments").json()) == 4
    # Only IT admins.
    custodian = api.user("custodian1", Role.CUSTODIAN)
    assert _issue(custodian, recorder="REC-0009", officer_id=o1, valid_from=_day(0)).status_code == 403
    assert custodian.get("/api/v1/recorder-assignments").status_code == 403

    # Footage of REC-0001 and REC-0002, both now (within the period, after the twelve-days-ago end).
    write_spool(tmp_path / "s1", api.fleet, "REC-0001", [Seg()], start=SAMPLE_START)
    write_spool(tmp_path / "s2", api.fleet, "REC-0002", [Seg(officer="12010029002")], start=SAMPLE_START)
    ingest(api, tmp_path / "s1", "REC-0001")
    ingest(api, tmp_path / "s2", "REC-0002")
    with api.factory() as s:
        o = oversight(s, ca_dir=api.fleet.ca, days=30)
    dept = {k: (t.issued_used, t.issued) for k, t in o.by_department.items() if t.issued}
    assert dept == {"一支队": (1, 2), "二支队": (1, 1)}  # REC-0002 was officer 4's no longer
    officer = {k: t.use_rate for k, t in o.by_officer.items() if t.issued}
    assert officer == {"12010029001": 1.0, "12010029002": 1.0, "12010029004": 0.0}
    assert o.by_department["一支队"].use_rate == 0.5

    # The oversight page draws them with the SVG bar charts.
    page = custodian.get("/oversight")
    assert page.status_code == 200
    html = page.text
    dept_chart = html[html.index('id="chart-dept-use"') :]
    dept_chart = dept_chart[: dept_chart.index("</svg>")]
    assert "一支队" in dept_chart
    assert "50%" in dept_chart
    assert "二支队" in dept_chart
    officer_chart = html[html.index('id="chart-officer-use"') :]
    officer_chart = officer_chart[: officer_chart.index("</svg>")]
    assert "赵丽 12010029004" in officer_chart
    assert "张伟" not in officer_chart


def test_the_fleet_form_issues_a_recorder(api: CaseApi) -> None:
    admin = api.user("admin1", Role.IT_ADMIN)
    o1 = _officer(admin, "12010039001", "李明", "一支队")
    page = admin.get("/fleet")
    assert page.status_code == 200
    assert "<title>设备 · " in page.text
    assert page.text.index('id="assign-form"') > page.text.index('id="fleet"') > page.text.index("<main>")
    assert f'<option value="{o1}">' in page.text
    form = {"recorder": "REC-0001", "officer_id": str(o1), "valid_from": _day(-1)}
    headers = {"Origin": "http://testserver"}
    got = admin.post("/fleet/assign", data=form, headers=headers, follow_redirects=False)
    assert got.status_code == 303, got.text
    assert got.headers["location"] == "/fleet?assigned=REC-0001"
    again = admin.post("/fleet/assign", data=form, headers=headers, follow_redirects=False)
    assert again.status_code == 409  # overlaps: an error page, nothing stored
    html = admin.get("/fleet?assigned=REC-0001").text
    assert 'id="assigned"' in html
    row = html[html.index('data-device="REC-0001"') :]
    row = row[: row.index("</tr>")]
    assert "李明 12010039001" in row
    assert len(admin.get("/api/v1/recorder-assignments").json()) == 1
