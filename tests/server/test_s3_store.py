"""The S3 evidence store against a real SeaweedFS (started here on 127.0.0.1), and the store contract
run over both backends: what the local store promises, the S3 one promises too.

What SeaweedFS 4.48 enforces of Object Lock, as these tests observe it, is written down in
docs/object-store.md; each test of it says which way it is.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from server.config import ServerSettings
from server.errors import (
    BlobNotFoundError,
    BlobSizeError,
    HashMismatchError,
    IncompleteError,
    NotStagedError,
    SettingsError,
    StoreError,
)
from server.evidence.backend import make_blob_store
from server.evidence.s3 import MIN_PART_SIZE, S3BlobStore
from server.evidence.service import iter_blob
from server.evidence.store import BlobStore, LocalBlobStore
from tests.server.seaweed import ACCESS_KEY, Seaweed

BUCKET = "evidence"
_PREFIXES = itertools.count(1)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _code(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    r = exc.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture(scope="module")
def seaweed() -> Iterator[Seaweed]:
    root = Path(tempfile.mkdtemp(prefix="fieldproof-seaweed-"))
    sw = Seaweed(root).start()
    sw.make_bucket(BUCKET)
    sw.make_bucket("nolock", object_lock=False)
    try:
        yield sw
    finally:
        sw.stop()
        subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.fixture
def prefix() -> str:
    return f"t{next(_PREFIXES)}-{os.getpid()}/"


@pytest.fixture
def s3_store(seaweed: Seaweed, prefix: str) -> S3BlobStore:
    """A store under its own prefix: one day of COMPLIANCE retention, the smallest parts S3 allows."""
    return S3BlobStore(seaweed.client(), BUCKET, prefix=prefix, lock_days=1, part_size=MIN_PART_SIZE)


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], BlobStore]:
    """Makes store instances of one backend that share one state (as several workers would)."""
    if request.param == "local":
        return lambda: LocalBlobStore(tmp_path / "store", tmp_path / "data" / "staging")
    sw: Seaweed = request.getfixturevalue("seaweed")
    prefix = request.getfixturevalue("prefix")
    return lambda: S3BlobStore(sw.client(), BUCKET, prefix=prefix, lock_days=1, part_size=MIN_PART_SIZE)


def _read(store: BlobStore, digest: str) -> bytes:
    with store.open(digest) as f:
        return f.read()


def _versions(store: S3BlobStore, prefix: str) -> list[dict[str, Any]]:
    page = store.client.list_object_versions(Bucket=store.bucket, Prefix=store.prefix + prefix)
    return [*page.get("Versions", []), *page.get("DeleteMarkers", [])]


def _committed(store: S3BlobStore, data: bytes) -> str:
    d = _digest(data)
    store.begin(d, len(data))
    store.write_at(d, 0, data)
    assert store.commit(d) == len(data)
    return d


# -- the contract, over both backends -------------------------------------------------------------


def test_contract_write_once_blob(backend: Callable[[], BlobStore]) -> None:
    store = backend()
    data = os.urandom(300_000)
    d = _digest(data)
    store.begin(d, len(data))
    store.write_at(d, 0, data)
    assert not store.exists(d)
    with pytest.raises(BlobNotFoundError):
        store.open(d)
    assert store.commit(d) == len(data)
    assert _read(store, d) == data
    assert (store.exists(d), store.size(d), store.received(d)) == (True, len(data), len(data))
    # Committing again, announcing again, writing other bytes again: none of it changes the blob.
    assert store.commit(d) == len(data)
    store.begin(d, len(data))
    store.write_at(d, 0, b"\0" * 10)
    assert store.received(d) == len(data)
    assert _read(backend(), d) == data  # also for another instance (another worker)
    with pytest.raises(BlobSizeError):
        store.begin(d, len(data) + 1)


def test_contract_resume_out_of_order_duplicates_overlaps(backend: Callable[[], BlobStore]) -> None:
    store = backend()
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
    again = backend()  # a restarted worker sees the same state
    assert again.received(d) == 600
    with pytest.raises(IncompleteError):
        again.commit(d)
    again.write_at(d, 600, data[600:])
    assert again.commit(d) == 1000
    assert _read(again, d) == data


def test_contract_a_resent_chunk_with_other_bytes_changes_nothing(backend: Callable[[], BlobStore]) -> None:
    store = backend()
    data = os.urandom(4096)
    d = _digest(data)
    store.begin(d, len(data))
    store.write_at(d, 0, data[:2048])
    store.write_at(d, 0, os.urandom(2048))  # a hostile or faulty resend of a counted range
    store.write_at(d, 2048, data[2048:])
    assert store.commit(d) == len(data)
    assert _read(store, d) == data


def test_contract_write_many_out_of_order_and_twice(backend: Callable[[], BlobStore]) -> None:
    store = backend()
    data = os.urandom(4 * 65536 + 123)
    d = _digest(data)
    store.begin(d, len(data))
    chunks = [(off, data[off : off + 65536]) for off in range(0, len(data), 65536)]
    assert store.write_many(d, [chunks[2], chunks[0], chunks[1], chunks[0]]) == 3 * 65536
    assert store.received(d) == 3 * 65536
    assert store.write_many(d, chunks[3:]) == len(data)
    assert store.commit(d) == len(data)
    assert _read(store, d) == data


def test_contract_hash_mismatch_is_refused_and_staging_discarded(backend: Callable[[], BlobStore]) -> None:
    store = backend()
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


def test_contract_refusals(backend: Callable[[], BlobStore]) -> None:
    store = backend()
    d = _digest(b"abc")
    with pytest.raises(NotStagedError):
        store.write_at(d, 0, b"abc")
    with pytest.raises(NotStagedError):
        store.commit(d)
    store.begin(d, 3)
    with pytest.raises(BlobSizeError):
        store.write_at(d, 2, b"bc")
    with pytest.raises(BlobSizeError):
        store.begin(d, 4)
    with pytest.raises(StoreError):
        store.begin("sha256:" + "A" * 64, 3)
    with pytest.raises(BlobNotFoundError):
        store.open(d)
    with pytest.raises(BlobNotFoundError):
        store.size(d)
    empty = _digest(b"")
    store.begin(empty, 0)
    assert store.received(empty) == 0
    assert store.commit(empty) == 0  # an empty (e.g. recovered) file is a blob like any other
    assert _read(store, empty) == b""


def test_contract_two_workers_commit_the_same_blob(backend: Callable[[], BlobStore]) -> None:
    data = os.urandom(2_000_000)
    d = _digest(data)
    first, other = backend(), backend()
    first.begin(d, len(data))
    for off in range(0, len(data), 250_000):
        first.write_at(d, off, data[off : off + 250_000])
    results: list[int | BaseException] = []

    def commit(s: BlobStore) -> None:
        try:
            results.append(s.commit(d))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=commit, args=(s,)) for s in (first, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [len(data), len(data)]
    assert _read(first, d) == data
    if isinstance(first, S3BlobStore):
        assert len([v for v in _versions(first, "blobs/") if "Size" in v]) == 1  # one version, no marker


def test_a_commit_whose_staging_another_worker_committed_and_discarded_returns_the_blob(
    seaweed: Seaweed, prefix: str
) -> None:
    """Worker A reads the staged chunks back to upload them; meanwhile worker B commits the blob and
    discards the staging. A's next read finds no key: A seals the blob B stored instead of failing
    (met with 2 workers in bench/load_bench.py --store s3 as a false ``error`` custody event)."""
    a = S3BlobStore(seaweed.client(), BUCKET, prefix=prefix, lock_days=1, part_size=MIN_PART_SIZE)
    b = S3BlobStore(seaweed.client(), BUCKET, prefix=prefix, lock_days=1, part_size=MIN_PART_SIZE)
    data = os.urandom(3 * 400_000)
    d = _digest(data)
    a.begin(d, len(data))
    for off in range(0, len(data), 400_000):
        a.write_at(d, off, data[off : off + 400_000])
    staged = a._staged_bytes

    def racing(digest: str, parts: list[tuple[int, int]], size: int) -> Iterator[bytes]:
        chunks = staged(digest, parts, size)
        yield next(chunks)  # the first chunk read back, then B commits and discards the staging
        assert b.commit(d) == len(data)
        yield from chunks

    a._staged_bytes = racing  # type: ignore[method-assign]
    assert a.commit(d) == len(data)
    assert _read(a, d) == data
    assert len([v for v in _versions(a, "blobs/") if "Size" in v]) == 1  # one version: B's


def test_a_commit_that_finds_the_staging_already_discarded_returns_the_blob(
    seaweed: Seaweed, prefix: str
) -> None:
    """As above, one step earlier: B commits and discards the staging after A looked for the blob and
    before A lists the staged chunks — A sees 0 bytes received, and must still answer with B's blob."""
    a = S3BlobStore(seaweed.client(), BUCKET, prefix=prefix, lock_days=1, part_size=MIN_PART_SIZE)
    b = S3BlobStore(seaweed.client(), BUCKET, prefix=prefix, lock_days=1, part_size=MIN_PART_SIZE)
    data = os.urandom(2 * 400_000)
    d = _digest(data)
    a.begin(d, len(data))
    for off in range(0, len(data), 400_000):
        a.write_at(d, off, data[off : off + 400_000])
    parts = a._parts

    def late(digest: str) -> list[tuple[int, int]]:
        assert b.commit(d) == len(data)
        return parts(digest)

    a._parts = late  # type: ignore[method-assign]
    assert a.commit(d) == len(data)
    assert _read(a, d) == data


