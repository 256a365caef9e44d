"""Ingest: the MQTT worker that verifies, stores and acknowledges what the docks send."""
