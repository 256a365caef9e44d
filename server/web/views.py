"""All pages, mounted at the root of the app beside the API (``/api/v1``)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from server.web import views_admin, views_auth, views_cases, views_custody
from server.web.rendering import install_handlers

router = APIRouter(include_in_schema=False)
for _module in (views_auth, views_cases, views_custody, views_admin):
    router.include_router(_module.router)


def install(app: FastAPI) -> None:
    """Add the pages and their error handling to ``app``."""
    install_handlers(app)
    app.include_router(router)
