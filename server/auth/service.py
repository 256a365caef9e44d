"""Users, login with throttling, browser sessions and API tokens.

Functions add to the caller's session and flush; the caller commits (a route, the CLI). Login is the
exception worth stating: a failed login writes its throttle row, and the caller must commit that too.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import case, delete, func, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, contains_eager

from server.auth.errors import (
    ConflictError,
    InvalidInputError,
    LockedOutError,
    NotFoundError,
    UserExistsError,
)
from server.auth.models import ApiToken, AuthSession, LoginThrottle, User, UserRole
from server.auth.passwords import DEFAULT_PASSWORDS, Passwords, check_policy
from server.auth.principal import Principal, Role
from server.auth.settings import AuthSettings
from server.db import UTCDateTime, insert_ignore, utc_now

#: Lowercase, starting with a letter, 3–48 characters: it appears in custody events as ``user:<name>``.
USERNAME_RE = re.compile(r"^[a-z][a-z0-9._-]{2,47}$")
#: API tokens start with this, so a leaked one is recognisable (secret scanners, logs).
TOKEN_PREFIX = "fpt_"  # noqa: S105 (a marker, not a secret)
#: Characters of a token shown after it was issued (``fpt_`` and 8 of the secret).
SHOWN_PREFIX = 12
#: Longest token or cookie value looked up at all.
MAX_SECRET = 256
#: ``last_seen_at`` / ``last_used_at`` are written at most this often (one write a minute, not per request).
TOUCH_EVERY = timedelta(seconds=60)
MAX_ID = 2**63 - 1
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def secret_digest(secret: str) -> str:
    """SHA-256 (hex) of a session or token secret, as stored."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def principal_of(user: User, *, via: str) -> Principal:
    """The request principal for ``user``."""
    return Principal(
        user_id=user.id, username=user.username, roles=user.roles, officer_id=user.officer_id, via=via
    )


# -- users -------------------------------------------------------------------------------------------


def _check_username(username: str) -> None:
    if not USERNAME_RE.match(username):
        raise InvalidInputError(
            "a username is 3–48 characters: lowercase letters, digits, '.', '_' or '-', starting with a letter",
            field="username",
        )


def _check_display_name(name: str) -> None:
    if not name.strip() or len(name) > 128 or _CONTROL.search(name):
        raise InvalidInputError(
            "a display name is 1–128 characters without control characters", field="display_name"
        )


def _roles(roles: Iterable[Role | str]) -> list[Role]:
    try:
        out = sorted({Role(r) for r in roles})
    except ValueError:
        raise InvalidInputError(f"roles are {', '.join(r.value for r in Role)}", field="roles") from None
    if not out:
        raise InvalidInputError("a user needs at least one role", field="roles")
    return out


def create_user(
    session: Session,
    *,
    username: str,
    password: str,
    roles: Iterable[Role | str],
    display_name: str | None = None,
    officer_id: int | None = None,
    passwords: Passwords = DEFAULT_PASSWORDS,
    now: datetime | None = None,
) -> User:
    """A new active user (InvalidInputError, WeakPasswordError, UserExistsError: nothing added)."""
    _check_username(username)
    display_name = username if display_name is None else display_name
    _check_display_name(display_name)
    role_list = _roles(roles)
    check_policy(password, username=username)
    if officer_id is not None and not 1 <= officer_id <= MAX_ID:
        raise InvalidInputError("an officer id is a positive integer", field="officer_id")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise UserExistsError(f"a user {username!r} exists already; usernames are never reused")
    user = User(
        username=username,
        display_name=display_name,
        password_hash=passwords.hash(password),
        officer_id=officer_id,
        active=True,
        created_at=now or utc_now(),
        disabled_at=None,
        role_rows=[UserRole(role=r.value) for r in role_list],
    )
    try:
        with session.begin_nested():  # a concurrent create of the same name loses cleanly
            session.add(user)
    except IntegrityError:
        raise UserExistsError(f"a user {username!r} exists already; usernames are never reused") from None
    return user


def get_user(session: Session, *, user_id: int) -> User:
    """The user with this id (NotFoundError)."""
    user = session.get(User, user_id) if 1 <= user_id <= MAX_ID else None
    if user is None:
        raise NotFoundError(f"no user {user_id}")
    return user


def list_users(session: Session) -> list[User]:
    """Every user, by username."""
    return list(session.scalars(select(User).order_by(User.username)))


def _active_it_admins(session: Session) -> set[int]:
    q = (
        select(User.id)
        .join(UserRole, UserRole.user_id == User.id)
        .where(UserRole.role == Role.IT_ADMIN.value, User.active.is_(True))
    )
    return set(session.scalars(q))


def _keep_an_it_admin(session: Session, user: User, *, losing: bool) -> None:
    """Refuse to leave the bureau without an active IT admin (nobody could manage users any more)."""
    if losing and _active_it_admins(session) == {user.id}:
        raise ConflictError(
            f"{user.username} is the last active IT admin: give another user the it-admin role first"
        )


