"""The ingest worker: an MQTT v5 client (paho-mqtt 2, mutual TLS as ``fieldproof-ingest``) on the shared
subscription, feeding a handler thread. It also subscribes — directly, not shared — to the docks'
retained state topics (``P/dev/+/state``, docs/sync-protocol.md §1a): every worker stores what it sees
(``server/ingest/state.py``: checked as untrusted input; idempotent, the newest wins).

paho's network thread only queues messages; the handler (fsync, database commits) runs on the worker's
own thread, so the network loop never waits on a disk. Messages are acknowledged to the broker
(``manual_ack``) only after they were handled and their answers published. If the process dies, what
it had not acked is resent by the dock (its outbox keeps everything until the server's signed ack), so
nothing is lost and nothing is done twice (idempotent by (device, seq) and digest).

Flow control: we announce a Receive Maximum at CONNECT, but Mosquitto 2.0.11 honours it only for the
first window — measured: after each PUBACK it sends up to Receive Maximum more, so unacknowledged
messages pile up. The worker therefore also bounds its backlog by bytes: past ``max_backlog_bytes``
the network thread waits (TCP back-pressure on the broker) until the handler catches up.

Throughput (docs/server-ingest.md, "Throughput"): chunks already queued behind a chunk are handled as
one batch (one flush per file, every chunk answered with what is then durable), and a file that a
batch completes is committed — synced, hashed back, linked, filed — on a second thread, the committer,
while this thread goes on with the next messages. Records are checked and filed on a third thread,
the records thread (several batches that queued up meanwhile in one transaction), while this thread
goes on writing chunks. PUBACKs still leave in arrival order: a batch's wait for the committer or the
records thread if an earlier batch is still being committed or filed. The staging of committed files
is removed by a fourth thread, the tidy thread, after their answers are out.
"""

from __future__ import annotations

import collections
import gc
import logging
import os
import queue
import socket
import threading
from dataclasses import dataclass
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge.sync.protocol import ingest_subscription
from server.config import ServerSettings
from server.db import check_migrated, make_engine, session_factory
from server.devices.registry import DeviceRegistry
from server.evidence.backend import make_blob_store
from server.ingest import packets
from server.ingest.acks import AckSigner
from server.ingest.handler import Completion, IngestHandler, Outgoing
from server.ingest.state import StateHandler

log = logging.getLogger(__name__)

#: Bytes of received messages waiting for the handler before the network thread waits.
MAX_BACKLOG_BYTES: Final = 64 * 1024 * 1024
#: Chunks already queued are handled together up to this many bytes (one flush, one ack per file).
MAX_BATCH_BYTES: Final = 16 * 1024 * 1024
#: Records already queued are accepted together, up to this many (one transaction).
MAX_BATCH_RECORDS: Final = 64
#: Completed files waiting for the committer threads before the worker's thread waits too.
MAX_COMMITS_AHEAD: Final = 4
#: Committer threads (files committed at the same time).
COMMITTERS: Final = 2
#: Record batches waiting for the records thread before the worker's thread waits too.
MAX_RECORD_BATCHES_AHEAD: Final = 16
#: How long held chunks wait for more messages before they are flushed and answered (seconds).
_LINGER: Final = 0.003
#: The network thread waits at most this long at a time, so paho still answers keepalives between.
_BACKLOG_WAIT: Final = 5.0


@dataclass(frozen=True)
class _Incoming:
    topic: str
    payload: bytes | memoryview  # a chunk's is a view of its packet
    properties: list[tuple[str, str]] | None
    qos: int
    mid: int
    connection: int  # which connection it came on: a PUBACK is only meaningful on that one


@dataclass
class _Ticket:
    """The PUBACKs a handled batch owes the broker: (mid, qos, connection); sent once ``done`` (a
    deferred file completion has published its answers) and ``released`` (chunks the batch held
    have been flushed and answered), and every earlier ticket went."""

    pubacks: list[tuple[int, int, int]]
    done: threading.Event | None = None
    released: threading.Event | None = None

    @property
    def ready(self) -> bool:
        """True when nothing this batch waits for is outstanding."""
        return all(e is None or e.is_set() for e in (self.done, self.released))


def _kind(item: _Incoming) -> str:
    """``chunk`` or ``record`` for the messages handled in batches; '' for any other."""
    for kind in ("chunk", "record"):
        if item.topic.endswith(f"/up/{kind}"):
            return kind
    return ""


