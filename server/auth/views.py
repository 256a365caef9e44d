"""API routes of access: login and logout, the current user, API tokens, users (IT admins), access requests.

Every body and answer is a pydantic model with ``extra="forbid"`` and bounded fields, so the OpenAPI
document says exactly what is accepted; input the service refuses for its meaning (a time already
past, a weak password) comes back as a 422 in FastAPI's own shape, naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select

from server.api.deps import SessionDep
from server.auth import access, service
from server.auth.deps import AUTH_RESPONSES, ErrorOut, PrincipalDep, auth_settings, passwords, require
from server.auth.errors import (
    AuthError,
    ConflictError,
    InvalidInputError,
    LockedOutError,
    NotAllowedError,
    NotFoundError,
    UserExistsError,
)
from server.auth.models import AccessRequest, ApiToken, User
from server.auth.passwords import MAX_LENGTH as MAX_PASSWORD
from server.auth.passwords import MIN_LENGTH as MIN_PASSWORD
from server.auth.principal import Principal, Role
from server.auth.settings import SESSION_COOKIE
from server.db import utc_now

router = APIRouter()

MAX_ID = 2**63 - 1
Id = Annotated[int, PathParam(ge=1, le=MAX_ID)]


def _utf8(value: str) -> str:
    """Refuse text that cannot be stored (lone surrogates from JSON ``\\ud800`` escapes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


# Single-line text: no control characters at all. Multi-line text: line breaks and tabs only.
Line = Annotated[str, Field(pattern=r"^[^\x00-\x1f\x7f]*$"), AfterValidator(_utf8)]
Paragraph = Annotated[str, Field(pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"), AfterValidator(_utf8)]
Username = Annotated[str, Field(min_length=3, max_length=48, pattern=service.USERNAME_RE.pattern)]
NewPassword = Annotated[str, Field(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD), AfterValidator(_utf8)]
RoleList = Annotated[list[Role], Field(min_length=1, max_length=len(Role))]
Note = Annotated[Paragraph, Field(min_length=1, max_length=access.MAX_NOTE)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _openapi(code: int, description: str) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorOut, "description": description}}


NOT_FOUND = _openapi(404, "no such item, or not one this user may see")
CONFLICT = _openapi(409, "the action does not fit the item's current state")


@contextmanager
def _answers() -> Iterator[None]:
    """Turn the service's errors into HTTP answers (nothing was changed: the session is not committed)."""
    try:
        yield
    except InvalidInputError as exc:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", exc.field), "msg": str(exc), "input": None}]
        ) from None
    except NotFoundError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    except NotAllowedError as exc:
        raise HTTPException(status_code=403, detail=str(exc)) from None
    except (ConflictError, UserExistsError) as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    except AuthError as exc:  # pragma: no cover - every raised kind is mapped above
        raise HTTPException(status_code=400, detail=str(exc)) from None


# -- login, logout, me -------------------------------------------------------------------------------


class LoginIn(_In):
    """A username and password."""

    # Any name may be tried (and is throttled); only the shape of real usernames can succeed.
    username: Annotated[Line, Field(min_length=1, max_length=64)]
    password: Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD)]


class MeOut(BaseModel):
    """The signed-in user."""

    id: int
    username: str
    display_name: str
    roles: list[Role]
    officer_id: int | None
    via: Literal["session", "token"]


class LoginOut(BaseModel):
    """A session was started; its secret is in the HttpOnly cookie ``fieldproof_session``, not here."""

    user: MeOut
    expires_at: datetime
    idle_timeout_seconds: int


def _me(session: SessionDep, principal: Principal) -> MeOut:
    user = service.get_user(session, user_id=principal.user_id)
    return MeOut(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        roles=sorted(user.roles),
        officer_id=user.officer_id,
        via="token" if principal.via == "token" else "session",
    )


