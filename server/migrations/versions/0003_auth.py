"""Access: users and their roles, browser sessions, API tokens, login throttling, access requests
for restricted records and their append-only decision history (docs/access.md).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

Frozen: this file spells out its schema instead of importing the models (see 0001). ``users.officer_id``
has no foreign key yet: the officers table comes with the case file (0004), which may add one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from server.db import BigId, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ROLES = ("inspector", "case-handler", "custodian", "legal-reviewer", "it-admin", "auditor")
_TARGET_KINDS = ("case", "text-record", "segment", "recording")
_RESTRICTIONS = ("state-secret", "trade-secret", "personal-privacy")
_STATUSES = ("pending", "approved", "refused", "expired", "withdrawn", "revoked")
_EVENT_KINDS = ("requested", "approved", "refused", "expired", "withdrawn", "revoked")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", BigId, nullable=False),
        sa.Column("username", sa.String(48), nullable=False),
        sa.Column("display_name", sa.String(128), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("officer_id", sa.BigInteger(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("disabled_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "user_roles",
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "role", name="pk_user_roles"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_user_roles_user_id_users"),
        sa.CheckConstraint(_in("role", _ROLES), name=op.f("ck_user_roles_role")),
    )
    op.create_table(
        "auth_sessions",
        sa.Column("id", BigId, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_auth_sessions"),
        sa.UniqueConstraint("token_hash", name="uq_auth_sessions_token_hash"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_auth_sessions_user_id_users"),
    )
    op.create_index("ix_auth_sessions_user_id", "auth_sessions", ["user_id"])
    op.create_table(
        "api_tokens",
        sa.Column("id", BigId, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_api_tokens_user_id_users"),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])
    op.create_table(
        "login_throttle",
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("first_failure_at", UTCDateTime(), nullable=False),
        sa.Column("locked_until", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("username", name="pk_login_throttle"),
    )
    op.create_table(
        "access_requests",
        sa.Column("id", BigId, nullable=False),
        sa.Column("requester_id", sa.BigInteger(), nullable=False),
        sa.Column("target_kind", sa.String(16), nullable=False),
        sa.Column("target_id", sa.String(128), nullable=False),
        sa.Column("restriction", sa.String(16), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("requested_at", UTCDateTime(), nullable=False),
        sa.Column("requested_until", UTCDateTime(), nullable=False),
        sa.Column("granted_until", UTCDateTime(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("decided_by", sa.BigInteger(), nullable=True),
        sa.Column("decided_at", UTCDateTime(), nullable=True),
        sa.Column("decision_note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_access_requests"),
        sa.ForeignKeyConstraint(["requester_id"], ["users.id"], name="fk_access_requests_requester_id_users"),
        sa.ForeignKeyConstraint(["decided_by"], ["users.id"], name="fk_access_requests_decided_by_users"),
        sa.CheckConstraint(_in("target_kind", _TARGET_KINDS), name=op.f("ck_access_requests_target_kind")),
        sa.CheckConstraint(_in("restriction", _RESTRICTIONS), name=op.f("ck_access_requests_restriction")),
        sa.CheckConstraint(_in("status", _STATUSES), name=op.f("ck_access_requests_status")),
        sa.CheckConstraint("length(purpose) > 0", name=op.f("ck_access_requests_purpose")),
    )
    op.create_index(
        "ix_access_requests_requester_id_target_kind_target_id",
        "access_requests",
        ["requester_id", "target_kind", "target_id"],
    )
    op.create_index("ix_access_requests_status", "access_requests", ["status"])
    op.create_table(
        "access_request_events",
        sa.Column("id", BigId, nullable=False),
        sa.Column("request_id", sa.BigInteger(), nullable=False),
        sa.Column("time", UTCDateTime(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.BigInteger(), nullable=True),
        sa.Column("until", UTCDateTime(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_access_request_events"),
        sa.ForeignKeyConstraint(
            ["request_id"], ["access_requests.id"], name="fk_access_request_events_request_id_access_requests"
        ),
        sa.ForeignKeyConstraint(["actor_id"], ["users.id"], name="fk_access_request_events_actor_id_users"),
        sa.CheckConstraint(_in("kind", _EVENT_KINDS), name=op.f("ck_access_request_events_kind")),
    )
    op.create_index("ix_access_request_events_request_id", "access_request_events", ["request_id"])

    # The decision history may only grow, whoever writes to the database.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION access_request_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'access_request_events is append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER access_request_events_append_only BEFORE UPDATE OR DELETE "
            "ON access_request_events FOR EACH ROW EXECUTE FUNCTION access_request_events_append_only()"
        )
        op.execute(
            "CREATE TRIGGER access_request_events_no_truncate BEFORE TRUNCATE ON access_request_events "
            "FOR EACH STATEMENT EXECUTE FUNCTION access_request_events_append_only()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER access_request_events_no_{action.lower()} BEFORE {action} "
                "ON access_request_events "
                "BEGIN SELECT RAISE(ABORT, 'access_request_events is append-only'); END"
            )


def downgrade() -> None:
    # Dropping a table drops its triggers on both databases.
    for table in (
        "access_request_events",
        "access_requests",
        "login_throttle",
        "api_tokens",
        "auth_sessions",
        "user_roles",
        "users",
    ):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION access_request_events_append_only()")
