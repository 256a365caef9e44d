"""The burned-in stamp: UTC time, device, officer, position or NO FIX, and a clock warning.

Drawn straight onto the luma plane of the yuv420p frame the encoder takes: no BGR↔YUV conversion per
frame (that conversion, not the drawing, is what costs a pipeline its speed — FACTS). The text is
rendered with OpenCV into a small mask only when it changes (once a second), then blitted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from edge.capture.api import Stamp

_WHITE, _SHADE = 235, 3  # luma of the text; background darkened to a third


def stamp_lines(
    stamp: Stamp, when: datetime, *, show_officer: bool = True, show_location: bool = True
) -> list[str]:
    """The text lines of the stamp for one second of footage."""
    lines = [when.strftime("%Y-%m-%dT%H:%M:%SZ") + f"  {stamp.device}"]
    if show_officer and stamp.officer:
        lines.append(f"OFFICER {stamp.officer}")
    if show_location:
        if stamp.lat_e7 is None or stamp.lon_e7 is None:
            lines.append("NO FIX")
        else:
            lines.append(f"{stamp.lat_e7 / 1e7:.6f} {stamp.lon_e7 / 1e7:.6f}")
    if not stamp.clock_trusted:
        lines.append("! CLOCK NOT TRUSTED")
    return lines


class Overlay:
    """Renders stamp text into a mask and applies it to frames."""

    def __init__(self, *, width: int, height: int, font_scale: float, thickness: int, position: str) -> None:
        import cv2

        self._cv2 = cv2
        self.width, self.height = width, height
        self.scale, self.thickness, self.position = font_scale * height / 720 * 1.6, thickness, position
        self._key: tuple[str, ...] = ()
        self._mask: Any = None
        self._origin = (0, 0)

    def _render(self, lines: list[str]) -> None:
        import numpy as np

        cv2 = self._cv2
        font = cv2.FONT_HERSHEY_SIMPLEX
        sizes = [cv2.getTextSize(t, font, self.scale, self.thickness) for t in lines]
        line_h = max(h + b for (_, h), b in sizes) + 4
        w = min(self.width, max(tw for (tw, _), _ in sizes) + 8)
        h = min(self.height, line_h * len(lines) + 4)
        mask = np.zeros((h, w), np.uint8)
        for i, t in enumerate(lines):
            cv2.putText(
                mask, t, (4, line_h * (i + 1) - 2), font, self.scale, 255, self.thickness, cv2.LINE_AA
            )
        self._mask = mask
        top = 0 if self.position.startswith("top") else self.height - h
        left = 0 if self.position.endswith("left") else self.width - w
        self._origin = (top & ~1, left & ~1)

    def apply(self, y_plane: Any, lines: list[str]) -> None:
        """Draw ``lines`` onto a writable luma plane (numpy view, height × width)."""
        import numpy as np

        key = tuple(lines)
        if key != self._key:
            self._render(lines)
            self._key = key
        top, left = self._origin
        h, w = self._mask.shape
        region = y_plane[top : top + h, left : left + w]
        # Darken the box, then blend the text in: readable on any background.
        shaded = region // _SHADE
        alpha = self._mask.astype(np.uint16)
        region[:] = ((shaded * (255 - alpha) + _WHITE * alpha) // 255).astype(np.uint8)
