"""The dock's durable outbox (docs/sync-protocol.md §7): what must reach the server, and what it answered.

One SQLite database (WAL, ``synchronous=FULL``), one row per record to send, keyed by (recorder, seq).
Power-loss defence: a row is committed — fsynced — *before* the record is published, and its delivery
state changes only when a signed ack from the server arrives. So after a crash or a power cut the
dock knows every record it ever took from a recorder, and which of them the server has acknowledged;
nothing the server acknowledged is forgotten, and nothing unacknowledged is taken for delivered.
Two kinds of update claim nothing and are committed without an fsync (a later durable commit carries
them): the offset of a ``pending`` ack, and a send count. A power cut that takes one back makes the dock
resend bytes the server already holds — answered as before — and costs nothing else.
A record offered again with the same (recorder, seq, hash) changes nothing; a *different* hash at a
held seq is a fork: refused, kept in ``forks`` and reported.

States: ``queued`` (taken, not yet published) → ``sent`` (published, no answer yet) → ``pending`` (the
server accepted the record; its file has ``acked_offset`` bytes) → ``stored`` | ``duplicate`` |
``rejected`` (final; the signed ack is kept verbatim for the recorder's erase-after-ack).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from custody.timefmt import now_timestamp
from fieldproof.durable import fsync_dir, make_dir
from fieldproof.errors import FieldproofError

STATES: Final = ("queued", "sent", "pending", "stored", "duplicate", "rejected")
FINAL: Final = ("stored", "duplicate", "rejected")
DONE: Final = ("stored", "duplicate")  # what lets a recorder free a file
SCHEMA_VERSION: Final = 1

_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    recorder     TEXT    NOT NULL,
    seq          INTEGER NOT NULL CHECK (seq >= 0),
    hash         TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    line         BLOB    NOT NULL,
    cert         TEXT,
    file         TEXT,
    path         TEXT,
    size         INTEGER,
    digest       TEXT,
    state        TEXT    NOT NULL DEFAULT 'queued' CHECK (state IN {STATES!r}),
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT    NOT NULL DEFAULT '',
    acked_offset INTEGER NOT NULL DEFAULT 0,
    ack          TEXT,
    released     INTEGER NOT NULL DEFAULT 0,
    enqueued_at  TEXT    NOT NULL,
    updated_at   TEXT    NOT NULL,
    PRIMARY KEY (recorder, seq),
    CHECK ((state IN ('stored', 'duplicate', 'rejected')) = (ack IS NOT NULL))
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_open ON records (recorder, seq) WHERE state NOT IN {FINAL!r};
CREATE TABLE IF NOT EXISTS forks (
    recorder     TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    held_hash    TEXT    NOT NULL,
    offered_hash TEXT    NOT NULL,
    line         BLOB    NOT NULL,
    seen_at      TEXT    NOT NULL,
    PRIMARY KEY (recorder, seq, offered_hash)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dockings (
    id          INTEGER PRIMARY KEY,
    recorder    TEXT NOT NULL,
    spool       TEXT NOT NULL,
    docked_at   TEXT NOT NULL,
    report      TEXT NOT NULL
);
"""


class OutboxError(FieldproofError):
    """The outbox database cannot be used; the message says which file and what to do."""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A record taken from a recorder's journal, to be sent (and its file, if it names one)."""

    recorder: str
    seq: int
    hash: str
    kind: str
    line: bytes  # the journal line, with its LF
    cert: str | None = None  # PEM of the signing certificate, sent along in ``certs``
    file: str | None = None  # relative to the spool's media/
    path: str | None = None  # where the file was when the record was taken (informational)
    size: int | None = None
    digest: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A row of the outbox as stored."""

    recorder: str
    seq: int
    hash: str
    kind: str
    line: bytes
    cert: str | None
    file: str | None
    path: str | None
    size: int | None
    digest: str | None
    state: str
    attempts: int
    last_error: str
    acked_offset: int
    ack: str | None
    released: bool

    @property
    def final(self) -> bool:
        """True once the server's last word on the record is in."""
        return self.state in FINAL

    @property
    def has_file(self) -> bool:
        """True when the record announces a file whose bytes must follow it."""
        return self.file is not None and self.digest is not None and self.size is not None

    def ack_json(self) -> dict[str, Any] | None:
        """The server's signed ack, as received."""
        return json.loads(self.ack) if self.ack else None


@dataclass(frozen=True, slots=True)
class Fork:
    """A record offered at a seq the outbox already holds with another hash."""

    recorder: str
    seq: int
    held_hash: str
    offered_hash: str