def set_roles(session: Session, *, user_id: int, roles: Iterable[Role | str]) -> User:
    """Replace a user's roles."""
    user = get_user(session, user_id=user_id)
    new = _roles(roles)
    _keep_an_it_admin(session, user, losing=Role.IT_ADMIN not in new and Role.IT_ADMIN in user.roles)
    user.role_rows = [UserRole(role=r.value) for r in new]
    session.flush()
    return user


def disable_user(session: Session, *, user_id: int, now: datetime | None = None) -> User:
    """Disable a user: no more logins, and every session and token of theirs revoked at once."""
    now = now or utc_now()
    user = get_user(session, user_id=user_id)
    if not user.active:
        return user
    _keep_an_it_admin(session, user, losing=Role.IT_ADMIN in user.roles)
    user.active = False
    user.disabled_at = now
    for model in (AuthSession, ApiToken):
        session.execute(
            update(model).where(model.user_id == user.id, model.revoked_at.is_(None)).values(revoked_at=now)
        )
    session.flush()
    return user


def enable_user(session: Session, *, user_id: int) -> User:
    """Let a disabled user log in again (their old sessions and tokens stay revoked)."""
    user = get_user(session, user_id=user_id)
    user.active = True
    user.disabled_at = None
    session.flush()
    return user


def set_password(
    session: Session,
    *,
    user_id: int,
    password: str,
    passwords: Passwords = DEFAULT_PASSWORDS,
    now: datetime | None = None,
) -> User:
    """A new password; every session of the user ends (tokens stay: they are revoked one by one), and a
    lockout of the username is lifted."""
    user = get_user(session, user_id=user_id)
    check_policy(password, username=user.username)
    user.password_hash = passwords.hash(password)
    session.execute(delete(LoginThrottle).where(LoginThrottle.username == _throttle_key(user.username)))
    session.execute(
        update(AuthSession)
        .where(AuthSession.user_id == user.id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=now or utc_now())
    )
    session.flush()
    return user


# -- login -------------------------------------------------------------------------------------------


def _throttle_key(username: str) -> str:
    return username.strip().lower()[:64]


def authenticate(
    session: Session,
    *,
    username: str,
    password: str,
    settings: AuthSettings,
    passwords: Passwords = DEFAULT_PASSWORDS,
    now: datetime | None = None,
) -> User | None:
    """The user if the password is right and the user active, else None; LockedOutError while locked.

    The same work and the same answer for an unknown user, a disabled one and a wrong password, so
    neither the message nor the timing tells who exists. Failures are counted per username string
    (existing or not) and lock it for ``settings.login_lockout``. The caller commits either way.
    """
    now = now or utc_now()
    key = _throttle_key(username)
    throttle = session.get(LoginThrottle, key)
    if throttle is not None and throttle.locked_until is not None and throttle.locked_until > now:
        raise LockedOutError(
            "too many failed logins for this username: try again later", until=throttle.locked_until
        )
    name = username.strip().lower()
    user = session.scalar(select(User).where(User.username == name)) if USERNAME_RE.match(name) else None
    check = passwords.verify(user.password_hash if user is not None else None, password)
    if user is not None and check.ok and user.active:
        if check.new_hash is not None:
            user.password_hash = check.new_hash  # argon2 parameters raised since: upgrade on login
        session.execute(delete(LoginThrottle).where(LoginThrottle.username == key))
        session.flush()
        return user
    _record_failure(session, key=key, settings=settings, now=now)
    return None


def _record_failure(session: Session, *, key: str, settings: AuthSettings, now: datetime) -> None:
    """Count one failed login for ``key`` in SQL (concurrent failures all count); lock at the limit."""
    insert_ignore(
        session,
        LoginThrottle,
        {"username": key, "failures": 0, "first_failure_at": now, "locked_until": None},
        "username",
    )
    stale = LoginThrottle.first_failure_at < now - settings.login_failure_window
    session.execute(
        update(LoginThrottle)
        .where(LoginThrottle.username == key)
        .values(
            failures=case((stale, 1), else_=LoginThrottle.failures + 1),
            first_failure_at=case((stale, literal(now, UTCDateTime())), else_=LoginThrottle.first_failure_at),
        )
    )
    session.execute(
        update(LoginThrottle)
        .where(LoginThrottle.username == key, LoginThrottle.failures >= settings.login_max_failures)
        .values(failures=0, first_failure_at=now, locked_until=now + settings.login_lockout)
    )


# -- sessions ----------------------------------------------------------------------------------------


def start_session(
    session: Session, *, user: User, settings: AuthSettings, now: datetime | None = None
) -> tuple[str, AuthSession]:
    """A new browser session for ``user``: the cookie value (shown once) and its row."""
    now = now or utc_now()
    secret = secrets.token_urlsafe(32)
    row = AuthSession(
        token_hash=secret_digest(secret),
        user_id=user.id,
        created_at=now,
        expires_at=now + settings.session_lifetime,
        last_seen_at=now,
        revoked_at=None,
    )
    session.add(row)
    session.flush()
    return secret, row


