"""The sequencer: gives committed events their leaf index, stores the new hashes, signs a checkpoint.

Writers never touch the tree: ``log_event`` only inserts the event, and a trigger queues its id in
``custody_log_pending`` in the same transaction. Ids are not committed in id order on PostgreSQL (two
workers' transactions overlap), so "leaf index = id" would reorder the log after the fact. Instead the
sequencer, holding the one log-head row (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's single write
lock, taken by a first write), appends the queued — hence committed — events after the current tree
size, in id order within the batch. Leaves, subtree hashes, the new head and the signed checkpoint
commit together, or not at all: a checkpoint always describes exactly the leaves stored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, exists, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from custody.merkle import node_hash
from custody.signing import key_id
from server.custody_log.errors import LogDamagedError
from server.custody_log.format import event_json, event_leaf_hash, log_time, signed_checkpoint_bytes
from server.custody_log.models import CustodyEvent, LogCheckpoint, LogHead, LogLeaf, LogNode, PendingEvent
from server.custody_log.tree import fetch_nodes, perfect_parts
from server.db import transaction, utc_now

log = logging.getLogger(__name__)

_EVENT_COLUMNS = (
    "id",
    "time",
    "kind",
    "code",
    "device",
    "seq",
    "record_hash",
    "digest",
    "dock",
    "actor",
    "detail",
)
#: Events sequenced per transaction: bounds a transaction's size; each batch gets its own checkpoint.
BATCH = 5000


@dataclass(frozen=True)
class CheckpointSigner:
    """The server-signing key (the one acks are signed with) and its certificate."""

    private_key: Ed25519PrivateKey
    certificate: x509.Certificate

    @property
    def key_id(self) -> str:
        """sha256 of the certificate's DER."""
        return key_id(self.certificate)

    def sign(self, message: bytes) -> bytes:
        """Ed25519 over ``message`` (already prefixed with the checkpoint context)."""
        return self.private_key.sign(message)

    @classmethod
    def from_ca_dir(cls, ca_dir: Path) -> CheckpointSigner:
        """``server-signing.key``/``.pem`` from the provisioning CA directory; SettingsError if unusable."""
        from server.ingest.acks import AckSigner  # one loader for the one server-signing key

        ack = AckSigner.from_ca_dir(ca_dir)
        return cls(private_key=ack.private_key, certificate=ack.certificate)


def has_pending(session: Session) -> bool:
    """Whether any committed event waits for a leaf index (cheap; takes no lock)."""
    return bool(session.scalar(select(exists().where(PendingEvent.event_id.is_not(None)))))


def _lock_head(session: Session) -> int:
    """Take the log's lock for this transaction and return the tree size."""
    if session.get_bind().dialect.name == "sqlite":
        # A write as the first statement takes SQLite's one write lock (waiting up to busy_timeout)
        # before this transaction reads anything, so no other sequencer can interleave.
        session.execute(update(LogHead).where(LogHead.id == 1).values(tree_size=LogHead.tree_size))
    size = session.scalar(select(LogHead.tree_size).where(LogHead.id == 1).with_for_update())
    if size is None:
        raise LogDamagedError("the custody log has no head row: run `fieldproof server migrate`")
    return size


def sequence_batch(*, session: Session, signer: CheckpointSigner, limit: int = BATCH) -> LogCheckpoint | None:
    """Sequence up to ``limit`` queued events in the session's transaction; the new checkpoint, if any."""
    size = _lock_head(session)
    # Queued rows are visible only once their event committed; under the lock no one else takes them.
    ids = list(session.scalars(select(PendingEvent.event_id).order_by(PendingEvent.event_id).limit(limit)))
    if not ids:
        return None
    # The right edge of the tree: the perfect subtrees for the bits of ``size``, largest first.
    peaks_keys = perfect_parts(0, size)
    stored = fetch_nodes(session, peaks_keys)
    peaks = [(height, stored[(height, lo)]) for height, lo in peaks_keys]
    # Plain rows, streamed: a rejected record's event keeps its whole signed line (up to 256 KiB), so a
    # batch of them must not sit in memory at once — only the 32-byte leaf hashes do.
    columns = [getattr(CustodyEvent, name) for name in _EVENT_COLUMNS]
    events = session.execute(
        select(*columns)
        .where(CustodyEvent.id.in_(ids))
        .order_by(CustodyEvent.id)
        .execution_options(yield_per=200)
    )

    leaves, nodes = [], []
    for index, event in enumerate(events, start=size):
        h = event_leaf_hash(event_json(event))
        leaves.append({"leaf_index": index, "event_id": event.id, "leaf_hash": h})
        # Like a binary counter: a completed pair completes its parent, and so on upwards.
        height, node = 0, h
        while peaks and peaks[-1][0] == height:
            node = node_hash(peaks.pop()[1], node)
            height += 1
            nodes.append({"height": height, "first_leaf": index + 1 - (1 << height), "hash": node})
        peaks.append((height, node))
    if len(leaves) != len(ids):
        raise LogDamagedError("queued custody events are missing from custody_events: restore from a backup")
    new_size = size + len(leaves)
    root = peaks[-1][1]
    for _, peak in reversed(peaks[:-1]):
        root = node_hash(peak, root)

    session.execute(insert(LogLeaf), leaves)
    if nodes:
        session.execute(insert(LogNode), nodes)
    session.execute(delete(PendingEvent).where(PendingEvent.event_id.in_(ids)))
    session.execute(update(LogHead).where(LogHead.id == 1).values(tree_size=new_size))
    now = utc_now()
    checkpoint = LogCheckpoint(
        tree_size=new_size,
        root_hash=root,
        time=now,
        key_id=signer.key_id,
        signature=signer.sign(
            signed_checkpoint_bytes(
                tree_size=new_size, root_hash=root, time=log_time(now), key_id=signer.key_id
            )
        ),
    )
    session.add(checkpoint)
    session.flush()
    return checkpoint


def sequence_pending(
    *, factory: sessionmaker[Session], signer: CheckpointSigner, limit: int = BATCH
) -> LogCheckpoint | None:
    """Sequence every event committed so far, a batch per transaction; the last checkpoint made, if any.

    Safe to call from any number of processes at once (they take turns on the head row). Call it after
    committing events (ingest), before answering proofs (API), or periodically (``server log-sequence``).
    """
    last: LogCheckpoint | None = None
    while True:
        with factory() as s:
            if not has_pending(s):
                return last
        with transaction(factory) as s:
            made = sequence_batch(session=s, signer=signer, limit=limit)
        if made is None:
            return last
        log.debug("custody log sequenced to %d leaves", made.tree_size)
        last = made