@router.post(
    "/auth/login",
    response_model=LoginOut,
    tags=["access"],
    responses={
        **_openapi(401, "wrong username or password (the same answer for users that do not exist)"),
        **_openapi(429, "too many failed logins for this username; see Retry-After"),
    },
)
def login(body: LoginIn, request: Request, response: Response, session: SessionDep) -> LoginOut:
    """Sign in with a password; sets the session cookie (HttpOnly, SameSite=Strict)."""
    settings = auth_settings(request)
    now = utc_now()
    try:
        user = service.authenticate(
            session,
            username=body.username,
            password=body.password,
            settings=settings,
            passwords=passwords(request),
            now=now,
        )
    except LockedOutError as exc:
        wait = max(1, math.ceil((exc.until - now).total_seconds()))
        raise HTTPException(status_code=429, detail=str(exc), headers={"Retry-After": str(wait)}) from None
    if user is None:
        session.commit()  # the failure counts
        raise HTTPException(
            status_code=401, detail="wrong username or password", headers={"WWW-Authenticate": "Bearer"}
        )
    secret, row = service.start_session(session, user=user, settings=settings, now=now)
    principal = service.principal_of(user, via="session")
    out = LoginOut(
        user=_me(session, principal),
        expires_at=row.expires_at,
        idle_timeout_seconds=int(settings.session_idle.total_seconds()),
    )
    session.commit()
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(settings.session_lifetime.total_seconds()),
        path="/",
        secure=settings.cookie_secure,
        httponly=True,
        samesite="strict",
    )
    return out


@router.post("/auth/logout", status_code=204, tags=["access"])
def logout(request: Request, response: Response, session: SessionDep) -> None:
    """End the browser session (if any) and clear its cookie; API tokens are revoked with DELETE."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie is not None and service.end_session(session, secret=cookie):
        session.commit()
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        secure=auth_settings(request).cookie_secure,
        httponly=True,
        samesite="strict",
    )


@router.get("/auth/me", response_model=MeOut, tags=["access"], responses=AUTH_RESPONSES)
def me(session: SessionDep, principal: PrincipalDep) -> MeOut:
    """Who is signed in, with which roles."""
    return _me(session, principal)


# -- API tokens --------------------------------------------------------------------------------------


class TokenIn(_In):
    """A name for the token (what uses it) and when it stops working."""

    name: Annotated[Line, Field(min_length=1, max_length=64)]
    expires_at: AwareDatetime


class TokenOut(BaseModel):
    """A token as listed: only its first characters, never the secret."""

    id: int
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenIssuedOut(TokenOut):
    """A new token: ``token`` is the secret, shown this once. Send it as ``Authorization: Bearer …``."""

    token: str


def _token_out(row: ApiToken) -> TokenOut:
    return TokenOut(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


@router.post(
    "/auth/tokens",
    status_code=201,
    response_model=TokenIssuedOut,
    tags=["access"],
    responses={**AUTH_RESPONSES, **CONFLICT},
)
def create_token(
    body: TokenIn, request: Request, session: SessionDep, principal: PrincipalDep
) -> TokenIssuedOut:
    """Issue an API token for yourself. Only from a password session: a token cannot mint tokens."""
    if principal.via != "session":
        raise HTTPException(
            status_code=403, detail="API tokens are issued from a signed-in browser session only"
        )
    with _answers():
        secret = service.issue_token(
            session,
            user_id=principal.user_id,
            name=body.name,
            expires_at=body.expires_at,
            max_lifetime=auth_settings(request).token_max_lifetime,
        )
    row = session.scalars(select(ApiToken).where(ApiToken.token_hash == service.secret_digest(secret))).one()
    session.commit()
    return TokenIssuedOut(**_token_out(row).model_dump(), token=secret)


@router.get("/auth/tokens", response_model=list[TokenOut], tags=["access"], responses=AUTH_RESPONSES)
def list_tokens(session: SessionDep, principal: PrincipalDep) -> list[TokenOut]:
    """Your API tokens, newest first (revoked and expired ones too)."""
    return [_token_out(t) for t in service.list_tokens(session, user_id=principal.user_id)]


@router.delete(
    "/auth/tokens/{token_id}",
    status_code=204,
    tags=["access"],
    responses={**AUTH_RESPONSES, **NOT_FOUND},
)
def revoke_token(token_id: Id, session: SessionDep, principal: PrincipalDep) -> None:
    """Revoke one of your API tokens (at once: the next request with it gets 401)."""
    with _answers():
        service.revoke_token(session, token_id=token_id, user_id=principal.user_id)
    session.commit()


# -- users (IT admins) -------------------------------------------------------------------------------

ItAdmin = Annotated[Principal, Depends(require(Role.IT_ADMIN))]


class UserIn(_In):
    """A new user. The password follows docs/access.md (12+ characters, not the username)."""

    username: Username
    display_name: Annotated[Line, Field(min_length=1, max_length=128)] | None = None
    password: NewPassword
    roles: RoleList
    officer_id: Annotated[int, Field(ge=1, le=MAX_ID)] | None = None

    @model_validator(mode="after")
    def _not_the_username(self) -> UserIn:
        if self.password.strip().casefold() == self.username.casefold():
            raise ValueError("the password must not be the username")
        return self


class RolesIn(_In):
    """The user's roles from now on (replacing the old ones)."""

    roles: RoleList


