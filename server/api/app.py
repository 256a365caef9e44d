"""The FastAPI application. No authentication yet: bind it to loopback until the access issue lands."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import Engine

from server.config import ServerSettings
from server.custody_log.views import router as custody_log_router
from server.db import check_migrated, make_engine, session_factory
from server.evidence.views import router as evidence_router


def create_app(settings: ServerSettings, *, engine: Engine | None = None) -> FastAPI:
    """The API over the database ``settings`` names (or ``engine``); refuses an unmigrated database."""
    engine = engine or make_engine(settings.db_url)
    check_migrated(engine)
    app = FastAPI(
        title="Fieldproof server", version="1", docs_url="/api/docs", openapi_url="/api/openapi.json"
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = session_factory(engine)
    app.include_router(evidence_router, prefix="/api/v1")
    app.include_router(custody_log_router, prefix="/api/v1")
    return app
