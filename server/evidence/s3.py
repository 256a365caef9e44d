"""The evidence store on an S3-compatible object store (SeaweedFS in tests; MinIO, Ceph RGW, cloud S3).

Layout in the bucket (``P`` is an optional prefix, so that several deployments may share a bucket):

- ``P/staging/<hex>/size`` — the announced size (``begin``), written with ``If-None-Match: *`` so the
  first announcement wins;
- ``P/staging/<hex>/<offset:013>.<length:010>`` — one object per staged run of chunks. An object is
  listed only once the store has all of it, so a listing *is* the durable state: ``received`` never
  counts bytes a crash could take back, and any ingest worker can pick up a file another one started;
- ``P/blobs/aa/bb/<hex>`` — the committed blob: written once (``If-None-Match: *``), under Object Lock
  retention in COMPLIANCE mode when the store is configured for it.

Commit streams the staged runs back out of the store, hashing them, into the blob's key (one
``PutObject`` whose ``x-amz-checksum-sha256`` is the signed digest itself, or a multipart upload with
a SHA-256 checksum on every part); a mismatch aborts before anything exists under the blob's key. The
blob is then read back from the store and hashed once more, and only then sealed with its retention: a
blob under retention is a blob whose stored bytes were checked. A commit that died between the upload
and the seal is finished (checked, then sealed — or deleted, as it is not yet locked) by the next one.

Threat model, beyond the local store's (chunks in any order, twice, from several workers, with wrong
bytes): anyone holding the bucket's write credentials can put another *version* under a blob's key
(S3 keeps versions; Object Lock protects versions, not names) or hide it behind a delete marker. Reads
therefore always go to the oldest version of the key — the one this store wrote with ``If-None-Match``
and sealed — never to "the current object"; and a process hashes a sealed version once before it
answers for it, so a forgery locked under the key is reported as tampering, never served.

Durability is the object store's: a chunk counts once ``PutObject`` returned. On SeaweedFS that means
``fsync`` configured on the bucket (docs/object-store.md); its filer port bypasses Object Lock.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO, Final, cast

from server.errors import (
    BlobNotFoundError,
    BlobSizeError,
    HashMismatchError,
    IncompleteError,
    NotStagedError,
    StoreError,
)
from server.evidence.store import BlobStore, blob_hex, uncovered_ranges

if TYPE_CHECKING:
    from server.config import ServerSettings

_PART_RE: Final = re.compile(r"(\d{13})\.(\d{10})")
#: S3's smallest multipart part (all but the last); AWS refuses less, SeaweedFS does not check.
MIN_PART_SIZE: Final = 5 * 1024 * 1024
DEFAULT_PART_SIZE: Final = 16 * 1024 * 1024
_READ: Final = 1024 * 1024
#: Bytes of completed blobs held in memory between write_many and commit, per store, at most.
_MAX_HELD: Final = 256 * 1024 * 1024
_MISSING: Final = frozenset({"NoSuchKey", "NoSuchVersion", "404", "NotFound"})


@dataclass(frozen=True)
class BlobVersion:
    """The version of a blob's key that holds the blob, and what the store says of its lock."""

    version_id: str
    size: int
    lock_mode: str | None
    retain_until: datetime | None
    legal_hold: bool