class PasswordIn(_In):
    """A new password; the user's browser sessions end."""

    password: NewPassword


class UserOut(BaseModel):
    """A user as IT admins see them."""

    id: int
    username: str
    display_name: str
    roles: list[Role]
    officer_id: int | None
    active: bool
    created_at: datetime
    disabled_at: datetime | None


def _user_out(user: User) -> UserOut:
    return UserOut(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        roles=sorted(user.roles),
        officer_id=user.officer_id,
        active=user.active,
        created_at=user.created_at,
        disabled_at=user.disabled_at,
    )


@router.post(
    "/users",
    status_code=201,
    response_model=UserOut,
    tags=["users"],
    responses={**AUTH_RESPONSES, **_openapi(409, "a user with this username exists")},
)
def create_user(body: UserIn, request: Request, session: SessionDep, _: ItAdmin) -> UserOut:
    """Create a user (IT admins)."""
    with _answers():
        user = service.create_user(
            session,
            username=body.username,
            password=body.password,
            roles=body.roles,
            display_name=body.display_name,
            officer_id=body.officer_id,
            passwords=passwords(request),
        )
    session.commit()
    return _user_out(user)


@router.get("/users", response_model=list[UserOut], tags=["users"], responses=AUTH_RESPONSES)
def list_users(session: SessionDep, _: ItAdmin) -> list[UserOut]:
    """Every user, by username (IT admins)."""
    return [_user_out(u) for u in service.list_users(session)]


@router.get(
    "/users/{user_id}", response_model=UserOut, tags=["users"], responses={**AUTH_RESPONSES, **NOT_FOUND}
)
def get_user(user_id: Id, session: SessionDep, _: ItAdmin) -> UserOut:
    """One user (IT admins)."""
    with _answers():
        return _user_out(service.get_user(session, user_id=user_id))


_USER_CHANGE = {**AUTH_RESPONSES, **NOT_FOUND, **_openapi(409, "this would leave no active IT admin")}


@router.post("/users/{user_id}/disable", response_model=UserOut, tags=["users"], responses=_USER_CHANGE)
def disable_user(user_id: Id, session: SessionDep, _: ItAdmin) -> UserOut:
    """Disable a user: logins refused, sessions and tokens revoked at once (IT admins)."""
    with _answers():
        user = service.disable_user(session, user_id=user_id)
    session.commit()
    return _user_out(user)


@router.post(
    "/users/{user_id}/enable",
    response_model=UserOut,
    tags=["users"],
    responses={**AUTH_RESPONSES, **NOT_FOUND},
)
def enable_user(user_id: Id, session: SessionDep, _: ItAdmin) -> UserOut:
    """Let a disabled user log in again (IT admins)."""
    with _answers():
        user = service.enable_user(session, user_id=user_id)
    session.commit()
    return _user_out(user)


