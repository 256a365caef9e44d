"""Errors of provisioning: each tells the IT person what is wrong and what to do about it."""

from __future__ import annotations

from fieldproof.errors import FieldproofError


class ProvisioningError(FieldproofError):
    """A CA, enrolment, revocation or broker-config step cannot be done; nothing was changed."""