class S3BlobStore(BlobStore):
    """Content-addressed, write-once blobs in one S3 bucket; staging objects in the same bucket."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        prefix: str = "",
        lock_days: int = 0,
        part_size: int = DEFAULT_PART_SIZE,
        check: bool = True,
    ) -> None:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if part_size < MIN_PART_SIZE:
            raise StoreError(f"an S3 part has at least {MIN_PART_SIZE} bytes, not {part_size}")
        if lock_days < 0:
            raise StoreError(f"Object Lock retention cannot be {lock_days} days")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.lock_days = lock_days
        self.part_size = part_size
        # Sealed versions this process has hashed itself. Safe to keep: a sealed version is under
        # compliance retention (its bytes cannot change); a purge through this store forgets it.
        self._sealed: dict[str, BlobVersion] = {}
        self._sealed_lock = threading.Lock()
        # Blobs whose last write_many completed them from memory (see _hold_complete): size, chunks.
        self._complete: dict[str, tuple[int, list[tuple[int, bytes]]]] = {}
        self._object_lock: bool | None = None  # the bucket's Object Lock, once asked
        if check:
            self.check_bucket()

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> S3BlobStore:
        """The store the settings describe (FIELDPROOF_S3_*), after checking the bucket."""
        return cls(
            make_client(
                endpoint=settings.s3_endpoint,
                region=settings.s3_region,
                access_key_id=settings.s3_access_key_id,
                secret_access_key=(
                    settings.s3_secret_access_key.get_secret_value()
                    if settings.s3_secret_access_key
                    else None
                ),
            ),
            cast(str, settings.s3_bucket),
            prefix=settings.s3_prefix,
            lock_days=settings.s3_object_lock_days,
            part_size=settings.s3_part_size,
        )

    # -- the S3 calls, with errors a person can act on -------------------------------------------

    def _call(self, what: str, op: Callable[..., Any], **kw: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

        try:
            return op(Bucket=self.bucket, **kw)
        except ClientError as exc:
            raise S3RefusedError(what, self.bucket, exc) from None
        except BotoCoreError as exc:
            raise StoreError(
                f"the S3 store could not be reached to {what} in bucket {self.bucket!r}: {exc}; "
                "check FIELDPROOF_S3_ENDPOINT and that the object store is running"
            ) from None

    def object_lock_enabled(self) -> bool:
        """True when the bucket has Object Lock (legal holds and retention work on its versions)."""
        if self._object_lock is None:
            try:
                conf = self._call(
                    "read the Object Lock configuration", self.client.get_object_lock_configuration
                )
            except S3RefusedError as exc:
                if exc.code not in {"ObjectLockConfigurationNotFoundError", "NotImplemented", "404"}:
                    raise
                conf = {}
            self._object_lock = conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
        return self._object_lock

    def check_bucket(self) -> None:
        """StoreError unless the bucket exists and, when retention is asked for, has Object Lock."""
        self._call("find the bucket", self.client.head_bucket)
        if not self.lock_days:
            return
        if not self.object_lock_enabled():
            raise StoreError(
                f"bucket {self.bucket!r} has no Object Lock, but FIELDPROOF_S3_OBJECT_LOCK_DAYS="
                f"{self.lock_days} asks for retention: create the bucket with Object Lock enabled "
                "(it cannot be turned on later on most stores), or set FIELDPROOF_S3_OBJECT_LOCK_DAYS=0"
            )

    # -- keys ------------------------------------------------------------------------------------

    def key(self, digest: str) -> str:
        h = blob_hex(digest)
        return f"{h[:2]}/{h[2:4]}/{h}"

    def object_key(self, digest: str) -> str:
        """The blob's key in the bucket."""
        return f"{self.prefix}blobs/{self.key(digest)}"

    def _stage(self, digest: str) -> str:
        return f"{self.prefix}staging/{blob_hex(digest)}/"

    # -- staging ---------------------------------------------------------------------------------

    def _announced(self, digest: str) -> int | None:
        try:
            body = self._call("read a staged size", self.client.get_object, Key=self._stage(digest) + "size")
        except S3RefusedError as exc:
            if exc.missing:
                return None
            raise
        text = body["Body"].read()
        try:
            return int(text)
        except ValueError:
            raise StoreError(f"staging of {digest} is damaged (size object); discard it") from None

    def _parts(self, digest: str) -> list[tuple[int, int]]:
        """The staged runs (offset, length) by offset: only objects the store has whole are listed."""
        parts = []
        for obj in self._list(self._stage(digest)):
            m = _PART_RE.fullmatch(obj["Key"].rsplit("/", 1)[-1])
            if m:
                parts.append((int(m.group(1)), int(m.group(2))))
        return sorted(parts)

    def _list(self, prefix: str) -> Iterator[dict[str, Any]]:
        token: dict[str, str] = {}
        while True:
            page = self._call("list staged chunks", self.client.list_objects_v2, Prefix=prefix, **token)
            yield from page.get("Contents", [])
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def begin(self, digest: str, size: int) -> None:
        if size < 0:
            raise BlobSizeError(f"a blob cannot have {size} bytes")
        if self.exists(digest):
            if self.size(digest) != size:
                raise BlobSizeError(f"{digest} is stored with {self.size(digest)} bytes, not {size}")
            return
        known = self._announced(digest)
        if known is None:
            try:
                self._call(
                    "announce a blob",
                    self.client.put_object,
                    Key=self._stage(digest) + "size",
                    Body=str(size).encode(),
                    IfNoneMatch="*",
                )
                known = size
            except S3RefusedError as exc:
                if exc.code != "PreconditionFailed":
                    raise
                known = self._announced(digest)  # another worker announced it first
        if known != size:
            raise BlobSizeError(f"{digest} was announced with {known} bytes, not {size}")

    def write_at(self, digest: str, offset: int, data: bytes) -> None:
        self.write_many(digest, [(offset, data)])

    def write_many(self, digest: str, chunks: Sequence[tuple[int, bytes]]) -> int:
        size = self._announced(digest)
        if size is None:
            if self.exists(digest):
                return self.size(digest)  # committed: nothing more to receive
            raise NotStagedError(f"{digest} was never announced (begin) in this store")
        for offset, data in chunks:
            if offset < 0 or offset + len(data) > size:
                raise BlobSizeError(f"chunk at {offset}+{len(data)} runs past {digest}'s {size} bytes")
        # Staged bytes are never written again: idempotent by range, and a chunk resent with other
        # bytes cannot change what was already counted (only the hash check at commit judges bytes).
        staged = self._parts(digest)
        if not staged and self._hold_complete(digest, size, chunks):
            return size
        covered = list(staged)
        todo: list[tuple[int, memoryview]] = []
        for offset, data in sorted(chunks, key=lambda c: c[0]):
            for start, end in uncovered_ranges(offset, offset + len(data), covered):
                todo.append((start, memoryview(data)[start - offset : end - offset]))
                covered = sorted([*covered, (start, end - start)])
        # Adjacent pieces of one batch go into one object: fewer requests, fewer objects to list.
        runs: list[tuple[int, list[memoryview]]] = []
        for start, view in sorted(todo, key=lambda t: t[0]):
            if runs and runs[-1][0] + sum(len(v) for v in runs[-1][1]) == start:
                runs[-1][1].append(view)
            else:
                runs.append((start, [view]))
        for start, views in runs:
            body = b"".join(views)
            try:
                # Durable before it counts: the object is listed only once the store has all of it,
                # and PutObject returns only then. If-None-Match: a run of the same range staged by
                # another worker meanwhile stays as it is.
                self._call(
                    "stage a chunk",
                    self.client.put_object,
                    Key=f"{self._stage(digest)}{start:013d}.{len(body):010d}",
                    Body=body,
                    IfNoneMatch="*",
                )
            except S3RefusedError as exc:
                if exc.code != "PreconditionFailed":
                    raise
            staged.append((start, len(body)))
        return min(size, _contiguous(sorted(staged)))

    def _hold_complete(self, digest: str, size: int, chunks: Sequence[tuple[int, bytes]]) -> bool:
        """When one batch alone completes a blob nothing was staged for, keep it in memory for the
        commit that comes next (BlobStore.write_many): the bytes go to the bucket once, into the blob's
        key, instead of into staging and then again. Nothing is claimed for them — ``received`` counts
        staging only — so a process that dies first loses nothing it reported. Bounded in bytes."""
        if size == 0 or _contiguous(sorted((o, len(d)) for o, d in chunks)) < size:
            return False
        with self._sealed_lock:
            held = sum(n for n, _ in self._complete.values()) - (self._complete.get(digest, (0, []))[0])
            if held + size > _MAX_HELD:
                return False
            self._complete[digest] = (size, [(o, bytes(d)) for o, d in chunks])
        return True

    def received(self, digest: str) -> int:
        size = self._announced(digest)
        if size is None:
            return self.size(digest) if self.exists(digest) else 0
        have = min(size, _contiguous(self._parts(digest)))
        if have < size and self.exists(digest):
            return self.size(digest)
        return have

    def discard_staging(self, digest: str, *, durable: bool = True) -> None:
        # Every *version* goes: the bucket is versioned (Object Lock requires it), and a plain delete
        # would only hide staged bytes behind delete markers and keep them forever.
        with self._sealed_lock:
            self._complete.pop(digest, None)
        stage = self._stage(digest)
        while True:
            page = self._call(
                "list staged versions", self.client.list_object_versions, Prefix=stage, MaxKeys=1000
            )
            doomed = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
                if v["Key"].startswith(stage)
            ]
            if not doomed:
                return
            done = self._call(
                "discard staged chunks",
                self.client.delete_objects,
                Delete={"Objects": doomed, "Quiet": True},
            )
            if done.get("Errors"):
                first = done["Errors"][0]
                raise StoreError(
                    f"the S3 store kept {len(done['Errors'])} staged object(s) of {digest} "
                    f"({first.get('Key')}: {first.get('Code')} {first.get('Message')}); is a default "
                    f"retention set on bucket {self.bucket!r}? Staging must be deletable"
                )

    # -- commit ----------------------------------------------------------------------------------

    def commit(self, digest: str, *, tidy_later: bool = False) -> int:  # S3: nothing to set aside
        h = blob_hex(digest)
        with self._sealed_lock:
            known = self._sealed.get(digest)
        if known is not None:
            self.discard_staging(digest)
            return known.size
        version = self._version(digest)
        if version is not None:
            # Committed by another worker, or uploaded by a commit that died before its seal, or put
            # there by someone else: hashed here before this commit answers for it.
            sealed = self._seal(digest, version)
            if sealed is not None:
                self.discard_staging(digest)
                return sealed.size
        try:
            size = self._upload(digest, h)
        except StoreError:
            # Another worker may have committed the blob meanwhile and discarded the staged chunks
            # this one was listing or reading back (0 bytes received, NoSuchKey): then the blob is
            # there, and it is sealed here after hashing it, like any blob found under its key.
            # Otherwise the failure stands (met with 2 and 4 workers, bench/load_bench.py --store s3).
            version = self._version(digest)
            sealed = self._seal(digest, version) if version is not None else None
            if sealed is None:
                raise
            self.discard_staging(digest)
            return sealed.size
        version = self._version(digest)
        if version is None:
            raise StoreError(f"the S3 store lost {digest} right after storing it; commit it again")
        sealed = self._seal(digest, version)
        if sealed is None:
            raise StoreError(
                f"the S3 store returned other bytes for {digest} than it acknowledged; the upload was "
                "deleted (it was not locked yet). Check the object store's health, then commit again"
            )
        self.discard_staging(digest)
        return size

    def _upload(self, digest: str, h: str) -> int:
        """Put the staged (or held) bytes of ``digest`` under its key; its size. StoreError subclasses
        when the bytes are not all there (IncompleteError, NotStagedError) or the store refuses."""
        size = self._announced(digest)
        if size is None:
            raise NotStagedError(f"{digest} was never announced (begin) in this store")
        with self._sealed_lock:
            held = self._complete.get(digest)
        pieces: Iterator[bytes]
        if held is not None and held[0] == size:
            pieces = _held_bytes(held[1], size)
        else:
            parts = self._parts(digest)
            have = min(size, _contiguous(parts))
            if have < size:
                raise IncompleteError(f"{digest}: {have} of {size} bytes received")
            pieces = self._staged_bytes(digest, parts, size)
        if size <= self.part_size:
            self._put_whole(digest, h, size, pieces)
        else:
            self._put_multipart(digest, h, size, pieces)
        return size

    def _staged_bytes(self, digest: str, parts: list[tuple[int, int]], size: int) -> Iterator[bytes]:
        """The blob's bytes from 0 to ``size``, read back from the staged objects (first staged wins)."""
        pos = 0
        for offset, length in parts:
            if pos >= size:
                break
            if offset + length <= pos:
                continue
            key = f"{self._stage(digest)}{offset:013d}.{length:010d}"
            kw = {"Range": f"bytes={pos - offset}-"} if pos > offset else {}
            body = self._call("read a staged chunk", self.client.get_object, Key=key, **kw)["Body"]
            want = offset + length - pos
            got = 0
            while got < want:
                data = body.read(min(_READ, want - got))
                if not data:
                    raise StoreError(f"staged object {key} is shorter than its name says; discard and resend")
                got += len(data)
                yield data
            body.close()
            pos = offset + length

    def _mismatch(self, digest: str, actual: str, length: int) -> HashMismatchError:
        self.discard_staging(digest)
        return HashMismatchError(
            f"the {length} bytes received hash to {actual}, not to the signed {digest}; "
            "the staged bytes were discarded",
            actual=actual,
        )

    def _put_whole(self, digest: str, h: str, size: int, pieces: Iterator[bytes]) -> None:
        data = b"".join(pieces)
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != digest or len(data) != size:
            raise self._mismatch(digest, actual, len(data))
        try:
            # The store checks the body against x-amz-checksum-sha256 — the signed digest itself —
            # and refuses it (BadDigest) otherwise; If-None-Match: * never replaces a blob.
            self._call(
                "store a blob",
                self.client.put_object,
                Key=self.object_key(digest),
                Body=data,
                IfNoneMatch="*",
                ChecksumSHA256=base64.b64encode(bytes.fromhex(h)).decode(),
            )
        except S3RefusedError as exc:
            if exc.code != "PreconditionFailed":  # committed meanwhile by another worker: sealed next
                raise

    def _put_multipart(self, digest: str, h: str, size: int, pieces: Iterator[bytes]) -> None:
        key = self.object_key(digest)
        upload = self._call(
            "start a multipart upload",
            self.client.create_multipart_upload,
            Key=key,
            ChecksumAlgorithm="SHA256",
        )["UploadId"]
        try:
            whole = hashlib.sha256()
            done: list[dict[str, Any]] = []
            buf = bytearray()
            length = 0

            def send(part: bytes) -> None:
                n = len(done) + 1
                answer = self._call(
                    "upload a part",
                    self.client.upload_part,
                    Key=key,
                    UploadId=upload,
                    PartNumber=n,
                    Body=part,
                    ChecksumSHA256=base64.b64encode(hashlib.sha256(part).digest()).decode(),
                )
                done.append(
                    {"PartNumber": n, "ETag": answer["ETag"], "ChecksumSHA256": answer.get("ChecksumSHA256")}
                )

            for data in pieces:
                whole.update(data)
                length += len(data)
                buf += data
                while len(buf) >= self.part_size:
                    send(bytes(buf[: self.part_size]))
                    del buf[: self.part_size]
            if buf or not done:
                send(bytes(buf))
            actual = "sha256:" + whole.hexdigest()
            if actual != digest or length != size:
                raise self._mismatch(digest, actual, length)  # aborted below: nothing under the key
            for part in done:
                if part["ChecksumSHA256"] is None:
                    del part["ChecksumSHA256"]
            try:
                self._call(
                    "complete a multipart upload",
                    self.client.complete_multipart_upload,
                    Key=key,
                    UploadId=upload,
                    MultipartUpload={"Parts": done},
                    IfNoneMatch="*",
                )
                upload = ""
            except S3RefusedError as exc:
                if exc.code != "PreconditionFailed":
                    raise
        finally:
            if upload:
                try:
                    self._call(
                        "abort a multipart upload",
                        self.client.abort_multipart_upload,
                        Key=key,
                        UploadId=upload,
                    )
                except S3RefusedError as exc:
                    if exc.code != "NoSuchUpload":
                        raise

    def _seal(self, digest: str, version: BlobVersion) -> BlobVersion | None:
        """Hash the version as the store holds it; if right, put it under retention and return it.
        If wrong, delete it (it is not locked yet) and return None."""
        if not self._holds(digest, version):
            try:
                self._call(
                    "delete a wrong upload",
                    self.client.delete_object,
                    Key=self.object_key(digest),
                    VersionId=version.version_id,
                )
            except S3RefusedError as exc:
                if exc.code not in {"AccessDenied", "403"}:
                    raise
                raise TamperedBlobError(
                    f"the key of {digest} holds a locked version ({version.version_id}) whose bytes do not "
                    "hash to it — put there by someone with write access to the bucket, not by this store. "
                    "The blob cannot be stored under its key until that lock ends: report it as tampering"
                ) from None
            return None
        if self.lock_days and not self._is_sealed(version):
            until = datetime.now(UTC) + timedelta(days=self.lock_days)
            try:
                self._call(
                    "put a blob under retention",
                    self.client.put_object_retention,
                    Key=self.object_key(digest),
                    VersionId=version.version_id,
                    Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until},
                )
            except S3RefusedError as exc:
                # Two workers sealing the same version: the other's retention landed first with a
                # later date, and a shorter one is refused. Sealed either way; anything else stands.
                if exc.code not in {"AccessDenied", "403"}:
                    raise
                if not self._is_sealed(self._head(digest, version.version_id)):
                    raise
            version = self._head(digest, version.version_id)
            if not self._is_sealed(version):
                raise StoreError(
                    f"the S3 store accepted retention for {digest} but does not report it; it does not "
                    "honour Object Lock: set FIELDPROOF_S3_OBJECT_LOCK_DAYS=0 or use a store that does"
                )
        self._remember(digest, version)
        return version

    def _holds(self, digest: str, version: BlobVersion) -> bool:
        """True if the version, read back from the store, hashes to ``digest``."""
        h = hashlib.sha256()
        length = 0
        with self._open_version(digest, version) as f:
            while data := f.read(_READ):
                h.update(data)
                length += len(data)
        return "sha256:" + h.hexdigest() == digest and length == version.size

    def _is_sealed(self, version: BlobVersion) -> bool:
        return not self.lock_days or version.lock_mode == "COMPLIANCE"

    def _remember(self, digest: str, version: BlobVersion) -> None:
        with self._sealed_lock:
            self._sealed[digest] = version

    # -- versions --------------------------------------------------------------------------------

    def _version(self, digest: str) -> BlobVersion | None:
        """The oldest version under the blob's key: the one written with If-None-Match (later versions
        or delete markers put there by someone else change nothing a reader of this store sees)."""
        key = self.object_key(digest)
        oldest: str | None = None
        marker: dict[str, str] = {}
        while True:
            page = self._call(
                "list a blob's versions", self.client.list_object_versions, Prefix=key, **marker
            )
            for v in page.get("Versions", []):  # newest first, as S3 lists them
                if v["Key"] == key:
                    oldest = v["VersionId"]
            if not page.get("IsTruncated"):
                break
            marker = {"KeyMarker": page["NextKeyMarker"], "VersionIdMarker": page["NextVersionIdMarker"]}
        return None if oldest is None else self._head(digest, oldest)

    def _head(self, digest: str, version_id: str) -> BlobVersion:
        head = self._call(
            "read a blob's facts", self.client.head_object, Key=self.object_key(digest), VersionId=version_id
        )
        return BlobVersion(
            version_id=version_id,
            size=int(head["ContentLength"]),
            lock_mode=head.get("ObjectLockMode"),
            retain_until=head.get("ObjectLockRetainUntilDate"),
            legal_hold=head.get("ObjectLockLegalHoldStatus") == "ON",
        )

    def _committed(self, digest: str) -> BlobVersion | None:
        """The sealed version, hashed once per process before this store answers for it: a reader is
        never handed bytes that do not hash to their digest (a locked forgery is reported, loudly)."""
        with self._sealed_lock:
            known = self._sealed.get(digest)
        if known is not None:
            return known
        version = self._version(digest)
        if version is None or not self._is_sealed(version):
            return None
        if not self._holds(digest, version):
            raise TamperedBlobError(
                f"the key of {digest} holds a sealed version ({version.version_id}) whose bytes do not "
                "hash to it — put there by someone with write access to the bucket, not by this store: "
                "report it as tampering"
            )
        self._remember(digest, version)
        return version

    # -- reading ---------------------------------------------------------------------------------

    def open(self, digest: str) -> BinaryIO:
        version = self._committed(digest)
        if version is None:
            raise BlobNotFoundError(f"no stored blob {digest}")
        return self._open_version(digest, version)

    def _open_version(self, digest: str, version: BlobVersion) -> BinaryIO:
        raw = _ObjectReader(self, self.object_key(digest), version.version_id, version.size)
        return cast(BinaryIO, io.BufferedReader(raw, buffer_size=_READ))

    def exists(self, digest: str) -> bool:
        return self._committed(digest) is not None

    def size(self, digest: str) -> int:
        version = self._committed(digest)
        if version is None:
            raise BlobNotFoundError(f"no stored blob {digest}")
        return version.size

    # -- retention (called by server/retention) --------------------------------------------------

    def lock_state(self, digest: str) -> BlobVersion:
        """The committed version with its lock, as the store reports it now (not from memory)."""
        version = self._committed(digest)
        if version is None:
            raise BlobNotFoundError(f"no stored blob {digest}")
        return self._head(digest, version.version_id)

    def set_legal_hold(self, digest: str, on: bool) -> None:
        """Put a legal hold on a committed blob (or lift it): while it is on, the store refuses to
        delete the blob whatever its retention date. Needs a bucket with Object Lock."""
        version = self.lock_state(digest)
        self._call(
            "set a legal hold",
            self.client.put_object_legal_hold,
            Key=self.object_key(digest),
            VersionId=version.version_id,
            LegalHold={"Status": "ON" if on else "OFF"},
        )

    def extend_retention(self, digest: str, until: datetime) -> datetime:
        """Keep a committed blob under COMPLIANCE retention at least until ``until`` (the store refuses
        to shorten a compliance retention, so an earlier date changes nothing); returns the date in force."""
        if until.tzinfo is None:
            raise StoreError("a retention date must be timezone-aware (UTC)")
        version = self.lock_state(digest)
        if version.retain_until is not None and version.retain_until >= until:
            return version.retain_until
        self._call(
            "extend a blob's retention",
            self.client.put_object_retention,
            Key=self.object_key(digest),
            VersionId=version.version_id,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until},
        )
        return until

    def purge(self, digest: str) -> bool:
        """Delete every version of a blob whose retention has passed (True if there was one). The
        store refuses while a retention date or legal hold stands; StoreError then says which."""
        key = self.object_key(digest)
        page = self._call("list a blob's versions", self.client.list_object_versions, Prefix=key)
        doomed = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            if v["Key"] == key
        ]
        for item in doomed:
            try:
                self._call("purge a blob", self.client.delete_object, **item)
            except S3RefusedError as exc:
                if exc.code in {"AccessDenied", "403"}:
                    raise S3LockedError(
                        f"the S3 store refuses to delete {digest} (version {item['VersionId']}): its "
                        "Object Lock retention has not passed or a legal hold is on"
                    ) from None
                raise
        with self._sealed_lock:
            self._sealed.pop(digest, None)
        return bool(doomed)

    def abort_stale_uploads(self, *, older_than: timedelta = timedelta(days=1)) -> int:
        """Abort multipart uploads of blobs begun longer ago than ``older_than`` (a worker killed in a
        commit leaves one: never visible as a blob, but it holds space); returns how many. A bucket
        lifecycle rule (AbortIncompleteMultipartUpload) does the same where the store supports it."""
        cutoff = datetime.now(UTC) - older_than
        page = self._call(
            "list multipart uploads", self.client.list_multipart_uploads, Prefix=f"{self.prefix}blobs/"
        )
        aborted = 0
        for up in page.get("Uploads", []):
            if up["Initiated"] <= cutoff:
                try:
                    self._call(
                        "abort a multipart upload",
                        self.client.abort_multipart_upload,
                        Key=up["Key"],
                        UploadId=up["UploadId"],
                    )
                    aborted += 1
                except S3RefusedError as exc:
                    if exc.code != "NoSuchUpload":
                        raise
        return aborted