@dataclass(slots=True)
class EnqueueResult:
    """What ``enqueue`` did."""

    added: int = 0
    present: int = 0
    forks: list[Fork] = field(default_factory=list)


_COLUMNS: Final = (
    "recorder, seq, hash, kind, line, cert, file, path, size, digest, state, attempts, last_error, "
    "acked_offset, ack, released"
)


# Queries built once from the constants above (no caller text ever enters them).
_SELECT_ONE: Final = f"SELECT {_COLUMNS} FROM records WHERE recorder = ? AND seq = ?"  # noqa: S608
_SELECT_ALL: Final = f"SELECT {_COLUMNS} FROM records WHERE recorder = ? ORDER BY seq"  # noqa: S608
_SELECT_OPEN: Final = (
    f"SELECT {_COLUMNS} FROM records WHERE recorder = ? AND state NOT IN {FINAL!r} ORDER BY seq LIMIT ?"  # noqa: S608
)
_WORK: Final = f"SELECT DISTINCT recorder FROM records WHERE state NOT IN {FINAL!r} ORDER BY recorder"  # noqa: S608
_UNRELEASED: Final = (
    f"SELECT {_COLUMNS} FROM records WHERE recorder = ? AND state IN {DONE!r} AND released = 0"  # noqa: S608
    " AND file IS NOT NULL ORDER BY seq LIMIT ?"
)


_NAMES: Final = tuple(c.strip() for c in _COLUMNS.split(","))


def _ack_changes(row: OutboxRow, ack: Mapping[str, Any], status: str, received: int) -> bool:
    """True when ``ack`` moves ``row`` forward (see ``Outbox.apply_ack``)."""
    if row.final:
        return False
    if ack.get("hash") != row.hash and not (status == "rejected" and not ack.get("hash")):
        return False
    return not (status == "pending" and row.state == "pending" and received <= row.acked_offset)


def as_sent(row: OutboxRow) -> OutboxRow:
    """``row`` as ``Outbox.mark_sent`` leaves it, for a reader that keeps rows in memory (the sync
    client): one attempt more, and ``queued`` becomes ``sent``."""
    return replace(row, attempts=row.attempts + 1, state="sent" if row.state == "queued" else row.state)


def _row(r: tuple[Any, ...]) -> OutboxRow:
    values: dict[str, Any] = dict(zip(_NAMES, r, strict=True))
    values["released"] = bool(values["released"])
    return OutboxRow(**values)


