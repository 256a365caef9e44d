"""Fieldproof: edge."""
