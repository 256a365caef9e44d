"""Sync between dock and server over MQTT (docs/sync-protocol.md)."""
