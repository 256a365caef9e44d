"""Errors of the custody format: each says what is wrong and what a custodian can do about it."""

from __future__ import annotations

from fieldproof.errors import FieldproofError


class CustodyError(FieldproofError):
    """Base of every error raised by ``custody``."""


class RecordFormatError(CustodyError):
    """A capture record does not follow the format (docs/custody-format.md); nothing was written."""


class TrustError(CustodyError):
    """The trust root, a certificate or a CRL given to the verifier is unusable."""


class SpoolError(CustodyError):
    """A spool or journal cannot be read as the format requires."""