@router.put("/users/{user_id}/roles", response_model=UserOut, tags=["users"], responses=_USER_CHANGE)
def set_roles(user_id: Id, body: RolesIn, session: SessionDep, _: ItAdmin) -> UserOut:
    """Replace a user's roles (IT admins); takes effect on their next request."""
    with _answers():
        user = service.set_roles(session, user_id=user_id, roles=body.roles)
    session.commit()
    return _user_out(user)


@router.put(
    "/users/{user_id}/password", status_code=204, tags=["users"], responses={**AUTH_RESPONSES, **NOT_FOUND}
)
def set_password(user_id: Id, body: PasswordIn, request: Request, session: SessionDep, _: ItAdmin) -> None:
    """Set a user's password (IT admins: a forgotten password); their browser sessions end."""
    with _answers():
        service.set_password(session, user_id=user_id, password=body.password, passwords=passwords(request))
    session.commit()


# -- access requests ---------------------------------------------------------------------------------


class AccessRequestIn(_In):
    """Ask to open a restricted record, saying why and until when (at most 90 days ahead)."""

    target_kind: Literal["case", "text-record", "segment", "recording"]
    target_id: Annotated[Line, Field(min_length=1, max_length=access.MAX_TARGET_ID)]
    restriction: Literal["state-secret", "trade-secret", "personal-privacy"]
    purpose: Annotated[Paragraph, Field(min_length=1, max_length=access.MAX_PURPOSE)]
    until: AwareDatetime


class ApproveIn(_In):
    """Approve, optionally for less time than asked, optionally with a note."""

    until: AwareDatetime | None = None
    note: Annotated[Paragraph, Field(max_length=access.MAX_NOTE)] | None = None


class ReasonIn(_In):
    """Why (required for refusing or revoking)."""

    note: Note


class AccessEventOut(BaseModel):
    """One step of a request's history."""

    time: datetime
    kind: Literal["requested", "approved", "refused", "expired", "withdrawn", "revoked"]
    actor: str | None  # username; None for an expiry
    until: datetime | None
    note: str | None


class AccessRequestOut(BaseModel):
    """An access request; ``status`` as of now (a lapsed grant reads ``expired``)."""

    id: int
    requester: str
    target_kind: str
    target_id: str
    restriction: str
    purpose: str
    requested_at: datetime
    requested_until: datetime
    granted_until: datetime | None
    status: Literal["pending", "approved", "refused", "expired", "withdrawn", "revoked"]
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None
    history: list[AccessEventOut]


def _usernames(session: SessionDep, ids: set[int | None]) -> dict[int, str]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    rows = session.execute(select(User.id, User.username).where(User.id.in_(wanted)))
    return {user_id: username for user_id, username in rows}


def _request_out(session: SessionDep, req: AccessRequest, *, with_history: bool) -> AccessRequestOut:
    events = access.history(session, request_id=req.id) if with_history else []
    names = _usernames(session, {req.requester_id, req.decided_by, *(e.actor_id for e in events)})
    return AccessRequestOut(
        id=req.id,
        requester=names[req.requester_id],
        target_kind=req.target_kind,
        target_id=req.target_id,
        restriction=req.restriction,
        purpose=req.purpose,
        requested_at=req.requested_at,
        requested_until=req.requested_until,
        granted_until=req.granted_until,
        status=access.effective_status(req),  # type: ignore[arg-type]
        decided_by=names.get(req.decided_by) if req.decided_by is not None else None,
        decided_at=req.decided_at,
        decision_note=req.decision_note,
        history=[
            AccessEventOut(
                time=e.time,
                kind=e.kind,  # type: ignore[arg-type]
                actor=names.get(e.actor_id) if e.actor_id is not None else None,
                until=e.until,
                note=e.note,
            )
            for e in events
        ],
    )


