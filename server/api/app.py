"""The FastAPI application. Sign-in, users and access requests: server/auth (docs/access.md).

The evidence and custody-log routes do not ask for a principal yet: keep the API on loopback until
their domains put ``PrincipalDep`` / ``require`` on them.
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from sqlalchemy import Engine

from server.auth.passwords import DEFAULT_PASSWORDS
from server.auth.settings import AuthSettings
from server.auth.views import router as auth_router
from server.cases.views import router as cases_router
from server.config import ServerSettings
from server.custody_log.views import router as custody_log_router
from server.db import check_migrated, make_engine, session_factory
from server.evidence.views import router as evidence_router


async def _unprocessable(_request: Request, exc: RequestValidationError) -> Response:
    """FastAPI's 422, always renderable. It echoes the input, which may hold a lone surrogate
    (``\\ud800`` in a JSON body: not encodable as UTF-8) or a number JSON cannot carry (``1e400``
    parses as infinity); either would turn the answer into a 500."""
    errors = jsonable_encoder(exc.errors())
    try:
        body = json.dumps({"detail": errors}, ensure_ascii=True, allow_nan=False)
    except ValueError:
        body = json.dumps(
            {"detail": [{k: v for k, v in e.items() if k not in ("input", "ctx")} for e in errors]}
        )
    return Response(body, status_code=422, media_type="application/json")


def create_app(
    settings: ServerSettings, *, engine: Engine | None = None, auth: AuthSettings | None = None
) -> FastAPI:
    """The API over the database ``settings`` names (or ``engine``); refuses an unmigrated database.

    ``auth``: sign-in settings (default: from the FIELDPROOF_AUTH_* environment).
    """
    engine = engine or make_engine(settings.db_url)
    check_migrated(engine)
    app = FastAPI(
        title="Fieldproof server", version="1", docs_url="/api/docs", openapi_url="/api/openapi.json"
    )
    app.add_exception_handler(RequestValidationError, _unprocessable)  # type: ignore[arg-type]
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = session_factory(engine)
    app.state.auth_settings = auth or AuthSettings()
    app.state.passwords = DEFAULT_PASSWORDS
    app.include_router(auth_router, prefix="/api/v1")
    app.include_router(evidence_router, prefix="/api/v1")
    app.include_router(cases_router, prefix="/api/v1")
    app.include_router(custody_log_router, prefix="/api/v1")
    return app
