"""Writing custody events, and reading the log's checkpoints and proofs.

Only appends: there is no function that changes or removes an event. Sequencing (leaf indexes and
checkpoints) is ``server.custody_log.sequencer``; this module answers from what it stored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from server.custody_log.errors import NotInLogError, NotSequencedError
from server.custody_log.format import Checkpoint, event_json, log_time
from server.custody_log.models import CustodyEvent, LogCheckpoint, LogHead, LogLeaf
from server.custody_log.tree import StoredTree
from server.db import utc_now

#: Detail texts are kept whole up to this size; a payload's excerpt is much shorter (see ingest).
MAX_DETAIL = 512 * 1024


#: One statement, its values given as parameters: compiled and cached once.
_INSERT_EVENT = insert(CustodyEvent.__table__).returning(CustodyEvent.__table__.c.id)


def _clip(text: str | None, n: int) -> str | None:
    return None if text is None else text[:n]


def log_event(
    *,
    session: Session,
    kind: str,
    actor: str,
    detail: dict[str, Any],
    code: str | None = None,
    device: str | None = None,
    seq: int | None = None,
    record_hash: str | None = None,
    digest: str | None = None,
    dock: str | None = None,
    time: datetime | None = None,
) -> CustodyEvent:
    """Append one custody event to the session's transaction (committed with it, queued for the log).

    A plain INSERT … RETURNING id at once, in call order (the ids are the events' order), instead of an
    ORM object flushed later: ingest writes two to four events per record, and the unit of work's
    flush before each record's savepoint cost more than the rows. The returned event is not attached
    to the session; it carries the id and the values written."""
    text = json.dumps(detail, ensure_ascii=False, sort_keys=True, default=str)
    if len(text) > MAX_DETAIL:
        text = json.dumps({"truncated": True, "head": text[:MAX_DETAIL]}, ensure_ascii=False)
    values = {
        "time": time or utc_now(),
        "kind": kind,
        "code": code,
        # Rejected messages may name anything: clip what does not fit instead of failing to log it.
        "device": _clip(device, 64),
        "seq": seq,
        "record_hash": _clip(record_hash, 71),
        "digest": _clip(digest, 71),
        "dock": _clip(dock, 64),
        "actor": actor[:64],
        "detail": text,
    }
    event_id = session.execute(_INSERT_EVENT, values).scalar_one()
    return CustodyEvent(id=event_id, **values)


def events_for(
    *, session: Session, device: str | None = None, kind: str | None = None, code: str | None = None
) -> list[CustodyEvent]:
    """Events in the order they were written, filtered by device, kind and code."""
    q = select(CustodyEvent).order_by(CustodyEvent.id)
    if device is not None:
        q = q.where(CustodyEvent.device == device)
    if kind is not None:
        q = q.where(CustodyEvent.kind == kind)
    if code is not None:
        q = q.where(CustodyEvent.code == code)
    return list(session.scalars(q))


# -- reading the log -----------------------------------------------------------------------------


@dataclass(frozen=True)
class EventProof:
    """An event, its leaf index, and the inclusion proof against a signed checkpoint."""

    event: dict[str, Any]
    leaf_index: int
    leaf_hash: bytes  # as stored when sequenced; a verifier recomputes it from ``event``
    proof: list[bytes]
    checkpoint: Checkpoint

    def to_json(self) -> dict[str, Any]:
        """The API's form (``server.custody_log.verify.verify_event_answer`` checks it)."""
        return {
            "event": self.event,
            "leaf_index": self.leaf_index,
            "leaf_hash": self.leaf_hash.hex(),
            "inclusion_proof": [h.hex() for h in self.proof],
            "checkpoint": self.checkpoint.to_json(),
        }


@dataclass(frozen=True)
class ConsistencyProof:
    """Two signed checkpoints and the proof that the first log is a prefix of the second."""

    first: Checkpoint
    second: Checkpoint
    proof: list[bytes]

    def to_json(self) -> dict[str, Any]:
        """The API's form (``server.custody_log.verify.verify_consistency_answer`` checks it)."""
        return {
            "first": self.first.to_json(),
            "second": self.second.to_json(),
            "consistency_proof": [h.hex() for h in self.proof],
        }


def _checkpoint(row: LogCheckpoint) -> Checkpoint:
    return Checkpoint(
        tree_size=row.tree_size,
        root_hash=bytes(row.root_hash),
        time=log_time(row.time),
        key_id=row.key_id,
        signature=bytes(row.signature),
    )


def _tree_size(session: Session) -> int:
    return session.scalar(select(LogHead.tree_size).where(LogHead.id == 1)) or 0


def latest_checkpoint(*, session: Session) -> Checkpoint:
    """The newest signed checkpoint; NotInLogError while the log is empty."""
    row = session.scalar(select(LogCheckpoint).order_by(LogCheckpoint.tree_size.desc()).limit(1))
    if row is None:
        raise NotInLogError("the custody log has no checkpoint yet: no event has been sequenced")
    return _checkpoint(row)


def checkpoint_at(*, session: Session, tree_size: int) -> Checkpoint:
    """The signed checkpoint of exactly ``tree_size`` leaves; NotInLogError if none was made."""
    row = session.get(LogCheckpoint, tree_size)
    if row is None:
        raise NotInLogError(f"the custody log has no checkpoint of size {tree_size}")
    return _checkpoint(row)


def _pick(session: Session, tree_size: int | None) -> Checkpoint:
    return (
        latest_checkpoint(session=session)
        if tree_size is None
        else checkpoint_at(session=session, tree_size=tree_size)
    )


def _proof_for(session: Session, leaf: LogLeaf, tree_size: int | None) -> EventProof:
    checkpoint = _pick(session, tree_size)
    if leaf.leaf_index >= checkpoint.tree_size:
        raise NotInLogError(
            f"event {leaf.event_id} is leaf {leaf.leaf_index}, after the checkpoint of size"
            f" {checkpoint.tree_size}: ask for a later checkpoint"
        )
    event = session.get(CustodyEvent, leaf.event_id)
    assert event is not None  # a foreign key
    tree = StoredTree(session, _tree_size(session))
    return EventProof(
        event=event_json(event),
        leaf_index=leaf.leaf_index,
        leaf_hash=bytes(leaf.leaf_hash),
        proof=tree.inclusion_proof(leaf.leaf_index, checkpoint.tree_size),
        checkpoint=checkpoint,
    )


def event_proof(*, session: Session, event_id: int, tree_size: int | None = None) -> EventProof:
    """Event ``event_id`` with its inclusion proof against the checkpoint of ``tree_size`` (or the latest)."""
    leaf = session.scalar(select(LogLeaf).where(LogLeaf.event_id == event_id))
    if leaf is None:
        if session.get(CustodyEvent, event_id) is None:
            raise NotInLogError(f"there is no custody event {event_id}")
        raise NotSequencedError(f"custody event {event_id} is not in the log yet: ask again shortly")
    return _proof_for(session, leaf, tree_size)


def leaf_proof(*, session: Session, leaf_index: int, tree_size: int | None = None) -> EventProof:
    """The event at leaf ``leaf_index``, with its inclusion proof (for walking the log in order)."""
    leaf = session.get(LogLeaf, leaf_index)
    if leaf is None:
        raise NotInLogError(f"the custody log has no leaf {leaf_index}")
    return _proof_for(session, leaf, tree_size)


def consistency(*, session: Session, first: int, second: int) -> ConsistencyProof:
    """The proof that the checkpoint of ``first`` leaves is a prefix of the one of ``second``."""
    if not 0 < first <= second:
        raise ValueError(f"a consistency proof needs 0 < first <= second, not {first} and {second}")
    one, two = (
        checkpoint_at(session=session, tree_size=first),
        checkpoint_at(session=session, tree_size=second),
    )
    tree = StoredTree(session, _tree_size(session))
    return ConsistencyProof(first=one, second=two, proof=tree.consistency_proof(first, second))