def test_two_workers_sealing_one_version_both_succeed(seaweed: Seaweed, prefix: str) -> None:
    """The second worker to put retention on a version asks for an earlier date than the first one
    set (its clock was read first): S3 refuses shortening (AccessDenied), and the version is sealed
    anyway — met in bench/load_bench.py --store s3 with a worker killed mid-run."""
    a = S3BlobStore(seaweed.client(), BUCKET, prefix=prefix, lock_days=1, part_size=MIN_PART_SIZE)
    b = S3BlobStore(seaweed.client(), BUCKET, prefix=prefix, lock_days=2, part_size=MIN_PART_SIZE)
    data = os.urandom(300_000)
    d = _digest(data)
    b.begin(d, len(data))
    b.write_at(d, 0, data)
    version = b._version(d)
    assert version is None
    a.begin(d, len(data))
    a._put_whole(d, d.removeprefix("sha256:"), len(data), iter([data]))
    version = a._version(d)
    assert version is not None
    assert b._seal(d, version) is not None  # B seals first: two days
    assert a._seal(d, version) is not None  # A asks for one day: refused as shorter, sealed anyway
    assert a.commit(d) == len(data)
    assert _read(a, d) == data


def test_contract_open_seeks_and_reads_ranges(backend: Callable[[], BlobStore]) -> None:
    store = backend()
    data = os.urandom(3_000_000)
    d = _digest(data)
    store.begin(d, len(data))
    store.write_many(d, [(off, data[off : off + 1 << 20]) for off in range(0, len(data), 1 << 20)])
    store.commit(d)
    assert b"".join(iter_blob(store, d, start=1_234_567, length=1_000_000)) == data[1_234_567:2_234_567]
    with store.open(d) as f:
        f.seek(-10, os.SEEK_END)
        assert f.read() == data[-10:]
        f.seek(5)
        assert f.read(7) == data[5:12]


