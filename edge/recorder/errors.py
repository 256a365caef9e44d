"""Errors of the recorder agent, worded for the inspector or IT person who meets them."""

from __future__ import annotations

from fieldproof.errors import FieldproofError


class RecorderError(FieldproofError):
    """The recorder cannot do what was asked; nothing was recorded or changed by the attempt."""
