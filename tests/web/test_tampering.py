"""A segment altered on disk shows red on the custodian's page, with its reason (its own world: the
evidence store of the other page tests stays sound)."""

from __future__ import annotations

import os
import stat
from typing import Any
from urllib.parse import quote

from playwright.sync_api import Browser, expect

from server.evidence.store import LocalBlobStore
from tests.server.case_helpers import CASE_A
from tests.web.conftest import sign_in
from tests.web.world import WebWorld


def alter_one_bit(world: WebWorld, segment: dict[str, Any]) -> None:
    """Flip one bit in the middle of a segment's file in the evidence store (as an intruder would)."""
    settings = world.api.settings
    store = LocalBlobStore(settings.store_root, settings.staging_dir)
    blob = store.root / store.key(segment["body"]["digest"])
    os.chmod(blob, stat.S_IRUSR | stat.S_IWUSR)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))


def test_a_segment_altered_on_disk_shows_red_with_its_reason(browser: Browser, world: WebWorld) -> None:
    altered = world.segments[1]
    alter_one_bit(world, altered)

    page = sign_in(browser, world, "custodian")
    page.goto(f"/custody/case?number={quote(CASE_A, safe='')}")
    expect(page.locator("#custody-summary")).to_have_class("summary red")
    bad = page.locator(f"#verdicts tr[data-seq='REC-0001:{altered['seq']}']")
    expect(bad).to_have_attribute("data-status", "red")
    expect(bad.locator(".reason")).to_have_attribute("data-reason", "altered")
    expect(bad.locator(".reason")).to_have_text("文件被篡改")
    good = page.locator(f"#verdicts tr[data-seq='REC-0001:{world.segments[0]['seq']}']")
    expect(good).to_have_attribute("data-status", "green")
    page.context.close()