class TamperedBlobError(StoreError):
    """The store holds, under a blob's key, a locked version whose bytes do not hash to its digest."""


class S3LockedError(StoreError):
    """The store refused to delete a blob: its Object Lock retention has not passed or a legal hold is on."""


class S3RefusedError(StoreError):
    """An S3 request the store answered with an error (code kept for the callers that expect some)."""

    def __init__(self, what: str, bucket: str, exc: Any) -> None:
        err = exc.response.get("Error", {})
        self.code = str(err.get("Code", ""))
        self.status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        self.missing = self.code in _MISSING or self.status == 404
        super().__init__(
            f"the S3 store (bucket {bucket!r}) refused to {what}: {self.code or self.status} "
            f"{err.get('Message', '')}".rstrip()
        )


class _ObjectReader(io.RawIOBase):
    """A seekable reader of one version of an object: a ranged GET from the position, restarted on seek."""

    def __init__(self, store: S3BlobStore, key: str, version_id: str, size: int) -> None:
        self._store = store
        self._key = key
        self._version = version_id
        self._size = size
        self._pos = 0
        self._body: Any = None
        self._body_pos = -1

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        if self._body is None or self._body_pos != self._pos:
            self._drop()
            self._body = self._store._call(
                "read a blob",
                self._store.client.get_object,
                Key=self._key,
                VersionId=self._version,
                Range=f"bytes={self._pos}-",
            )["Body"]
            self._body_pos = self._pos
        data = self._body.read(want)
        if not data:
            raise StoreError(f"the S3 store ended {self._key} at {self._pos} of {self._size} bytes")
        n = len(data)
        buffer[:n] = data
        self._pos += n
        self._body_pos += n
        return n

    def _drop(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def close(self) -> None:
        self._drop()
        super().close()


def make_client(
    *,
    endpoint: str | None,
    region: str = "us-east-1",
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    max_connections: int = 16,
) -> Any:
    """A boto3 S3 client: path-style addressing (what SeaweedFS, MinIO and RGW expect by default),
    bounded retries and timeouts. Credentials not given come from boto3's usual chain (AWS_* env)."""
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config  # type: ignore[import-untyped]

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "max_attempts": 4},
            connect_timeout=5,
            read_timeout=60,
            max_pool_connections=max_connections,
        ),
    )


def _held_bytes(chunks: list[tuple[int, bytes]], size: int) -> Iterator[bytes]:
    """The bytes from 0 to ``size`` out of chunks that cover it (the first chunk at a range wins)."""
    pos = 0
    for offset, data in sorted(chunks, key=lambda c: c[0]):
        end = min(offset + len(data), size)
        if end <= pos:
            continue
        yield data[pos - offset : end - offset]
        pos = end
        if pos >= size:
            return


def _contiguous(parts: list[tuple[int, int]]) -> int:
    end = 0
    for offset, length in parts:
        if offset > end:
            break
        end = max(end, offset + length)
    return end
