"""Fieldproof: fieldproof."""
