"""Durable file writes for the CA directory: a power cut leaves the old file or the new one, never half.

Every write goes to a temporary name in the same directory, is fsynced, renamed over the target with
``os.replace`` (atomic on POSIX), and then the directory is fsynced so the rename itself survives.
Private keys are created with mode 0600 from the first byte: they are never world-readable, not even
between ``open`` and ``chmod``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

PRIVATE_FILE = 0o600
PUBLIC_FILE = 0o644
PRIVATE_DIR = 0o700


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (new names, renames) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes, *, mode: int = PUBLIC_FILE) -> None:
    """Write ``data`` to ``path`` durably and atomically, with permission bits ``mode``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # O_EXCL: never follow or reuse a file someone planted under the temporary name.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed the mode given to open
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def write_private(path: Path, data: bytes) -> None:
    """Write a private key (or anything secret): mode 0600."""
    write_file(path, data, mode=PRIVATE_FILE)


def make_dir(path: Path, *, mode: int = PRIVATE_DIR) -> None:
    """Create ``path`` (and missing parents) and make the new entry durable."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=mode)
        except FileExistsError:
            if not d.is_dir():
                raise
            continue  # another process (a second worker starting) made it first: theirs to chmod
        os.chmod(d, mode)  # mkdir's mode is narrowed by the umask
        fsync_dir(d.parent)


@contextlib.contextmanager
def exclusive_lock(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock so two CA operations never interleave (e.g. two CRL updates)."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
