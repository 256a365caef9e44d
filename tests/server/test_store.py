"""The local content-addressed store: write-once blobs, resumable offset-addressed staging, hash checks,
and durability in the right order."""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import threading
from pathlib import Path

import pytest

from server.errors import (
    BlobNotFoundError,
    BlobSizeError,
    HashMismatchError,
    IncompleteError,
    NotStagedError,
    StoreError,
)
from server.evidence import directio
from server.evidence.store import LocalBlobStore


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(params=[True, False], ids=["direct-io", "page-cache"])
def store(tmp_path: Path, request: pytest.FixtureRequest) -> LocalBlobStore:
    """Both ways of staging: O_DIRECT (where the file system allows it: the default) and the page cache."""
    # Not skipped where O_DIRECT is refused: then the direct path would go untested unnoticed. The test
    # machines' /tmp (ext4, tmpfs) take it; elsewhere point TMPDIR at a file system that does.
    assert not request.param or directio.supported(tmp_path), f"{tmp_path} refuses O_DIRECT"
    return LocalBlobStore(tmp_path / "store", tmp_path / "data" / "staging", direct_io=request.param)


def test_commit_makes_a_write_once_blob(store: LocalBlobStore, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    d = _digest(data)
    store.begin(d, len(data))
    store.write_at(d, 0, data)
    assert not store.exists(d)
    assert store.commit(d) == len(data)
    path = tmp_path / "store" / store.key(d)
    assert store.key(d) == f"{d[7:9]}/{d[9:11]}/{d[7:]}"
    assert path.stat().st_mode & 0o777 == 0o444
    with store.open(d) as f:
        assert f.read() == data
    assert (store.exists(d), store.size(d), store.received(d)) == (True, len(data), len(data))
    before = path.stat()
    # Committing again, announcing again, writing again: none of it touches the blob.
    assert store.commit(d) == len(data)
    store.begin(d, len(data))
    store.write_at(d, 0, b"\0" * 10)
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        before.st_ino,
        before.st_mtime_ns,
        before.st_size,
    )
    with pytest.raises(BlobSizeError):
        store.begin(d, len(data) + 1)
    assert not list((tmp_path / "data" / "staging").glob("[0-9a-f]*"))  # staging cleaned up


def test_resume_offsets_out_of_order_duplicates_and_overlaps(store: LocalBlobStore, tmp_path: Path) -> None:
    data = os.urandom(1000)
    d = _digest(data)
    store.begin(d, 1000)
    store.begin(d, 1000)  # idempotent
    assert store.received(d) == 0
    store.write_at(d, 300, data[300:600])
    assert store.received(d) == 0  # not contiguous from 0
    store.write_at(d, 0, data[0:200])
    assert store.received(d) == 200
    store.write_at(d, 0, data[0:200])  # a resent chunk changes nothing
    store.write_at(d, 100, data[100:350])  # overlaps both neighbours (another chunk size after a restart)
    assert store.received(d) == 600
    # A torn write (a temp file never renamed) is not counted; a restarted store sees the same state.
    (tmp_path / "data" / "staging" / d[7:] / ".0000000000600.0000000400.abcd.tmp").write_bytes(data[600:])
    again = LocalBlobStore(tmp_path / "store", tmp_path / "data" / "staging")
    assert again.received(d) == 600
    with pytest.raises(IncompleteError):
        again.commit(d)
    again.write_at(d, 600, data[600:])
    assert again.commit(d) == 1000
    with again.open(d) as f:
        assert f.read() == data


def test_hash_mismatch_is_refused_and_staging_discarded(store: LocalBlobStore) -> None:
    data = os.urandom(5000)
    d = _digest(data)
    store.begin(d, len(data))
    store.write_at(d, 0, data[:2500])
    store.write_at(d, 2500, bytes([data[2500] ^ 0xFF]) + data[2501:])
    with pytest.raises(HashMismatchError) as exc:
        store.commit(d)
    assert exc.value.actual != d
    assert not store.exists(d)
    assert store.received(d) == 0
    with pytest.raises(NotStagedError):
        store.write_at(d, 0, data)  # must be announced again
    store.begin(d, len(data))
    store.write_at(d, 0, data)
    assert store.commit(d) == len(data)


def test_refusals(store: LocalBlobStore) -> None:
    d = _digest(b"abc")
    with pytest.raises(NotStagedError):
        store.write_at(d, 0, b"abc")
    store.begin(d, 3)
    with pytest.raises(BlobSizeError):
        store.write_at(d, 2, b"bc")
    with pytest.raises(BlobSizeError):
        store.begin(d, 4)
    with pytest.raises(StoreError):
        store.begin("sha256:" + "A" * 64, 3)
    with pytest.raises(StoreError):
        store.begin("sha256:" + "a" * 64 + "\n", 3)
    with pytest.raises(BlobNotFoundError):
        store.open(d)
    empty = _digest(b"")
    store.begin(empty, 0)
    assert store.received(empty) == 0
    assert store.commit(empty) == 0  # an empty (e.g. recovered) file is a blob like any other


