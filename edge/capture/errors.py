"""Errors of the capture pipeline."""

from __future__ import annotations

from fieldproof.errors import FieldproofError


class CaptureError(FieldproofError):
    """The camera, microphone, encoder or segment writer failed; what was sealed before stays sealed."""
