"""Fieldproof: server."""
