"""Password hashing: argon2id (RFC 9106) through argon2-cffi, with rehash when the parameters change.

Threat model: the users table leaks (a backup, a copied SQLite file). argon2id with argon2-cffi's
defaults (RFC 9106's second recommended profile: t=3, m=64 MiB, p=4) makes each guess cost memory and
time. Login must also not tell whether a username exists: an unknown user costs one verification
against a dummy hash, the same work as a wrong password.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from server.auth.errors import WeakPasswordError

MIN_LENGTH = 12
#: argon2 takes any length; a bound keeps a megabyte "password" from costing the server.
MAX_LENGTH = 1024


@dataclass(frozen=True)
class PasswordCheck:
    """The outcome of a verification: ``ok``, and a fresh hash when the stored one used old parameters."""

    ok: bool
    new_hash: str | None = None


class Passwords:
    """Hash and verify passwords with one set of argon2 parameters."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher or PasswordHasher()
        self._dummy: str | None = None
        self._lock = threading.Lock()

    def hash(self, password: str) -> str:
        """The argon2id hash of ``password`` (PHC string: parameters and salt included)."""
        return self.hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> PasswordCheck:
        """Check ``password`` against ``stored``; ``stored`` None (no such user) costs the same work."""
        if stored is None:
            self._verify_dummy(password)
            return PasswordCheck(ok=False)
        try:
            self.hasher.verify(stored, password)
        except (VerifyMismatchError, UnicodeEncodeError):
            return PasswordCheck(ok=False)
        except (InvalidHashError, VerificationError):
            # A damaged or foreign hash never lets anyone in; it is the operator's to reset.
            return PasswordCheck(ok=False)
        if self.hasher.check_needs_rehash(stored):
            return PasswordCheck(ok=True, new_hash=self.hasher.hash(password))
        return PasswordCheck(ok=True)

    def _verify_dummy(self, password: str) -> None:
        """Spend one verification, as for a real user, so that timing does not reveal who exists."""
        with self._lock:
            if self._dummy is None:
                self._dummy = self.hasher.hash(secrets.token_urlsafe(24))
            dummy = self._dummy
        with contextlib.suppress(VerificationError, UnicodeEncodeError):
            self.hasher.verify(dummy, password)


def check_policy(password: str, *, username: str) -> None:
    """Refuse a password too short, too long, or equal to the username (WeakPasswordError)."""
    if len(password) < MIN_LENGTH:
        raise WeakPasswordError(f"a password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPasswordError(f"a password may have at most {MAX_LENGTH} characters")
    if password.strip().casefold() == username.casefold():
        raise WeakPasswordError("the password must not be the username")
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise WeakPasswordError("the password must be valid Unicode text") from None


#: The server's hasher (argon2-cffi defaults); tests and tuning pass their own ``Passwords``.
DEFAULT_PASSWORDS = Passwords()
