"""Custody events and the Merkle log over them.

``custody_events`` is append-only: migration 0001 installs triggers that refuse UPDATE and DELETE.
Migration 0002 adds the log (docs/custody-log.md): every inserted event is queued in
``custody_log_pending`` by an INSERT trigger, in the writer's own transaction; the sequencer gives
queued events contiguous leaf indexes (``custody_log_leaves``), stores the hashes of the perfect
subtrees they complete (``custody_log_nodes``) and signs a checkpoint (``custody_log_checkpoints``).
Leaves, nodes and checkpoints are append-only like the events; the one-row ``custody_log_head`` is the
sequencer's lock and the tree size.

``event_id`` columns carry no foreign key: events can never be deleted, queue rows come from the
trigger's NEW.id and leaves from rows the sequencer has just read; and on PostgreSQL a foreign key
would answer ``TRUNCATE custody_events`` with a foreign-key error before the append-only trigger speaks.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, LargeBinary, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, UTCDateTime, one_of

EVENT_KINDS = (
    # What ingest writes.
    "received",  # a record arrived and parsed
    "verified",  # signature, certificate, revocation and chain continuity checked
    "filed",  # committed: a record without file, or a record whose file is now durable
    "duplicate",  # the very same record again: nothing changed
    "annotated",  # a held segment's case/subject set by an annotation record
    "gap",  # records missing before this one
    "rejected",  # refused, with the protocol's reason code
    "warning",  # accepted, but a custodian should read this
    "error",  # the server failed handling a message (nothing filed)
    # What people do with evidence (the case file and access issues write these).
    "linked",  # a segment or file linked to a case file
    "unlinked",  # such a link withdrawn (the link event stays in the log)
    "viewed",  # metadata or a still shown to someone
    "streamed",  # played back
    "downloaded",  # a copy of the bytes left the server
    "exported",  # included in an export bundle
    "access-granted",  # someone given access to a case or an item
    "access-revoked",  # such access withdrawn
)


class CustodyEvent(Base):
    """One event; ``detail`` is JSON text."""

    __tablename__ = "custody_events"
    __table_args__ = (CheckConstraint(one_of("kind", EVENT_KINDS), name="kind"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    code: Mapped[str | None] = mapped_column(String(32))  # rejection code (docs/sync-protocol.md §3)
    device: Mapped[str | None] = mapped_column(String(64), index=True)
    seq: Mapped[int | None] = mapped_column(BigInteger)
    record_hash: Mapped[str | None] = mapped_column(String(71))
    digest: Mapped[str | None] = mapped_column(String(71), index=True)
    dock: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text)


class PendingEvent(Base):
    """An event committed but not yet given a leaf index (filled by a trigger, emptied by the sequencer)."""

    __tablename__ = "custody_log_pending"

    event_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)


class LogLeaf(Base):
    """Leaf ``leaf_index`` of the log: which event, and SHA-256(0x00 ‖ canonical event). Append-only."""

    __tablename__ = "custody_log_leaves"
    __table_args__ = (CheckConstraint("leaf_index >= 0", name="leaf_index"),)

    leaf_index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    event_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary)


class LogNode(Base):
    """The hash of the perfect subtree of 2**height leaves from ``first_leaf`` (height ≥ 1). Append-only."""

    __tablename__ = "custody_log_nodes"
    __table_args__ = (
        CheckConstraint("height >= 1", name="height"),
        CheckConstraint("first_leaf >= 0", name="first_leaf"),
    )

    height: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    first_leaf: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary)


class LogCheckpoint(Base):
    """A signed tree head: the log's size and root at a time, signed with the server key. Append-only."""

    __tablename__ = "custody_log_checkpoints"
    __table_args__ = (CheckConstraint("tree_size >= 1", name="tree_size"),)

    tree_size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary)
    time: Mapped[datetime] = mapped_column(UTCDateTime())
    key_id: Mapped[str] = mapped_column(String(71))
    signature: Mapped[bytes] = mapped_column(LargeBinary)


class LogHead(Base):
    """The one row the sequencer locks (``SELECT … FOR UPDATE``); ``tree_size`` = leaves so far."""

    __tablename__ = "custody_log_head"
    __table_args__ = (
        CheckConstraint("id = 1", name="single_row"),
        CheckConstraint("tree_size >= 0", name="tree_size"),
    )

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    tree_size: Mapped[int] = mapped_column(BigInteger)
