"""The FastAPI application. Sign-in, users and access requests: server/auth (docs/access.md).

Every route but login and logout asks for a principal; who may call which is the table in
docs/access.md (checked route by route by tests/server/test_matrix.py).
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from sqlalchemy import Engine
from starlette.exceptions import HTTPException

from server.auth.passwords import DEFAULT_PASSWORDS
from server.auth.settings import AuthSettings
from server.auth.views import router as auth_router
from server.cases.views import router as cases_router
from server.config import ServerSettings
from server.custody_log.views import router as custody_log_router
from server.db import check_migrated, make_engine, session_factory
from server.devices.views import router as devices_router
from server.evidence.views import router as evidence_router
from server.export.views import router as export_router
from server.retention.views import router as retention_router
from server.verification.views import router as verification_router
from server.web.views import install as install_web_pages


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


#: What FastAPI answers (400) when a body cannot even be decoded: bytes that are not UTF-8 JSON.
_UNPARSABLE_BODY = "There was an error parsing the body"


async def _http_error(request: Request, exc: HTTPException) -> Response:
    """FastAPI's answer for an HTTPException, except that a body that cannot be decoded is bad input
    like any other (422 naming the body, as docs/access.md says and the schema documents), not an
    undocumented 400."""
    if exc.status_code == 400 and exc.detail == _UNPARSABLE_BODY:
        error = {
            "type": "json_invalid",
            "loc": ["body"],
            "msg": "the body is not JSON in UTF-8",
            "input": None,
        }
        return Response(json.dumps({"detail": [error]}), status_code=422, media_type="application/json")
    return await http_exception_handler(request, exc)


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
    # Starlette's class: FastAPI raises it (not its own subclass) for a body it cannot decode.
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = session_factory(engine)
    app.state.auth_settings = auth or AuthSettings()
    app.state.passwords = DEFAULT_PASSWORDS
    app.include_router(auth_router, prefix="/api/v1")
    app.include_router(evidence_router, prefix="/api/v1")
    # Before the case file: its GET /cases/by-number/{number:path} would swallow …/verification.
    app.include_router(verification_router, prefix="/api/v1")
    app.include_router(export_router, prefix="/api/v1")
    app.include_router(cases_router, prefix="/api/v1")
    app.include_router(custody_log_router, prefix="/api/v1")
    app.include_router(retention_router, prefix="/api/v1")
    app.include_router(devices_router, prefix="/api/v1")
    install_web_pages(app)  # server-rendered pages (docs/web.md): the same services, roles and events
    return app
