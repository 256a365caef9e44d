"""The retention sweep: which blobs are past retention, and purging them (``fieldproof server retention
sweep [--dry-run]``).

A blob is purged only when **every** segment naming it is of class ``non-case`` (its current case —
annotations over the captured number, server/cases/footage.py — is empty), was captured at least the
retention period ago, and is covered by no active legal hold; and no text record names it. Case
evidence is never purged by the sweep.

Order of a purge, per blob, defending against a crash or a concurrent link or hold:

1. in one transaction: decide again for this blob alone (a link or a hold made since the plan wins),
   then write its ``retention_purges`` row and one custody event per segment — and commit;
2. then remove the blob from the store: the local store unlinks it and syncs its directory; the S3 store
   deletes every version of its key (``S3BlobStore.purge``).

A crash between 1 and 2 leaves a blob marked purged but still in the store; the next sweep finishes it
(never the other way round: bytes gone without the record saying so).

On a store with Object Lock (server/retention/locks.py), a blob is purged only once the store itself
would let it go: before step 1 the sweep asks the store for the blob's lock, and a blob still under
the store's retention (which runs from *commit*, not capture) or legal hold is left alone — not marked,
reported in ``SweepResult.locked`` — for a later sweep. Past-retention blobs that a database hold keeps
get the store's legal hold too. If the store still refuses at step 2 (a lock made in between), the blob
stays marked and the next sweep's ``finish_purges`` retries. The ``records``, ``files`` and
``segments`` rows and every custody event stay: the capture record is evidence that the footage existed.

The custody event is kind ``warning`` with ``{"action": "retention-delete", …}``: no kind for it exists
(adding one is a migration of the custody log's CHECK, see docs/retention.md).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from custody.timefmt import parse_timestamp, utc_timestamp
from fieldproof.durable import fsync_dir
from server.cases.footage import current_case
from server.cases.models import TextRecord
from server.custody_log.service import log_event
from server.db import transaction, utc_now
from server.errors import StoreError
from server.evidence.models import EvidenceFile, Segment
from server.evidence.s3 import S3BlobStore, S3LockedError
from server.evidence.store import BlobStore, LocalBlobStore
from server.ingest.models import Record
from server.retention.holds import active_holds, holds_covering
from server.retention.locks import set_store_holds, store_lock
from server.retention.models import RetentionPurge
from server.retention.policy import MIN_NON_CASE_MONTHS, NON_CASE, add_months

ACTOR = "server:retention-sweep"


@dataclass(frozen=True)
class DueSegment:
    """A segment whose blob is due: what its custody event names."""

    segment_id: int
    device: str
    seq: int
    record_hash: str
    start: str


@dataclass(frozen=True)
class DueBlob:
    """A blob past retention, linked to no case and held by nothing."""

    digest: str
    due_at: datetime  # the latest due time of its segments
    segments: tuple[DueSegment, ...]


@dataclass
class SweepPlan:
    """What a sweep found: blobs due, and past-retention blobs it keeps, with why."""

    now: datetime
    months: int
    due: list[DueBlob] = field(default_factory=list)
    held: dict[str, list[int]] = field(default_factory=dict)  # digest → hold ids
    shared: list[str] = field(default_factory=list)  # also named by kept footage or a text record


@dataclass
class SweepResult:
    """A sweep's plan and what it did."""

    plan: SweepPlan
    dry_run: bool
    purged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # no longer due when purged (linked or held meanwhile)
    finished: list[str] = field(default_factory=list)  # purged earlier, bytes removed now
    locked: dict[str, str] = field(default_factory=dict)  # digest → why the store refuses it for now
    store_held: list[str] = field(default_factory=list)  # held by a database hold: store's hold put now


def _check_months(months: int) -> None:
    if months < MIN_NON_CASE_MONTHS:
        raise StoreError(
            f"non-case footage is kept at least {MIN_NON_CASE_MONTHS} months; {months} is too short"
        )


