"""The burned-in stamp: UTC time, device, officer, position or NO FIX, and a clock warning.

Drawn straight onto the luma (Y) plane of the yuv420p frame the encoder takes: no BGR↔YUV conversion
per frame, which is what costs a pipeline its speed (FACTS; measured in docs/recorder-capture.md).
The text changes once a second, so it is rendered with OpenCV into a small mask only then; each frame
gets a blend of that mask into a darkened box (about 0.02 ms at 720p). The stamp is grey (luma only):
chroma is left as it is, which keeps the text legible and costs nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from edge.capture.api import Stamp

_TEXT_Y = 235  # luma of the text (video-range white)
_SHADE = 3  # the box behind the text is darkened to a third: readable on any background
CLOCK_WARNING = "! CLOCK NOT TRUSTED"


def stamp_lines(
    stamp: Stamp, when: datetime, *, show_officer: bool = True, show_location: bool = True
) -> list[str]:
    """The stamp's text for a frame captured at ``when`` (UTC, ISO 8601 to the second, with Z)."""
    lines = [f"{when:%Y-%m-%dT%H:%M:%S}Z  {stamp.device}"]
    if show_officer and stamp.officer:
        lines.append(f"OFFICER {stamp.officer}")
    if show_location:
        if stamp.lat_e7 is None or stamp.lon_e7 is None:
            lines.append("NO FIX")
        else:
            lines.append(f"{stamp.lat_e7 / 1e7:.6f} {stamp.lon_e7 / 1e7:.6f}")
    if not stamp.clock_trusted:
        lines.append(CLOCK_WARNING)
    return lines


def luma_plane(frame: Any, width: int, height: int) -> Any:
    """A writable numpy view of a yuv420p frame's Y plane (no copy)."""
    import numpy as np

    plane = frame.planes[0]
    return np.frombuffer(plane, np.uint8).reshape(height, plane.line_size)[:, :width]


class Overlay:
    """Renders the stamp text into a mask when it changes and blends it into frames."""

    def __init__(self, *, width: int, height: int, font_scale: float, thickness: int, position: str) -> None:
        import cv2

        self._cv2 = cv2
        self.width, self.height = width, height
        # font_scale is for 720p; the text keeps its share of the picture at other sizes.
        self.scale = font_scale * 1.6 * height / 720
        self.thickness, self.position = thickness, position
        self._key: tuple[str, ...] = ()
        self._keep: Any = None  # per pixel: how much of the shaded background stays (0..255)
        self._text: Any = None  # per pixel: the text's contribution, pre-multiplied by 255
        self.origin = (0, 0)  # top, left of the box
        self.size = (0, 0)  # height, width of the box

    def _render(self, lines: list[str]) -> None:
        import numpy as np

        cv2 = self._cv2
        font = cv2.FONT_HERSHEY_SIMPLEX
        sizes = [cv2.getTextSize(t, font, self.scale, self.thickness) for t in lines]
        line_h = max(h + b for (_, h), b in sizes) + 4
        w = min(self.width, max(tw for (tw, _), _ in sizes) + 8)
        h = min(self.height, line_h * len(lines) + 4)
        mask = np.zeros((h, w), np.uint8)
        for i, text in enumerate(lines):
            cv2.putText(
                mask, text, (4, line_h * (i + 1) - 2), font, self.scale, 255, self.thickness, cv2.LINE_AA
            )
        alpha = mask.astype(np.uint16)
        self._keep = 255 - alpha
        self._text = _TEXT_Y * alpha
        top = 0 if self.position.startswith("top") else self.height - h
        left = 0 if self.position.endswith("left") else self.width - w
        # Even offsets: the box lines up with the 2×2 chroma blocks.
        self.origin, self.size = (top & ~1, left & ~1), (h, w)

    def apply(self, y_plane: Any, lines: list[str]) -> None:
        """Draw ``lines`` onto a writable luma plane (height × width)."""
        key = tuple(lines)
        if key != self._key:
            self._render(lines)
            self._key = key
        (top, left), (h, w) = self.origin, self.size
        region = y_plane[top : top + h, left : left + w]
        # Anti-aliased text over a darkened box: shaded × (1 − α) + white × α, in integers.
        region[:] = ((region // _SHADE) * self._keep + self._text) // 255