# -- the S3 store's own promises ------------------------------------------------------------------


def test_staging_is_one_object_per_run_and_goes_entirely(s3_store: S3BlobStore) -> None:
    data = os.urandom(300_000)
    d = _digest(data)
    s3_store.begin(d, len(data))
    s3_store.write_many(d, [(0, data[:100_000]), (100_000, data[100_000:200_000])])  # one run
    s3_store.write_at(d, 250_000, data[250_000:])
    names = sorted(v["Key"].rsplit("/", 1)[1] for v in _versions(s3_store, "staging/"))
    assert names == ["0000000000000.0000200000", "0000000250000.0000050000", "size"]
    s3_store.write_at(d, 200_000, data[200_000:250_000])
    s3_store.commit(d)
    # No staged object survives the commit, not even as an old version behind a delete marker.
    assert _versions(s3_store, "staging/") == []


def test_a_batch_that_completes_a_blob_goes_to_the_bucket_once(s3_store: S3BlobStore) -> None:
    """As the local store's write_many leaves its completing flush to commit: one batch that completes
    a blob nothing was staged for is not staged (claimed) at all; commit stores it from memory."""
    data = os.urandom(4 * 65536 + 123)
    d = _digest(data)
    s3_store.begin(d, len(data))
    chunks = [(off, data[off : off + 65536]) for off in range(0, len(data), 65536)]
    assert s3_store.write_many(d, [chunks[2], chunks[0], *chunks[3:], chunks[1], chunks[0]]) == len(data)
    assert [v["Key"].rsplit("/", 1)[1] for v in _versions(s3_store, "staging/")] == ["size"]
    other = S3BlobStore(s3_store.client, BUCKET, prefix=s3_store.prefix, lock_days=1)
    assert other.received(d) == 0  # nothing claimed: a worker that died now would have reported nothing
    with pytest.raises(IncompleteError):
        other.commit(d)
    assert s3_store.commit(d) == len(data)
    assert _read(other, d) == data
    assert _versions(s3_store, "staging/") == []
    # Wrong bytes held in memory are refused like staged ones, and nothing stays held or staged.
    bad = bytearray(os.urandom(70_000))
    b = _digest(bytes(bad))
    bad[0] ^= 1
    s3_store.begin(b, len(bad))
    assert s3_store.write_many(b, [(0, bytes(bad))]) == len(bad)
    with pytest.raises(HashMismatchError):
        s3_store.commit(b)
    assert not s3_store.exists(b)
    with pytest.raises(NotStagedError):
        s3_store.commit(b)


