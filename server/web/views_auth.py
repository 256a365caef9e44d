"""Sign-in and sign-out with the API's session cookie (server/auth), the home page, static files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, RedirectResponse, Response

from server.api.deps import SessionDep
from server.auth import service as auth
from server.auth.deps import auth_settings, passwords
from server.auth.errors import LockedOutError
from server.auth.settings import SESSION_COOKIE
from server.db import utc_now
from server.web.i18n import translate
from server.web.rendering import PageError, PagePrincipal, SameOrigin, nav_for, render

router = APIRouter(include_in_schema=False)

_STATIC = Path(__file__).parent / "static"
_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css"}
NextUrl = Annotated[str, Query(max_length=2000)]


def _local(next_url: str) -> str:
    """Only a path on this server (never ``//host`` or ``https://…``): no open redirect."""
    if not next_url.startswith("/") or next_url.startswith("//") or "\\" in next_url:
        return "/"
    return next_url


@router.get("/login")
def login_page(request: Request, next: NextUrl = "/") -> Response:
    """The sign-in form."""
    return render(request, "login.html", None, next=_local(next), failed=False)


@router.post("/login", dependencies=[SameOrigin])
def login(
    request: Request,
    session: SessionDep,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    """Check the password (the API's rules: throttling, the same answer for unknown users) and set the
    session cookie exactly as ``POST /api/v1/auth/login`` does."""
    settings = auth_settings(request)
    now = utc_now()
    try:
        user = auth.authenticate(
            session,
            username=username,
            password=password,
            settings=settings,
            passwords=passwords(request),
            now=now,
        )
    except LockedOutError:
        raise PageError(429, translate("login.locked")) from None
    if user is None:
        session.commit()  # the failure counts towards the lockout
        return render(request, "login.html", None, status_code=401, next=_local(next), failed=True)
    secret, _row = auth.start_session(session, user=user, settings=settings, now=now)
    session.commit()
    response = RedirectResponse(_local(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(settings.session_lifetime.total_seconds()),
        path="/",
        secure=settings.cookie_secure,
        httponly=True,
        samesite="strict",
    )
    return response


@router.post("/logout", dependencies=[SameOrigin])
def logout(request: Request, session: SessionDep) -> Response:
    """End the session and clear the cookie."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie is not None and auth.end_session(session, secret=cookie):
        session.commit()
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        secure=auth_settings(request).cookie_secure,
        httponly=True,
        samesite="strict",
    )
    return response


@router.get("/")
def home(request: Request, principal: PagePrincipal) -> Response:
    """The signed-in user's start page: what their roles let them do."""
    return render(request, "home.html", principal, entries=nav_for(principal))


@router.get("/static/{name}")
def static(name: Annotated[str, PathParam(max_length=64, pattern=r"^[a-z0-9-]+\.(js|css)$")]) -> Response:
    """The pages' script and style sheet (public, no data)."""
    path = _STATIC / name
    if not path.is_file():
        raise PageError(404, translate("error.not_found"))
    return FileResponse(path, media_type=_STATIC_TYPES[path.suffix], headers={"Cache-Control": "no-cache"})
