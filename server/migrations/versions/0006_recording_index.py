"""Segments by recording: an index on (device, recording).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27

A recording is played and shown as one sequence (``footage.of_recording``), and a handler's scope
reaches a segment of no case through its recording's other segments (``footage.visible``): both look
segments up by (device, recording), which was a scan of the device's footage without this index.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_segments_device_recording", "segments", ["device", "recording"])


def downgrade() -> None:
    op.drop_index("ix_segments_device_recording", "segments")
