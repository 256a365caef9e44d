"""Judging a campaign's end state: the server's database and store, the dock's outbox, the recorder's spool."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import select

from custody.spool import JOURNAL
from edge.sync.outbox import DONE, Outbox
from server.custody_log.models import CustodyEvent
from server.db import make_engine, session_factory
from server.evidence.models import EvidenceFile, Segment
from server.evidence.store import BlobStore
from server.ingest.models import Record
from tests.edge.dock.conftest import Fleet
from tests.edge.dock.helpers import journal_facts, sound

MIB = 1024 * 1024


def outbox_state(outbox: Path) -> tuple[int, tuple[int, ...]] | None:
    """From the dock's outbox (read-only): the file bytes the server has acknowledged, and a fingerprint of
    progress — it changes when a record is taken, bytes are acknowledged, a record gets its last word or a
    file is freed (not on a mere publication: a dock resending in a loop makes no progress); None when the
    file cannot be read right now."""
    if not outbox.exists():
        return 0, ()
    try:
        with contextlib.closing(sqlite3.connect(outbox.as_uri() + "?mode=ro", uri=True, timeout=5)) as db:
            row = db.execute(
                "SELECT coalesce(sum(CASE WHEN size IS NULL THEN 0 WHEN state IN ('stored', 'duplicate')"
                " THEN size ELSE acked_offset END), 0), count(*),"
                " coalesce(sum(state IN ('stored', 'duplicate', 'rejected')), 0), coalesce(sum(released), 0)"
                " FROM records"
            ).fetchone()
    except sqlite3.Error:
        return None
    return int(row[0]), tuple(int(v) for v in row)


def open_rows_text(outbox: Path, limit: int = 20) -> str:
    """The outbox's rows still waiting for the server, for a stall report."""
    with contextlib.closing(sqlite3.connect(outbox.as_uri() + "?mode=ro", uri=True, timeout=5)) as db:
        rows = db.execute(
            "SELECT seq, kind, state, attempts, acked_offset, size FROM records"
            " WHERE state IN ('queued', 'sent', 'pending') ORDER BY seq LIMIT ?",
            (limit,),
        ).fetchall()
    return "\n".join(
        f"  seq {q} {k} {st}: {a} publications, {off}/{size} bytes acknowledged"
        for q, k, st, a, off, size in rows
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 * MIB):
            h.update(block)
    return "sha256:" + h.hexdigest()


def _sha256_from(blobs: BlobStore, digest: str) -> tuple[str, int]:
    """SHA-256 and length of what ``blobs`` holds for ``digest`` ("missing: …" if it cannot be read)."""
    h, n = hashlib.sha256(), 0
    try:
        with blobs.open(digest) as f:
            while block := f.read(4 * MIB):
                h.update(block)
                n += len(block)
    except Exception as exc:  # any store error is a finding, reported with its text
        return f"missing: {exc}", 0
    return "sha256:" + h.hexdigest(), n


