"""How a page is answered: the template environment, who is asking (the session cookie), the role and
error pages, and the same-origin check of forms.

A page asks for ``PagePrincipal`` (anonymous: a redirect to the sign-in page) or ``page_roles(…)``
(the wrong roles: the 403 page). The domains' errors become pages with the API's statuses: 404 for
what the user may not see, 403 for what their roles or a restriction refuse, 409, 422.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from server.api.deps import SessionDep
from server.auth import errors as auth_errors
from server.auth.deps import auth_settings
from server.auth.principal import Principal, Role
from server.auth.service import resolve_session, resolve_token
from server.auth.settings import SESSION_COOKIE
from server.cases import errors as case_errors
from server.db import utc_now
from server.errors import SettingsError
from server.web.i18n import messages, translate

SHANGHAI = ZoneInfo("Asia/Shanghai")
_TEMPLATES = Path(__file__).parent / "templates"

#: What each role finds in the navigation (key of the text, path, roles that see it).
NAV: list[tuple[str, str, frozenset[Role]]] = [
    ("nav.cases", "/cases", frozenset({Role.CASE_HANDLER, Role.CUSTODIAN, Role.LEGAL_REVIEWER})),
    (
        "nav.footage",
        "/footage",
        frozenset({Role.INSPECTOR, Role.CASE_HANDLER, Role.CUSTODIAN, Role.LEGAL_REVIEWER}),
    ),
    ("nav.custody", "/custody", frozenset({Role.CUSTODIAN, Role.AUDITOR})),
    ("nav.custody_log", "/custody-log", frozenset({Role.CUSTODIAN, Role.AUDITOR})),
    ("nav.fleet", "/fleet", frozenset({Role.IT_ADMIN})),
    ("nav.oversight", "/oversight", frozenset({Role.CUSTODIAN, Role.LEGAL_REVIEWER, Role.AUDITOR})),
    ("nav.access", "/access-requests", frozenset(Role)),
]

#: Security headers of every page: scripts only from this server, nothing cached (evidence on it).
PAGE_HEADERS = {
    "Cache-Control": "private, no-store",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def local_time(value: str | datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A UTC time (datetime or ISO text) as Beijing time, for display only."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.astimezone(SHANGHAI).strftime(fmt)


def label(prefix: str, value: str) -> str:
    """The text of a code (a scene, a marker, a reason) if the messages name it, else the code itself."""
    key = f"{prefix}.{value}"
    return translate(key) if key in messages() else value


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(_TEMPLATES),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["t"] = translate
    env.globals["label"] = label
    env.filters["local"] = local_time
    env.filters["q"] = lambda v: quote(str(v), safe="")
    return env


ENV = _environment()


def nav_for(principal: Principal | None) -> list[tuple[str, str]]:
    """The navigation entries (text key, path) of this user."""
    if principal is None:
        return []
    return [(key, path) for key, path, roles in NAV if principal.has(*roles)]


def render(
    request: Request,
    template: str,
    principal: Principal | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A page from ``template`` with the user's navigation."""
    html = ENV.get_template(template).render(
        principal=principal,
        nav=nav_for(principal),
        path=request.url.path,
        roles=Role,
        **context,
    )
    return HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)


# -- who is asking ---------------------------------------------------------------------------------------


class SignInRequired(Exception):  # noqa: N818 - a redirect, not an error
    """No live session: the page sends the browser to the sign-in page, then back."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


class PageError(Exception):
    """An error page: the API's status, and what is wrong in the user's language."""

    def __init__(self, status: int, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail


def _here(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def page_principal(request: Request, session: SessionDep) -> Principal:
    """The signed-in user: the session cookie, or an API token as the API takes it (a token that is
    there but wrong is refused, not passed over for the cookie); none: the sign-in page."""
    now = utc_now()
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, credentials = header.partition(" ")
        principal = (
            resolve_token(session, secret=credentials.strip(), now=now)
            if scheme.lower() == "bearer" and credentials.strip()
            else None
        )
    else:
        cookie = request.cookies.get(SESSION_COOKIE)
        principal = (
            resolve_session(session, secret=cookie, settings=auth_settings(request), now=now)
            if cookie
            else None
        )
    if principal is None:
        raise SignInRequired(_here(request))
    if session.dirty:
        session.commit()  # last seen / last used
    return principal


PagePrincipal = Annotated[Principal, Depends(page_principal)]


def page_roles(*roles: Role) -> Callable[[Principal], Principal]:
    """A dependency: the user if they hold one of ``roles``, else the 403 page."""

    def dependency(principal: PagePrincipal) -> Principal:
        if not principal.has(*roles):
            names = "、".join(translate(f"role.{r.value}") for r in roles)
            raise PageError(403, translate("error.role", roles=names))
        return principal

    return dependency


def same_origin(request: Request) -> None:
    """Forms are posted from this server's pages only (the cookie is SameSite=Strict; this checks the
    Origin a browser sends with every POST as well, against cross-site form posts)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        referer = request.headers.get("referer")
        if referer is None:
            return  # not a browser (a test client or a script holding the cookie)
        origin = referer
    got = urlsplit(origin)
    if got.netloc != request.headers.get("host", request.url.netloc):
        raise PageError(403, translate("error.cross_site"))


SameOrigin = Depends(same_origin)


@contextmanager
def pages() -> Iterator[None]:
    """The case and auth domains' errors as error pages (nothing was committed)."""
    try:
        yield
    except (case_errors.NotFoundError, auth_errors.NotFoundError) as exc:
        raise PageError(404, translate("error.not_found"), detail=str(exc)) from None
    except case_errors.RestrictedError as exc:
        raise PageError(
            403,
            translate("error.restricted", restriction=translate(f"restriction.{exc.restriction}")),
            detail=f"{exc.target_kind} {exc.target_id}",
        ) from None
    except (case_errors.NotAllowedError, auth_errors.NotAllowedError) as exc:
        raise PageError(403, translate("error.not_allowed"), detail=str(exc)) from None
    except (case_errors.ConflictError, auth_errors.ConflictError) as exc:
        raise PageError(409, translate("error.conflict"), detail=str(exc)) from None
    except (case_errors.InvalidInputError, auth_errors.InvalidInputError) as exc:
        raise PageError(422, translate("error.invalid", field=exc.field), detail=str(exc)) from None
    except (case_errors.SigningUnavailableError, SettingsError) as exc:
        raise PageError(503, translate("error.unavailable"), detail=str(exc)) from None


def _optional_principal(request: Request) -> Principal | None:
    """The user for an error page's navigation, if the cookie names a live session."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    with request.app.state.session_factory() as session:
        return resolve_session(session, secret=cookie, settings=auth_settings(request), now=utc_now())


async def _sign_in(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)
    return RedirectResponse(f"/login?next={quote(exc.next_url, safe='')}", status_code=303)


async def _error_page(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PageError)
    return render(
        request,
        "error.html",
        _optional_principal(request),
        status_code=exc.status,
        status=exc.status,
        message=exc.message,
        detail=exc.detail,
    )


def install_handlers(app: FastAPI) -> None:
    """Register the redirect to sign-in and the error pages on ``app``."""
    app.add_exception_handler(SignInRequired, _sign_in)
    app.add_exception_handler(PageError, _error_page)