def test_large_file_is_a_multipart_upload_checked_part_by_part(s3_store: S3BlobStore) -> None:
    data = os.urandom(3 * MIN_PART_SIZE + 12345)
    d = _digest(data)
    s3_store.begin(d, len(data))
    step = 1 << 20
    chunks = [(off, data[off : off + step]) for off in range(0, len(data), step)]
    s3_store.write_many(d, chunks[::2])  # staged: the multipart upload reads the staged runs back
    s3_store.write_many(d, chunks[1::2])
    assert s3_store.commit(d) == len(data)
    head = s3_store.client.head_object(Bucket=BUCKET, Key=s3_store.object_key(d), ChecksumMode="ENABLED")
    assert head["ETag"].endswith('-4"')  # four parts
    assert head["ChecksumSHA256"].endswith("-4")  # the store checked a SHA-256 per part
    assert hashlib.sha256(_read(s3_store, d)).hexdigest() == d[7:]
    assert s3_store.lock_state(d).lock_mode == "COMPLIANCE"


def test_large_file_with_wrong_bytes_leaves_nothing_under_its_key(s3_store: S3BlobStore) -> None:
    data = bytearray(os.urandom(2 * MIN_PART_SIZE + 1))
    d = _digest(bytes(data))
    data[-1] ^= 1
    s3_store.begin(d, len(data))
    s3_store.write_at(d, 0, bytes(data))
    with pytest.raises(HashMismatchError):
        s3_store.commit(d)
    assert _versions(s3_store, "blobs/") == []
    uploads = s3_store.client.list_multipart_uploads(Bucket=BUCKET, Prefix=s3_store.prefix)
    assert uploads.get("Uploads", []) == []  # aborted, not left to rot


