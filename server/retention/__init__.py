"""Retention classes, legal holds and the retention sweep (docs/retention.md)."""
