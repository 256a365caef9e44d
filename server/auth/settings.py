"""Settings of sign-in (environment variables ``FIELDPROOF_AUTH_*``): lifetimes, lockout, the cookie.

Made once, by ``create_app`` (or the caller that passes its own), and kept on ``app.state``.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The name of the browser session cookie (HttpOnly, SameSite=Strict, Path=/api).
SESSION_COOKIE = "fieldproof_session"


class AuthSettings(BaseSettings):
    """How long sessions and tokens live, and when repeated failed logins lock a username."""

    model_config = SettingsConfigDict(env_prefix="FIELDPROOF_AUTH_", extra="forbid", frozen=True)

    cookie_secure: bool = Field(
        default=True,
        description="send the session cookie only over HTTPS; false only for plain-HTTP loopback tests",
    )
    session_lifetime: timedelta = Field(
        default=timedelta(hours=10), gt=timedelta(0), le=timedelta(days=7), description="absolute, one shift"
    )
    session_idle: timedelta = Field(
        default=timedelta(minutes=30), gt=timedelta(0), le=timedelta(days=1), description="idle timeout"
    )
    token_max_lifetime: timedelta = Field(
        default=timedelta(days=366), gt=timedelta(0), le=timedelta(days=3660), description="API tokens"
    )
    login_max_failures: int = Field(default=5, ge=1, le=1000, description="failures before a lockout")
    login_failure_window: timedelta = Field(
        default=timedelta(minutes=15), gt=timedelta(0), description="failures older than this are forgotten"
    )
    login_lockout: timedelta = Field(
        default=timedelta(minutes=15), gt=timedelta(0), le=timedelta(days=1), description="lockout length"
    )