def plan_sweep(
    session: Session,
    *,
    now: datetime | None = None,
    months: int = MIN_NON_CASE_MONTHS,
    digest: str | None = None,
) -> SweepPlan:
    """What is due at ``now`` (optionally for one blob only); changes nothing."""
    _check_months(months)
    now = now or utc_now()
    plan = SweepPlan(now=now, months=months)
    cutoff = utc_timestamp(add_months(now, -months))
    purged = select(RetentionPurge.digest)
    q = (
        select(Segment.id, Segment.device, Segment.seq, Record.hash, Segment.start, Segment.digest)
        .join(Record, Record.id == Segment.record_id)
        .join(EvidenceFile, EvidenceFile.digest == Segment.digest)
        .where(
            Segment.start <= cutoff,
            current_case() == "",
            EvidenceFile.status == "stored",
            Segment.digest.not_in(purged),
        )
        .order_by(Segment.digest, Segment.id)
    )
    if digest is not None:
        q = q.where(Segment.digest == digest)
    by_digest: dict[str, list[DueSegment]] = defaultdict(list)
    for sid, device, seq, record_hash, start, dig in session.execute(q):
        if add_months(parse_timestamp(start), months) <= now:  # the cutoff text is a first cut
            by_digest[dig].append(DueSegment(sid, device, seq, record_hash, start))
    if not by_digest:
        return plan
    digests = sorted(by_digest)
    # Content addressing: one blob may be named by several segments and by text records. It goes only
    # when every segment naming it is due, and no text record names it.
    naming: dict[str, int] = defaultdict(int)
    in_records: set[str] = set()
    for start in range(0, len(digests), 500):
        chunk = digests[start : start + 500]
        for (dig,) in session.execute(select(Segment.digest).where(Segment.digest.in_(chunk))):
            naming[dig] += 1
        in_records.update(session.scalars(select(TextRecord.digest).where(TextRecord.digest.in_(chunk))))
    covered = holds_covering(
        session, [s.segment_id for segs in by_digest.values() for s in segs], active_holds(session)
    )
    for dig in digests:
        segs = by_digest[dig]
        if naming[dig] != len(segs) or dig in in_records:
            plan.shared.append(dig)
            continue
        holds = sorted({h for s in segs for h in covered.get(s.segment_id, [])})
        if holds:
            plan.held[dig] = holds
            continue
        due_at = max(add_months(parse_timestamp(s.start), months) for s in segs)
        plan.due.append(DueBlob(dig, due_at, tuple(segs)))
    return plan


def purge_blob(store: BlobStore, digest: str) -> bool:
    """Remove a committed blob from the store (True if it was there). The store's interface has no
    delete on purpose (write-once for ingest); retention is the one caller. S3LockedError if an S3
    store refuses (retention or legal hold in force)."""
    if isinstance(store, S3BlobStore):
        return store.purge(digest)
    if not isinstance(store, LocalBlobStore):
        raise StoreError(f"retention purge is not implemented for {type(store).__name__}")
    path = store.root / store.key(digest)
    try:
        os.unlink(path)  # the blob is 0444, its directory ours: unlink needs only the directory
    except FileNotFoundError:
        return False
    fsync_dir(path.parent)  # the removal is durable before the sweep reports it
    return True


def sweep(
    *,
    factory: sessionmaker[Session],
    store: BlobStore,
    now: datetime | None = None,
    months: int = MIN_NON_CASE_MONTHS,
    dry_run: bool = False,
    actor: str = ACTOR,
) -> SweepResult:
    """Plan, then (unless ``dry_run``) purge each due blob as the module docstring says."""
    with factory() as session:
        plan = plan_sweep(session, now=now, months=months)
    result = SweepResult(plan=plan, dry_run=dry_run)
    if dry_run:
        return result
    result.store_held = set_store_holds(store, plan.held, on=True)
    for blob in plan.due:
        why = store_lock(store, blob.digest)
        if why is not None:
            result.locked[blob.digest] = why
            continue
        with transaction(factory) as session:
            again = plan_sweep(session, now=plan.now, months=months, digest=blob.digest)
            if [b.digest for b in again.due] != [blob.digest]:
                result.skipped.append(blob.digest)
                continue
            current = again.due[0]
            key = store.key(blob.digest)
            when = utc_now()
            session.add(
                RetentionPurge(
                    digest=blob.digest,
                    purged_at=when,
                    actor=actor,
                    retention_class=NON_CASE.name,
                    due_at=current.due_at,
                )
            )
            for seg in current.segments:
                log_event(
                    session=session,
                    kind="warning",
                    actor=actor,
                    device=seg.device,
                    seq=seg.seq,
                    record_hash=seg.record_hash,
                    digest=blob.digest,
                    time=when,
                    detail={
                        "action": "retention-delete",
                        "retention_class": NON_CASE.name,
                        "months": months,
                        "captured": seg.start,
                        "due_at": utc_timestamp(current.due_at),
                        "blob_key": key,
                        "segments": len(current.segments),
                    },
                )
        try:
            purge_blob(store, blob.digest)
        except S3LockedError as exc:  # locked since we asked: marked, a later sweep finishes it
            result.locked[blob.digest] = str(exc)
            continue
        result.purged.append(blob.digest)
    result.finished = finish_purges(factory=factory, store=store, locked=result.locked)
    return result


def finish_purges(*, factory: sessionmaker[Session], store: BlobStore, locked: dict[str, str]) -> list[str]:
    """Remove the bytes of blobs marked purged that are still in the store (a crash after the commit,
    or a store that refused); a blob the store still refuses is noted in ``locked`` and left."""
    with factory() as session:
        marked = list(session.scalars(select(RetentionPurge.digest).order_by(RetentionPurge.digest)))
    done = []
    for d in marked:
        if d in locked:
            continue
        try:
            if store.exists(d) and purge_blob(store, d):
                done.append(d)
        except S3LockedError as exc:
            locked[d] = str(exc)
    return done
