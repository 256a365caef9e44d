"""The append-only journal of a device's chain (``chain.jsonl``).

Power-loss defence: each record is written with one ``write`` on an O_APPEND descriptor and fsynced
before ``append`` returns, so an acknowledged record survives a power cut; a cut during the write can
only leave a torn last line, which ``read_head`` ignores (the record was never acknowledged, and its seq
is reused by the next record — no gap, no fork).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from custody.chain import ChainHead
from custody.digest import Digest, sha256_digest
from custody.errors import SpoolError
from custody.signing import SealedRecord
from fieldproof.durable import fsync_dir


def read_head(path: Path) -> ChainHead:
    """Where the journal at ``path`` stands: next seq and last hash (empty journal: seq 0)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ChainHead()
    # Only complete lines count; a torn tail is what a power cut mid-write leaves.
    end = data.rfind(b"\n")
    if end < 0:
        return ChainHead()
    start = data.rfind(b"\n", 0, end) + 1
    last = data[start:end]
    try:
        record = json.loads(last)["record"]
        rbytes = last[len(b'{"record":') : last.rindex(b',"sig":')]
        return ChainHead(next_seq=int(record["seq"]) + 1, last_hash=Digest(sha256_digest(rbytes)))
    except (ValueError, KeyError, TypeError) as exc:
        raise SpoolError(
            f"the last record of {path} is unreadable ({exc}); run recovery before recording"
        ) from exc


class Journal:
    """An open journal file; ``append`` returns only once the record is on stable storage."""

    def __init__(self, path: Path) -> None:
        self.path = path
        created = not path.exists()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if created:
            fsync_dir(path.parent)  # the new journal's name must survive too

    def append(self, sealed: SealedRecord) -> None:
        """Append one sealed record and fsync it."""
        view = memoryview(sealed.line)
        while view:
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)

    def close(self) -> None:
        """Close the file."""
        os.close(self._fd)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
