"""Handling one sync-protocol message (docs/sync-protocol.md): decide, make it durable, then answer.

``IngestHandler.handle`` takes a message as it came off the broker and returns the answers to publish.
It returns only after everything the answers claim is committed — blob fsynced, rows and custody events
committed — so whoever publishes them can never ack ahead of the disk. It never raises: a message that
breaks something is logged as an ``error`` custody event and answered with nothing (the dock resends).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from custody.examine import examine_line
from custody.record import DEVICE_ID_RE
from custody.timefmt import utc_timestamp
from custody.trust import KeyStatus
from edge.sync.protocol import (
    MAX_RECORD_MESSAGE,
    Chunk,
    ProtocolError,
    Topics,
    have_answer,
    parse_chunk,
    parse_have_question,
    parse_record_message,
    parse_topic,
)
from server.custody_log.service import log_event
from server.db import transaction, utc_now
from server.devices.registry import DeviceRegistry, JudgedKey
from server.devices.service import learnt_certificate, see_device
from server.errors import BlobSizeError, HashMismatchError, NotStagedError
from server.evidence.models import EvidenceFile, Segment
from server.evidence.service import FileOutcome, StoredRecord
from server.evidence.store import BlobStore
from server.ingest.acks import AckSigner
from server.ingest.models import Record
from server.ingest.service import (
    FILE_KINDS,
    Acceptance,
    ChainRejectionError,
    IncomingRecord,
    accept_record,
    chain_position,
    file_records,
    file_stored,
    pending_files,
)

log = logging.getLogger(__name__)

_DIGEST: Final = re.compile(r"sha256:[0-9a-f]{64}")
_TIMESTAMP: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
#: A rejected payload is kept in its custody event up to this many bytes (a record line is kept whole).
_EXCERPT: Final = 512
#: Payloads larger than this are not parsed just to find out whom to answer.
_SALVAGE_LIMIT: Final = 1024 * 1024
_HAVE_INTERVAL: Final = 1.0
#: A device's ``last_seen`` is written at most this often by one worker (seconds).
_SEEN_INTERVAL: Final = 1.0
_RETRIES: Final = 3
#: Records whose announced file the handler remembers (a cache: records never change once filed).
_ANNOUNCEMENTS_CACHED: Final = 4096


@dataclass(frozen=True)
class Outgoing:
    """A message to publish (QoS 1): an ack or a have answer."""

    topic: str
    payload: bytes


@dataclass(frozen=True)
class Completion:
    """Files whose bytes have all been written, for ``IngestHandler.complete``: (the dock whose chunk
    completed the file, its digest)."""

    files: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _Announcement:
    """What an accepted record says of its file."""

    digest: str
    size: int
    hash: str  # the record's hash (acks name it)


@dataclass(frozen=True)
class _Accepted:
    """A chunk that passed its checks, to be stored."""

    dock: str
    chunk: Chunk
    hash: str


@dataclass
class _Prepared:
    """A record message that passed its own checks, waiting for the chain's."""

    dock: str
    recorder: str
    seq: int | None
    rhash: str
    line: bytes
    incoming: IncomingRecord
    now: datetime


