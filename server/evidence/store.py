"""The evidence store: content-addressed, write-once blobs, filled by offset-addressed chunks.

The interface is what both a local disk and an S3-compatible object store (later, with Object Lock)
can honestly promise:

- ``begin(digest, size)`` announces a blob; ``write_at`` stores a chunk at an offset, durably, before it
  returns; ``received`` says how many bytes from 0 are contiguous and durable. The staging area lives in
  the store, keyed by digest — not in a worker's memory — so any ingest worker can take over a file
  another one started, and a killed worker loses nothing it reported.
  (S3: one staging object per chunk under ``staging/<hex>/``; ``received`` lists that prefix.)
- ``write_many(digest, chunks)`` is ``write_at`` for several chunks with one flush (the ingest worker
  writes what it received together: one round of fsyncs per batch, not per chunk).
- ``commit(digest)`` checks SHA-256 **over the bytes as stored** against the digest and makes the blob
  durable and write-once; a mismatch discards the staged bytes and raises.
  (S3: compose, verify, ``PutObject`` with ``If-None-Match: *`` and Object Lock retention.)
- ``open``, ``exists``, ``size`` read committed blobs; ``discard_staging`` drops a blob's staged chunks.

Threat model: chunks arrive in any order, twice, from several workers at once, or never; a chunk's bytes
may be wrong (a faulty or hostile dock). Nothing but a hash check over the stored bytes makes a blob.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Final

from custody.digest import file_digest
from fieldproof.durable import exclusive_lock, fsync_dir, make_dir
from server.errors import (
    BlobNotFoundError,
    BlobSizeError,
    HashMismatchError,
    IncompleteError,
    NotStagedError,
    StoreError,
)
from server.evidence import directio

_DIGEST_RE: Final = re.compile(r"sha256:([0-9a-f]{64})")
_PART_RE: Final = re.compile(r"(\d{13})\.(\d{10})")
BLOB_MODE: Final = 0o444
_STAGED_MODE: Final = 0o640
_DATA: Final = "data"


def blob_hex(digest: str) -> str:
    """The hex part of a ``sha256:<hex>`` digest; StoreError for anything else."""
    m = _DIGEST_RE.fullmatch(digest) if isinstance(digest, str) else None
    if m is None:
        raise StoreError(f"{digest!r} is not a sha256:<64 lowercase hex> digest")
    return m.group(1)


class BlobStore(ABC):
    """A content-addressed, write-once store with an offset-addressed staging area."""

    @abstractmethod
    def key(self, digest: str) -> str:
        """Where the committed blob lives, as a store-relative key (``aa/bb/<hex>``)."""

    @abstractmethod
    def begin(self, digest: str, size: int) -> None:
        """Announce a blob of ``size`` bytes (idempotent); BlobSizeError if announced with another size."""

    @abstractmethod
    def write_at(self, digest: str, offset: int, data: bytes) -> None:
        """Store ``data`` at ``offset`` durably before returning. Chunks already covered change nothing."""

    def write_many(self, digest: str, chunks: Sequence[tuple[int, bytes]]) -> int:
        """``write_at`` for each (offset, data); returns ``received``. A store may flush once for all;
        and when the chunks complete the blob it may leave the flush to ``commit`` (which makes the
        bytes durable before it hashes them) and return the blob's size: the caller commits next."""
        for offset, data in chunks:
            self.write_at(digest, offset, data)
        return self.received(digest)

    def stage_many(self, digest: str, chunks: Sequence[tuple[int, bytes]]) -> int:
        """Like ``write_many``, except that the chunks need not be durable yet: ``flush`` makes them so.
        Returns ``received`` (what is durable, which these chunks may not be part of), or the blob's
        size when the chunks complete it (then ``commit`` comes next and makes everything durable).
        A store that writes durably at once needs no more than this default."""
        return self.write_many(digest, chunks)

    def flush(self, digest: str) -> int:
        """Make what ``stage_many`` wrote for ``digest`` durable; returns ``received``."""
        return self.received(digest)

    @abstractmethod
    def received(self, digest: str) -> int:
        """Bytes durably staged contiguously from 0 (the blob's size once committed; 0 if unknown)."""

    @abstractmethod
    def commit(self, digest: str, *, tidy_later: bool = False) -> int:
        """Verify SHA-256 over the stored bytes and make the blob durable and write-once; returns its size.
        ``tidy_later``: what is left to clean up (the blob's staging) may wait for ``tidy`` — the ingest
        answers first; without it, commit cleans up before it returns.

        Idempotent: committing a committed blob returns its size. IncompleteError if bytes are missing;
        HashMismatchError (staging discarded) if the bytes do not hash to ``digest``.
        """

    @abstractmethod
    def open(self, digest: str) -> BinaryIO:
        """Read a committed blob; BlobNotFoundError if there is none."""

    @abstractmethod
    def exists(self, digest: str) -> bool:
        """True when the blob is committed."""

    @abstractmethod
    def size(self, digest: str) -> int:
        """Size of a committed blob; BlobNotFoundError if there is none."""

    @abstractmethod
    def discard_staging(self, digest: str, *, durable: bool = True) -> None:
        """Forget every staged chunk of ``digest`` (committed blobs are never touched)."""

    def tidy(self) -> None:  # noqa: B027 — a store whose commit sets nothing aside needs nothing here
        """Remove what commits with ``tidy_later`` set aside (the staging of blobs they committed).
        Claims nothing; safe to call at any time."""


