"""Errors of users, sessions, tokens and access requests: each says what is wrong and what to do."""

from __future__ import annotations

from datetime import datetime

from server.errors import ServerError


class AuthError(ServerError):
    """Base of every error raised on purpose by ``server.auth``."""


class InvalidInputError(AuthError):
    """A value given is not acceptable (the field is named); nothing was changed."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class WeakPasswordError(InvalidInputError):
    """The password does not meet the policy (docs/access.md); choose another."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="password")


class UserExistsError(AuthError):
    """A user with this username exists already (usernames are never reused: events name them)."""


class NotFoundError(AuthError):
    """No such user, token or access request (or not one this user may see)."""


class NotAllowedError(AuthError):
    """This user's roles do not allow the action (docs/access.md says who may)."""


class ConflictError(AuthError):
    """The action does not fit the current state (an access request already decided, the last IT admin)."""


class LockedOutError(AuthError):
    """Too many failed logins for this username: wait until ``until``."""

    def __init__(self, message: str, *, until: datetime) -> None:
        super().__init__(message)
        self.until = until
