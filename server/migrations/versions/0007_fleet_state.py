"""Docks' retained state and the recorder status it carries; recorders issued to officers (配发).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27

Frozen: this file spells out its schema instead of importing the models (see 0001).
``dock_states`` and ``recorder_statuses`` hold what docks last said on ``P/dev/<dock>/state``
(docs/sync-protocol.md §1a); ``recorder_assignments`` which officer a recorder was issued to, and when:
the base of 使用率 per department and officer (docs/web.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from server.db import BigId, UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dock_states",
        sa.Column("dock", sa.String(32), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("conn", UTCDateTime(), nullable=False),
        sa.Column("ended", sa.Boolean(), nullable=False),
        sa.Column("broker", sa.String(128), nullable=True),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("dock", name="pk_dock_states"),
    )
    op.create_table(
        "recorder_statuses",
        sa.Column("recorder", sa.String(32), nullable=False),
        sa.Column("dock", sa.String(32), nullable=False),
        sa.Column("read_at", UTCDateTime(), nullable=False),
        sa.Column("battery_pct", sa.Integer(), nullable=True),
        sa.Column("charging", sa.Boolean(), nullable=True),
        sa.Column("spool_used_bytes", sa.BigInteger(), nullable=True),
        sa.Column("spool_total_bytes", sa.BigInteger(), nullable=True),
        sa.Column("files_waiting", sa.Integer(), nullable=True),
        sa.Column("clock_offset_ms", sa.BigInteger(), nullable=True),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("recorder", name="pk_recorder_statuses"),
    )
    op.create_table(
        "recorder_assignments",
        sa.Column("id", BigId, nullable=False),
        sa.Column("recorder", sa.String(32), nullable=False),
        sa.Column("officer_id", sa.BigInteger(), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("valid_until", sa.Date(), nullable=True),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_recorder_assignments"),
        sa.ForeignKeyConstraint(
            ["officer_id"], ["officers.id"], name="fk_recorder_assignments_officer_id_officers"
        ),
        sa.CheckConstraint(
            "valid_until IS NULL OR valid_until >= valid_from", name=op.f("ck_recorder_assignments_period")
        ),
    )
    op.create_index("ix_recorder_assignments_officer_id", "recorder_assignments", ["officer_id"])
    op.create_index(
        "ix_recorder_assignments_recorder_valid_from", "recorder_assignments", ["recorder", "valid_from"]
    )


def downgrade() -> None:
    op.drop_table("recorder_assignments")
    op.drop_table("recorder_statuses")
    op.drop_table("dock_states")