class Outbox:
    """The durable outbox; thread-safe (one connection behind a lock)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        created = not self.path.exists()
        try:
            make_dir(self.path.parent, mode=0o750)
            # isolation_level=None: transactions are begun and committed explicitly below.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: every commit is fsynced (WAL included) before it returns — a committed row
            # survives a power cut, which is what lets the dock publish only after committing.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
            )
            version = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]
        except (sqlite3.Error, OSError) as exc:
            raise OutboxError(
                f"cannot open the dock outbox {self.path}: {exc}; check outbox.path in dock.toml "
                "and that the dock's user may write there"
            ) from exc
        if version != str(SCHEMA_VERSION):
            raise OutboxError(f"{self.path} has outbox schema {version}; this dock reads {SCHEMA_VERSION}")
        if created:
            fsync_dir(self.path.parent)  # the new database's name must survive a power cut too
        self._lock = threading.RLock()

    def close(self) -> None:
        """Close the database (a checkpoint folds the WAL back into the file)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction. ``durable=False`` commits without an fsync (WAL, ``synchronous=NORMAL``
        for this commit only): for bookkeeping a power cut may take back without harm — a ``pending``
        offset (the dock then resends bytes the server already holds, and is answered the same) or a
        send count. The next durable commit syncs the WAL, and these frames with it, in order."""
        with self._lock:
            if not durable:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            finally:
                if not durable:
                    self._db.execute("PRAGMA synchronous=FULL")

    # -- taking records ----------------------------------------------------------------------------

    def enqueue(self, items: Iterable[OutboxItem]) -> EnqueueResult:
        """Take records durably (one transaction); same (recorder, seq, hash) again is a no-op; forks refused."""
        result = EnqueueResult()
        now = now_timestamp()
        with self._tx() as db:
            for it in items:
                held = db.execute(
                    "SELECT hash FROM records WHERE recorder = ? AND seq = ?", (it.recorder, it.seq)
                ).fetchone()
                if held is None:
                    db.execute(
                        "INSERT INTO records (recorder, seq, hash, kind, line, cert, file, path, size, digest,"
                        " enqueued_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            it.recorder,
                            it.seq,
                            it.hash,
                            it.kind,
                            it.line,
                            it.cert,
                            it.file,
                            it.path,
                            it.size,
                            it.digest,
                            now,
                            now,
                        ),
                    )
                    result.added += 1
                elif held[0] == it.hash:
                    result.present += 1
                else:
                    db.execute(
                        "INSERT OR IGNORE INTO forks (recorder, seq, held_hash, offered_hash, line, seen_at)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (it.recorder, it.seq, held[0], it.hash, it.line, now),
                    )
                    result.forks.append(Fork(it.recorder, it.seq, held[0], it.hash))
        return result

    # -- reading ---------------------------------------------------------------------------------

    def get(self, recorder: str, seq: int) -> OutboxRow | None:
        """One row, or None."""
        with self._lock:
            r = self._db.execute(_SELECT_ONE, (recorder, seq)).fetchone()
        return _row(r) if r else None

    def rows(self, recorder: str) -> list[OutboxRow]:
        """Every row of a recorder, in seq order."""
        with self._lock:
            rs = self._db.execute(_SELECT_ALL, (recorder,)).fetchall()
        return [_row(r) for r in rs]

    def open_rows(self, recorder: str, limit: int = -1) -> list[OutboxRow]:
        """Rows still waiting for the server's last word, in seq order (the first ``limit``; -1: all)."""
        with self._lock:
            rs = self._db.execute(_SELECT_OPEN, (recorder, limit)).fetchall()
        return [_row(r) for r in rs]

    def recorders_with_work(self) -> list[str]:
        """Recorders with at least one record not yet finally acknowledged."""
        with self._lock:
            rs = self._db.execute(_WORK).fetchall()
        return [r[0] for r in rs]

    def held_seqs(self, recorder: str) -> dict[int, str]:
        """seq → hash of every record held for a recorder."""
        with self._lock:
            rs = self._db.execute("SELECT seq, hash FROM records WHERE recorder = ?", (recorder,)).fetchall()
        return {s: h for s, h in rs}

    def next_seq(self, recorder: str) -> int:
        """One past the highest seq held for a recorder (0 when none)."""
        with self._lock:
            r = self._db.execute("SELECT max(seq) FROM records WHERE recorder = ?", (recorder,)).fetchone()
        return 0 if r[0] is None else int(r[0]) + 1

    def unreleased(self, recorder: str, limit: int = 64) -> list[OutboxRow]:
        """Acknowledged-as-durable rows with a file the recorder has not yet confirmed freeing."""
        with self._lock:
            rs = self._db.execute(_UNRELEASED, (recorder, limit)).fetchall()
        return [_row(r) for r in rs]

    def summary(self, recorder: str | None = None) -> dict[str, int]:
        """Row count per state (all recorders, or one)."""
        with self._lock:
            if recorder is None:
                rs = self._db.execute("SELECT state, count(*) FROM records GROUP BY state").fetchall()
            else:
                rs = self._db.execute(
                    "SELECT state, count(*) FROM records WHERE recorder = ? GROUP BY state", (recorder,)
                ).fetchall()
        return {s: n for s, n in rs}

    def forks(self, recorder: str | None = None) -> list[Fork]:
        """Forks seen (records refused because another hash holds their seq)."""
        with self._lock:
            rs = self._db.execute(
                "SELECT recorder, seq, held_hash, offered_hash FROM forks"
                " WHERE ? IS NULL OR recorder = ? ORDER BY recorder, seq",
                (recorder, recorder),
            ).fetchall()
        return [Fork(*r) for r in rs]

    def integrity_check(self) -> str:
        """SQLite's own verdict on the file (``ok`` when sound)."""
        with self._lock:
            return "; ".join(r[0] for r in self._db.execute("PRAGMA integrity_check").fetchall())

    # -- sending and answers -----------------------------------------------------------------------

    def mark_sent(self, recorder: str, seqs: Iterable[int]) -> None:
        """Count a publication of these records (queued → sent); bookkeeping, no delivery claim."""
        now = now_timestamp()
        with self._tx(durable=False) as db:  # no delivery claim: a lost count costs nothing
            db.executemany(
                "UPDATE records SET attempts = attempts + 1, updated_at = ?,"
                " state = CASE state WHEN 'queued' THEN 'sent' ELSE state END"
                " WHERE recorder = ? AND seq = ?",
                [(now, recorder, s) for s in seqs],
            )

    def set_error(self, recorder: str, seq: int, text: str) -> None:
        """Note why a record or its file could not be sent this time."""
        with self._tx() as db:
            db.execute(
                "UPDATE records SET last_error = ?, updated_at = ? WHERE recorder = ? AND seq = ?",
                (text[:1000], now_timestamp(), recorder, seq),
            )

    def apply_ack(self, ack: Mapping[str, Any], raw: bytes | str | None = None) -> OutboxRow | None:
        """Record a verified ack; returns the updated row, or None when the ack changes nothing.

        Only forward moves: a final row never changes again (a late or repeated ack is ignored); a
        ``pending`` ack only raises the acknowledged offset. An ack naming another hash than the row's
        is about another record (a fork) and is ignored — except a ``rejected`` one with an empty hash,
        which the server sends when it could not even compute the record's hash (malformed line).
        """
        recorder, seq, status = ack.get("recorder"), ack.get("seq"), ack.get("status")
        if not isinstance(recorder, str) or not isinstance(seq, int) or status not in STATES:
            return None
        text = raw.decode() if isinstance(raw, bytes) else raw
        if text is None:
            text = json.dumps(dict(ack), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        now = now_timestamp()
        received = ack.get("received")
        received = received if isinstance(received, int) and received >= 0 else 0
        with self._lock:
            # Most acks change nothing (the chunks of one file answered alike, a final ack again): found
            # by a plain read, without a write transaction (which costs five statements and the lock).
            r = self._db.execute(_SELECT_ONE, (recorder, seq)).fetchone()
            if r is None or not _ack_changes(_row(r), ack, status, received):
                return None
            return self._apply_ack(recorder, seq, status, received, ack, text, now)

    def _apply_ack(
        self, recorder: str, seq: int, status: str, received: int, ack: Mapping[str, Any], text: str, now: str
    ) -> OutboxRow | None:
        # A final ack is committed durably before paho PUBACKs it (the broker redelivers it after a
        # crash); a pending one need not be: losing it only makes the dock resend from an older offset.
        with self._tx(durable=status != "pending") as db:
            r = db.execute(_SELECT_ONE, (recorder, seq)).fetchone()
            if r is None or not _ack_changes(_row(r), ack, status, received):
                return None
            if status == "pending":
                db.execute(
                    "UPDATE records SET state = 'pending', acked_offset = max(acked_offset, ?),"
                    " last_error = '', updated_at = ? WHERE recorder = ? AND seq = ?",
                    (received, now, recorder, seq),
                )
            elif status in DONE:
                db.execute(
                    "UPDATE records SET state = ?, ack = ?, acked_offset = coalesce(size, acked_offset),"
                    " last_error = '', released = CASE WHEN file IS NULL THEN 1 ELSE 0 END, updated_at = ?"
                    " WHERE recorder = ? AND seq = ?",
                    (status, text, now, recorder, seq),
                )
            else:
                reason = ack.get("reason")
                db.execute(
                    "UPDATE records SET state = 'rejected', ack = ?, last_error = ?, updated_at = ?"
                    " WHERE recorder = ? AND seq = ?",
                    (text, str(reason or "rejected")[:1000], now, recorder, seq),
                )
            r = db.execute(_SELECT_ONE, (recorder, seq)).fetchone()
        return _row(r)

    def mark_released(self, recorder: str, seqs: Iterable[int]) -> None:
        """The recorder confirmed it freed (or no longer holds) these records' files."""
        now = now_timestamp()
        with self._tx() as db:
            db.executemany(
                "UPDATE records SET released = 1, updated_at = ? WHERE recorder = ? AND seq = ?",
                [(now, recorder, s) for s in seqs],
            )

    def note_docking(self, *, recorder: str, spool: str, report: Mapping[str, Any]) -> None:
        """Keep what local verification found when a recorder was docked (the server judges anyway)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO dockings (recorder, spool, docked_at, report) VALUES (?, ?, ?, ?)",
                (recorder, spool, now_timestamp(), json.dumps(dict(report), ensure_ascii=False)),
            )

    def dockings(self, recorder: str) -> list[dict[str, Any]]:
        """Verification reports kept for a recorder, oldest first."""
        with self._lock:
            rs = self._db.execute(
                "SELECT spool, docked_at, report FROM dockings WHERE recorder = ? ORDER BY id", (recorder,)
            ).fetchall()
        return [{"spool": s, "docked_at": t, "report": json.loads(r)} for s, t, r in rs]
