"""Legal holds and purges in the evidence store itself, where the store can enforce them (S3 Object Lock).

The database's holds decide what the sweep keeps (server/retention/holds.py); on a store with Object
Lock the blobs a hold covers also get the store's own legal hold, so that nobody with the bucket's
credentials can delete them either while the hold stands. The local store has no such lock: there the
database's hold is the only one, and these functions do nothing.

- Placing a hold puts a legal hold on every committed blob it covers, *before* the hold is committed:
  if the store refuses, the request fails and nothing is held on paper only.
- Releasing a hold lifts the store's legal hold from its blobs that no other active hold covers, after
  the release is committed: a store that fails then leaves a blob held (the safe way round); the sweep
  reports such a blob as locked and does not lift a store hold itself (one may have been put there by
  someone else, on purpose).
- A case hold covers footage linked to the case later too; the sweep puts the store's hold on every
  past-retention blob a database hold keeps (``SweepPlan.held``) — those whose own retention may lapse.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.errors import BlobNotFoundError
from server.evidence.models import EvidenceFile, Segment
from server.evidence.s3 import S3BlobStore
from server.evidence.store import BlobStore
from server.retention.holds import active_holds, hold_clause
from server.retention.models import LegalHold


def locks_in_store(store: BlobStore) -> bool:
    """True when the store enforces legal holds and retention itself (an S3 bucket with Object Lock)."""
    return isinstance(store, S3BlobStore) and store.object_lock_enabled()


def covered_digests(session: Session, hold: LegalHold) -> set[str]:
    """The stored blobs of the segments ``hold`` covers."""
    q = (
        select(Segment.digest)
        .join(EvidenceFile, EvidenceFile.digest == Segment.digest)
        .where(hold_clause(session, hold), EvidenceFile.status == "stored")
        .distinct()
    )
    return set(session.scalars(q))


def set_store_holds(store: BlobStore, digests: Iterable[str], *, on: bool) -> list[str]:
    """Put (or lift) the store's legal hold on each committed blob; returns those changed. Blobs the
    store does not hold are skipped; any other refusal raises StoreError."""
    if not locks_in_store(store):
        return []
    assert isinstance(store, S3BlobStore)
    done = []
    for digest in sorted(digests):
        try:
            if store.lock_state(digest).legal_hold == on:
                continue
            store.set_legal_hold(digest, on)
        except BlobNotFoundError:
            continue
        done.append(digest)
    return done


def lift_released(session: Session, store: BlobStore, hold: LegalHold) -> list[str]:
    """After ``hold`` is released: lift the store's hold from its blobs no other active hold covers."""
    if not locks_in_store(store):
        return []
    mine = covered_digests(session, hold)
    for other in active_holds(session):
        if other.id != hold.id:
            mine -= covered_digests(session, other)
    return set_store_holds(store, mine, on=False)


def store_lock(store: BlobStore, digest: str) -> str | None:
    """Why the store would refuse to delete the blob now (its retention date, or its legal hold), or None.

    Compared with the real clock, not the sweep's ``now``: the store judges by its own time.
    """
    if not isinstance(store, S3BlobStore):
        return None
    try:
        state = store.lock_state(digest)
    except BlobNotFoundError:
        return None
    if state.legal_hold:
        return "a legal hold in the store"
    if state.retain_until is not None and state.retain_until > datetime.now(UTC):
        return f"store retention until {state.retain_until.isoformat()}"
    return None
