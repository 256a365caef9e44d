"""Errors of the case domain: each says what is wrong and what the user can do about it."""

from __future__ import annotations

from server.errors import ServerError


class CaseError(ServerError):
    """Base of every error raised on purpose by ``server.cases``."""


class InvalidInputError(CaseError):
    """A value given is not acceptable (the field is named); nothing was changed."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class NotFoundError(CaseError):
    """No such item, or not one this user may see (the answer does not tell which)."""


class NotAllowedError(CaseError):
    """The user's roles or case assignments do not allow the action (docs/case-file.md, Access)."""


class RestrictedError(NotAllowedError):
    """The record is restricted: it opens only with an approved access request naming it."""

    def __init__(self, *, target_kind: str, target_id: str, restriction: str) -> None:
        super().__init__(
            f"this {target_kind} is restricted ({restriction}): ask for access with "
            f"POST /api/v1/access-requests naming target_kind {target_kind!r}, target_id {target_id!r}, "
            f"restriction {restriction!r} and your purpose"
        )
        self.target_kind = target_kind
        self.target_id = target_id
        self.restriction = restriction


class ConflictError(CaseError):
    """The action does not fit the current state (a case number taken, an archived case changed)."""


class SigningUnavailableError(CaseError):
    """The server cannot sign annotations: its CA directory (server-signing key) is not configured."""


class AnnotationSignatureError(CaseError):
    """An annotation's signature or signed content does not verify: treat it as not made by the server."""
