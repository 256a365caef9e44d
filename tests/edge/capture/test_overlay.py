"""The burned-in stamp: its text, and its pixels in the footage as ffmpeg decodes it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from edge.capture.api import Stamp
from edge.capture.overlay import CLOCK_WARNING, Overlay, stamp_lines
from tests.edge.capture.helpers import T0, TIANJIN, decoded_gray

W, H, FPS = 640, 360, 15
LOST = Stamp(device="REC-00001", officer="12010019001", lat_e7=None, lon_e7=None, clock_trusted=False)


def test_stamp_text_has_utc_time_device_officer_and_position() -> None:
    when = T0 + timedelta(seconds=5, microseconds=999_999)
    assert stamp_lines(TIANJIN, when) == [
        "2026-11-26T08:00:05Z  REC-00001",
        "OFFICER 12010019001",
        "39.124400 117.190700",
    ]
    south_west = Stamp("REC-00002", "", -338_688_123, -1_512_093_456, True)
    assert stamp_lines(south_west, T0) == ["2026-11-26T08:00:00Z  REC-00002", "-33.868812 -151.209346"]


def test_stamp_text_says_no_fix_and_warns_about_the_clock() -> None:
    assert stamp_lines(LOST, T0)[2:] == ["NO FIX", CLOCK_WARNING]
    assert stamp_lines(LOST, T0, show_officer=False, show_location=False) == [
        "2026-11-26T08:00:00Z  REC-00001",
        CLOCK_WARNING,
    ]


def _expected(lines: list[str]) -> tuple[Any, tuple[int, int], tuple[int, int]]:
    """The stamp drawn onto a black picture: (luma, box origin, box size)."""
    import numpy as np

    overlay = Overlay(width=W, height=H, font_scale=0.6, thickness=1, position="bottom-left")
    plane = np.zeros((H, W), np.uint8)
    overlay.apply(plane, lines)
    return plane, overlay.origin, overlay.size


def _corr(a: Any, b: Any) -> float:
    import numpy as np

    return float(np.corrcoef(a.astype(np.float64).ravel(), b.astype(np.float64).ravel())[0, 1])


def _record(pipeline: Any, stamp: Stamp, enabled: bool) -> tuple[Any, int]:
    """Two seconds of footage: decoded luma, and the slot of its first frame."""
    pipe, _ = pipeline(
        width=W, height=H, fps=FPS, stamp=lambda: stamp, overlay={"enabled": enabled}, bitrate_kbps=4000
    )
    pipe.start()
    pipe.start_recording(f"stamp-{enabled}")
    (seg,) = pipe.stop_recording(after=2)
    first_slot = round((seg.start - T0).total_seconds() * FPS)
    return decoded_gray(seg.path, W, H), first_slot


def test_the_stamp_is_in_the_pixels_with_no_fix_and_the_clock_warning(pipeline: Any) -> None:
    import numpy as np

    stamped, first = _record(pipeline, LOST, enabled=True)
    plain, plain_first = _record(pipeline, LOST, enabled=False)
    # The same slot of the (deterministic) test pattern, with and without the stamp.
    slot = max(first, plain_first) + 3
    a, b = stamped[slot - first], plain[slot - plain_first]
    when = T0 + timedelta(seconds=slot / FPS)
    mask, (top, left), (h, w) = _expected(stamp_lines(LOST, when.replace(microsecond=0)))
    box = (slice(top, top + h), slice(left, left + w))
    # Outside the box the picture is untouched (up to compression); inside, it is the stamp.
    outside = np.ones((H, W), bool)
    outside[box] = False
    assert np.abs(a[outside].astype(int) - b[outside]).mean() < 3
    assert np.abs(a[box].astype(int) - b[box]).mean() > 30
    assert _corr(a[box], mask[box]) > 0.8
    # It says NO FIX and warns about the clock: the drawn text fits those lines, not the others.
    trusted = stamp_lines(TIANJIN, when.replace(microsecond=0))
    other, _, (oh, ow) = _expected(trusted)
    hh, ww = max(h, oh), max(w, ow)
    region = (slice(H - hh, H), slice(0, ww))
    assert _corr(a[region], mask[region]) > _corr(a[region], other[region]) + 0.2


@pytest.mark.parametrize("second", [0, 1])
def test_the_stamp_shows_each_frames_own_second(pipeline: Any, second: int) -> None:
    stamped, first = _record(pipeline, TIANJIN, enabled=True)
    frame = stamped[(second + 1) * FPS - first - 1]  # the last frame of that second
    import numpy as np

    right, _, _ = _expected(stamp_lines(TIANJIN, T0 + timedelta(seconds=second)))
    wrong, _, _ = _expected(stamp_lines(TIANJIN, T0 + timedelta(seconds=second + 1)))

    # Where the two texts differ (the seconds digit): the picture shows the right one.
    cols = np.flatnonzero((right != wrong).any(axis=0))
    rows = np.flatnonzero((right != wrong).any(axis=1))
    digit = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    assert _corr(frame[digit], right[digit]) > 0.8
    assert _corr(frame[digit], right[digit]) > _corr(frame[digit], wrong[digit]) + 0.3