class _RefusalError(Exception):
    """Internal: a record refused before it reaches the database."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class IngestHandler:
    """Turns messages into durable state and signed answers."""

    def __init__(
        self,
        *,
        prefix: str,
        factory: sessionmaker[Session],
        store: BlobStore,
        registry: DeviceRegistry,
        signer: AckSigner,
        actor: str,
    ) -> None:
        self.prefix = prefix
        self.factory = factory
        self.store = store
        self.registry = registry
        self.signer = signer
        self.actor = actor
        self._last_have: dict[str, float] = {}
        self._seen: dict[str, float] = {}  # device → when this worker last touched its row
        # Signing certificates this worker has committed (learn_certificate): a dock sends a recorder's
        # certificate with its records, and storing it again per record is a statement each for nothing.
        self._learnt_keys: set[str] = set()
        self._held: dict[str, list[_Accepted]] = {}  # digest → chunks written, awaiting release()
        self._held_bytes = 0
        self._held_count = 0
        bind = factory.kw.get("bind")
        dialect = getattr(bind, "dialect", None)
        self._write_lock = threading.Lock() if getattr(dialect, "name", "") == "sqlite" else None
        self._announcements: dict[tuple[str, int], _Announcement] = {}

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Session]:
        """``server.db.transaction``; on SQLite, threads of this process take turns at a lock first.

        SQLite has one writer at a time, and a writer that finds the database locked sleeps in
        SQLite's busy handler (1, 2, 5, 10 … ms) before it looks again: the worker's thread and the
        committer's, both writing, lost milliseconds per record to each other's commits. A lock in
        the process hands the turn over at once; other processes still meet SQLite's own lock.
        """
        if self._write_lock is None:
            with transaction(self.factory) as s:
                yield s
            return
        with self._write_lock, transaction(self.factory) as s:
            yield s

    # -- entry -----------------------------------------------------------------------------------

    def handle(
        self, topic: str, payload: bytes, properties: list[tuple[str, str]] | None = None
    ) -> list[Outgoing]:
        """Handle one message; returns the answers to publish, all of whose claims are durable."""
        try:
            return self._dispatch(topic, payload, properties)
        except Exception as exc:  # one bad message must never stop ingest; it is logged, never lost
            log.exception("failed handling a message on %r", topic)
            self._log_error(topic, payload, exc)
            return []

    def handle_many(
        self, messages: Sequence[tuple[str, bytes, list[tuple[str, str]] | None]]
    ) -> list[Outgoing]:
        """Handle several messages in order, as ``handle`` would one by one, except that the chunks of a
        file among them are written with one flush: each gets a ``pending`` ack with the count durable
        after all of them, and chunks that complete the file together get the file's ``stored`` acks.
        Never raises; after an exception no answer is given for any of them (each is kept as an
        ``error`` event; the docks resend)."""
        answers, completion = self.handle_batch(messages, defer=False)
        assert completion is None
        return answers

    def handle_batch(
        self,
        messages: Sequence[tuple[str, bytes, list[tuple[str, str]] | None]],
        *,
        defer: bool,
        hold: bool = False,
    ) -> tuple[list[Outgoing], Completion | None]:
        """``handle_many``; with ``defer``, files whose last bytes came in these messages are not
        committed here but returned as a ``Completion`` for ``complete`` (on another thread, so that
        one file's fsync, hash read-back and database commit overlap the next file's messages). The
        answers returned claim only what is durable now; the completion's come from ``complete``.

        With ``hold``, chunks that do not complete their file are written but neither flushed nor
        answered: ``release`` does both, later, for everything held (the worker calls it when no
        message is waiting). Chunks that a later batch completes the file with are answered by the
        file's ``stored`` acks instead (protocol §8 rule 10), so most files need no flush of their own
        before the commit's."""
        completions: list[tuple[str, str]] | None = [] if defer else None
        try:
            answers = self._dispatch_many(messages, completions, hold=hold)
        except Exception as exc:
            log.exception("failed handling %d messages", len(messages))
            for topic, payload, _ in messages:
                self._log_error(topic, payload, exc)
            return [], None
        return answers, Completion(tuple(completions)) if completions else None

    def complete(self, completion: Completion) -> list[Outgoing]:
        """Commit the files of a deferred completion and file them; their answers. Never raises."""
        out: list[Outgoing] = []
        for dock, digest in completion.files:
            try:
                outcome = self._complete_file(digest, dock)
            except Exception as exc:  # as in handle(): logged, kept as an event, unanswered (resent)
                log.exception("failed completing %s", digest)
                self._log_error(f"{self.prefix}/dev/{dock}/up/chunk", digest.encode(), exc)
                continue
            out += self._file_answers(dock, outcome)
        return out

    @property
    def held_bytes(self) -> int:
        """Bytes of chunks written but not yet flushed nor answered (``hold``)."""
        return self._held_bytes

    @property
    def holding(self) -> bool:
        """True while some chunks are held for ``release``."""
        return bool(self._held)

    @property
    def held_chunks(self) -> int:
        """How many chunks were ever held (a counter: it grows by each chunk held)."""
        return self._held_count

    def release(self) -> list[Outgoing]:
        """Flush every held file and answer its held chunks, each ``pending`` with the count durable
        after the flush (or, when that completes the file — the rest came through another worker —
        with the file's answers). Never raises; a file that fails is logged as an ``error`` event and
        its chunks go unanswered (the dock resends)."""
        held, self._held, self._held_bytes = self._held, {}, 0
        out: list[Outgoing] = []
        for digest, accepted in held.items():
            first, dock = accepted[0].chunk, accepted[0].dock
            try:
                try:
                    got = self.store.flush(digest)
                except (BlobSizeError, NotStagedError) as exc:
                    if self._committed_meanwhile(digest):
                        out += self._file_answers(dock, self._complete_file(digest, dock))
                    else:
                        out += self._size_rejections(accepted, exc)
                    continue
                if got >= first.size:
                    out += self._file_answers(dock, self._complete_file(digest, dock))
                else:
                    out += self._pending_answers(accepted, got)
            except Exception as exc:  # as in handle(): logged, kept as an event, unanswered (resent)
                if self._committed_meanwhile(digest):
                    try:
                        out += self._file_answers(dock, self._complete_file(digest, dock))
                        continue
                    except Exception:  # noqa: S110 - the error below is what is logged
                        pass
                log.exception("failed flushing %s", digest)
                self._log_error(f"{self.prefix}/dev/{dock}/up/chunk", digest.encode(), exc)
        return out

    def _committed_meanwhile(self, digest: str) -> bool:
        """Another worker completed the file while this one held chunks of it: its staging is gone
        (the flush found nothing to read back), and the blob is there. The held chunks are then
        answered with the file's answers, not reported as an error (seen on S3, bench/load_bench.py)."""
        try:
            return self.store.exists(digest)
        except Exception:  # the store is unreachable: the caller reports the original failure
            return False

    def _dispatch_many(
        self,
        messages: Sequence[tuple[str, bytes, list[tuple[str, str]] | None]],
        completions: list[tuple[str, str]] | None = None,
        *,
        hold: bool = False,
    ) -> list[Outgoing]:
        out: list[Outgoing] = []
        files: dict[str, list[_Accepted]] = {}
        for topic, payload, properties in messages:
            try:
                dock, direction, what = parse_topic(topic, self.prefix)
            except ProtocolError:
                dock, direction, what = "", "", ""
            if direction != "up" or what != "chunk":
                for accepted in files.values():  # what came before is done before
                    out += self._store_chunks(accepted, completions, hold=hold)
                files.clear()
                out += self._dispatch(topic, payload, properties)
                continue
            checked = self._check_chunk(dock, payload, properties)
            if isinstance(checked, list):
                out += checked
            else:
                files.setdefault(checked.chunk.digest, []).append(checked)
        for accepted in files.values():
            out += self._store_chunks(accepted, completions, hold=hold)
        return out

    def _dispatch(
        self, topic: str, payload: bytes, properties: list[tuple[str, str]] | None
    ) -> list[Outgoing]:
        try:
            dock, direction, what = parse_topic(topic, self.prefix)
        except ProtocolError as exc:
            return self._reject(None, exc.code, str(exc), payload=payload, topic=topic)
        if direction != "up":
            return self._reject(
                dock, "malformed", f"malformed: {topic!r} is not an up topic", payload=payload
            )
        if what == "record":
            return self._on_record(dock, payload)
        if what == "chunk":
            return self._on_chunk(dock, payload, properties)
        if what == "have":
            return self._on_have(dock, payload)
        return self._reject(
            dock, "malformed", f"malformed: unknown topic up/{what[:64]!r}", payload=payload, topic=topic
        )

    # -- records ---------------------------------------------------------------------------------

    def _on_record(self, dock: str, payload: bytes) -> list[Outgoing]:
        prepared = self._prepare_record(dock, payload)
        if isinstance(prepared, list):
            return prepared
        try:
            acc = self._accept(prepared.incoming, prepared.now)
        except ChainRejectionError as exc:
            return self._refuse(prepared, exc)
        return self._accepted(prepared, acc)

    def _prepare_record(self, dock: str, payload: bytes) -> list[Outgoing] | _Prepared:
        """A record message checked as far as it can be without the chain (form, key, signature,
        time): the rejection's answers, or what accepting it needs."""
        try:
            msg = parse_record_message(payload)
        except ProtocolError as exc:
            recorder, seq = _salvage_record(payload)
            return self._reject(dock, exc.code, str(exc), recorder=recorder, seq=seq, payload=payload)
        envelope = _loads(msg.line)
        kid = _key_of(envelope)
        judged = None
        if kid is not None:
            judged = self.registry.judge(kid, offered=msg.certs, learnt=self._learnt(kid))
        trusted = judged is not None and judged.key.status is KeyStatus.TRUSTED and judged.public is not None
        keys = {kid: judged.public} if trusted and kid and judged and judged.public else {}
        # custody.examine (as of this writing) lets base64's ValueError for a non-ASCII signature value
        # escape; such a value is no canonical base64, so the signature cannot verify: don't ask.
        if not _ascii_signature(envelope):
            keys = {}
        facts = examine_line(1, msg.line, keys)
        seq = facts.seq if facts.seq is not None else _seq_of(envelope)
        rhash = facts.hash
        now = utc_now()
        try:
            body = self._check_record(msg.recorder, facts, envelope, judged)
        except _RefusalError as exc:
            return self._reject(
                dock, exc.code, str(exc), recorder=msg.recorder, seq=seq, rhash=rhash, line=msg.line
            )
        assert judged is not None
        assert kid is not None
        warnings: tuple[str, ...] = ()
        revoked_at = judged.revoked_at
        if revoked_at is not None and now >= revoked_at:
            warnings = (
                f"received at {utc_timestamp(now)}, after {facts.device} was revoked at "
                f"{utc_timestamp(revoked_at)}; the record is dated {facts.time}, before the revocation, "
                "but a thief holding the key could backdate records: check it against the chain",
            )
        incoming = IncomingRecord(
            facts=facts,
            line=msg.line,
            body=body,
            key_id=kid,
            key_detail=judged.key.detail,
            learn_pem=judged.pem if msg.certs and kid not in self._learnt_keys else None,
            device_role=self.registry.role(facts.device),
            dock=dock,
            dock_role=self.registry.role(dock),
            warnings=warnings,
            seen_recently=self._seen_recently(facts.device, dock),
        )
        return _Prepared(dock, msg.recorder, seq, rhash, msg.line, incoming, now)

    def _refuse(self, p: _Prepared, exc: ChainRejectionError) -> list[Outgoing]:
        return self._reject(
            p.dock, exc.code, str(exc), recorder=p.recorder, seq=p.seq, rhash=p.rhash, line=p.line
        )

    def _accepted(self, p: _Prepared, acc: Acceptance) -> list[Outgoing]:
        """The answer to a record whose transaction is committed."""
        if acc.new and p.incoming.learn_pem is not None:  # its certificate is in the table now
            if len(self._learnt_keys) > 10_000:
                self._learnt_keys.clear()
            self._learnt_keys.add(p.incoming.key_id)
        if acc.new:  # the device rows exist and were touched now
            self._note_seen(
                *(d for d in (p.incoming.facts.device, p.dock) if d not in p.incoming.seen_recently)
            )
        return self._answer_record(p.dock, acc)

    def handle_records(self, messages: Sequence[tuple[str, bytes]]) -> list[Outgoing]:
        """Several ``up/record`` messages (topic, payload) as ``handle`` would take them one by one,
        except that the records that pass their own checks are accepted in one transaction — one
        commit and one turn at the database's write lock for the lot, not one per record — each
        inside a savepoint, so a record the chain refuses (or that another worker filed first: it is
        then tried again alone) changes nothing for the others. Answers only after the commit.
        Never raises; after an exception no answer is given (each is kept as an ``error`` event)."""
        try:
            return self._handle_records(messages)
        except Exception as exc:
            log.exception("failed handling %d records", len(messages))
            for topic, payload in messages:
                self._log_error(topic, payload, exc)
            return []

    @staticmethod
    def _see_devices_in_order(s: Session, prepared: Sequence[_Prepared]) -> set[str]:
        """Create or touch the batch's recorders and docks first, in sorted order, and return them.

        Records touch their devices' rows; two workers' batches that name the same new devices in
        opposite orders would otherwise each hold one row the other inserts next — a deadlock on
        PostgreSQL (seen with 4 workers and 50 new docks, bench/load_bench.py). One order for every
        batch cannot deadlock. The records then skip the touch (``seen_recently``)."""
        first: dict[str, tuple[str, datetime]] = {}
        for p in prepared:
            inc = p.incoming
            if inc.facts.device not in inc.seen_recently:
                first.setdefault(inc.facts.device, (inc.device_role, p.now))
            if inc.dock != inc.facts.device and inc.dock not in inc.seen_recently:
                first.setdefault(inc.dock, (inc.dock_role, p.now))
        for name in sorted(first):
            role, now = first[name]
            see_device(session=s, device=name, role=role, now=now)
        return set(first)

    def _handle_records(self, messages: Sequence[tuple[str, bytes]]) -> list[Outgoing]:
        results: list[list[Outgoing] | _Prepared] = []
        for topic, payload in messages:
            try:
                dock, direction, what = parse_topic(topic, self.prefix)
            except ProtocolError:
                dock, direction, what = "", "", ""
            if direction != "up" or what != "record":
                results.append(self._dispatch(topic, payload, None))
            else:
                results.append(self._prepare_record(dock, payload))
        prepared = [p for p in results if isinstance(p, _Prepared)]
        outcomes: dict[int, Acceptance | ChainRejectionError | None] = {}
        if prepared:
            with self._transaction() as s:
                touched_rows = self._see_devices_in_order(s, prepared)
                touched = set(touched_rows)
                for p in prepared:
                    incoming = p.incoming
                    if touched & {incoming.facts.device, p.dock}:
                        incoming = replace(incoming, seen_recently=incoming.seen_recently | touched)
                        p.incoming = incoming
                    try:
                        with s.begin_nested():
                            acc = accept_record(session=s, incoming=incoming, now=p.now, actor=self.actor)
                    except ChainRejectionError as exc:
                        outcomes[id(p)] = exc
                    except IntegrityError:
                        outcomes[id(p)] = None  # another worker was first: alone, after this commit
                    else:
                        outcomes[id(p)] = acc
                        if acc.new:
                            touched |= {incoming.facts.device, p.dock}
            # Committed: these rows were touched now, so the next second's batches need not touch them
            # (``_accepted`` does not note them: they were in the records' ``seen_recently``).
            self._note_seen(*touched_rows)
        out: list[Outgoing] = []
        for r in results:
            if not isinstance(r, _Prepared):
                out += r
                continue
            outcome = outcomes[id(r)]
            if outcome is None:
                try:
                    outcome = self._accept(r.incoming, r.now)
                except ChainRejectionError as exc:
                    outcome = exc
            out += (
                self._refuse(r, outcome)
                if isinstance(outcome, ChainRejectionError)
                else self._accepted(r, outcome)
            )
        return out

    def _seen_recently(self, *devices: str) -> frozenset[str]:
        """Devices this worker touched (``last_seen``) within the last second: not touched again."""
        now = time.monotonic()
        return frozenset(d for d in devices if now - self._seen.get(d, -_SEEN_INTERVAL) < _SEEN_INTERVAL)

    def _note_seen(self, *devices: str) -> None:
        now = time.monotonic()
        if len(self._seen) > 10_000:
            self._seen = {d: t for d, t in self._seen.items() if now - t < _SEEN_INTERVAL}
        for d in devices:
            self._seen[d] = now

    def _learnt(self, kid: str) -> Callable[[], str | None]:
        def lookup() -> str | None:
            with self.factory() as s:
                return learnt_certificate(session=s, key_id=kid)

        return lookup

    def _check_record(
        self, recorder: str, facts: Any, envelope: Any, judged: JudgedKey | None
    ) -> dict[str, Any]:
        """The order of checks is the order of the protocol's codes: form, key, signature, time."""
        if not facts.ok:
            raise _RefusalError("malformed", facts.problem)
        record = envelope["record"]
        body: dict[str, Any] = record["body"]
        # custody.record validates with regexes ending in '$', which also match before a final line
        # break ("REC-0001\n"); the server holds these members to their exact forms.
        exact = [DEVICE_ID_RE.fullmatch(facts.device), _TIMESTAMP.fullmatch(facts.time)]
        if facts.prev is not None:
            exact.append(_DIGEST.fullmatch(facts.prev))
        if facts.kind in FILE_KINDS:
            exact += [_DIGEST.fullmatch(body["digest"]), _TIMESTAMP.fullmatch(body["start"])]
            exact += [_TIMESTAMP.fullmatch(body["end"]), "\n" not in body["file"]]
        if not all(exact):
            raise _RefusalError(
                "malformed", "a device id, time, digest or file name is not in its exact form"
            )
        if facts.device != recorder:
            raise _RefusalError(
                "malformed", f"the message names recorder {recorder}, the record {facts.device}"
            )
        if judged is None:
            raise _RefusalError(
                "unknown-device",
                f"no certificate known for key {facts.key}: the device is not enrolled here, "
                "or the dock must send the recorder's signing certificate in certs",
            )
        key = judged.key
        if key.status is KeyStatus.FOREIGN_CA:
            raise _RefusalError("foreign-ca", key.detail)
        if key.status is not KeyStatus.TRUSTED:
            raise _RefusalError("unknown-device", key.detail)
        if key.device != facts.device:
            raise _RefusalError(
                "unknown-device", f"record of {facts.device} signed with the key of {key.device}"
            )
        if not facts.signature_ok:
            raise _RefusalError("bad-signature", "the signature does not verify over the record")
        if not utc_timestamp(key.not_before) <= facts.time <= utc_timestamp(key.not_after):
            raise _RefusalError(
                "unknown-device",
                f"the record is dated {facts.time}, outside its certificate's validity "
                f"{utc_timestamp(key.not_before)} – {utc_timestamp(key.not_after)}",
            )
        if judged.revoked_at is not None and facts.time >= utc_timestamp(judged.revoked_at):
            raise _RefusalError(
                "revoked",
                f"the record is dated {facts.time}, at or after {facts.device} was revoked "
                f"({utc_timestamp(judged.revoked_at)})",
            )
        return body

    def _accept(self, incoming: IncomingRecord, now: Any) -> Acceptance:
        for attempt in range(_RETRIES):
            try:
                with self._transaction() as s:
                    return accept_record(session=s, incoming=incoming, now=now, actor=self.actor)
            except IntegrityError:
                # Another worker filed the same (device, seq) or file first: look again, and this time
                # it is a duplicate (or a fork).
                if attempt == _RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _answer_record(self, dock: str, acc: Acceptance) -> list[Outgoing]:
        if acc.digest is None or acc.size is None:
            return [self._ack(dock, acc.device, acc.seq, acc.hash, "stored" if acc.new else "duplicate")]
        if acc.status == "stored":
            status = "stored" if acc.new else "duplicate"
            return [self._ack(dock, acc.device, acc.seq, acc.hash, status, received=acc.size)]
        self._remember(acc.device, acc.seq, _Announcement(acc.digest, acc.size, acc.hash))
        self.store.begin(acc.digest, acc.size)
        got = self.store.received(acc.digest)
        if got >= acc.size:  # nothing left to send (an empty file, or all staged before a restart)
            return self._file_answers(dock, self._complete_file(acc.digest, dock))
        return [self._ack(dock, acc.device, acc.seq, acc.hash, "pending", received=got)]

    # -- chunks ----------------------------------------------------------------------------------

    def _on_chunk(
        self, dock: str, payload: bytes, properties: list[tuple[str, str]] | None
    ) -> list[Outgoing]:
        checked = self._check_chunk(dock, payload, properties)
        return checked if isinstance(checked, list) else self._store_chunks([checked])

    def _check_chunk(
        self, dock: str, payload: bytes, properties: list[tuple[str, str]] | None
    ) -> list[Outgoing] | _Accepted:
        """A chunk judged against the record that announced its file: the answer if that settles it
        (rejected, duplicate), else the chunk to store."""
        try:
            chunk = parse_chunk(properties, payload)
        except ProtocolError as exc:
            props = _props(properties)
            recorder = props.get("recorder")
            recorder = recorder if recorder and DEVICE_ID_RE.fullmatch(recorder) else None
            seq = _small_int(props.get("seq"))
            digest = props.get("digest") if _DIGEST.fullmatch(props.get("digest") or "") else None
            return self._reject(
                dock,
                exc.code,
                str(exc),
                recorder=recorder,
                seq=seq,
                rhash=self._held_hash(recorder, seq),
                digest=digest,
                payload=payload,
                properties=props,
            )
        announced = self._announced(chunk.recorder, chunk.seq)
        where = {"recorder": chunk.recorder, "seq": chunk.seq, "digest": chunk.digest, "offset": chunk.offset}
        if announced is None or announced.digest != chunk.digest:
            return self._reject(
                dock,
                "unannounced",
                f"unannounced: no accepted record {chunk.recorder}/{chunk.seq} announces {chunk.digest}",
                recorder=chunk.recorder,
                seq=chunk.seq,
                rhash=announced.hash if announced else "",
                digest=chunk.digest,
                properties=where,
            )
        if announced.size != chunk.size:
            return self._reject(
                dock,
                "size-mismatch",
                f"size-mismatch: the record signed {announced.size} bytes, the chunk says {chunk.size}",
                recorder=chunk.recorder,
                seq=chunk.seq,
                rhash=announced.hash,
                digest=chunk.digest,
                properties=where,
            )
        # A committed blob whose row says stored: nothing to do. (Committed with the row still pending —
        # a worker died in between — goes on below and completes the row.)
        if self.store.exists(chunk.digest) and self._file_status(chunk.digest) == "stored":
            return [
                self._ack(dock, chunk.recorder, chunk.seq, announced.hash, "duplicate", received=chunk.size)
            ]
        return _Accepted(dock, chunk, announced.hash)

    def _store_chunks(
        self,
        accepted: list[_Accepted],
        completions: list[tuple[str, str]] | None = None,
        *,
        hold: bool = False,
    ) -> list[Outgoing]:
        """Chunks of one file: written with one flush, then answered — each ``pending`` with the durable
        contiguous count — or, when they complete the file, by the file's completion (now, or added to
        ``completions`` when given). With ``hold``, chunks that do not complete it are written and kept
        for ``release`` (no flush, no answer yet)."""
        first = accepted[0].chunk
        chunks = [(a.chunk.offset, a.chunk.data) for a in accepted]
        try:
            self.store.begin(first.digest, first.size)
            # ``got`` is durable — every pending answer below claims no more than is on disk — unless
            # these chunks complete the file: then commit (in _complete_file) syncs before it hashes.
            write = self.store.stage_many if hold else self.store.write_many
            got = write(first.digest, chunks)
        except (BlobSizeError, NotStagedError) as exc:
            return self._size_rejections(accepted, exc)
        if got < first.size:
            if hold:
                self._held.setdefault(first.digest, []).extend(accepted)
                self._held_bytes += sum(len(a.chunk.data) for a in accepted)
                self._held_count += len(accepted)
                return []
            return self._pending_answers(accepted, got)
        # Complete: chunks held for this file are answered by its completion (§8 rule 10).
        self._held_bytes -= sum(len(a.chunk.data) for a in self._held.pop(first.digest, []))
        if completions is not None:
            completions.append((accepted[0].dock, first.digest))
            return []
        return self._file_answers(accepted[0].dock, self._complete_file(first.digest, accepted[0].dock))

    def _pending_answers(self, accepted: list[_Accepted], got: int) -> list[Outgoing]:
        """Every chunk answered ``pending`` with ``got``, the count durable after the flush that covered
        them all. Chunks of one record get the very same answer: signed once, sent once per chunk."""
        signed: dict[tuple[str, str, int, str], Outgoing] = {}
        out = []
        for a in accepted:
            key = (a.dock, a.chunk.recorder, a.chunk.seq, a.hash)
            if key not in signed:
                signed[key] = self._ack(*key, "pending", received=got)
            out.append(signed[key])
        return out

    def _size_rejections(self, accepted: list[_Accepted], exc: Exception) -> list[Outgoing]:
        out = []
        for a in accepted:
            where = {"recorder": a.chunk.recorder, "seq": a.chunk.seq, "digest": a.chunk.digest,
                     "offset": a.chunk.offset}  # fmt: skip
            out += self._reject(
                a.dock,
                "size-mismatch",
                f"size-mismatch: {exc}",
                recorder=a.chunk.recorder,
                seq=a.chunk.seq,
                rhash=a.hash,
                digest=a.chunk.digest,
                properties=where,
            )
        return out

    def _announced(self, recorder: str, seq: int) -> _Announcement | None:
        """The file the accepted record (recorder, seq) announced. Cached: a filed record never changes
        (UNIQUE (device, seq), append-only), so a cached answer is as good as the database's."""
        key = (recorder, seq)
        hit = self._announcements.get(key)
        if hit is not None:
            return hit
        with self.factory() as s:
            row = s.execute(
                select(Segment.digest, EvidenceFile.size, Record.hash)
                .join(Record, Record.id == Segment.record_id)
                .join(EvidenceFile, EvidenceFile.digest == Segment.digest)
                .where(Segment.device == recorder, Segment.seq == seq)
            ).first()
        if row is None:
            return None
        return self._remember(recorder, seq, _Announcement(row.digest, row.size, row.hash))

    def _remember(self, recorder: str, seq: int, announced: _Announcement) -> _Announcement:
        if len(self._announcements) >= _ANNOUNCEMENTS_CACHED:
            self._announcements.clear()
        self._announcements[(recorder, seq)] = announced
        return announced

    def _file_status(self, digest: str) -> str | None:
        with self.factory() as s:
            return s.scalar(select(EvidenceFile.status).where(EvidenceFile.digest == digest))

    def _complete_file(self, digest: str, dock: str) -> FileOutcome:
        """Commit a fully received file to the store (SHA-256 checked there, over the stored bytes),
        then file it. Order: the blob is durable before the row says ``stored``; the rows and ``filed``
        events are committed before any answer is made. A crash in between leaves a committed blob
        and a pending row, which the next chunk, record or ``have?`` completes (commit is idempotent).
        """
        try:
            size = self.store.commit(digest, tidy_later=True)  # the worker tidies after answering
        except HashMismatchError as exc:
            with self._transaction() as s:
                rows = file_records(session=s, digest=digest)
                for r in rows:
                    log_event(
                        session=s,
                        kind="rejected",
                        code="hash-mismatch",
                        actor=self.actor,
                        device=r.device,
                        seq=r.seq,
                        record_hash=r.hash,
                        digest=digest,
                        dock=dock,
                        detail={"reason": str(exc), "received_digest": exc.actual},
                    )
            records = [StoredRecord(r.device, r.seq, r.hash, r.dock, r.size) for r in rows]
            return FileOutcome("hash-mismatch", digest, records, f"hash-mismatch: {exc}")
        with self._transaction() as s:
            stored = file_stored(
                session=s,
                digest=digest,
                blob_key=self.store.key(digest),
                size=size,
                actor=self.actor,
                dock=dock,
                now=utc_now(),
            )
        return FileOutcome("stored", digest, stored)

    def _file_answers(self, dock: str, outcome: FileOutcome) -> list[Outgoing]:
        """Acks for every record naming the file, each to the dock that brought that record."""
        if outcome.status == "stored":
            return [
                self._ack(r.dock, r.device, r.seq, r.hash, "stored", received=r.size) for r in outcome.records
            ]
        return [
            self._ack(r.dock, r.device, r.seq, r.hash, "rejected", reason=outcome.reason)
            for r in outcome.records
        ]

    def _held_hash(self, recorder: str | None, seq: int | None) -> str:
        if recorder is None or seq is None:
            return ""
        with self.factory() as s:
            return s.scalar(select(Record.hash).where(Record.device == recorder, Record.seq == seq)) or ""

    # -- have? -----------------------------------------------------------------------------------

    def _on_have(self, dock: str, payload: bytes) -> list[Outgoing]:
        try:
            recorder = parse_have_question(payload)
        except ProtocolError as exc:
            return self._reject(dock, exc.code, str(exc), payload=payload)
        # At most once per second per dock (protocol §5): a dock asking in a loop costs one answer.
        now = time.monotonic()
        if now - self._last_have.get(dock, -_HAVE_INTERVAL) < _HAVE_INTERVAL:
            log.info(
                "have? from %s for %s within %.0fs of the last: not answered", dock, recorder, _HAVE_INTERVAL
            )
            return []
        self._last_have[dock] = now
        if len(self._last_have) > 10_000:
            self._last_have = {d: t for d, t in self._last_have.items() if now - t < _HAVE_INTERVAL}
        with self.factory() as s:
            files = pending_files(session=s, device=recorder)
        out: list[Outgoing] = []
        pending: dict[str, int] = {}
        for digest, size in files:
            got = self.store.received(digest)
            if got >= size:
                # All bytes are here (a worker died between the blob's commit and the row's update):
                # finish it now, or the dock would wait for an ack no chunk will ever trigger.
                outcome = self._complete_file(digest, dock)
                out += self._file_answers(dock, outcome)
                if outcome.status != "stored":
                    pending[digest] = 0  # hash mismatch: staging discarded, to be sent again
            else:
                pending[digest] = got
        with self.factory() as s:
            next_seq, last_hash = chain_position(session=s, device=recorder)
        answer = have_answer(recorder=recorder, next_seq=next_seq, last_hash=last_hash, pending=pending)
        return [*out, Outgoing(Topics(self.prefix, dock).down("have"), answer)]

    # -- answers and events ----------------------------------------------------------------------

    def _ack(
        self,
        dock: str,
        recorder: str,
        seq: int,
        rhash: str,
        status: str,
        *,
        reason: str = "",
        received: int = 0,
    ) -> Outgoing:
        payload = self.signer.ack(
            recorder=recorder, seq=seq, hash=rhash, status=status, reason=reason, received=received
        )
        return Outgoing(Topics(self.prefix, dock).down("ack"), payload)

    def _reject(
        self,
        dock: str | None,
        code: str,
        reason: str,
        *,
        recorder: str | None = None,
        seq: int | None = None,
        rhash: str = "",
        digest: str | None = None,
        payload: bytes | None = None,
        line: bytes | None = None,
        topic: str | None = None,
        properties: dict[str, Any] | None = None,
    ) -> list[Outgoing]:
        """Keep the rejection as a custody event, then answer ``rejected`` if we know whom and what."""
        if not reason.startswith(code):
            reason = f"{code}: {reason}"
        detail: dict[str, Any] = {"reason": reason}
        if topic is not None:
            detail["topic"] = topic[:256]
        if line is not None:
            # The whole signed line: a fork or a record signed after revocation is itself evidence.
            detail["line"] = line.decode("utf-8", "replace")
        elif payload is not None:
            detail |= _describe(payload)
        if properties is not None:
            detail["properties"] = {str(k)[:64]: str(v)[:128] for k, v in list(properties.items())[:16]}
        with self._transaction() as s:
            log_event(
                session=s,
                kind="rejected",
                code=code,
                actor=self.actor,
                device=recorder,
                seq=seq,
                record_hash=rhash or None,
                digest=digest,
                dock=dock,
                detail=detail,
            )
        if dock is None or recorder is None or seq is None:
            return []  # no one to answer: the protocol's ack needs a recorder and a seq
        return [self._ack(dock, recorder, seq, rhash, "rejected", reason=reason)]

    def _log_error(self, topic: str, payload: bytes, exc: BaseException) -> None:
        try:
            with self._transaction() as s:
                log_event(
                    session=s,
                    kind="error",
                    actor=self.actor,
                    detail={
                        "topic": topic[:256],
                        "error": f"{type(exc).__name__}: {exc}"[:2000],
                        "where": traceback.format_exc(limit=4)[-4000:],
                        **_describe(payload),
                    },
                )
        except Exception:  # the database itself may be what failed; the log has it
            log.exception("cannot record the error as a custody event")


