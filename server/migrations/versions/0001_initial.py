"""The first tables: devices, signing certificates, records, files, segments, custody events.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Frozen: this file spells out its schema instead of importing the models, so that later model changes
never rewrite history. Custody events are append-only, enforced by triggers on both databases.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from server.db import BigId, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _in(column: str, *values: str) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("first_seen", UTCDateTime(), nullable=False),
        sa.Column("last_seen", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
        sa.CheckConstraint(_in("role", "recorder", "dock", "unknown"), name="ck_devices_role"),
    )
    op.create_table(
        "signing_certificates",
        sa.Column("key_id", sa.String(71), nullable=False),
        sa.Column("device", sa.String(32), nullable=False),
        sa.Column("pem", sa.Text(), nullable=False),
        sa.Column("first_seen", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", name="pk_signing_certificates"),
        sa.ForeignKeyConstraint(["device"], ["devices.id"], name="fk_signing_certificates_device_devices"),
    )
    op.create_index("ix_signing_certificates_device", "signing_certificates", ["device"])
    op.create_table(
        "records",
        sa.Column("id", BigId, nullable=False),
        sa.Column("device", sa.String(32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(71), nullable=False),
        sa.Column("prev", sa.String(71), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("time", sa.String(24), nullable=False),
        sa.Column("key_id", sa.String(71), nullable=False),
        sa.Column("line", sa.LargeBinary(), nullable=False),
        sa.Column("dock", sa.String(32), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_records"),
        sa.ForeignKeyConstraint(["device"], ["devices.id"], name="fk_records_device_devices"),
        sa.UniqueConstraint("device", "seq", name="uq_records_device_seq"),
        sa.CheckConstraint(_in("status", "filed", "pending", "stored"), name="ck_records_status"),
        sa.CheckConstraint("seq >= 0", name="ck_records_seq"),
    )
    op.create_table(
        "files",
        sa.Column("digest", sa.String(71), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("announced_at", UTCDateTime(), nullable=False),
        sa.Column("stored_at", UTCDateTime(), nullable=True),
        sa.Column("blob_key", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("digest", name="pk_files"),
        sa.CheckConstraint(_in("status", "pending", "stored"), name="ck_files_status"),
        sa.CheckConstraint("size >= 0", name="ck_files_size"),
    )
    op.create_table(
        "segments",
        sa.Column("id", BigId, nullable=False),
        sa.Column("record_id", sa.BigInteger(), nullable=False),
        sa.Column("device", sa.String(32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.String(71), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("recording", sa.String(64), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("file_name", sa.String(255), nullable=False),
        sa.Column("start", sa.String(24), nullable=False),
        sa.Column("end", sa.String(24), nullable=False),
        sa.Column("officer", sa.String(64), nullable=False),
        sa.Column("case_number", sa.String(2000), nullable=False),
        sa.Column("subject", sa.String(2000), nullable=False),
        sa.Column("case_set_by", sa.BigInteger(), nullable=True),
        sa.Column("subject_set_by", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_segments"),
        sa.ForeignKeyConstraint(["record_id"], ["records.id"], name="fk_segments_record_id_records"),
        sa.ForeignKeyConstraint(["digest"], ["files.digest"], name="fk_segments_digest_files"),
        sa.UniqueConstraint("record_id", name="uq_segments_record_id"),
    )
    op.create_index("ix_segments_device_seq", "segments", ["device", "seq"], unique=True)
    op.create_index("ix_segments_case_number", "segments", ["case_number"])
    op.create_index("ix_segments_digest", "segments", ["digest"])
    op.create_table(
        "custody_events",
        sa.Column("id", BigId, nullable=False),
        sa.Column("time", UTCDateTime(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("code", sa.String(32), nullable=True),
        sa.Column("device", sa.String(64), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("record_hash", sa.String(71), nullable=True),
        sa.Column("digest", sa.String(71), nullable=True),
        sa.Column("dock", sa.String(64), nullable=True),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_custody_events"),
        sa.CheckConstraint(
            _in(
                "kind",
                "received",
                "verified",
                "filed",
                "duplicate",
                "annotated",
                "gap",
                "rejected",
                "warning",
                "error",
            ),
            name="ck_custody_events_kind",
        ),
    )
    op.create_index("ix_custody_events_time", "custody_events", ["time"])
    op.create_index("ix_custody_events_device", "custody_events", ["device"])
    op.create_index("ix_custody_events_digest", "custody_events", ["digest"])
    # The custody log is append-only: the database itself refuses to change or remove an event.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION custody_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'custody_events is append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER custody_events_append_only BEFORE UPDATE OR DELETE ON custody_events "
            "FOR EACH ROW EXECUTE FUNCTION custody_events_append_only()"
        )
        op.execute(
            "CREATE TRIGGER custody_events_no_truncate BEFORE TRUNCATE ON custody_events "
            "FOR EACH STATEMENT EXECUTE FUNCTION custody_events_append_only()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER custody_events_no_{action.lower()} BEFORE {action} ON custody_events "
                "BEGIN SELECT RAISE(ABORT, 'custody_events is append-only'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER custody_events_no_truncate ON custody_events")
        op.execute("DROP TRIGGER custody_events_append_only ON custody_events")
        op.execute("DROP FUNCTION custody_events_append_only()")
    for table in ("custody_events", "segments", "files", "records", "signing_certificates", "devices"):
        op.drop_table(table)
