"""The figures' arithmetic (no browser), and every text the pages name is in the messages file."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from server.cases.footage import M_PER_DEGREE
from server.web import drawing
from server.web.i18n import messages, translate

WEB = Path(__file__).resolve().parents[2] / "server" / "web"


@pytest.mark.parametrize(
    ("metres", "nice"), [(0.4, 1), (1, 1), (3, 2), (7.9, 5), (10, 10), (24, 20), (499, 200), (5_100, 5_000)]
)
def test_scale_bar_lengths_are_1_2_5(metres: float, nice: int) -> None:
    assert drawing.nice_length(metres) == nice


def test_track_keeps_distances_and_directions() -> None:
    # 100 m due north, then 100 m due east, at Tianjin's latitude.
    lat0, lon0 = 391_244_000, 1_171_907_000
    d_lat = round(100 / M_PER_DEGREE * 1e7)
    d_lon = round(100 / (M_PER_DEGREE * math.cos(math.radians(lat0 / 1e7))) * 1e7)
    t = drawing.track([(lat0, lon0), (lat0 + d_lat, lon0), (lat0 + d_lat, lon0 + d_lon)])
    assert t is not None
    (x0, y0), (x1, y1), (x2, y2) = t.points
    px_per_m = t.scale_px / t.scale_m
    assert x1 == pytest.approx(x0, abs=0.5)
    assert y0 - y1 == pytest.approx(100 * px_per_m, rel=0.01)  # north is up
    assert x2 - x1 == pytest.approx(100 * px_per_m, rel=0.01)  # east is right, same scale
    assert y2 == pytest.approx(y1, abs=0.5)
    assert t.scale_m == 20  # a quarter of the 100 m extent, rounded down to 1-2-5
    assert drawing.track([]) is None
    one = drawing.track([(lat0, lon0)])
    assert one is not None
    assert one.extent_m == 20  # a single fix is a dot in a 20 m box, not a division by zero


def test_time_axis_and_bars() -> None:
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2026, 11, 27, tzinfo=UTC)
    spans, first, last = drawing.time_axis(
        [
            (t0, t0 + timedelta(minutes=10), "a", "#a", "recording"),
            (t0 + timedelta(minutes=20), t0 + timedelta(minutes=20), "b", "#b", "text-record"),
        ],
        width=220,
        left=10,
        right=10,
    )
    assert (first, last) == (t0, t0 + timedelta(minutes=20))
    assert spans[0].x == 10
    assert spans[0].w == pytest.approx(100)
    assert spans[1].x == pytest.approx(210)
    assert spans[1].w == 3.0  # an instant stays visible
    bars = drawing.bars([("x", 0.5), ("y", None)], width=360)
    assert [b.w for b in bars] == [180, 0]


def test_every_text_the_pages_name_exists() -> None:
    keys = messages()
    named = set()
    for path in [*WEB.glob("templates/*.html"), *WEB.glob("*.py")]:
        text = path.read_text("utf-8")
        named |= set(re.findall(r"""\bt\(\s*'([a-z_.-]+)'""", text))
        named |= set(re.findall(r"""translate\(\s*"([a-z_.-]+)\"""", text))
    assert named, "the pattern found no texts at all"
    # ``t('status.' ~ case.status)``: a prefix, whose section must exist.
    prefixes = {k for k in named if k.endswith(".")}
    assert sorted(k for k in named - prefixes if k not in keys) == []
    assert sorted(p for p in prefixes if not any(k.startswith(p) for k in keys)) == []
    assert translate("oversight.use_detail", used=1, total=2) == "2 台在用执法记录仪中，1 台有录像"


def test_every_code_a_page_shows_has_its_text() -> None:
    from server.auth.models import RESTRICTIONS
    from server.auth.principal import Role
    from server.cases.models import ASSIGNMENT_ROLES, CASE_STATUSES, TEXT_KINDS
    from server.custody_log.models import EVENT_KINDS
    from server.verification.service import REASONS

    keys = messages()
    wanted = (
        [f"status.{s}" for s in CASE_STATUSES]
        + [f"kind.{k}" for k in TEXT_KINDS]
        + [f"assignment.{r}" for r in ASSIGNMENT_ROLES]
        + [f"role.{r.value}" for r in Role]
        + [f"restriction.{r}" for r in RESTRICTIONS]
        + [f"event.{k}" for k in EVENT_KINDS]
        + [f"reason.{r}" for r in {*REASONS.values(), "gap", "missing-record"}]
        + [f"verdict.{v}" for v in ("green", "amber", "red")]
    )
    assert [k for k in wanted if k not in keys] == []
