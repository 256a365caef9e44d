"""The location package's one error type."""

from __future__ import annotations


class LocationError(Exception):
    """Something about the GPS set-up that an installer must fix (bad config, unusable source)."""
