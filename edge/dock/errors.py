"""Errors of the dock agent."""

from __future__ import annotations

from fieldproof.errors import FieldproofError


class DockError(FieldproofError):
    """The dock cannot do what was asked; the message says what to check."""
