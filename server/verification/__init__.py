"""Verification for the custodian: a device's chain, or a case's footage, checked as `fieldproof verify` does."""
