"""Retention: legal holds and their history, per-case archive rules, purged blobs (docs/retention.md).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27

Frozen: this file spells out its schema instead of importing the models (see 0001). No custody event
kind is added: the sweep records a deletion as ``warning`` with ``{"action": "retention-delete"}``
(a new kind would mean a batch ALTER of ``custody_events`` on SQLite, recreating its triggers).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from server.db import BigId, UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_APPEND_ONLY = ("legal_hold_events", "case_archive_rules", "retention_purges")


def _fk(table: str, column: str, target: str, key: str = "id") -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{target}.{key}"], name=f"fk_{table}_{column}_{target}")


def upgrade() -> None:
    op.create_table(
        "legal_holds",
        sa.Column("id", BigId, nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=True),
        sa.Column("device", sa.String(32), nullable=True),
        sa.Column("seq_from", sa.BigInteger(), nullable=True),
        sa.Column("seq_to", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("placed_by", sa.BigInteger(), nullable=False),
        sa.Column("placed_at", UTCDateTime(), nullable=False),
        sa.Column("released_by", sa.BigInteger(), nullable=True),
        sa.Column("released_at", UTCDateTime(), nullable=True),
        sa.Column("release_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_legal_holds"),
        sa.CheckConstraint("scope IN ('case', 'device')", name="ck_legal_holds_scope"),
        sa.CheckConstraint(
            "(scope = 'case' AND case_id IS NOT NULL AND device IS NULL AND seq_from IS NULL "
            "AND seq_to IS NULL) OR (scope = 'device' AND device IS NOT NULL AND case_id IS NULL)",
            name="ck_legal_holds_target",
        ),
        sa.CheckConstraint(
            "seq_from IS NULL OR seq_to IS NULL OR seq_to >= seq_from", name="ck_legal_holds_seq_range"
        ),
        sa.CheckConstraint("reason <> ''", name="ck_legal_holds_reason"),
        sa.CheckConstraint(
            "(released_at IS NULL AND released_by IS NULL AND release_reason IS NULL) OR "
            "(released_at IS NOT NULL AND released_by IS NOT NULL AND release_reason <> '')",
            name="ck_legal_holds_released",
        ),
        _fk("legal_holds", "case_id", "cases"),
        _fk("legal_holds", "placed_by", "users"),
        _fk("legal_holds", "released_by", "users"),
    )
    op.create_index("ix_legal_holds_case_id", "legal_holds", ["case_id"])
    op.create_index("ix_legal_holds_device", "legal_holds", ["device"])
    op.create_table(
        "legal_hold_events",
        sa.Column("id", BigId, nullable=False),
        sa.Column("hold_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("time", UTCDateTime(), nullable=False),
        sa.Column("actor_id", sa.BigInteger(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_legal_hold_events"),
        sa.CheckConstraint("kind IN ('placed', 'released')", name="ck_legal_hold_events_kind"),
        sa.CheckConstraint("note <> ''", name="ck_legal_hold_events_note"),
        _fk("legal_hold_events", "hold_id", "legal_holds"),
        _fk("legal_hold_events", "actor_id", "users"),
    )
    op.create_index("ix_legal_hold_events_hold_id", "legal_hold_events", ["hold_id"])
    op.create_table(
        "case_archive_rules",
        sa.Column("id", BigId, nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=False),
        sa.Column("keep_years", sa.Integer(), nullable=True),
        sa.Column("set_by", sa.BigInteger(), nullable=False),
        sa.Column("set_at", UTCDateTime(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_case_archive_rules"),
        sa.CheckConstraint(
            "keep_years IS NULL OR (keep_years >= 1 AND keep_years <= 100)",
            name="ck_case_archive_rules_keep_years",
        ),
        sa.CheckConstraint("reason <> ''", name="ck_case_archive_rules_reason"),
        _fk("case_archive_rules", "case_id", "cases"),
        _fk("case_archive_rules", "set_by", "users"),
    )
    op.create_index("ix_case_archive_rules_case_id", "case_archive_rules", ["case_id"])
    op.create_table(
        "retention_purges",
        sa.Column("digest", sa.String(71), nullable=False),
        sa.Column("purged_at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("retention_class", sa.String(16), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_retention_purges"),
        _fk("retention_purges", "digest", "files", key="digest"),
    )
    _append_only()
    # For footage by case number and by subject (bench/query_bench.py): the captured subject, and the
    # values annotations set, looked up without a scan.
    op.create_index("ix_segments_subject_prefix", "segments", [sa.text("substr(subject, 1, 18)")])
    op.create_index("ix_footage_annotations_case_number", "footage_annotations", ["case_number"])
    op.create_index("ix_footage_annotations_subject_uscc", "footage_annotations", ["subject_uscc"])


def _append_only() -> None:
    """Hold histories, archive rules and purges are records of decisions: they may only ever grow."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION retention_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$"
        )
        for table in _APPEND_ONLY:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION retention_append_only()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION retention_append_only()"
            )
        return
    for table in _APPEND_ONLY:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )


def downgrade() -> None:
    op.drop_index("ix_footage_annotations_subject_uscc", "footage_annotations")
    op.drop_index("ix_footage_annotations_case_number", "footage_annotations")
    op.drop_index("ix_segments_subject_prefix", "segments")
    # Dropping a table drops its triggers on both databases.
    for table in ("retention_purges", "case_archive_rules", "legal_hold_events", "legal_holds"):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION retention_append_only()")
