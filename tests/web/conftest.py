"""Page tests: the world of tests/web/world.py served by uvicorn, and Debian's Chromium driven by
Playwright from PyPI (``executable_path``: no browser download)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.server.conftest import Fleet, fleet, sqlite_template  # noqa: F401 - fixtures used here
from tests.web.world import PASSWORD, WebWorld, build_world, serve

CHROMIUM = "/usr/bin/chromium"
#: Quiet on a closed network (FACTS.md), and let the player start without a click.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


def new_world(tmp: Path, template: Path, ca: Fleet) -> WebWorld:
    """A world on a fresh copy of the migrated SQLite database, served on a free port."""
    db = tmp / "fieldproof.db"
    shutil.copyfile(template, db)
    world = build_world(tmp, f"sqlite:///{db}", ca)
    world.live = serve(world.api.app)
    return world


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
    sqlite_template: Path,  # noqa: F811
    fleet: Fleet,  # noqa: F811
) -> Iterator[WebWorld]:
    w = new_world(tmp_path_factory.mktemp("web"), sqlite_template, fleet)
    yield w
    assert w.live is not None
    w.live.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def sign_in(browser: Browser, world: WebWorld, role: str, *, downloads: bool = False) -> Page:
    """A fresh browser context signed in as the world's user of ``role`` through the sign-in form."""
    assert world.live is not None
    # bypass_csp: the pages forbid eval; Playwright's wait_for_function evaluates its predicate text.
    context = browser.new_context(
        base_url=world.live.url, accept_downloads=downloads, locale="zh-CN", bypass_csp=True
    )
    page = context.new_page()
    page.goto("/login")
    page.fill("#username", world.usernames[role])
    page.fill("#password", PASSWORD)
    page.click("#sign-in")
    page.wait_for_url(world.live.url + "/")
    return page