class IngestWorker:
    """One ingest worker process's MQTT side and handler loop."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        client_id: str | None = None,
        max_backlog_bytes: int = MAX_BACKLOG_BYTES,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        tls: bool = True,
    ) -> None:
        """``tls=False`` (plain TCP) exists for the benchmark's loopback comparison only
        (bench/sync_bench.py): no setting or command turns TLS off."""
        ca_dir = settings.check_ca_dir()
        settings.check_data_dir()
        packets.install()  # one copy of each chunk's payload instead of five (server/ingest/packets.py)
        self.settings = settings
        self.engine = make_engine(settings.db_url, immediate=True)
        check_migrated(self.engine)
        self.client_id = client_id or f"fieldproof-ingest-{socket.gethostname()}-{os.getpid()}"
        registry = DeviceRegistry(ca_dir)
        self.handler = IngestHandler(
            prefix=settings.topic_prefix,
            factory=session_factory(self.engine),
            store=make_blob_store(settings),
            registry=registry,
            signer=AckSigner.from_ca_dir(ca_dir),
            actor=f"ingest:{self.client_id}"[:64],
        )
        self.states = StateHandler(
            prefix=settings.topic_prefix, factory=session_factory(self.engine), registry=registry
        )
        self.queue: queue.Queue[_Incoming] = queue.Queue()
        self.subscribed = threading.Event()
        self.handled = 0
        self._connection = 0
        self.max_backlog_bytes = max_backlog_bytes
        self.max_batch_bytes = max_batch_bytes
        self._held: _Incoming | None = None  # taken from the queue while batching, handled next
        self._committers: list[threading.Thread] = []
        self._commits: queue.Queue[tuple[Completion, _Ticket] | None] = queue.Queue(MAX_COMMITS_AHEAD)
        self._recorder: threading.Thread | None = None  # the records thread, while ``run`` runs
        self._tidier: threading.Thread | None = None  # the tidy thread, while ``run`` runs
        self._tidy_wanted = threading.Event()
        self._tidy_stopping = False
        self._records: queue.Queue[tuple[list[tuple[str, bytes]], _Ticket] | None] = queue.Queue(
            MAX_RECORD_BATCHES_AHEAD
        )
        self._records_failed: BaseException | None = None
        self._tickets: collections.deque[_Ticket] = collections.deque()
        self._tickets_lock = threading.Lock()
        self._release_event = threading.Event()  # set when the chunks held so far are answered
        self._release_owed = False  # a ticket waits for _release_event (even if nothing is held now)
        self.backlog_bytes = 0
        self.peak_backlog_bytes = 0
        self._backlog = threading.Condition()
        client = packets.ReadIntoClient(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5, manual_ack=True
        )
        if tls:
            client.tls_set(
                ca_certs=str(ca_dir / "ca-chain.pem"),
                certfile=str(ca_dir / "ingest.pem"),
                keyfile=str(ca_dir / "ingest.key"),
            )
        client.reconnect_delay_set(min_delay=0.1, max_delay=5)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client

    # -- paho callbacks (network thread: queue only, never block on disk) --------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.error("the broker refused ingest's connection: %s", rc)
            return
        self._connection += 1
        packets.views_in_this_thread()  # chunks' payloads as views of their packets (paho's network thread)
        topic = ingest_subscription(self.settings.topic_prefix, self.settings.share_group)
        # Not shared: each worker gets every dock's retained state (storing it is idempotent).
        state = f"{self.settings.topic_prefix}/dev/+/state"
        client.subscribe([(topic, SubscribeOptions(qos=1)), (state, SubscribeOptions(qos=1))])
        log.info(
            "connected to %s:%d; subscribing to %s and %s",
            self.settings.mqtt_host,
            self.settings.mqtt_port,
            topic,
            state,
        )

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, rcs: list[Any], _p: Any) -> None:
        if any(rc.is_failure for rc in rcs):
            log.error("the broker refused ingest's subscription: %s", rcs)
            return
        log.info("subscribed")
        self.subscribed.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.subscribed.clear()
        log.warning("disconnected from the broker (%s); paho reconnects", rc)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            try:
                topic = msg.topic
            except UnicodeDecodeError:
                topic = msg._topic.decode("utf-8", "replace")
            props = getattr(msg.properties, "UserProperty", None) if msg.properties is not None else None
            # A chunk's payload stays a view of the packet (server/ingest/packets.py): written from
            # there, never copied. Anything else is parsed, and parsers want bytes.
            raw = msg.payload
            payload = raw if isinstance(raw, memoryview) and topic.endswith("/up/chunk") else bytes(raw)
            item = _Incoming(topic, payload, props, msg.qos, msg.mid, self._connection)
            with self._backlog:
                while self.backlog_bytes and self.backlog_bytes + len(item.payload) > self.max_backlog_bytes:
                    if msg.qos == 0:  # outside the protocol: not worth holding the connection for
                        log.warning("dropping a QoS 0 message on %r: the handler is behind", topic)
                        return
                    if not self._backlog.wait(_BACKLOG_WAIT):
                        log.warning(
                            "the handler is %d bytes behind; holding the broker back", self.backlog_bytes
                        )
                        break  # let paho breathe (keepalive); the next message waits again
                self.backlog_bytes += len(item.payload)
                self.peak_backlog_bytes = max(self.peak_backlog_bytes, self.backlog_bytes)
            self.queue.put(item)
        except Exception:  # a callback that raises would stop paho's loop
            log.exception("cannot queue a message")

    # -- the worker's own thread ---------------------------------------------------------------------

    def process_one(self, timeout: float = 0.2) -> bool:
        """Handle the next message — with the chunks queued right behind it, as one batch — if one
        comes within ``timeout``; True when something was handled."""
        if self._records_failed is not None:
            raise RuntimeError("the records thread failed; the worker stops") from self._records_failed
        if self._held is not None:
            item, self._held = self._held, None
        else:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                owed = self._release_owed or self.handler.holding
                try:
                    # With chunks held back (see handle_batch), wait a moment for the rest of their
                    # files (a dock sends a file's chunks back to back) before flushing them.
                    item = self.queue.get(timeout=_LINGER if owed else timeout)
                except queue.Empty:
                    if not owed:
                        return False
                    # Nothing more came: now flush and answer them — and release the PUBACKs of
                    # batches whose held chunks a later batch completed their file with meanwhile.
                    self._release()
                    return True
        batch = [item]
        size = len(item.payload)
        # Chunks that are already here are written together, with one flush, and answered with one
        # pending ack per file: one round of fsyncs per batch instead of per chunk; records that are
        # already here are accepted in one transaction. Only consecutive messages of one kind, so
        # messages are still handled in the order they came.
        kind = _kind(item)
        while kind and size < self.max_batch_bytes and (kind == "chunk" or len(batch) < MAX_BATCH_RECORDS):
            try:
                nxt = self.queue.get_nowait()
            except queue.Empty:
                break
            if _kind(nxt) != kind:
                self._held = nxt
                break
            batch.append(nxt)
            size += len(nxt.payload)
        if kind == "record" and self._recorder is not None:
            self._hand_records_over(batch, size)
            return True
        completion = None
        held_before = self.handler.held_chunks
        try:
            if kind == "record":
                answers = self.handler.handle_records([(b.topic, b.payload) for b in batch])
            elif not kind and self.states.topic_dock(item.topic) is not None:
                self.states.handle(item.topic, item.payload)  # never raises; nothing to answer
                answers = []
            elif not kind:
                answers = self.handler.handle(item.topic, item.payload, item.properties)
            else:
                threaded = bool(self._committers)
                answers, completion = self.handler.handle_batch(
                    [(b.topic, b.payload, b.properties) for b in batch], defer=threaded, hold=threaded
                )
        finally:
            with self._backlog:
                self.backlog_bytes -= size
                self._backlog.notify_all()
        # Published only now: everything these answers claim is committed.
        self._publish(answers)
        ticket = _Ticket([(b.mid, b.qos, b.connection) for b in batch if b.qos > 0])
        if self.handler.held_chunks > held_before:
            ticket.released = self._release_event  # PUBACKed once its held chunks are answered
            self._release_owed = True
        if completion is not None:
            ticket.done = threading.Event()
            self._commits.put((completion, ticket))  # waits while MAX_COMMITS_AHEAD are queued
        with self._tickets_lock:
            self._tickets.append(ticket)
        self._send_pubacks()
        if not self._committers:
            self.handler.store.tidy()  # staging of files this batch committed itself (no committer threads)
        self.handled += len(batch)
        if self.handler.held_bytes >= self.max_batch_bytes:
            self._release()  # a steady stream still gets its answers (large files, a full window)
        return True

    def _hand_records_over(self, batch: list[_Incoming], size: int) -> None:
        """Records go to the records thread, which checks and files them while this thread goes on
        writing chunks; their PUBACKs wait (in order) for its answers. The dock sends a file's chunks
        only after its record was answered ``pending``, so no chunk overtakes the record it needs."""
        ticket = _Ticket([(b.mid, b.qos, b.connection) for b in batch if b.qos > 0], done=threading.Event())
        with self._tickets_lock:
            self._tickets.append(ticket)
        with self._backlog:
            self.backlog_bytes -= size
            self._backlog.notify_all()
        job = ([(b.topic, b.payload) for b in batch], ticket)
        while True:  # waits while the records thread is behind — but not on one that has failed
            try:
                self._records.put(job, timeout=0.5)
                break
            except queue.Full:
                if self._records_failed is not None:
                    raise RuntimeError(
                        "the records thread failed; the worker stops"
                    ) from self._records_failed
        self.handled += len(batch)

    def _handle_records(self) -> None:
        """The records thread: record batches, several that queued up at once in one transaction (one
        commit and one sync for them all); then their answers, then their PUBACKs. If handling fails,
        nothing of those batches is PUBACKed (the broker delivers them again) and the worker stops."""
        stopping = False
        while not stopping:
            job = self._records.get()
            if job is None:
                return
            jobs = [job]
            count = len(job[0])
            while count < MAX_BATCH_RECORDS:
                try:
                    more = self._records.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                jobs.append(more)
                count += len(more[0])
            try:
                self._publish(self.handler.handle_records([m for messages, _ in jobs for m in messages]))
            except BaseException as exc:
                log.exception("cannot handle %d records; the worker stops", count)
                self._records_failed = exc
                return
            for _, ticket in jobs:
                assert ticket.done is not None
                ticket.done.set()
            self._send_pubacks()

    def _release(self) -> None:
        """Flush and answer the chunks the handler holds; then the PUBACKs that waited for them."""
        event, self._release_event = self._release_event, threading.Event()
        self._release_owed = False
        try:
            self._publish(self.handler.release())
        finally:
            event.set()
            self._send_pubacks()

    def _publish(self, answers: list[Outgoing]) -> None:
        for out in answers:
            info = self.client.publish(out.topic, out.payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                log.warning("answer on %s not sent now (%s); the dock will ask again", out.topic, info.rc)

    def _send_pubacks(self) -> None:
        """PUBACK, in the order the messages came (MQTT 4.6), every batch whose answers are out."""
        with self._tickets_lock:
            while self._tickets and self._tickets[0].ready:
                for mid, qos, connection in self._tickets.popleft().pubacks:
                    if connection == self._connection:
                        self.client.ack(mid, qos)

    def _commit_files(self) -> None:
        """The committer thread: files completed by a batch are synced, hashed back, linked and filed
        here while the worker's thread goes on with the next messages; then their answers, then the
        batch's PUBACKs (and those of later batches, held back for order)."""
        while True:
            job = self._commits.get()
            if job is None:
                return
            completion, ticket = job
            try:
                self._publish(self.handler.complete(completion))
            finally:
                assert ticket.done is not None
                ticket.done.set()
                self._send_pubacks()
            self._tidy_wanted.set()  # the committed files' staging, now that their answers are out

    def _tidy_staging(self) -> None:
        """The tidy thread: removes the staging that commits set aside (``BlobStore.tidy``), off the
        committers' path — removing a blob's staging directory took 1.5–2.2 ms of each commit (the
        bench, instrumented), time in which that committer committed nothing. Runs after each
        committer's answers; a last time when the worker stops."""
        while True:
            self._tidy_wanted.wait()
            self._tidy_wanted.clear()
            stopping = self._tidy_stopping
            try:
                self.handler.store.tidy()
            except Exception:  # never stop over it: what is left is removed next time, or at start
                log.exception("cannot remove the staging of committed files; trying again later")
            if stopping:
                return

    def run(self, stop: threading.Event) -> None:
        """Connect, and handle messages until ``stop`` is set; then finish what was handled, disconnect."""
        props = Properties(PacketTypes.CONNECT)
        props.ReceiveMaximum = self.settings.receive_maximum
        props.SessionExpiryInterval = 0
        self.client.connect_async(
            self.settings.mqtt_host, self.settings.mqtt_port, keepalive=30, clean_start=True, properties=props
        )
        # Everything made so far (modules, SQLAlchemy's mappers and caches, the trust store) lives as
        # long as the worker: out of the collector's sight, a full collection need not walk it again
        # (measured: ≈ 35 ms each, about a tenth of the handler's time, before this).
        gc.collect()
        gc.freeze()
        # Several committers: a file's commit is mostly waiting on fsyncs, which overlap (and which
        # the file system can join into one journal commit); PUBACKs keep their order by ticket.
        self._committers = [
            threading.Thread(target=self._commit_files, name=f"ingest-commit-{i}", daemon=True)
            for i in range(COMMITTERS)
        ]
        for t in self._committers:
            t.start()
        self._tidy_stopping = False
        self._tidier = threading.Thread(target=self._tidy_staging, name="ingest-tidy", daemon=True)
        self._tidier.start()
        # Records on a thread of their own: their checks, rows and commit overlap the chunks' writes.
        self._recorder = threading.Thread(target=self._handle_records, name="ingest-records", daemon=True)
        self._recorder.start()
        self.client.loop_start()
        try:
            while not stop.is_set():
                self.process_one()
        finally:
            if self._recorder.is_alive():  # (a failed one consumes nothing more)
                self._records.put(None)
                self._recorder.join()
            self._recorder = None
            if self._release_owed or self.handler.holding:
                self._release()
            for _ in self._committers:
                self._commits.put(None)
            for t in self._committers:
                t.join()
            self._committers = []
            self._tidy_stopping = True  # after the committers: nothing is set aside after this
            self._tidy_wanted.set()
            if self._tidier is not None:
                self._tidier.join()
            self._tidier = None
            self.client.disconnect()
            self.client.loop_stop()
            self.engine.dispose()