def test_small_blob_is_checked_by_the_store_against_the_signed_digest(s3_store: S3BlobStore) -> None:
    d = _committed(s3_store, b"a text record")
    head = s3_store.client.head_object(Bucket=BUCKET, Key=s3_store.object_key(d), ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == __import__("base64").b64encode(bytes.fromhex(d[7:])).decode()
    # And the store refuses a body that does not hash to the checksum sent with it.
    with pytest.raises(ClientError) as exc:
        s3_store.client.put_object(
            Bucket=BUCKET,
            Key=s3_store.prefix + "x",
            Body=b"other bytes",
            ChecksumSHA256=head["ChecksumSHA256"],
        )
    assert _code(exc)[1] == 400


def test_a_commit_that_died_before_its_seal_is_finished_by_the_next(
    s3_store: S3BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(10_000)
    d = _digest(data)
    s3_store.begin(d, len(data))
    s3_store.write_at(d, 0, data)

    def crash(**kw: Any) -> None:
        raise StoreError("power cut")

    with monkeypatch.context() as m:
        m.setattr(s3_store.client, "put_object_retention", crash)
        with pytest.raises(StoreError, match="power cut"):
            s3_store.commit(d)
    # Uploaded, not sealed: not a blob yet for anyone (the bytes went from memory, nothing was staged
    # or claimed); the next commit finds the upload, hashes it and seals it.
    fresh = S3BlobStore(s3_store.client, BUCKET, prefix=s3_store.prefix, lock_days=1)
    assert not fresh.exists(d)
    assert fresh.received(d) == 0
    assert fresh.commit(d) == len(data)
    assert fresh.lock_state(d).lock_mode == "COMPLIANCE"
    assert len([v for v in _versions(fresh, "blobs/") if "Size" in v]) == 1


def test_wrong_bytes_already_under_the_key_are_replaced_before_the_seal(s3_store: S3BlobStore) -> None:
    """Someone with write access put other bytes under the blob's key first (unlocked): the commit
    finds them wrong by hashing, deletes that version and stores the signed bytes."""
    data = os.urandom(10_000)
    d = _digest(data)
    s3_store.client.put_object(Bucket=BUCKET, Key=s3_store.object_key(d), Body=b"forged")
    s3_store.begin(d, len(data))
    s3_store.write_at(d, 0, data)
    assert s3_store.commit(d) == len(data)
    assert _read(s3_store, d) == data
    assert len([v for v in _versions(s3_store, "blobs/") if "Size" in v]) == 1


_WRITER = r"""
import os, sys, time
from server.evidence.s3 import S3BlobStore, make_client, MIN_PART_SIZE
endpoint, secret, prefix, digest, path = sys.argv[1:6]
client = make_client(endpoint=endpoint, access_key_id="{access}", secret_access_key=secret)
store = S3BlobStore(client, "evidence", prefix=prefix, lock_days=1, part_size=MIN_PART_SIZE)
data = open(path, "rb").read()
store.begin(digest, len(data))
half = len(data) // 2
store.write_at(digest, 0, data[:half])  # staged durably, in two runs
store.write_at(digest, half, data[half:])
real = client.upload_part
def slow(**kw):
    answer = real(**kw)
    print("part", kw["PartNumber"], flush=True)
    time.sleep(60)  # killed here, with one part uploaded and the upload never completed
    return answer
client.upload_part = slow
store.commit(digest)
""".replace("{access}", ACCESS_KEY)


def test_a_killed_writer_leaves_nothing_committed(
    seaweed: Seaweed, s3_store: S3BlobStore, tmp_path: Path
) -> None:
    data = os.urandom(2 * MIN_PART_SIZE + 99)
    d = _digest(data)
    (tmp_path / "blob").write_bytes(data)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _WRITER,
            seaweed.endpoint,
            seaweed.secret_key,
            s3_store.prefix,
            d,
            str(tmp_path / "blob"),
        ],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"part 1"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    # Killed mid-commit: no blob, no version under its key; what it staged is still counted.
    assert not s3_store.exists(d)
    assert _versions(s3_store, "blobs/") == []
    assert s3_store.received(d) == len(data)
    stale = s3_store.client.list_multipart_uploads(Bucket=BUCKET, Prefix=s3_store.prefix).get("Uploads", [])
    assert len(stale) == 1  # the dead writer's upload: invisible to readers, never completed
    assert s3_store.commit(d) == len(data)  # another worker finishes the file
    assert _read(s3_store, d) == data
    assert s3_store.abort_stale_uploads(older_than=timedelta(0)) == 1
    assert (
        s3_store.client.list_multipart_uploads(Bucket=BUCKET, Prefix=s3_store.prefix).get("Uploads", []) == []
    )


# -- Object Lock, as SeaweedFS enforces it --------------------------------------------------------


def test_object_lock_compliance_retention_blocks_deletion(s3_store: S3BlobStore) -> None:
    data = os.urandom(20_000)
    d = _committed(s3_store, data)
    state = s3_store.lock_state(d)
    assert state.lock_mode == "COMPLIANCE"
    assert state.retain_until is not None
    assert timedelta(hours=23) < state.retain_until - datetime.now(UTC) <= timedelta(days=1)
    c, key, vid = s3_store.client, s3_store.object_key(d), state.version_id
    # ENFORCED: the locked version cannot be deleted, not even with the governance bypass.
    for extra in ({}, {"BypassGovernanceRetention": True}):
        with pytest.raises(ClientError) as exc:
            c.delete_object(Bucket=BUCKET, Key=key, VersionId=vid, **extra)
        assert _code(exc) == ("AccessDenied", 403)
    # ENFORCED: retention cannot be shortened, nor turned into GOVERNANCE.
    for mode, until in (
        ("COMPLIANCE", datetime.now(UTC) + timedelta(hours=1)),
        ("GOVERNANCE", state.retain_until),
    ):
        with pytest.raises(ClientError) as exc:
            c.put_object_retention(
                Bucket=BUCKET, Key=key, VersionId=vid, Retention={"Mode": mode, "RetainUntilDate": until}
            )
        assert _code(exc) == ("AccessDenied", 403)
    # A delete without a version id is accepted, as S3 specifies: it only adds a delete marker. The
    # locked version stays, and this store still serves it.
    assert c.delete_object(Bucket=BUCKET, Key=key)["DeleteMarker"] is True
    assert _read(S3BlobStore(c, BUCKET, prefix=s3_store.prefix, lock_days=1), d) == data
    with pytest.raises(StoreError, match="retention has not passed"):
        s3_store.purge(d)
    assert _read(s3_store, d) == data
    # Retention can be lengthened (what the retention code does for case footage).
    later = datetime.now(UTC) + timedelta(days=3)
    assert s3_store.extend_retention(d, later) == later
    now_until = s3_store.lock_state(d).retain_until
    assert now_until is not None
    assert abs(now_until - later) < timedelta(seconds=1)
    # An earlier date changes nothing (the store would refuse it; the method does not even ask).
    assert s3_store.extend_retention(d, datetime.now(UTC) + timedelta(days=2)) == now_until


def test_object_lock_versions_cannot_be_overwritten_but_the_key_can_get_a_new_version(
    s3_store: S3BlobStore,
) -> None:
    data = os.urandom(20_000)
    d = _committed(s3_store, data)
    c, key = s3_store.client, s3_store.object_key(d)
    vid = s3_store.lock_state(d).version_id
    # ENFORCED: a write-once PUT (If-None-Match: *) onto the committed key is refused.
    with pytest.raises(ClientError) as exc:
        c.put_object(Bucket=BUCKET, Key=key, Body=b"forged", IfNoneMatch="*")
    assert _code(exc) == ("PreconditionFailed", 412)
    # NOT a refusal, as in any S3 with versioning: a plain PUT makes a *new current version* of the
    # key. The locked version's bytes are untouched and still undeletable, and the store reads it.
    c.put_object(Bucket=BUCKET, Key=key, Body=b"forged")
    assert c.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"forged"
    assert c.get_object(Bucket=BUCKET, Key=key, VersionId=vid)["Body"].read() == data
    assert _read(S3BlobStore(c, BUCKET, prefix=s3_store.prefix, lock_days=1), d) == data
    with pytest.raises(ClientError) as exc:
        c.delete_object(Bucket=BUCKET, Key=key, VersionId=vid)
    assert _code(exc) == ("AccessDenied", 403)


def test_legal_hold_blocks_deletion_until_lifted(seaweed: Seaweed, prefix: str) -> None:
    """No retention date (lock_days=0, a bucket with Object Lock): only the legal hold protects."""
    store = S3BlobStore(seaweed.client(), BUCKET, prefix=prefix, lock_days=0)
    data = os.urandom(1000)
    d = _committed(store, data)
    store.set_legal_hold(d, True)
    assert store.lock_state(d).legal_hold is True
    with pytest.raises(ClientError) as exc:
        store.client.delete_object(
            Bucket=BUCKET, Key=store.object_key(d), VersionId=store.lock_state(d).version_id
        )
    assert _code(exc) == ("AccessDenied", 403)  # ENFORCED
    with pytest.raises(StoreError, match="legal hold"):
        store.purge(d)
    store.set_legal_hold(d, False)
    assert store.purge(d) is True
    assert not S3BlobStore(seaweed.client(), BUCKET, prefix=prefix, lock_days=0).exists(d)
    assert _versions(store, "blobs/") == []


# -- configuration --------------------------------------------------------------------------------


def _clear_store_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the store variables a FIELDPROOF_TEST_STORE=s3 session sets (tests/server/conftest.py)."""
    for name in list(os.environ):
        if name.startswith("FIELDPROOF_S3_") or name == "FIELDPROOF_STORE_BACKEND":
            monkeypatch.delenv(name)


def test_settings_choose_the_backend(
    seaweed: Seaweed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clear_store_env(monkeypatch)
    local = make_blob_store(ServerSettings(data_dir=tmp_path, store_backend="local"))
    assert isinstance(local, LocalBlobStore)
    monkeypatch.setenv("FIELDPROOF_STORE_BACKEND", "s3")
    monkeypatch.setenv("FIELDPROOF_S3_ENDPOINT", seaweed.endpoint)
    monkeypatch.setenv("FIELDPROOF_S3_BUCKET", BUCKET)
    monkeypatch.setenv("FIELDPROOF_S3_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("FIELDPROOF_S3_SECRET_ACCESS_KEY", seaweed.secret_key)
    monkeypatch.setenv("FIELDPROOF_S3_PREFIX", "settings-test/")
    settings = ServerSettings(data_dir=tmp_path)
    assert settings.s3_object_lock_days == 184  # the default covers non-case footage's 6 months
    assert seaweed.secret_key not in repr(settings)  # a SecretStr
    store = make_blob_store(settings)
    assert isinstance(store, S3BlobStore)
    d = _committed(store, b"chosen by settings")
    assert store.lock_state(d).lock_mode == "COMPLIANCE"
    # A bucket without Object Lock is refused while retention is asked for, accepted with 0 days.
    monkeypatch.setenv("FIELDPROOF_S3_BUCKET", "nolock")
    with pytest.raises(StoreError, match="no Object Lock"):
        make_blob_store(ServerSettings(data_dir=tmp_path))
    monkeypatch.setenv("FIELDPROOF_S3_OBJECT_LOCK_DAYS", "0")
    assert isinstance(make_blob_store(ServerSettings(data_dir=tmp_path)), S3BlobStore)
    # Wrong credentials: a clear StoreError at start, not at the first file.
    monkeypatch.setenv("FIELDPROOF_S3_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(StoreError, match="refused"):
        make_blob_store(ServerSettings(data_dir=tmp_path))


def test_settings_refuse_s3_without_a_bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from server.config import load_settings

    _clear_store_env(monkeypatch)

    with pytest.raises(SettingsError, match="S3_BUCKET"):
        load_settings(data_dir=tmp_path, store_backend="s3")
    with pytest.raises(SettingsError, match="s3_prefix"):
        load_settings(data_dir=tmp_path, store_backend="s3", s3_bucket="b", s3_prefix="/x")


def test_seaweed_is_stopped_by_pid(tmp_path: Path) -> None:
    """The helper's own promise: started on free loopback ports, gone after stop."""
    sw = Seaweed(tmp_path / "sw").start()
    pid = sw.service.proc.pid if sw.service and sw.service.proc else None
    assert pid is not None
    sw.stop()
    time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def _filer(seaweed: Seaweed, method: str, path: str) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{seaweed.ports['filer']}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:  # noqa: S310 - our own loopback filer
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_seaweedfs_enforces_object_lock_only_at_the_s3_api_not_at_its_filer(seaweed: Seaweed) -> None:
    """NOT ENFORCED behind the S3 gateway: SeaweedFS's filer HTTP port (no login by default) deletes a
    COMPLIANCE-locked version. Its own WORM option (``fs.configure -worm``) refuses a delete of the
    version's file, but not a recursive delete of the bucket's directory. So the filer, master and
    volume ports must be reachable by nobody but the object store itself (docs/object-store.md)."""
    bucket = seaweed.make_bucket("filerhole")
    store = S3BlobStore(seaweed.client(), bucket, lock_days=1)
    first = _committed(store, os.urandom(1000))
    state = store.lock_state(first)
    assert state.lock_mode == "COMPLIANCE"
    version_file = f"/buckets/{bucket}/{store.object_key(first)}.versions/v_{state.version_id}"
    assert _filer(seaweed, "DELETE", version_file) == 204
    assert not S3BlobStore(seaweed.client(), bucket, lock_days=1).exists(first)  # locked, and gone

    seaweed.shell(
        f"fs.configure -locationPrefix=/buckets/{bucket}/blobs/ -worm -wormGracePeriod=0 "
        "-wormRetentionTime=86400 -fsync -apply"
    )
    second = _committed(store, os.urandom(1000))  # the store works under filer WORM
    state = store.lock_state(second)
    version_file = f"/buckets/{bucket}/{store.object_key(second)}.versions/v_{state.version_id}"
    assert _filer(seaweed, "DELETE", version_file) == 403  # WORM refuses this one …
    assert S3BlobStore(seaweed.client(), bucket, lock_days=1).exists(second)
    assert _filer(seaweed, "DELETE", f"/buckets/{bucket}/?recursive=true") == 204  # … not this one
    with pytest.raises(ClientError) as exc:  # the bucket is gone, and every locked blob in it
        seaweed.client().list_object_versions(Bucket=bucket, Prefix=store.object_key(second))
    assert _code(exc) == ("NoSuchBucket", 404)


def test_a_locked_forgery_under_the_key_is_reported_not_served(s3_store: S3BlobStore) -> None:
    """Someone with write access locked other bytes under the blob's key first: the store can neither
    delete nor serve them, and says so instead of answering for them."""
    data = os.urandom(5000)
    d = _digest(data)
    s3_store.client.put_object(
        Bucket=BUCKET,
        Key=s3_store.object_key(d),
        Body=b"forged",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=1),
    )
    with pytest.raises(StoreError, match="tampering"):
        s3_store.exists(d)
    with pytest.raises(StoreError, match="tampering"):
        s3_store.begin(d, len(data))
    fresh = S3BlobStore(s3_store.client, BUCKET, prefix=s3_store.prefix, lock_days=1)
    with pytest.raises(StoreError, match="tampering"):
        fresh.open(d)
    with pytest.raises(StoreError, match="tampering"):
        fresh.commit(d)  # and a commit cannot pass it off as committed