def test_two_workers_committing_the_same_blob(store: LocalBlobStore, tmp_path: Path) -> None:
    data = os.urandom(2_000_000)
    d = _digest(data)
    store.begin(d, len(data))
    for off in range(0, len(data), 250_000):
        store.write_at(d, off, data[off : off + 250_000])
    other = LocalBlobStore(tmp_path / "store", tmp_path / "data" / "staging")
    results: list[int | BaseException] = []

    def commit(s: LocalBlobStore) -> None:
        try:
            results.append(s.commit(d))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=commit, args=(s,)) for s in (store, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [len(data), len(data)]
    assert [p.name for p in (tmp_path / "store").rglob("*") if p.is_file()] == [d[7:]]


def test_durability_order(store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk counts only after its bytes and then its marker's name are on disk; a blob is linked only
    after its bytes are on disk, and commit returns only after the link is."""
    calls: list[tuple[str, str]] = []
    real_fsync, real_fdatasync, real_link = os.fsync, os.fdatasync, os.link
    data = os.urandom(10_000)
    d = _digest(data)
    stage = store.staging / d[7:]
    marker = stage / f"{0:013d}.{len(data):010d}"

    def sync(kind: str, real: object) -> object:
        def wrapped(fd: int) -> None:
            # What was synced, and whether the chunk's marker already existed at that moment.
            calls.append((kind, os.readlink(f"/proc/self/fd/{fd}") + ("+marker" if marker.exists() else "")))
            real(fd)  # type: ignore[operator]

        return wrapped

    def link(src: object, dst: object) -> None:
        calls.append(("link", str(dst)))
        real_link(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", sync("fsync", real_fsync))
    monkeypatch.setattr(os, "fdatasync", sync("fdatasync", real_fdatasync))
    monkeypatch.setattr(os, "link", link)
    store.begin(d, len(data))
    calls.clear()
    store.write_at(d, 0, data)
    # The staged bytes first, then (first time) the staging directory's files and its own name, all
    # with no marker yet; then the marker's name.
    assert calls[0] == ("fdatasync", str(stage / "data")), calls
    assert {("fsync", str(stage / "size")), ("fsync", str(stage)), ("fsync", str(store.staging))} <= set(
        calls[1:-1]
    ), calls
    assert not [c for c in calls[:-1] if c[1].endswith("+marker")], calls
    assert calls[-1] == ("fsync", str(stage) + "+marker"), calls
    assert store.received(d) == len(data)

    calls.clear()
    store.commit(d)
    final = str(store.root / store.key(d))
    i_link = calls.index(("link", final))
    before = [c[1].removesuffix("+marker") for c in calls[:i_link] if c[0] == "fsync"]
    after = [c[1].removesuffix("+marker") for c in calls[i_link + 1 :] if c[0] == "fsync"]
    assert str(stage / "data") in before  # the blob's file, before its name
    assert str(Path(final).parent) in after  # then the name


def test_commit_sets_the_staging_aside_and_tidy_removes_it_later(tmp_path: Path) -> None:
    """The committed blob's staging leaves its place at commit (one rename) and is removed by ``tidy``,
    which the worker calls once the answers are out; a process that stopped before tidying leaves
    ``.discard-*`` directories, which the next store on that staging removes. The 256 first-level
    blob directories exist from the start."""
    store = LocalBlobStore(tmp_path / "store", tmp_path / "staging")
    assert sorted(p.name for p in store.root.iterdir()) == [f"{n:02x}" for n in range(256)]
    data = os.urandom(50_000)
    d = _digest(data)
    store.begin(d, len(data))
    store.write_at(d, 0, data)
    store.commit(d, tidy_later=True)
    assert not (store.staging / d[7:]).exists()
    aside = list(store.staging.glob(".discard-*"))
    assert len(aside) == 1
    assert (aside[0] / "data").exists()
    store.tidy()
    assert not aside[0].exists()
    store.tidy()  # nothing left: a no-op

    # Committed, not tidied, process gone: the next store removes it.
    e = _digest(data + b"!")
    store.begin(e, len(data) + 1)
    store.write_at(e, 0, data + b"!")
    store.commit(e, tidy_later=True)
    left = list(store.staging.glob(".discard-*"))
    assert len(left) == 1
    again = LocalBlobStore(tmp_path / "store", tmp_path / "staging")
    assert not left[0].exists()
    with again.open(e) as f:
        assert f.read() == data + b"!"

    # Without tidy_later (the API's uploads), commit cleans up at once: nothing is left for anyone.
    g = _digest(data + b"?")
    again.begin(g, len(data) + 1)
    again.write_at(g, 0, data + b"?")
    again.commit(g)
    assert list(again.staging.iterdir()) == [
        p for p in again.staging.iterdir() if p.name.startswith(".lock-")
    ]


def test_write_many_flushes_once_and_leaves_a_completing_flush_to_commit(
    store: LocalBlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(4 * 65536 + 123)
    d = _digest(data)
    store.begin(d, len(data))
    chunks = [(off, data[off : off + 65536]) for off in range(0, len(data), 65536)]
    syncs: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (syncs.append(fd), real(fd)))
    # Out of order, with a chunk twice: one flush for the lot, counted contiguously.
    assert store.write_many(d, [chunks[2], chunks[0], chunks[1], chunks[0]]) == 3 * 65536
    assert len(syncs) == 1
    assert store.received(d) == 3 * 65536
    # The chunks that complete the blob are not flushed nor claimed here: a store that died now
    # (another instance reading the same directory) counts only what was durable before.
    assert store.write_many(d, chunks[3:]) == len(data)
    assert len(syncs) == 1
    assert LocalBlobStore(tmp_path / "store", tmp_path / "data" / "staging").received(d) == 3 * 65536
    assert store.commit(d) == len(data)  # commit syncs, hashes the stored bytes and links them
    with store.open(d) as f:
        assert f.read() == data


@pytest.mark.parametrize("seed", range(6))
def test_chunks_at_any_offsets_and_lengths_make_the_same_blob(store: LocalBlobStore, seed: int) -> None:
    """Chunks cut at random places — most of them not on page boundaries — written out of order, some
    twice: direct I/O takes their whole pages, the page cache their edges; the blob is byte for byte
    what was sent."""
    rng = random.Random(seed)
    data = rng.randbytes(rng.randrange(1, 3 * 1024 * 1024))
    d = _digest(data)
    cuts = sorted({0, len(data), *(rng.randrange(len(data)) for _ in range(rng.randrange(0, 12)))})
    chunks = [(a, data[a:b]) for a, b in itertools.pairwise(cuts)]
    rng.shuffle(chunks)
    chunks += rng.sample(chunks, k=min(2, len(chunks)))
    store.begin(d, len(data))
    for i in range(0, len(chunks), 3):
        store.write_many(d, chunks[i : i + 3])
    assert store.commit(d) == len(data)
    with store.open(d) as f:
        assert f.read() == data


def test_the_staged_bytes_go_to_the_disk_and_are_hashed_back_from_it_with_o_direct(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the file system allows it (the default), a chunk's whole pages are written, and the file is
    read back for its hash check, through descriptors opened with O_DIRECT; a file system that refuses
    O_DIRECT gets plain reads and writes, and the same blob."""
    assert directio.supported(tmp_path), f"{tmp_path} refuses O_DIRECT: point TMPDIR elsewhere"
    store = LocalBlobStore(tmp_path / "store", tmp_path / "staging")
    assert store.direct_io is True
    opened: list[tuple[str, int]] = []
    real_open = os.open

    def spy(path: object, flags: int, *args: object, **kw: object) -> int:
        opened.append((str(path), flags))
        return real_open(path, flags, *args, **kw)  # type: ignore[call-overload,no-any-return]

    monkeypatch.setattr(os, "open", spy)
    data = os.urandom(1024 * 1024 + 123)  # a whole MiB of pages and 123 bytes that are not a page
    d = _digest(data)
    store.begin(d, len(data))
    store.write_at(d, 0, data)
    staged = str(store.staging / d[7:] / "data")
    direct = [
        flags & (os.O_WRONLY | os.O_RDONLY | os.O_RDWR)
        for p, flags in opened
        if p == staged and flags & os.O_DIRECT
    ]
    assert direct == [os.O_WRONLY], opened
    opened.clear()
    assert store.commit(d) == len(data)
    reads = [
        flags & (os.O_ACCMODE | os.O_DIRECT) for p, flags in opened if p == staged and not flags & os.O_WRONLY
    ]
    assert os.O_RDONLY | os.O_DIRECT in reads, opened  # the hash check's read (the other: commit's fsync)
    with store.open(d) as f:
        assert f.read() == data

    # A file system that refuses O_DIRECT (EINVAL at open, as some FUSE mounts do): plain I/O.
    def refuse(path: object, flags: int, *args: object, **kw: object) -> int:
        if flags & os.O_DIRECT:
            raise OSError(22, "Invalid argument")
        return real_open(path, flags, *args, **kw)  # type: ignore[call-overload,no-any-return]

    monkeypatch.setattr(os, "open", refuse)
    plain = LocalBlobStore(tmp_path / "store2", tmp_path / "staging2")
    assert plain.direct_io is False
    e = _digest(data[::-1])
    plain.begin(e, len(data))
    plain.write_at(e, 0, data[::-1])
    assert plain.commit(e) == len(data)
