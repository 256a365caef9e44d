"""The evidence store: content-addressed, write-once blobs, filled by offset-addressed chunks.

The interface is what both a local disk and an S3-compatible object store (later, with Object Lock)
can honestly promise:

- ``begin(digest, size)`` announces a blob; ``write_at`` stores a chunk at an offset, durably, before it
  returns; ``received`` says how many bytes from 0 are contiguous and durable. The staging area lives in
  the store, keyed by digest — not in a worker's memory — so any ingest worker can take over a file
  another one started, and a killed worker loses nothing it reported.
  (S3: one staging object per chunk under ``staging/<hex>/``; ``received`` lists that prefix.)
- ``commit(digest)`` assembles the staged bytes, checks SHA-256 **over the bytes as stored** against the
  digest, and makes the blob durable and write-once; a mismatch discards the staged bytes and raises.
  (S3: compose, verify, ``PutObject`` with ``If-None-Match: *`` and Object Lock retention.)
- ``open``, ``exists``, ``size`` read committed blobs; ``discard_staging`` drops a blob's staged chunks.

Threat model: chunks arrive in any order, twice, from several workers at once, or never; a chunk's bytes
may be wrong (a faulty or hostile dock). Nothing but a hash check over the stored bytes makes a blob.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import BinaryIO, Final

from custody.digest import file_digest
from fieldproof.durable import exclusive_lock, fsync_dir, make_dir, write_file
from server.errors import (
    BlobNotFoundError,
    BlobSizeError,
    HashMismatchError,
    IncompleteError,
    NotStagedError,
    StoreError,
)

_DIGEST_RE: Final = re.compile(r"sha256:([0-9a-f]{64})")
_PART_RE: Final = re.compile(r"(\d{13})\.(\d{10})")
BLOB_MODE: Final = 0o444
_COPY: Final = 1 << 20


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

    @abstractmethod
    def received(self, digest: str) -> int:
        """Bytes durably staged contiguously from 0 (the blob's size once committed; 0 if unknown)."""

    @abstractmethod
    def commit(self, digest: str) -> int:
        """Verify SHA-256 over the stored bytes and make the blob durable and write-once; returns its size.

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
    def discard_staging(self, digest: str) -> None:
        """Forget every staged chunk of ``digest`` (committed blobs are never touched)."""


class LocalBlobStore(BlobStore):
    """Blobs at ``ROOT/aa/bb/<hex>`` (mode 0444, never overwritten); staging at ``STAGING/<hex>/``.

    A staged chunk is its own file ``<offset:013>.<length:010>``, written durably (temp name, fsync,
    rename, directory fsync): a chunk file under its final name is always complete and on disk, so
    ``received`` never counts bytes a power cut could take back. ``size`` records the announced size.
    """

    def __init__(self, root: Path, staging: Path) -> None:
        self.root = root
        self.staging = staging
        make_dir(root, mode=0o750)
        make_dir(staging, mode=0o750)

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

    def _parts(self, digest: str) -> list[tuple[int, int, Path]]:
        """Staged chunks (offset, length, path), by offset; temp files (dot names) are not chunks."""
        try:
            names = os.listdir(self._stage(digest))
        except FileNotFoundError:
            return []
        parts = []
        for name in names:
            m = _PART_RE.fullmatch(name)
            if m:
                parts.append((int(m.group(1)), int(m.group(2)), self._stage(digest) / name))
        return sorted(parts)

    @staticmethod
    def _contiguous(parts: list[tuple[int, int, Path]]) -> int:
        end = 0
        for offset, length, _ in parts:
            if offset > end:
                break
            end = max(end, offset + length)
        return end

    # -- staging ---------------------------------------------------------------------------------

    def begin(self, digest: str, size: int) -> None:
        if size < 0:
            raise BlobSizeError(f"a blob cannot have {size} bytes")
        if self.exists(digest):
            if self.size(digest) != size:
                raise BlobSizeError(f"{digest} is stored with {self.size(digest)} bytes, not {size}")
            return
        known = self._announced(digest)
        if known is not None:
            if known != size:
                raise BlobSizeError(f"{digest} was announced with {known} bytes, not {size}")
            return
        stage = self._stage(digest)
        make_dir(stage, mode=0o750)
        write_file(stage / "size", str(size).encode())

    def write_at(self, digest: str, offset: int, data: bytes) -> None:
        if self.exists(digest):
            return  # committed: nothing more to receive
        size = self._announced(digest)
        if size is None:
            raise NotStagedError(f"{digest} was never announced (begin) in this store")
        if offset < 0 or offset + len(data) > size:
            raise BlobSizeError(f"chunk at {offset}+{len(data)} runs past {digest}'s {size} bytes")
        if not data:
            return
        end = offset + len(data)
        # A resent chunk (or one inside chunks already here) changes nothing: idempotent by (digest, offset).
        covered = offset
        for o, n, _ in self._parts(digest):
            if o <= covered < o + n:
                covered = o + n
            if covered >= end:
                return
        try:
            # Durable before it counts: temp name, fsync, rename, directory fsync.
            write_file(self._stage(digest) / f"{offset:013d}.{len(data):010d}", data, mode=0o640)
        except FileNotFoundError:
            raise NotStagedError(f"staging of {digest} was discarded meanwhile; announce it again") from None

    def received(self, digest: str) -> int:
        if self.exists(digest):
            return self.size(digest)
        size = self._announced(digest)
        if size is None:
            return 0
        return min(size, self._contiguous(self._parts(digest)))

    def discard_staging(self, digest: str) -> None:
        stage = self._stage(digest)
        if stage.exists():
            # Rename first, so no reader ever sees half a staging directory, then remove.
            trash = self.staging / f".discard-{blob_hex(digest)}-{secrets.token_hex(4)}"
            with contextlib.suppress(FileNotFoundError):
                os.replace(stage, trash)
                fsync_dir(self.staging)
                shutil.rmtree(trash, ignore_errors=True)

    # -- commit ----------------------------------------------------------------------------------

    def commit(self, digest: str) -> int:
        final = self._final(digest)
        # Two workers may finish the same file at once: one assembles, the other finds the blob there.
        # 256 lock files, striped by digest: a lock file is never removed (removing one while another
        # process waits on it would let a third lock a new file of the same name).
        with exclusive_lock(self.staging / f".lock-{blob_hex(digest)[:2]}"):
            if final.exists():
                self.discard_staging(digest)  # a crash may have left it after the link below
                return final.stat().st_size
            size = self._announced(digest)
            if size is None:
                raise NotStagedError(f"{digest} was never announced (begin) in this store")
            parts = self._parts(digest)
            have = min(size, self._contiguous(parts))
            if have < size:
                raise IncompleteError(f"{digest}: {have} of {size} bytes received")
            make_dir(final.parent, mode=0o750)
            tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")
            try:
                self._assemble(tmp, parts, size)
                # The check is over the bytes as stored, read back from the file — not over what
                # we meant to write.
                actual, length = file_digest(tmp)
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
                    os.link(tmp, final)
                fsync_dir(final.parent)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            self.discard_staging(digest)
            return size

    @staticmethod
    def _assemble(tmp: Path, parts: list[tuple[int, int, Path]], size: int) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, BLOB_MODE)
        try:
            pos = 0
            for offset, length, path in parts:
                if pos >= size:
                    break
                if offset + length <= pos:
                    continue  # wholly inside bytes already written
                with open(path, "rb") as f:
                    f.seek(pos - offset)
                    while pos < offset + length:
                        buf = f.read(min(_COPY, offset + length - pos))
                        if not buf:
                            raise StoreError(f"staged chunk {path.name} is shorter than its name says")
                        view = memoryview(buf)
                        while view:
                            n = os.write(fd, view)
                            view = view[n:]
                        pos += len(buf)
            os.fsync(fd)
        finally:
            os.close(fd)

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
