"""Fieldproof: custody."""
