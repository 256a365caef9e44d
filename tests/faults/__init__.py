"""Fault campaigns: real processes killed -9 at random moments during a sync (docs/sync-faults.md)."""
