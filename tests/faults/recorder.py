"""The recorder's side of the link during the campaign: the dock tests' stand-in, watched at every release."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from server.db import make_engine
from server.evidence.store import BlobStore
from tests.edge.dock.helpers import SpoolRecorder, journal_facts

_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _engine(url: str) -> Engine:
    """One engine per server URL for all the recorders of a run (each release borrows a connection)."""
    with _ENGINES_LOCK:
        if url not in _ENGINES:
            _ENGINES[url] = make_engine(url)
        return _ENGINES[url]


def dispose_engines() -> None:
    """Close the recorders' connections to the server's database (before it is stopped or dropped)."""
    with _ENGINES_LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()


class WatchedRecorder(SpoolRecorder):
    """The recorder stand-in; before it frees a file, the server's database and store are looked at.

    A file freed while the server does not hold it as ``stored``, with its blob of the right size in the
    store, is a violation of erase-after-ack (it is noted, not hidden; the release goes on as the real
    recorder would, since it has a genuine signed ack in hand).
    """

    def __init__(
        self,
        *args: Any,
        server_db: Path | None,
        store: Path,
        server_url: str | None = None,
        blobs: BlobStore | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        self.server_db = server_db
        self.server_url = server_url  # a SQLAlchemy URL (PostgreSQL) instead of the SQLite file
        self.store = store
        self.blobs = blobs  # look in this store (the S3 one) rather than in ``store``'s directory
        self.violations: list[str] = []

    def _server_holds(self, digest: str, size: int) -> str | None:
        if self.server_url is not None:
            try:
                with _engine(self.server_url).connect() as conn:
                    row = conn.execute(
                        text("SELECT status, size, blob_key FROM files WHERE digest = :d"), {"d": digest}
                    ).fetchone()
            except SQLAlchemyError as exc:
                return f"cannot read the server database: {exc}"
            return self._judge_row(row, digest, size)
        assert self.server_db is not None
        try:
            with contextlib.closing(sqlite3.connect(self.server_db.as_uri() + "?mode=ro", uri=True)) as db:
                row = db.execute(
                    "SELECT status, size, blob_key FROM files WHERE digest = ?", (digest,)
                ).fetchone()
        except sqlite3.Error as exc:
            return f"cannot read the server database: {exc}"
        return self._judge_row(row, digest, size)

    def _judge_row(self, row: Any, digest: str, size: int) -> str | None:
        if row is None:
            return "no files row"
        status, held, key = row
        if status != "stored" or held != size or not key:
            return f"files row {status}, {held} bytes, blob {key}"
        if self.blobs is not None:
            try:
                if self.blobs.size(digest) == size:
                    return None
            except Exception as exc:  # any store error is a finding, reported with its text
                return f"the store cannot give the blob's size: {exc}"
            return "the store's blob has another size"
        blob = self.store / key
        if not blob.is_file() or blob.stat().st_size != size:
            return f"blob {blob} missing or short"
        return None

    def release(self, acks: list[dict[str, Any]]) -> list[str]:
        """Check the server first, then free exactly as the stand-in does."""
        files = {f.seq: f for f in journal_facts(self.root) if f.file}
        for ack in acks:
            f = files.get(ack.get("seq"))
            if f is None or f.digest is None or f.size is None:
                continue
            if not (self.root / "media" / f.file).exists():
                continue  # freed before (an ack forwarded again after a dock restart)
            wrong = self._server_holds(f.digest, f.size)
            if wrong is not None:
                self.violations.append(f"seq {f.seq} ({f.digest}) freed while the server has {wrong}")
        return super().release(acks)