@router.post(
    "/access-requests",
    status_code=201,
    response_model=AccessRequestOut,
    tags=["access requests"],
    responses={**AUTH_RESPONSES, **_openapi(409, "a request for this record is pending already")},
)
def create_access_request(
    body: AccessRequestIn, session: SessionDep, principal: PrincipalDep
) -> AccessRequestOut:
    """Ask for access to a restricted record (inspectors, case handlers, custodians, legal reviewers)."""
    with _answers():
        access.expire_due(session)
        req = access.request_access(
            session,
            principal=principal,
            target_kind=body.target_kind,
            target_id=body.target_id,
            restriction=body.restriction,
            purpose=body.purpose,
            until=body.until,
        )
    session.commit()
    return _request_out(session, req, with_history=True)


@router.get(
    "/access-requests",
    response_model=list[AccessRequestOut],
    tags=["access requests"],
    responses=AUTH_RESPONSES,
)
def list_access_requests(
    session: SessionDep,
    principal: PrincipalDep,
    scope: Annotated[Literal["mine", "to-decide", "all"], Query()] = "mine",
    status: Annotated[
        Literal["pending", "approved", "refused", "expired", "withdrawn", "revoked"] | None, Query()
    ] = None,
) -> list[AccessRequestOut]:
    """Your requests (``mine``), those waiting for you (``to-decide``), or all (deciders and auditors).

    ``status`` filters on the stored status; a lapsed grant may still be stored as approved until the
    next write marks it, but is shown (and honoured) as expired.
    """
    with _answers():
        found = access.list_requests(session, principal=principal, scope=scope, status=status)
    return [_request_out(session, r, with_history=False) for r in found]


@router.get(
    "/access-requests/{request_id}",
    response_model=AccessRequestOut,
    tags=["access requests"],
    responses={**AUTH_RESPONSES, **NOT_FOUND},
)
def get_access_request(request_id: Id, session: SessionDep, principal: PrincipalDep) -> AccessRequestOut:
    """One request with its history (its requester, deciders and auditors)."""
    with _answers():
        req = access.get_request(session, principal=principal, request_id=request_id)
    return _request_out(session, req, with_history=True)


_DECISION = {**AUTH_RESPONSES, **NOT_FOUND, **CONFLICT}


@router.post(
    "/access-requests/{request_id}/approve",
    response_model=AccessRequestOut,
    tags=["access requests"],
    responses=_DECISION,
)
def approve_access_request(
    request_id: Id, body: ApproveIn, session: SessionDep, principal: PrincipalDep
) -> AccessRequestOut:
    """Approve a pending request (a legal reviewer or custodian who is not the requester)."""
    with _answers():
        req = access.approve_request(
            session, principal=principal, request_id=request_id, until=body.until, note=body.note
        )
    session.commit()
    return _request_out(session, req, with_history=True)


@router.post(
    "/access-requests/{request_id}/refuse",
    response_model=AccessRequestOut,
    tags=["access requests"],
    responses=_DECISION,
)
def refuse_access_request(
    request_id: Id, body: ReasonIn, session: SessionDep, principal: PrincipalDep
) -> AccessRequestOut:
    """Refuse a pending request, saying why (a legal reviewer or custodian who is not the requester)."""
    with _answers():
        req = access.refuse_request(session, principal=principal, request_id=request_id, note=body.note)
    session.commit()
    return _request_out(session, req, with_history=True)


@router.post(
    "/access-requests/{request_id}/withdraw",
    response_model=AccessRequestOut,
    tags=["access requests"],
    responses=_DECISION,
)
def withdraw_access_request(request_id: Id, session: SessionDep, principal: PrincipalDep) -> AccessRequestOut:
    """Withdraw your own request, pending or granted."""
    with _answers():
        req = access.withdraw_request(session, principal=principal, request_id=request_id)
    session.commit()
    return _request_out(session, req, with_history=True)


@router.post(
    "/access-requests/{request_id}/revoke",
    response_model=AccessRequestOut,
    tags=["access requests"],
    responses=_DECISION,
)
def revoke_access_request(
    request_id: Id, body: ReasonIn, session: SessionDep, principal: PrincipalDep
) -> AccessRequestOut:
    """End granted access early, saying why (a legal reviewer or custodian)."""
    with _answers():
        req = access.revoke_request(session, principal=principal, request_id=request_id, note=body.note)
    session.commit()
    return _request_out(session, req, with_history=True)