def check_exactly_once(
    *,
    fleet: Fleet,
    device: str,
    spool: Path,
    outbox: Path,
    db: Path | None,
    store: Path,
    staging: Path,
    database_url: str | None = None,
    own_events_only: bool = False,
    blobs: BlobStore | None = None,
) -> dict[str, Any]:
    """Judge the end state; returns figures and ``problems`` (empty: every record exactly once, all sound).

    Server: every seq of the recorder's chain is one row with the chain's hash and line byte for byte;
    segments ``stored`` with one ``segments`` row each; every file ``stored`` with its blob re-hashed to its
    digest; exactly one ``filed`` event per record; no rejection, no error event; nothing left in staging.
    Dock: every outbox row final (stored/duplicate), with the chain's hash, released; no forks; sound file.
    Recorder: the spool holds exactly the files not freed by a release record (and that is every file not
    acknowledged-and-released in the outbox); its chain verifies with the fleet's root.

    ``database_url`` (any SQLAlchemy URL, e.g. PostgreSQL) replaces the SQLite file ``db``. With
    ``own_events_only`` (several recorders on one server) only this recorder's custody events, and those
    naming no device, are judged — the ``filed`` count is always per this recorder. ``blobs``: read the
    blobs back through this store (the S3 one) instead of from ``store``'s directory; its staging area is
    then the caller's to check.
    """
    problems: list[str] = []
    facts = journal_facts(spool)
    lines = (spool / JOURNAL).read_bytes().splitlines(True)
    chain = {f.seq: f for f in facts}
    if [f.seq for f in facts] != list(range(len(facts))) or not all(f.ok for f in facts):
        problems.append("the recorder's journal is not a clean run of seqs 0..n-1")
    hashes = {f.hash for f in facts}
    file_facts = {f.seq: f for f in facts if f.file}

    engine = make_engine(database_url or f"sqlite:///{db}")
    try:
        with session_factory(engine)() as s:
            recs = s.execute(
                select(Record.seq, Record.hash, Record.line, Record.status).where(Record.device == device)
            ).all()
            segs = s.execute(select(Segment.seq, Segment.digest).where(Segment.device == device)).all()
            files = {f.digest: f for f in s.scalars(select(EvidenceFile))}
            events = s.execute(
                select(
                    CustodyEvent.kind,
                    CustodyEvent.seq,
                    CustodyEvent.code,
                    CustodyEvent.record_hash,
                    CustodyEvent.detail,
                    CustodyEvent.device,
                )
            ).all()
    finally:
        engine.dispose()
    per_seq = Counter(r.seq for r in recs)
    if twice := sorted(q for q, n in per_seq.items() if n > 1):
        problems.append(f"records held more than once: seqs {twice}")
    if missing := sorted(set(chain) - set(per_seq)):
        problems.append(f"records missing on the server: seqs {missing}")
    if extra := sorted(set(per_seq) - set(chain)):
        problems.append(f"records on the server not in the chain: seqs {extra}")
    for r in recs:
        f = chain.get(r.seq)
        if f is None:
            continue
        if r.hash != f.hash or r.seq >= len(lines) or bytes(r.line) != lines[r.seq]:
            problems.append(f"seq {r.seq}: the server's record differs from the chain's")
        want = "stored" if f.file else "filed"
        if r.status != want:
            problems.append(f"seq {r.seq} ({f.kind}) is {r.status} on the server, not {want}")
    seg_count = Counter(r.seq for r in segs)
    if seg_count != Counter(file_facts.keys()):
        problems.append(
            f"segments rows {sorted(seg_count.elements())} ≠ segment records {sorted(file_facts)}"
        )
    for r in segs:
        if r.seq in file_facts and r.digest != file_facts[r.seq].digest:
            problems.append(f"segment {r.seq} names {r.digest}, its record {file_facts[r.seq].digest}")
    rehashed = 0
    for f in file_facts.values():
        ef = files.get(f.digest or "")
        if ef is None or ef.status != "stored" or ef.size != f.size or not ef.blob_key:
            problems.append(f"seq {f.seq}: file {f.digest} not stored as signed on the server")
            continue
        if blobs is not None:
            got, n = _sha256_from(blobs, f.digest)
            rehashed += n
            if got != f.digest:
                problems.append(f"seq {f.seq}: the store's blob {f.digest} hashes to {got}")
            continue
        blob = store / ef.blob_key
        got = _sha256(blob) if blob.is_file() else "missing"
        rehashed += blob.stat().st_size if blob.is_file() else 0
        if got != f.digest:
            problems.append(f"seq {f.seq}: the blob {blob} hashes to {got}, not {f.digest}")
    if own_events_only:
        events = [e for e in events if e.device in (device, None)]
    filed = Counter(e.seq for e in events if e.kind == "filed" and e.device == device)
    if filed != Counter(chain.keys()):
        wrong = sorted(q for q in set(filed) | set(chain) if filed.get(q, 0) != 1)
        problems.append(f"not exactly one 'filed' event for seqs {wrong}")
    for e in events:
        if e.kind == "rejected":
            good = " (a good record of the chain)" if e.record_hash in hashes else ""
            problems.append(f"rejected{good}: seq {e.seq} {e.code}: {e.detail[:300]}")
        elif e.kind == "error":
            problems.append(f"error event: {e.detail[:500]}")
    # Staging folders are named by digest (hex); the 256 ``.lock-xx`` files are there for good.
    if staging.exists() and (left := sorted(p.name for p in staging.glob("[0-9a-f]*"))):
        problems.append(f"staging not cleaned up: {left[:5]}")

    with Outbox(outbox) as ob:
        integrity = ob.integrity_check()
        rows = ob.rows(device)
        forks = ob.forks()
    if integrity != "ok":
        problems.append(f"the outbox fails PRAGMA integrity_check: {integrity}")
    if forks:
        problems.append(f"the outbox saw forks: {forks}")
    if [r.seq for r in rows] != sorted(chain):
        problems.append(f"the outbox holds seqs {[r.seq for r in rows]}, the chain {sorted(chain)}")
    for r in rows:
        if r.state not in DONE or (r.seq in chain and r.hash != chain[r.seq].hash):
            problems.append(f"outbox seq {r.seq}: {r.state} {r.last_error!r}")
        if r.has_file and not r.released:
            problems.append(f"outbox seq {r.seq}: acknowledged but not released to the recorder")

    present = {str(p.relative_to(spool / "media")) for p in (spool / "media").rglob("*") if p.is_file()}
    freed_seqs = {q for f in facts for q, _h in f.released}
    not_freed = {f.file for q, f in file_facts.items() if q not in freed_seqs}
    not_released = {r.file for r in rows if r.has_file and not r.released}
    if present != not_freed:
        problems.append(
            f"the spool holds {sorted(present)[:5]}…, its release records leave {sorted(not_freed)[:5]}…"
        )
    if present != not_released:
        problems.append(
            f"the spool holds {len(present)} files, the outbox has {len(not_released)} unreleased"
        )
    if present:
        problems.append(f"{len(present)} files still on the recorder after the final run")
    findings = sound(fleet, spool)
    if findings:
        problems.append(f"the recorder's chain does not verify: {findings[:5]}")

    kinds = Counter(f.kind for f in facts)
    attempts = sum(r.attempts for r in rows)
    return {
        "records": len(facts),
        "segments": len(file_facts),
        "record_kinds": dict(kinds),
        "server_files": len(files),
        "rehashed_bytes": rehashed,
        "spool_files_left": len(present),
        "resends": {
            # Publications of records beyond the first (the outbox's own count; a kill between a publish
            # and its bookkeeping loses one, so this is a lower bound).
            "record_publishes_beyond_first": attempts - len(rows),
            # Records the server received again after it had filed them (custody events).
            "server_duplicate_records": sum(1 for e in events if e.kind == "duplicate"),
        },
        "problems": problems,
    }
