"""The custody log as a Merkle log: access event kinds, the sequencer's queue, leaves, subtree hashes,
signed checkpoints (docs/custody-log.md).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

Frozen: this file spells out its schema instead of importing the models (see 0001). SQLite cannot
alter a CHECK constraint, so ``custody_events`` is rebuilt in batch mode there; rebuilding drops its
triggers, which are installed again right after, in the same transaction.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from server.db import BigId, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_KINDS_0001 = (
    "received",
    "verified",
    "filed",
    "duplicate",
    "annotated",
    "gap",
    "rejected",
    "warning",
    "error",
)
_KINDS_0002 = (
    *_KINDS_0001,
    "linked",
    "unlinked",
    "viewed",
    "streamed",
    "downloaded",
    "exported",
    "access-granted",
    "access-revoked",
)
#: 0001 passed full names where the naming convention expected short ones, so its CHECK constraints
#: carry the table name twice; this one is dropped under that name and recreated under the right one.
_KIND_CHECK_0001 = "ck_custody_events_ck_custody_events_kind"
_KIND_CHECK = "ck_custody_events_kind"
#: The log's own tables that, like the events, may only ever grow.
_APPEND_ONLY = ("custody_log_leaves", "custody_log_nodes", "custody_log_checkpoints")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def _events_table(kinds: tuple[str, ...], check: str) -> sa.Table:
    """``custody_events`` as 0001 made it, for SQLite's batch rebuild (not reflected: spelt out)."""
    return sa.Table(
        "custody_events",
        sa.MetaData(),
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
        sa.CheckConstraint(_in("kind", kinds), name=check),
        sa.Index("ix_custody_events_time", "time"),
        sa.Index("ix_custody_events_device", "device"),
        sa.Index("ix_custody_events_digest", "digest"),
    )


def _sqlite_event_triggers() -> None:
    """0001's append-only triggers on custody_events (SQLite drops them with the rebuilt table)."""
    for action in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER custody_events_no_{action.lower()} BEFORE {action} ON custody_events "
            "BEGIN SELECT RAISE(ABORT, 'custody_events is append-only'); END"
        )


def _set_kinds(old: tuple[str, ...], old_check: str, new: tuple[str, ...], new_check: str) -> None:
    """Replace the CHECK on custody_events.kind (SQLite: rebuild the table, then its triggers)."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    with op.batch_alter_table(
        "custody_events", copy_from=_events_table(old, old_check), recreate="always" if sqlite else "never"
    ) as batch:
        # op.f: the names are final (the models' naming convention must not prefix them again).
        batch.drop_constraint(op.f(old_check), type_="check")
        batch.create_check_constraint(op.f(new_check), _in("kind", new))
    if sqlite:
        _sqlite_event_triggers()


def upgrade() -> None:
    _set_kinds(_KINDS_0001, _KIND_CHECK_0001, _KINDS_0002, _KIND_CHECK)
    op.create_table(
        "custody_log_pending",
        sa.Column("event_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_custody_log_pending"),
    )
    op.create_table(
        "custody_log_leaves",
        sa.Column("leaf_index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("leaf_index", name="pk_custody_log_leaves"),
        sa.UniqueConstraint("event_id", name="uq_custody_log_leaves_event_id"),
        sa.CheckConstraint("leaf_index >= 0", name=op.f("ck_custody_log_leaves_leaf_index")),
    )
    op.create_table(
        "custody_log_nodes",
        sa.Column("height", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("first_leaf", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("height", "first_leaf", name="pk_custody_log_nodes"),
        sa.CheckConstraint("height >= 1", name=op.f("ck_custody_log_nodes_height")),
        sa.CheckConstraint("first_leaf >= 0", name=op.f("ck_custody_log_nodes_first_leaf")),
    )
    op.create_table(
        "custody_log_checkpoints",
        sa.Column("tree_size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(), nullable=False),
        sa.Column("time", UTCDateTime(), nullable=False),
        sa.Column("key_id", sa.String(71), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("tree_size", name="pk_custody_log_checkpoints"),
        sa.CheckConstraint("tree_size >= 1", name=op.f("ck_custody_log_checkpoints_tree_size")),
    )
    op.create_table(
        "custody_log_head",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_custody_log_head"),
        sa.CheckConstraint("id = 1", name=op.f("ck_custody_log_head_single_row")),
        sa.CheckConstraint("tree_size >= 0", name=op.f("ck_custody_log_head_tree_size")),
    )
    op.execute("INSERT INTO custody_log_head (id, tree_size) VALUES (1, 0)")
    # Events written before this migration wait for the sequencer like any other.
    op.execute("INSERT INTO custody_log_pending (event_id) SELECT id FROM custody_events ORDER BY id")

    if op.get_bind().dialect.name == "postgresql":
        # Queue every event in the inserting transaction, whoever inserts it: an event can never be
        # committed and yet missed by the sequencer.
        op.execute(
            "CREATE FUNCTION custody_log_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN INSERT INTO custody_log_pending (event_id) VALUES (NEW.id); RETURN NULL; END $$"
        )
        op.execute(
            "CREATE TRIGGER custody_log_enqueue AFTER INSERT ON custody_events "
            "FOR EACH ROW EXECUTE FUNCTION custody_log_enqueue()"
        )
        op.execute(
            "CREATE FUNCTION custody_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$"
        )
        for table in _APPEND_ONLY:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION custody_log_append_only()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION custody_log_append_only()"
            )
    else:
        op.execute(
            "CREATE TRIGGER custody_log_enqueue AFTER INSERT ON custody_events "
            "BEGIN INSERT INTO custody_log_pending (event_id) VALUES (NEW.id); END"
        )
        for table in _APPEND_ONLY:
            for action in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                )


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute("DROP TRIGGER custody_log_enqueue ON custody_events")
        op.execute("DROP FUNCTION custody_log_enqueue()")
    else:
        op.execute("DROP TRIGGER custody_log_enqueue")
    # Dropping a table drops its triggers on both databases.
    for table in ("custody_log_head", *reversed(_APPEND_ONLY), "custody_log_pending"):
        op.drop_table(table)
    if postgresql:
        op.execute("DROP FUNCTION custody_log_append_only()")
    # Fails, as it should, while events of the new kinds exist: the log is never rewritten.
    _set_kinds(_KINDS_0002, _KIND_CHECK, _KINDS_0001, _KIND_CHECK_0001)
