"""The pages in Debian's Chromium, driven by Playwright (issue 6, "Must show"): each role sees only its
pages; a case opened by number; the player plays a recording's segments in order, time advances and a
seek lands where asked; footage linked from the player; the GPS track with its scale; the custody log
with verified proofs; an export downloaded and verified by ``fieldproof verify``."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, expect

from tests.server.case_helpers import CASE_A, CASE_B
from tests.web.conftest import sign_in
from tests.web.world import SEGMENT_S, WebWorld

VENV_BIN = Path(sys.executable).parent
CASE_URL = f"/case?number={quote(CASE_A, safe='')}"

#: What each role finds in the navigation, exactly.
NAV = {
    "inspector": ["/footage", "/access-requests"],
    "handler": ["/cases", "/footage", "/access-requests"],
    "other_handler": ["/cases", "/footage", "/access-requests"],
    "custodian": ["/cases", "/footage", "/custody", "/custody-log", "/oversight", "/access-requests"],
    "legal": ["/cases", "/footage", "/oversight", "/access-requests"],
    "admin": ["/fleet", "/access-requests"],
    "auditor": ["/custody", "/custody-log", "/oversight", "/access-requests"],
}
#: The case page of case A and the custody log, per role: the API's statuses (docs/access.md).
CASE_PAGE = {
    "inspector": 404,
    "handler": 200,
    "other_handler": 404,
    "custodian": 200,
    "legal": 200,
    "admin": 403,
    "auditor": 403,
}
LOG_PAGE = {r: 200 if r in ("custodian", "auditor") else 403 for r in NAV}
FLEET_PAGE = {r: 200 if r == "admin" else 403 for r in NAV}


@pytest.mark.parametrize("role", list(NAV))
def test_each_role_sees_only_its_pages(browser: Browser, world: WebWorld, role: str) -> None:
    page = sign_in(browser, world, role)
    expect(page.locator("#whoami")).to_have_text(world.usernames[role])
    links = page.locator("header nav a").evaluate_all("els => els.map(e => e.getAttribute('href'))")
    assert links == NAV[role]
    for url, expected in ((CASE_URL, CASE_PAGE), ("/custody-log", LOG_PAGE), ("/fleet", FLEET_PAGE)):
        answer = page.goto(url)
        assert answer is not None
        assert answer.status == expected[role], (url, role)
        if expected[role] == 200:
            expect(page.locator("h1").first).to_be_visible()
        else:
            expect(page.locator(".error-page")).to_have_attribute("data-status", str(expected[role]))
    page.click("#logout")
    page.wait_for_url("**/login")
    answer = page.goto(CASE_URL)
    assert answer is not None
    assert "/login?next=" in page.url
    page.context.close()


def test_wrong_password_is_refused(browser: Browser, world: WebWorld) -> None:
    assert world.live is not None
    page = browser.new_page(base_url=world.live.url)
    page.goto("/login")
    page.fill("#username", "handler1")
    page.fill("#password", "not the password at all")
    page.click("#sign-in")
    expect(page.locator("#login-failed")).to_be_visible()
    assert page.goto("/cases") is not None
    assert "/login" in page.url
    page.close()


def test_open_a_case_by_its_number(browser: Browser, world: WebWorld) -> None:
    page = sign_in(browser, world, "handler")
    before = len(world.api.events("viewed"))
    page.click("a[data-nav='/cases']")
    page.fill("#case-number", CASE_A)
    page.click("#find-case")
    expect(page.locator("#case-title")).to_have_text(CASE_A)
    expect(page.locator("#subject-link")).to_have_text("天津市某建筑劳务有限公司")
    expect(page.locator("#text-records")).to_contain_text("现场检查笔录")
    expect(page.locator("#recordings tbody tr")).to_have_count(1)
    expect(page.locator("#case-timeline rect.recording")).to_have_count(1)
    viewed = world.api.events("viewed")[before:]
    assert any(e["target_id"] == CASE_A and e["actor"] == "user:handler1" for e in viewed)
    # The subject's dossier, one click away.
    page.click("#subject-link")
    expect(page.locator("#dossier-title")).to_contain_text("天津市某建筑劳务有限公司")
    expect(page.locator("#dossier-timeline")).to_contain_text(CASE_A)
    page.context.close()


def test_the_player_plays_in_order_and_seeks(browser: Browser, world: WebWorld) -> None:
    page = sign_in(browser, world, "handler")
    streamed_before = len(world.api.events("streamed"))
    page.goto(CASE_URL)
    page.click("#recordings a.play")
    video = page.locator("#player")
    page.wait_for_function("document.getElementById('player').readyState === 4", timeout=15_000)
    video.evaluate("v => { v.muted = true; return v.play(); }")
    page.wait_for_function("document.getElementById('player').currentTime > 0.5", timeout=15_000)
    t1 = video.evaluate("v => v.currentTime")
    page.wait_for_timeout(600)
    assert video.evaluate("v => v.currentTime") > t1  # time advances
    # A seek into the second segment loads it and lands where asked.
    target = SEGMENT_S + 1.5
    page.evaluate(f"window.fieldproofPlayer.seek({target})")
    page.wait_for_function(
        f"Math.abs(window.fieldproofPlayer.time() - {target}) < 0.6 && window.fieldproofPlayer.segment() === 1",
        timeout=15_000,
    )
    expect(page.locator("#current-segment")).to_have_text("2")
    page.wait_for_function("document.getElementById('player').readyState >= 3", timeout=15_000)
    # A seek within the segment.
    page.evaluate(f"window.fieldproofPlayer.seek({SEGMENT_S + 0.5})")
    page.wait_for_function(
        f"Math.abs(window.fieldproofPlayer.time() - {SEGMENT_S + 0.5}) < 0.6", timeout=15_000
    )
    # Played to the end of the second segment, the third one follows.
    page.evaluate(f"window.fieldproofPlayer.seek({2 * SEGMENT_S - 0.3})")
    page.wait_for_function(
        "window.fieldproofPlayer.segment() === 2 && document.getElementById('player').readyState >= 2",
        timeout=15_000,
    )
    streamed = world.api.events("streamed")[streamed_before:]
    assert {e["seq"] for e in streamed} >= {s["seq"] for s in world.segments}
    assert all(e["actor"] == "user:handler1" for e in streamed)
    # Markers and the GPS track drawn from the fixes, with its scale bar.
    expect(page.locator("#markers")).to_contain_text("出示执法证件")
    points = page.locator("#gps-track polyline").get_attribute("points")
    assert points is not None
    assert len(points.split()) == 2 * len(world.segments)
    metres = int(page.locator("#scale-bar").get_attribute("data-metres") or 0)
    assert metres in (10, 20, 50)  # the walk spans ~60 m north: a quarter of it, rounded down
    expect(page.locator("#scale-bar text")).to_have_text(f"{metres} m")
    page.context.close()


def test_link_unfiled_footage_with_a_proof_statement(browser: Browser, world: WebWorld) -> None:
    page = sign_in(browser, world, "handler")
    page.goto(f"/play/REC-0001/{world.recording}")
    unfiled = world.segments[2]["seq"]
    row = page.locator(f"#segments tr[data-seq='{unfiled}']")
    expect(row).to_have_class("unfiled")
    page.fill("#link-case", CASE_A)
    page.fill("#link-proof", "现场未见劳动合同")
    page.fill("#link-reason", "开机时尚未输入案件编号")
    page.click("#link-submit")
    page.wait_for_url("**linked=1")
    expect(row).to_contain_text(CASE_A)
    expect(row).to_contain_text("现场未见劳动合同")
    linked = [e for e in world.api.events("linked") if e["seq"] == unfiled]
    assert linked
    assert linked[-1]["actor"] == "user:handler1"
    page.context.close()


def test_custody_log_shows_verified_proofs(browser: Browser, world: WebWorld) -> None:
    page = sign_in(browser, world, "auditor")
    page.click("a[data-nav='/custody-log']")
    expect(page.locator("#checkpoint")).to_be_visible()
    expect(page.locator("#log-events tbody tr").first).to_be_visible()
    expect(page.locator("#log-events summary.green").first).to_be_visible()
    assert page.locator("#log-events summary.red").count() == 0
    page.context.close()


def test_export_downloads_a_bag_that_verifies(browser: Browser, world: WebWorld, tmp_path: Path) -> None:
    page = sign_in(browser, world, "custodian", downloads=True)
    page.goto(CASE_URL)
    page.click("#export-start")
    expect(page.locator("#export-progress")).to_be_visible()
    expect(page.locator("#export")).to_have_attribute("data-state", "done", timeout=60_000)
    with page.expect_download() as info:
        page.click("#export-download")
    archive = tmp_path / "bag.zip"
    info.value.save_as(archive)
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp_path / "out")
    (bag,) = list((tmp_path / "out").iterdir())
    assert world.api.fleet is not None
    judged = subprocess.run(
        [str(VENV_BIN / "fieldproof"), "verify", str(bag), "--ca", str(world.api.fleet.ca / "root-ca.pem")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert judged.returncode == 0, judged.stdout + judged.stderr
    assert [e["target_id"] for e in world.api.events("exported")][-1] == CASE_A
    assert any(e["target_kind"] == "export" for e in world.api.events("downloaded"))
    page.context.close()


def test_oversight_charts_render(browser: Browser, world: WebWorld) -> None:
    page = sign_in(browser, world, "legal")
    page.click("a[data-nav='/oversight']")
    for chart in (
        "chart-use",
        "chart-dept-link",
        "chart-dept-timely",
        "chart-officer-link",
        "chart-officer-timely",
    ):
        svg = page.locator(f"#{chart}")
        expect(svg).to_be_visible()
        box = svg.bounding_box()
        assert box is not None
        assert box["width"] > 100
    dept = page.locator("#chart-dept-link g.row[data-label='监察一支队']")
    value = float(dept.get_attribute("data-value") or "nan")
    linked = sum(1 for s in world.segments if s["body"]["case"])
    # Two of three captured with the case (a third maybe linked by another test since): ≥ 2/3.
    assert value >= linked / len(world.segments) - 0.001
    width = float(dept.locator("rect.bar").get_attribute("width") or 0)
    assert abs(width - 360 * value) < 1  # the bar is as long as the share
    expect(page.locator("#chart-use g.row")).to_have_count(1)
    page.context.close()


def test_fleet_enrol_download_and_revoke(browser: Browser, world: WebWorld, tmp_path: Path) -> None:
    page = sign_in(browser, world, "admin", downloads=True)
    page.click("a[data-nav='/fleet']")
    expect(page.locator("#fleet tr[data-device='REC-0001']")).to_contain_text("fieldproof-0.1.0")
    expect(page.locator("#fleet tr[data-device='REC-0001']")).to_contain_text("+12 ms")
    device = f"REC-W{os.getpid() % 10000:04d}"
    page.fill("#enrol-device", device)
    page.click("#enrol-submit")
    expect(page.locator("#enrolled")).to_contain_text(device)
    with page.expect_download() as info:
        page.click("#bundle-download")
    archive = tmp_path / "bundle.zip"
    info.value.save_as(archive)
    with zipfile.ZipFile(archive) as z:
        names = {Path(n).name for n in z.namelist()}
    assert {"signing.pem", "tls.pem"} <= names
    row = page.locator(f"#fleet tr[data-device='{device}']")
    expect(row).to_have_attribute("data-status", "active")
    row.locator("button.revoke").click()
    expect(page.locator(f"#fleet tr[data-device='{device}']")).to_have_attribute("data-status", "revoked")
    page.context.close()


def test_oversight_warns_against_the_recording_policy(browser: Browser, world: WebWorld) -> None:
    page = sign_in(browser, world, "auditor")
    page.goto("/oversight")
    warnings = page.locator("#warnings li.warning")
    expect(warnings.and_(page.locator(f"[data-case='{CASE_B}']"))).to_have_attribute(
        "data-kind", "no-footage"
    )
    inquiry = page.locator(f"#warnings li[data-case='{CASE_A}'][data-kind='scene-not-recorded']")
    expect(inquiry).to_contain_text("调查询问")
    marker = page.locator(f"#warnings li[data-case='{CASE_A}'][data-kind='marker-missing']")
    expect(marker).to_contain_text("告知执法事由和依据")  # onsite-inspection requires state-purpose
    page.context.close()


def test_access_request_opens_a_restricted_case(browser: Browser, world: WebWorld) -> None:
    number = "津人社监察〔2026〕77号"
    got = world.clients["handler"].post(
        "/api/v1/cases",
        json={
            "number": number,
            "subject_id": world.subject_id,
            "matter_code": "CF-02",
            "title": "涉及个人隐私",
            "opened_on": "2026-11-20",
            "restriction": "personal-privacy",
        },
    )
    assert got.status_code == 201, got.text
    url = f"/case?number={quote(number, safe='')}"
    handler = sign_in(browser, world, "handler")
    answer = handler.goto(url)
    assert answer is not None
    assert answer.status == 403
    expect(handler.locator(".error-page .message")).to_contain_text("个人隐私")
    handler.goto("/access-requests")
    handler.select_option("#ask-kind", "case")
    handler.fill("#ask-target", number)
    handler.select_option("#ask-restriction", "personal-privacy")
    handler.fill("#ask-purpose", "复核案卷，准备听证")
    handler.click("#ask-submit")
    mine = handler.locator("#mine tbody tr").first
    expect(mine.locator(".status")).to_have_attribute("data-status", "pending")
    request_id = mine.get_attribute("data-id")

    custodian = sign_in(browser, world, "custodian")
    custodian.goto("/access-requests")
    custodian.locator(f"#to-decide tr[data-id='{request_id}'] button.approve").click()
    expect(custodian.locator(f"#to-decide tr[data-id='{request_id}']")).to_have_count(0)

    answer = handler.goto(url)
    assert answer is not None
    assert answer.status == 200
    expect(handler.locator("#case-title")).to_have_text(number)
    # What was opened under the grant, as the custodian sees it.
    custodian.goto(f"/access-requests/{request_id}")
    expect(custodian.locator("#request-status")).to_have_attribute("data-status", "approved")
    expect(custodian.locator("#opened tbody")).to_contain_text(number)
    # Someone else's request is not the inspector's to see (404, as the API).
    inspector = sign_in(browser, world, "inspector")
    answer = inspector.goto(f"/access-requests/{request_id}")
    assert answer is not None
    assert answer.status == 404
    for page in (handler, custodian, inspector):
        page.context.close()


def test_a_case_one_may_not_see_is_not_found_by_its_number(browser: Browser, world: WebWorld) -> None:
    page = sign_in(browser, world, "other_handler")  # a case handler not assigned to case A
    page.click("a[data-nav='/cases']")
    page.fill("#case-number", CASE_A)
    page.click("#find-case")
    expect(page.locator("#case-list")).to_contain_text("没有符合条件的案件")
    assert "/cases?" in page.url  # no redirect: that would tell the case exists
    page.context.close()
