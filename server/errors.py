"""Errors of the server: each says what is wrong and what the operator or custodian can do."""

from __future__ import annotations

from fieldproof.errors import FieldproofError


class ServerError(FieldproofError):
    """Base of every error raised on purpose by ``server``."""


class SettingsError(ServerError):
    """The server's settings cannot work (a missing CA file, an unusable database URL…); nothing started."""


class StoreError(ServerError):
    """The evidence store refused an operation; the message says which blob and why."""


class HashMismatchError(StoreError):
    """The bytes received do not hash to the signed digest; the staged bytes were discarded."""

    def __init__(self, message: str, *, actual: str) -> None:
        super().__init__(message)
        self.actual = actual


class IncompleteError(StoreError):
    """A commit was asked for a blob whose bytes have not all been received."""


class BlobSizeError(StoreError):
    """A write runs past the blob's announced size, or a blob was announced twice with different sizes."""


class NotStagedError(StoreError):
    """A write for a blob that ``begin`` never announced."""


class BlobNotFoundError(StoreError):
    """No committed blob with this digest."""
