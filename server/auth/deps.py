"""The dependencies every domain's routes use to know who is asking (the interface of docs/access.md).

``PrincipalDep`` authenticates: an API token in ``Authorization: Bearer <token>``, else the browser
session cookie ``fieldproof_session``; 401 with ``WWW-Authenticate: Bearer`` when neither is there or
what is there is unknown, expired or revoked. ``require(Role.X, …)`` also authorises: 403 unless the
user holds one of the roles. Case-level rules (is this user assigned to this case?) are the case
domain's; restricted records need ``server.auth.access.granted_access`` on top.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyCookie, HTTPBearer
from pydantic import BaseModel

from server.api.deps import SessionDep
from server.auth.passwords import DEFAULT_PASSWORDS, Passwords
from server.auth.principal import Principal, Role
from server.auth.service import resolve_session, resolve_token
from server.auth.settings import SESSION_COOKIE, AuthSettings
from server.db import utc_now

__all__ = [
    "AUTH_RESPONSES",
    "ErrorOut",
    "PrincipalDep",
    "auth_settings",
    "get_principal",
    "passwords",
    "require",
]

# Declared for OpenAPI (the security schemes a client may use); the checks are get_principal's own.
_bearer = HTTPBearer(auto_error=False, scheme_name="apiToken", description="an API token: fpt_…")
_cookie = APIKeyCookie(
    name=SESSION_COOKIE, auto_error=False, scheme_name="session", description="set by POST /api/v1/auth/login"
)


class ErrorOut(BaseModel):
    """An error: what is wrong and what to do."""

    detail: str


#: OpenAPI ``responses`` for any route behind ``PrincipalDep`` or ``require`` (``responses=AUTH_RESPONSES``).
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "not authenticated: no, or no longer valid, session or token"},
    403: {"model": ErrorOut, "description": "authenticated, but the user's roles do not allow this"},
}


def auth_settings(request: Request) -> AuthSettings:
    """The app's sign-in settings (``create_app`` puts them on ``app.state``)."""
    settings: AuthSettings = request.app.state.auth_settings
    return settings


def passwords(request: Request) -> Passwords:
    """The app's password hasher."""
    hasher: Passwords = getattr(request.app.state, "passwords", DEFAULT_PASSWORDS)
    return hasher


def unauthorized(detail: str) -> HTTPException:
    """A 401 that tells the client how to authenticate."""
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def get_principal(
    request: Request,
    session: SessionDep,
    _token: Annotated[object, Depends(_bearer)],
    _session_cookie: Annotated[object, Depends(_cookie)],
) -> Principal:
    """Who is asking: the user of the request's API token or session cookie; else 401."""
    now = utc_now()
    header = request.headers.get("authorization")
    if header is not None:
        # A token that is there but wrong is refused, not passed over for the cookie.
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise unauthorized("the Authorization header must be `Bearer <API token>`")
        principal = resolve_token(session, secret=credentials.strip(), now=now)
    else:
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie is None:
            raise unauthorized(
                "authentication required: log in, or send an API token (Authorization: Bearer …)"
            )
        principal = resolve_session(session, secret=cookie, settings=auth_settings(request), now=now)
    if principal is None:
        raise unauthorized("the session or API token is unknown, expired or revoked: log in again")
    if session.dirty:
        session.commit()  # last seen / last used; nothing else is in this session yet
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(*roles: Role) -> Callable[[Principal], Principal]:
    """A dependency giving the Principal if the user holds any of ``roles``; 401 or 403 otherwise."""
    if not roles:
        raise ValueError("require() needs at least one role")
    wanted = " or ".join(r.value for r in roles)

    def dependency(principal: PrincipalDep) -> Principal:
        if not principal.has(*roles):
            raise HTTPException(status_code=403, detail=f"this needs the role {wanted}")
        return principal

    dependency.__name__ = f"require_{'_'.join(r.name.lower() for r in roles)}"
    return dependency