_Row = TypeVar("_Row", AuthSession, ApiToken)


def _with_user(session: Session, model: type[_Row], secret: str) -> tuple[_Row, User] | None:
    """The session or token row whose hash is the secret's, with its user and roles: one query (each
    request pays it)."""
    q = (
        select(model, User)
        .join(User, User.id == model.user_id)
        .outerjoin(UserRole, UserRole.user_id == User.id)
        .options(contains_eager(User.role_rows))
        .where(model.token_hash == secret_digest(secret))
    )
    row = session.execute(q).unique().first()
    return None if row is None else (row[0], row[1])


def resolve_session(
    session: Session, *, secret: str, settings: AuthSettings, now: datetime | None = None
) -> Principal | None:
    """The principal of a live session cookie, or None (unknown, revoked, expired, idle, user disabled).

    Marks the session seen (at most once a minute); the caller commits.
    """
    now = now or utc_now()
    if not secret or len(secret) > MAX_SECRET:
        return None
    found = _with_user(session, AuthSession, secret)
    if found is None:
        return None
    row, user = found
    if row.revoked_at is not None or now >= row.expires_at:
        return None
    if now - row.last_seen_at >= settings.session_idle:
        return None
    if not user.active:
        return None
    if now - row.last_seen_at >= TOUCH_EVERY:
        row.last_seen_at = now
    return principal_of(user, via="session")


def end_session(session: Session, *, secret: str, now: datetime | None = None) -> bool:
    """Revoke the session with this cookie value (logout); False if there was none live."""
    if not secret or len(secret) > MAX_SECRET:
        return False
    result = session.execute(
        update(AuthSession)
        .where(AuthSession.token_hash == secret_digest(secret), AuthSession.revoked_at.is_(None))
        .values(revoked_at=now or utc_now())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


# -- API tokens --------------------------------------------------------------------------------------


def _check_token_name(name: str) -> None:
    if not name.strip() or len(name) > 64 or _CONTROL.search(name):
        raise InvalidInputError("a token name is 1–64 characters without control characters", field="name")


def issue_token(
    session: Session,
    *,
    user_id: int,
    name: str,
    expires_at: datetime,
    max_lifetime: timedelta = timedelta(days=366),
    now: datetime | None = None,
) -> str:
    """A new API token for the user; returns the secret, which is shown this once and never stored."""
    now = now or utc_now()
    _check_token_name(name)
    if expires_at.tzinfo is None:
        raise InvalidInputError(
            "expires_at needs a time zone (e.g. 2027-01-01T00:00:00+08:00)", field="expires_at"
        )
    if not now < expires_at <= now + max_lifetime:
        raise InvalidInputError(
            f"a token expires in the future and within {max_lifetime.days} days", field="expires_at"
        )
    user = get_user(session, user_id=user_id)
    if not user.active:
        raise ConflictError(f"{user.username} is disabled and cannot be given tokens")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiToken(
            user_id=user.id,
            name=name,
            prefix=secret[:SHOWN_PREFIX],
            token_hash=secret_digest(secret),
            created_at=now,
            expires_at=expires_at,
            last_used_at=None,
            revoked_at=None,
        )
    )
    session.flush()
    return secret


def resolve_token(session: Session, *, secret: str, now: datetime | None = None) -> Principal | None:
    """The principal of a live API token, or None (unknown, revoked, expired, user disabled).

    Records its use (at most once a minute); the caller commits.
    """
    now = now or utc_now()
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > MAX_SECRET:
        return None
    found = _with_user(session, ApiToken, secret)
    if found is None:
        return None
    row, user = found
    if row.revoked_at is not None or now >= row.expires_at:
        return None
    if not user.active:
        return None
    if row.last_used_at is None or now - row.last_used_at >= TOUCH_EVERY:
        row.last_used_at = now
    return principal_of(user, via="token")


def list_tokens(session: Session, *, user_id: int) -> list[ApiToken]:
    """A user's tokens, newest first, revoked and expired ones included (prefixes only)."""
    q = select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id.desc())
    return list(session.scalars(q))


def revoke_token(
    session: Session, *, token_id: int, user_id: int | None = None, now: datetime | None = None
) -> ApiToken:
    """Revoke a token (of ``user_id`` only, when given); revoking twice keeps the first time."""
    row = session.get(ApiToken, token_id) if 1 <= token_id <= MAX_ID else None
    if row is None or (user_id is not None and row.user_id != user_id):
        raise NotFoundError(f"no API token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = now or utc_now()
        session.flush()
    return row


def count_users(session: Session) -> int:
    """How many users exist (the CLI warns when a bureau's first user is not an IT admin)."""
    return int(session.scalar(select(func.count()).select_from(User)) or 0)