class LocalBlobStore(BlobStore):
    """Blobs at ``ROOT/aa/bb/<hex>`` (mode 0444, never overwritten); staging at ``STAGING/<hex>/``.

    A staging directory appears whole (built under a temporary name, synced, renamed into place): the
    announced ``size`` and an empty ``data`` file, which chunks are written into at their offsets. A
    chunk counts once its bytes are synced *and then* an empty marker ``<offset:013>.<length:010>``
    is created and the directory synced: a marker always stands for bytes on disk, so ``received``
    never counts bytes a power cut could take back. Commit syncs the staged file, hashes it back from
    disk and, if it is right, links that very file into the store — no copy. Writers hold a shared
    lock, commit an exclusive one (256 lock files, striped by digest), so nothing writes to a staged
    file once it is being committed.
    """

    def __init__(self, root: Path, staging: Path, *, direct_io: bool | None = None) -> None:
        """``direct_io``: stage and hash back with ``O_DIRECT`` (server/evidence/directio.py); None (the
        default): wherever the staging directory's file system allows it."""
        self.root = root
        self.staging = staging
        make_dir(root, mode=0o750)
        make_dir(staging, mode=0o750)
        self.direct_io = directio.supported(staging) if direct_io is None else direct_io
        # The 256 first-level directories made once, here: a commit then makes at most ``aa/bb`` (one
        # mkdir and one directory sync fewer per blob while the store is young).
        for n in range(256):
            top = root / f"{n:02x}"
            if not top.is_dir():
                make_dir(top, mode=0o750)  # durable; another worker making it meanwhile is fine
        # Staging set aside by a commit and not yet removed when a process stopped (see ``tidy``).
        for left in staging.glob(".discard-*"):
            shutil.rmtree(left, ignore_errors=True)
        # Committed blobs' staging directories, renamed aside, waiting for ``tidy``.
        self._set_aside: list[Path] = []
        # Blobs whose last bytes this instance wrote without a flush or markers (write_many completed
        # them): commit flushes before it hashes. Memory only: lost with the process, never claimed.
        self._complete_unsynced: set[str] = set()
        # Ranges (offset, length) stage_many wrote and no flush has yet made durable or marked. Memory
        # only, like the above: nothing is claimed for them until ``flush``; a process that dies with
        # some leaves bytes that no marker counts, which are simply received again.
        self._unflushed: dict[str, list[tuple[int, int]]] = {}
        # The bytes of those ranges, not yet written at all (views of the caller's buffers): stage_many
        # keeps them here and the flush or commit that follows writes them — for a file the same batch
        # completes, the commit on the caller's committer thread, not the thread receiving the chunks.
        self._unwritten: dict[str, list[tuple[int, memoryview]]] = {}

    # -- paths -----------------------------------------------------------------------------------

    def key(self, digest: str) -> str:
        h = blob_hex(digest)
        return f"{h[:2]}/{h[2:4]}/{h}"

    def _final(self, digest: str) -> Path:
        return self.root / self.key(digest)

    def _stage(self, digest: str) -> Path:
        return self.staging / blob_hex(digest)

    def _announced(self, digest: str) -> int | None:
        try:
            return int((self._stage(digest) / "size").read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            raise StoreError(f"staging of {digest} is damaged (size file); discard it") from None

    def _parts(self, digest: str) -> list[tuple[int, int]]:
        """Durably staged ranges (offset, length) by offset, from the markers' names."""
        try:
            names = os.listdir(self._stage(digest))
        except FileNotFoundError:
            return []
        parts = []
        for name in names:
            m = _PART_RE.fullmatch(name)
            if m:
                parts.append((int(m.group(1)), int(m.group(2))))
        return sorted(parts)

    @staticmethod
    def _contiguous(parts: list[tuple[int, int]]) -> int:
        end = 0
        for offset, length in parts:
            if offset > end:
                break
            end = max(end, offset + length)
        return end

    @contextlib.contextmanager
    def _lock(self, digest: str, *, exclusive: bool) -> Iterator[None]:
        """Writers share, commit excludes. A lock file is never removed (removing one while another
        process waits on it would let a third lock a new file of the same name)."""
        lock_file = self.staging / f".lock-{blob_hex(digest)[:2]}"
        if exclusive:
            with exclusive_lock(lock_file):
                yield
            return
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    # -- staging ---------------------------------------------------------------------------------

    def begin(self, digest: str, size: int) -> None:
        if size < 0:
            raise BlobSizeError(f"a blob cannot have {size} bytes")
        if self.exists(digest):
            if self.size(digest) != size:
                raise BlobSizeError(f"{digest} is stored with {self.size(digest)} bytes, not {size}")
            return
        try:
            known = self._announced(digest)
        except StoreError:
            if self._parts(digest):
                raise
            # A size file a power cut emptied before anything was counted (it is synced with the first
            # marker): nothing here was ever claimed, so announce it afresh.
            self.discard_staging(digest)
            known = None
        if known is None:
            self._announce(digest, size)
            known = self._announced(digest)  # another worker may have announced it first
        if known != size:
            raise BlobSizeError(f"{digest} was announced with {known} bytes, not {size}")

    def _announce(self, digest: str, size: int) -> None:
        """The staging directory, made whole under a temporary name and renamed into place. Not synced
        here: nothing is claimed until the first marker, which syncs it first (``_make_durable``), and a
        blob completed before any marker is synced by commit."""
        tmp = self.staging / f".new-{blob_hex(digest)}-{secrets.token_hex(4)}"
        os.mkdir(tmp, 0o750)
        try:
            fd = os.open(tmp / "size", os.O_WRONLY | os.O_CREAT | os.O_EXCL, _STAGED_MODE)
            try:
                os.write(fd, str(size).encode())
            finally:
                os.close(fd)
            fd = os.open(tmp / _DATA, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _STAGED_MODE)
            try:
                if size:
                    # Allocated up front: writes into it then never grow the file, so they do not
                    # wait on the journal behind another file's fsync (measured on ext4: 0.1 ms per MiB
                    # instead of 0.2–2 ms). Unwritten parts read as zeros, which no hash check passes.
                    with contextlib.suppress(OSError):  # a file system without fallocate: plain writes
                        os.posix_fallocate(fd, 0, size)
            finally:
                os.close(fd)
            with contextlib.suppress(OSError):  # ENOTEMPTY/EEXIST: announced meanwhile by another worker
                os.rename(tmp, self._stage(digest))  # a rename never replaces a non-empty directory
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _make_durable(self, digest: str) -> None:
        """Before the first marker: the size file, the staging directory's entries, and its own name."""
        stage = self._stage(digest)
        fd = os.open(stage / "size", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(stage)
        fsync_dir(self.staging)

    def write_at(self, digest: str, offset: int, data: bytes) -> None:
        self._write(digest, [(offset, data)], defer_complete=False)

    def write_many(self, digest: str, chunks: Sequence[tuple[int, bytes]]) -> int:
        return self._write(digest, chunks, defer_complete=True)

    def stage_many(self, digest: str, chunks: Sequence[tuple[int, bytes]]) -> int:
        return self._write(digest, chunks, defer_complete=True, flush=False)

    def flush(self, digest: str) -> int:
        return self._write(digest, [], defer_complete=False)

    def _write(
        self, digest: str, chunks: Sequence[tuple[int, bytes]], *, defer_complete: bool, flush: bool = True
    ) -> int:
        with self._lock(digest, exclusive=False):
            if self.exists(digest):
                self._forget(digest)
                return self.size(digest)  # committed: nothing more to receive
            size = self._announced(digest)
            if size is None:
                raise NotStagedError(f"{digest} was never announced (begin) in this store")
            for offset, data in chunks:
                if offset < 0 or offset + len(data) > size:
                    raise BlobSizeError(f"chunk at {offset}+{len(data)} runs past {digest}'s {size} bytes")
            # Staged bytes are never written again: idempotent by (digest, offset), and a chunk resent
            # with other bytes cannot change what was already counted.
            marked = self._parts(digest)
            # Taken here before, not yet flushed: not taken again, flushed with these.
            unflushed = self._unflushed.get(digest, [])
            covered = sorted([*marked, *unflushed])
            todo: list[tuple[int, memoryview]] = []
            for offset, data in sorted(chunks, key=lambda c: c[0]):
                for start, end in uncovered_ranges(offset, offset + len(data), covered):
                    todo.append((start, memoryview(data)[start - offset : end - offset]))
                    covered = sorted([*covered, (start, end - start)])
            written = [(o, len(v)) for o, v in todo]
            if not flush:
                # Not claimed, and not even written yet: kept for the flush or the commit that follows
                # (counted only once a flush has written, synced and marked them).
                if todo:
                    self._unwritten.setdefault(digest, []).extend(todo)
                    self._unflushed[digest] = _merge([*unflushed, *written])
                if defer_complete and self._contiguous(covered) >= size:
                    self._complete_unsynced.add(digest)  # commit comes next: it writes and syncs them
                    return size
                return min(size, self._contiguous(marked))
            pieces = [*self._unwritten.pop(digest, []), *todo]
            if not pieces and not unflushed:
                return min(size, self._contiguous(marked))
            # Complete: commit comes next and syncs the file before it hashes; markers would only be
            # flushed to be deleted. Otherwise the bytes are durable before they count.
            complete = defer_complete and self._contiguous(covered) >= size
            try:
                self._pwrite_pieces(self._stage(digest) / _DATA, pieces, sync=not complete)
            except FileNotFoundError:
                self._forget(digest)
                raise NotStagedError(
                    f"staging of {digest} was discarded meanwhile; announce it again"
                ) from None
            except BaseException:
                self._forget(digest)  # nothing of these was claimed: they are simply received again
                raise
            if complete:  # nothing is claimed for these bytes
                self._complete_unsynced.add(digest)
                self._unflushed[digest] = _merge([*unflushed, *written])
                return size
            # Durable before it counts: first the bytes (synced above) ...
            written = _merge([*self._unflushed.pop(digest, []), *written])
            # ... then (before the first marker) the staging directory itself ...
            if not marked:
                self._make_durable(digest)
            # ... then the markers that say so, then their names.
            for offset, length in written:
                marker = self._stage(digest) / f"{offset:013d}.{length:010d}"
                os.close(os.open(marker, os.O_WRONLY | os.O_CREAT, _STAGED_MODE))
            fsync_dir(self._stage(digest))
            # Read the markers again: another worker writing other chunks of this file at the same
            # time saw neither our markers nor we its, and if each stopped at what it saw, nobody
            # would find the file complete (until a resend). Whoever now sees it whole commits it
            # (commit is idempotent, so two who both see it are harmless).
            return min(size, self._contiguous(self._parts(digest)))

    def _pwrite_pieces(self, path: Path, pieces: list[tuple[int, memoryview]], *, sync: bool) -> None:
        """Write ``pieces`` (offset, bytes) into the staged file: whole pages with ``O_DIRECT`` where the
        store uses it, the rest through the page cache; with ``sync``, ``fdatasync`` after."""
        fd = os.open(path, os.O_WRONLY)
        dfd = -1
        try:
            for offset, view in pieces:
                start, end = directio.whole_pages(offset, len(view)) if self.direct_io else (0, 0)
                if start >= end:
                    directio.pwrite_all(fd, view, offset)
                    continue
                # The whole pages past the page cache; the edges (a file's last bytes) through it.
                if dfd < 0:
                    dfd = os.open(path, os.O_WRONLY | os.O_DIRECT)
                directio.pwrite_direct(dfd, view[start - offset : end - offset], start, fallback_fd=fd)
                directio.pwrite_all(fd, view[: start - offset], offset)
                directio.pwrite_all(fd, view[end - offset :], end)
            if sync:
                os.fdatasync(fd)
        finally:
            os.close(fd)
            if dfd >= 0:
                os.close(dfd)

    def _forget(self, digest: str) -> None:
        """Drop what this instance keeps in memory about ``digest``'s staging (nothing of it was claimed)."""
        self._complete_unsynced.discard(digest)
        self._unflushed.pop(digest, None)
        self._unwritten.pop(digest, None)

    def received(self, digest: str) -> int:
        if self.exists(digest):
            return self.size(digest)
        size = self._announced(digest)
        if size is None:
            return 0
        return min(size, self._contiguous(self._parts(digest)))

    def discard_staging(self, digest: str, *, durable: bool = True) -> None:
        self._forget(digest)
        stage = self._stage(digest)
        if stage.exists():
            # Rename first, so no reader ever sees half a staging directory, then remove.
            trash = self.staging / f".discard-{blob_hex(digest)}-{secrets.token_hex(4)}"
            with contextlib.suppress(FileNotFoundError):
                os.replace(stage, trash)
                if durable:
                    fsync_dir(self.staging)
                shutil.rmtree(trash, ignore_errors=True)

    # -- commit ----------------------------------------------------------------------------------

    def commit(self, digest: str, *, tidy_later: bool = False) -> int:
        final = self._final(digest)
        # Two workers may finish the same file at once: one links, the other finds the blob there.
        with self._lock(digest, exclusive=True):
            if final.exists():
                # Left behind by a crash after the link below, or by another worker: no need to make
                # its removal durable (a staging directory beside a committed blob is dropped again).
                self.discard_staging(digest, durable=False)
                return final.stat().st_size
            size = self._announced(digest)
            if size is None:
                raise NotStagedError(f"{digest} was never announced (begin) in this store")
            if digest not in self._complete_unsynced:
                have = min(size, self._contiguous(self._parts(digest)))
                if have < size:
                    raise IncompleteError(f"{digest}: {have} of {size} bytes received")
            make_dir(final.parent, mode=0o750)
            staged = self._stage(digest) / _DATA
            pieces = self._unwritten.pop(digest, [])
            if pieces:  # the last chunks, kept by stage_many: written here, on the committer's thread
                try:
                    self._pwrite_pieces(staged, pieces, sync=False)
                except BaseException:
                    self._forget(digest)  # unclaimed: received again
                    raise
            fd = os.open(staged, os.O_RDONLY)
            try:
                os.fchmod(fd, BLOB_MODE)
                os.fsync(fd)  # every byte, and the file itself, on disk before it is hashed and linked
            finally:
                os.close(fd)
            # The check is over the bytes as stored, read back from the file — not over what we meant
            # to write; with direct I/O, from the disk itself, not from the page cache.
            actual, length = directio.file_sha256(staged) if self.direct_io else file_digest(staged)
            if actual != digest or length != size:
                self.discard_staging(digest)
                raise HashMismatchError(
                    f"the {length} bytes received hash to {actual}, not to the signed {digest}; "
                    "the staged bytes were discarded",
                    actual=actual,
                )
            # link, not rename: link never replaces an existing name, so a blob is written once.
            # (FileExistsError: committed meanwhile by another process; same digest, same bytes.)
            with contextlib.suppress(FileExistsError):
                os.link(staged, final)
            fsync_dir(final.parent)
            if not tidy_later:
                self.discard_staging(digest, durable=False)
                return size
            # Out of the way now (one rename; not synced: a staging directory found beside its committed
            # blob is dropped again), removed by ``tidy`` once the caller has answered.
            self._forget(digest)
            trash = self.staging / f".discard-{blob_hex(digest)}-{secrets.token_hex(4)}"
            with contextlib.suppress(FileNotFoundError):
                os.replace(self._stage(digest), trash)
                self._set_aside.append(trash)
            return size

    def tidy(self) -> None:
        while True:
            try:
                trash = self._set_aside.pop()  # atomic: several committer threads may tidy at once
            except IndexError:
                return
            shutil.rmtree(trash, ignore_errors=True)

    # -- reading ---------------------------------------------------------------------------------

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self._final(digest), "rb")  # the caller closes it
        except FileNotFoundError:
            raise BlobNotFoundError(f"no stored blob {digest}") from None

    def exists(self, digest: str) -> bool:
        return self._final(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self._final(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFoundError(f"no stored blob {digest}") from None


def uncovered_ranges(start: int, end: int, covered: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of [start, end) that no (offset, length) of ``covered`` (sorted by offset) holds."""
    out = []
    pos = start
    for offset, length in covered:
        if offset + length <= pos:
            continue
        if offset >= end:
            break
        if offset > pos:
            out.append((pos, offset))
        pos = max(pos, offset + length)
        if pos >= end:
            break
    if pos < end:
        out.append((pos, end))
    return out


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Adjacent or overlapping (offset, length) ranges joined: one marker for a run of chunks."""
    out: list[tuple[int, int]] = []
    for offset, length in sorted(ranges):
        if out and offset <= out[-1][0] + out[-1][1]:
            o, n = out[-1]
            out[-1] = (o, max(n, offset + length - o))
        else:
            out.append((offset, length))
    return out
