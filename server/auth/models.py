"""Users and their roles, browser sessions, API tokens, login throttling, access requests (migration 0003).

Secrets are never stored: a session or API token is kept as the SHA-256 of the random string handed
out (256 bits of entropy, so a plain hash is enough: nothing to guess), a password as an argon2id hash.
``access_request_events`` is append-only (triggers from 0003 refuse UPDATE and DELETE): the history of
who asked for what, who decided, and why, cannot be rewritten; ``access_requests`` holds the current
state for quick lookups.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.auth.principal import Role
from server.db import Base, BigId, UTCDateTime, one_of

ROLES = tuple(r.value for r in Role)
#: What an access request can be about (the case domain names the records; ids are its strings).
TARGET_KINDS = ("case", "text-record", "segment", "recording")
#: Why a record is restricted (保密: state secrets, trade secrets, personal privacy).
RESTRICTIONS = ("state-secret", "trade-secret", "personal-privacy")
#: An access request's state. ``revoked``: approved, then withdrawn by an approver before its expiry.
STATUSES = ("pending", "approved", "refused", "expired", "withdrawn", "revoked")
#: What happens to an access request, in its append-only history.
EVENT_KINDS = ("requested", "approved", "refused", "expired", "withdrawn", "revoked")


class User(Base):
    """A person who signs in. Never deleted: custody events and decisions name them for good."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(48), unique=True)
    display_name: Mapped[str] = mapped_column(String(128))
    password_hash: Mapped[str] = mapped_column(String(255))  # argon2id, PHC string format
    # The officer record (执法证号) of this user; no foreign key until the officers table exists (0004).
    officer_id: Mapped[int | None] = mapped_column(BigInteger)
    active: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    role_rows: Mapped[list[UserRole]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="UserRole.role"
    )

    @property
    def roles(self) -> frozenset[Role]:
        """The roles this user holds."""
        return frozenset(Role(r.role) for r in self.role_rows)


class UserRole(Base):
    """One role held by one user."""

    __tablename__ = "user_roles"
    __table_args__ = (CheckConstraint(one_of("role", ROLES), name="role"),)

    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(16), primary_key=True)


class AuthSession(Base):
    """A browser session: the cookie's value is the secret, this row keeps its SHA-256."""

    __tablename__ = "auth_sessions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())  # absolute end, however active
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())  # for the idle timeout
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # logout, or the user disabled


class ApiToken(Base):
    """A named API token for scripts; the secret is shown once, then only its prefix."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class LoginThrottle(Base):
    """Recent failed logins for a username, whether or not such a user exists (no enumeration)."""

    __tablename__ = "login_throttle"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    first_failure_at: Mapped[datetime] = mapped_column(UTCDateTime())
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AccessRequest(Base):
    """A request to open a restricted record, for a stated purpose, until a stated time."""

    __tablename__ = "access_requests"
    __table_args__ = (
        CheckConstraint(one_of("target_kind", TARGET_KINDS), name="target_kind"),
        CheckConstraint(one_of("restriction", RESTRICTIONS), name="restriction"),
        CheckConstraint(one_of("status", STATUSES), name="status"),
        CheckConstraint("length(purpose) > 0", name="purpose"),
        Index(
            "ix_access_requests_requester_id_target_kind_target_id",
            "requester_id",
            "target_kind",
            "target_id",
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    requester_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))
    target_kind: Mapped[str] = mapped_column(String(16))
    target_id: Mapped[str] = mapped_column(String(128))
    restriction: Mapped[str] = mapped_column(String(16))
    purpose: Mapped[str] = mapped_column(Text)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime())
    requested_until: Mapped[datetime] = mapped_column(UTCDateTime())
    granted_until: Mapped[datetime | None] = mapped_column(UTCDateTime())  # ≤ requested_until
    status: Mapped[str] = mapped_column(String(16), index=True)
    decided_by: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("users.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decision_note: Mapped[str | None] = mapped_column(Text)


class AccessRequestEvent(Base):
    """One step in an access request's life. Append-only."""

    __tablename__ = "access_request_events"
    __table_args__ = (CheckConstraint(one_of("kind", EVENT_KINDS), name="kind"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    request_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("access_requests.id"), index=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("users.id"))  # None: expiry
    until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    note: Mapped[str | None] = mapped_column(Text)
