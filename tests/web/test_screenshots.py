"""Screenshots of the main pages, taken in Chromium from a world like the other page tests'.

Always taken (into the test's temporary folder: a page that fails to render fails here); with
``FIELDPROOF_SCREENSHOTS=docs/screenshots`` they are written where the README shows them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser

from tests.server.case_helpers import CASE_A
from tests.server.conftest import Fleet
from tests.web.conftest import new_world, sign_in
from tests.web.test_tampering import alter_one_bit
from tests.web.world import WebWorld

PAGES = [
    ("custodian", "home", "/"),
    ("handler", "cases", "/cases"),
    ("handler", "case", f"/case?number={quote(CASE_A, safe='')}"),
    ("handler", "player", "/play/REC-0001/{recording}"),
    ("handler", "dossier", "/subjects/{subject}"),
    ("auditor", "custody-log", "/custody-log"),
    ("admin", "fleet", "/fleet"),
    ("legal", "oversight", "/oversight"),
    ("inspector", "forbidden", "/custody-log"),
    # Last: one segment altered on disk first, so that the page shows a red one with its reason.
    ("custodian", "custody-case", f"/custody/case?number={quote(CASE_A, safe='')}"),
]


@pytest.fixture(scope="module")
def shots_world(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path, fleet: Fleet
) -> Iterator[WebWorld]:
    w = new_world(tmp_path_factory.mktemp("shots"), sqlite_template, fleet)
    yield w
    assert w.live is not None
    w.live.stop()


def test_screenshots_of_the_main_pages(browser: Browser, shots_world: WebWorld, tmp_path: Path) -> None:
    out = Path(os.environ.get("FIELDPROOF_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    for role, name, url in PAGES:
        if name == "custody-case":
            alter_one_bit(shots_world, shots_world.segments[1])
        page = sign_in(browser, shots_world, role)
        page.set_viewport_size({"width": 1280, "height": 900})
        page.goto(url.format(recording=shots_world.recording, subject=shots_world.subject_id))
        if name == "player":
            page.wait_for_function("document.getElementById('player').readyState >= 2", timeout=15_000)
            page.evaluate("window.fieldproofPlayer.seek(5.5)")
            page.wait_for_timeout(500)
        path = out / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000
        page.context.close()
