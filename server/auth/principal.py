"""Who is asking: the contract between authentication (server/auth) and every domain's routes.

Routes take ``PrincipalDep`` (or ``require(Role.X, …)``) and never read cookies or tokens themselves.
Case-level rules (is this handler assigned to this case?) belong to the case domain; whether a
restricted record may be opened belongs to ``server.auth.access`` (approved access requests).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.StrEnum):
    """The bureau's roles (issue 5). A user may hold several."""

    INSPECTOR = "inspector"  # records in the field; sees the footage they recorded
    CASE_HANDLER = "case-handler"  # works the cases assigned to them
    CUSTODIAN = "custodian"  # chain of custody: verification, custody log, export
    LEGAL_REVIEWER = "legal-reviewer"  # reviews cases assigned for review; read-only
    IT_ADMIN = "it-admin"  # devices and users; no evidence
    AUDITOR = "auditor"  # the custody log and access records; no media


@dataclass(frozen=True)
class Principal:
    """An authenticated user for the length of one request."""

    user_id: int
    username: str
    roles: frozenset[Role]
    officer_id: int | None = None  # the officer record (执法证号) of this user, when they are one
    via: str = "session"  # "session" (browser cookie) or "token" (API token)

    def has(self, *roles: Role) -> bool:
        """Whether the user holds any of ``roles``."""
        return bool(self.roles.intersection(roles))

    @property
    def actor(self) -> str:
        """How custody events name this user (``user:<username>``)."""
        return f"user:{self.username}"
