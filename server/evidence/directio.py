"""Staged bytes to the disk and back with ``O_DIRECT``, past the page cache, where the file system allows it.

Why: a 1 GB sync through the page cache makes the kernel find a fresh page for every 4 KiB written
and read back, and what that costs on a virtual machine depends on the host: measured on the 2-core
test VM, writing 1 GB of 4 MiB files took 0.15 CPU-s in one run and 1.0–1.7 in the next, with 20 GB
free (docs/server-ingest.md, "Fourth pass"). With ``O_DIRECT`` the bytes go from one reused buffer
per thread to the device: 0.11 CPU-s per GB, every run. And the commit's hash check then reads the
staged bytes back *from the disk*, not from the page cache the writer just filled — the check is over
what is stored, as the store's contract says.

Rules of ``O_DIRECT`` (Linux): the buffer's address, the file offset and the length must be multiples
of the device's logical block size. Here every direct transfer is whole pages (``ALIGN`` = the page
size, a multiple of any logical block size in use) through a page-aligned ``mmap`` buffer; the
unaligned edges of a chunk (a file's last chunk, a chunk at an odd offset) go through the ordinary
file descriptor. A page is never written both ways (a direct range is whole pages no buffered write
touched: staged bytes are never written twice), and the kernel keeps the two views coherent anyway.
Durability is unchanged: ``fdatasync`` still follows, for the device's write cache and the file's
extents. A file system without ``O_DIRECT`` (tmpfs on older kernels, some FUSE mounts) is found by
``supported`` and the store falls back to plain reads and writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import secrets
import threading
from pathlib import Path
from typing import Final

#: Direct transfers are whole pages at page-aligned offsets.
ALIGN: Final = mmap.PAGESIZE
#: One reused buffer per thread: chunks are copied through it (a 1 MiB chunk in one write) and files
#: are read back through it.
BUFFER_BYTES: Final = 4 * 1024 * 1024

_local = threading.local()


def _buffer() -> mmap.mmap:
    """This thread's page-aligned buffer (an anonymous mapping: aligned by construction)."""
    buf: mmap.mmap | None = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = mmap.mmap(-1, BUFFER_BYTES)
    return buf


def supported(directory: Path) -> bool:
    """True when files in ``directory`` can be written and read with ``O_DIRECT`` (a probe file, removed)."""
    if not hasattr(os, "O_DIRECT"):
        return False
    probe = directory / f".direct-probe-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_DIRECT, 0o600)
    except OSError:
        return False
    try:
        view = memoryview(_buffer())[:ALIGN]
        view[:] = b"\x5a" * ALIGN
        if os.pwrite(fd, view, 0) != ALIGN:
            return False
        view[:] = bytes(ALIGN)
        return os.preadv(fd, [view], 0) == ALIGN and view[0] == 0x5A
    except OSError:
        return False
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(probe)


def whole_pages(offset: int, length: int) -> tuple[int, int]:
    """``(start, end)``: the whole pages inside ``[offset, offset + length)``; ``start >= end`` when none."""
    start = -(-offset // ALIGN) * ALIGN
    end = (offset + length) // ALIGN * ALIGN
    return start, end


def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (``pwrite`` may write less than asked)."""
    while data:
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


def pwrite_direct(dfd: int, data: memoryview, offset: int, *, fallback_fd: int) -> None:
    """Write ``data`` (whole pages at a page-aligned ``offset``) through ``dfd``, opened with ``O_DIRECT``,
    copying it through this thread's aligned buffer. A short write that leaves an unaligned rest (not
    seen in practice) finishes through ``fallback_fd``, the file's ordinary descriptor."""
    buf = memoryview(_buffer())
    while data:
        n = min(len(data), BUFFER_BYTES)
        buf[:n] = data[:n]
        written = os.pwrite(dfd, buf[:n], offset)
        data, offset = data[written:], offset + written
        if written % ALIGN:
            pwrite_all(fallback_fd, data, offset)
            return


def file_sha256(path: Path) -> tuple[str, int]:
    """``sha256:<hex>`` of the file's bytes as the disk holds them (read with ``O_DIRECT``), and its length."""
    h = hashlib.sha256()
    buf = _buffer()
    view = memoryview(buf)
    offset = 0
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        while True:
            n = os.preadv(fd, [buf], offset)
            if not n:
                break
            h.update(view[:n])  # hashlib lets go of the GIL for a buffer this size
            offset += n
            if n % ALIGN:
                break  # the file's end: the next read would start at an unaligned offset
    finally:
        os.close(fd)
    return "sha256:" + h.hexdigest(), offset
