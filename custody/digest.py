"""Typed digests: every digest names its algorithm (``sha256:<hex>``) so that SM3 can join later.

Threat model for file hashing: the file may be altered at any byte, truncated or extended; the
digest is computed over every byte read from disk at verification time, never taken from metadata.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NewType

from custody.errors import RecordFormatError

# "sha256:" followed by 64 lowercase hex digits.
Digest = NewType("Digest", str)

#: Algorithms a digest may name, with their constructors and hex lengths. SM3 will be added here.
ALGORITHMS: dict[str, tuple[Callable[[], hashlib._Hash], int]] = {
    "sha256": (hashlib.sha256, 64),
}

_DIGEST_RE = re.compile(r"^(sha256):([0-9a-f]{64})$")

# Large reads keep the per-call overhead negligible; hashlib releases the GIL while it hashes
# buffers this size, so several files hash in parallel on threads.
_CHUNK = 1 << 20


def sha256_digest(data: bytes) -> Digest:
    """The digest of ``data`` in the record's notation."""
    return Digest("sha256:" + hashlib.sha256(data).hexdigest())


def parse_digest(text: str) -> tuple[str, str]:
    """Split ``alg:hex`` into its parts, or raise RecordFormatError."""
    m = _DIGEST_RE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise RecordFormatError(f"{text!r} is not a digest of the form sha256:<64 lowercase hex digits>")
    return m.group(1), m.group(2)


def is_digest(text: object) -> bool:
    """True when ``text`` is a well-formed digest string."""
    return isinstance(text, str) and _DIGEST_RE.fullmatch(text) is not None


def file_digest(path: Path, algorithm: str = "sha256") -> tuple[Digest, int]:
    """Hash a file by streaming it; returns the digest and the number of bytes read."""
    ctor, _ = ALGORITHMS[algorithm]
    h = ctor()
    size = 0
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        # Tell the kernel we read front to back, so readahead keeps the disk busy while we hash.
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
            size += n
    return Digest(f"{algorithm}:{h.hexdigest()}"), size


def file_digests(
    paths: Iterable[Path], *, workers: int | None = None
) -> dict[Path, tuple[Digest, int] | OSError]:
    """Hash many files on a thread pool; each result is (digest, size) or the OSError met."""

    def one(p: Path) -> tuple[Path, tuple[Digest, int] | OSError]:
        try:
            return p, file_digest(p)
        except OSError as exc:
            return p, exc

    todo = list(paths)
    n = workers or min(len(todo), os.cpu_count() or 1) or 1
    if n <= 1:
        return dict(one(p) for p in todo)
    with ThreadPoolExecutor(max_workers=n) as pool:
        return dict(pool.map(one, todo))