# -- helpers -------------------------------------------------------------------------------------


def _loads(data: bytes | str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def _key_of(envelope: Any) -> str | None:
    sig = envelope.get("sig") if isinstance(envelope, dict) else None
    key = sig.get("key") if isinstance(sig, dict) else None
    return key if isinstance(key, str) and _DIGEST.fullmatch(key) else None


def _ascii_signature(envelope: Any) -> bool:
    sig = envelope.get("sig") if isinstance(envelope, dict) else None
    value = sig.get("value") if isinstance(sig, dict) else None
    return not isinstance(value, str) or value.isascii()


def _small_int(v: object) -> int | None:
    if isinstance(v, str) and v.isascii() and v.isdigit() and len(v) <= 16:
        n = int(v)
        return n if n <= 2**53 - 1 else None
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 2**53 - 1:
        return v
    return None


def _seq_of(envelope: Any) -> int | None:
    record = envelope.get("record") if isinstance(envelope, dict) else None
    return _small_int(record.get("seq")) if isinstance(record, dict) else None


def _salvage_record(payload: bytes) -> tuple[str | None, int | None]:
    """Best effort: the recorder and seq of a refused record message, so that the dock can be told."""
    if len(payload) > max(_SALVAGE_LIMIT, MAX_RECORD_MESSAGE):
        return None, None
    msg = _loads(payload)
    if not isinstance(msg, dict):
        return None, None
    rec = msg.get("recorder")
    recorder = rec if isinstance(rec, str) and DEVICE_ID_RE.fullmatch(rec) else None
    line = msg.get("line")
    return recorder, _seq_of(_loads(line) if isinstance(line, str) else None)


def _props(properties: list[tuple[str, str]] | None) -> dict[str, str]:
    try:
        return {str(k): str(v) for k, v in (properties or [])}
    except (TypeError, ValueError):
        return {}


def _describe(payload: bytes) -> dict[str, Any]:
    return {
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "payload_head": bytes(payload[:_EXCERPT]).decode("utf-8", "replace"),
    }
