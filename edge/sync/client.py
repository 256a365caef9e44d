"""The dock's MQTT v5 sync client (docs/sync-protocol.md): sends what the outbox holds, applies signed acks.

Shape (after frigate's ``comms/mqtt.py``, minus its two faults): paho-mqtt 2 with the v2 callback API,
mutual TLS with the dock's own certificate, a retained ``state`` topic whose last will says
``{"online": false}``. Unlike frigate, the client is marked connected only on a *successful* CONNACK
(a refused certificate or CONNACK never counts), and nothing is ever published while offline —
there is nothing to drop, because the outbox, not paho's memory, is what must be delivered.

One thread does everything: it drives paho's network loop by hand (``loop()``), so message callbacks,
outbox writes and publishing never race, and an incoming ack is committed to the outbox *before*
paho sends its PUBACK (a crash between the two makes the broker deliver it again). Brokers are tried
in the configured order; when one is down or refuses, the next; when all fail, the round is retried
with exponential back-off up to ``retry_max_s``, for ever — the outbox simply waits.

A broker that hangs (stopped process, vanished host: the TCP connection stays open, nothing answers)
closes no socket. While the dock has publications awaiting their PUBACK, a liveness watchdog counts the
time in which nothing at all came back; past ``broker_stall_s`` the connection is dropped as lost and
the hung broker goes to the end of the next round. When nothing is outstanding, MQTT keepalive alone
governs (paho gives up after about 2 × ``keepalive_s``).

Per recorder: ``have?`` on every (re)connect and docking; then each record not yet finally acked is
sent in seq order, at most ``window`` awaiting their last word; a record's file follows only after the
server accepted the record (``pending``), from the offset the server reports, with at most
``chunk_window`` chunks unacknowledged. Records or files without progress are resent with
exponential back-off. Every ack's signature is checked against the server-signing key first; an ack
that does not verify is counted, logged and ignored (§6).
"""

from __future__ import annotations

import collections
import json
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from custody.timefmt import now_timestamp
from edge.sync.outbox import Outbox, OutboxRow, as_sent
from edge.sync.protocol import (
    DEFAULT_CHUNK,
    DEFAULT_PREFIX,
    WINDOW,
    ProtocolError,
    Topics,
    chunk_properties,
    have_question,
    parse_ack,
    parse_have_answer,
    record_message,
)
from fieldproof.errors import FieldproofError
from fieldproof.malloc import keep_large_buffers

log = logging.getLogger(__name__)

#: The server answers ``have?`` at most once per second per dock (protocol §5): ask no faster.
HAVE_INTERVAL_S: Final = 1.1
#: The retained state is republished at most this often when a docked recorder's status changes (s).
STATE_INTERVAL_S: Final = 1.0
#: At most this many recorders' statuses ride in one state message (protocol §1a: the server's limit is 32).
MAX_STATE_RECORDERS: Final = 32
#: How long to wait for a ``have`` before sending anyway (the answer may have been rate-limited away).
HAVE_WAIT_S: Final = 2.0
HAVE_TRIES: Final = 3


class _SendView:
    """A queued packet that paho slices as a view, not a copy.

    paho-mqtt 2.2 sends ``packet[pos:]`` after every partial write, which for a ``bytearray`` copies the
    whole unsent rest: a 1 MiB chunk meeting a full socket buffer was copied again at every write
    (measured: about a tenth of the dock's CPU). Sockets take any buffer, so a view does the same.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes | bytearray) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: slice) -> memoryview:
        return memoryview(self.data)[key]


class _Client(mqtt.Client):
    """paho's client, queueing packets as ``_SendView`` (see there). Nothing else differs."""

    def _packet_queue(
        self, command: int, packet: bytes | bytearray, mid: int, qos: int, info: Any = None
    ) -> MQTTErrorCode:
        return super()._packet_queue(command, _SendView(packet), mid, qos, info)  # type: ignore[arg-type]


class SyncError(FieldproofError):
    """The sync client cannot be set up (TLS files, brokers)."""


@dataclass(frozen=True)
class TlsFiles:
    """The dock's mutual-TLS identity: the fleet CA chain and its own certificate and key."""

    ca: Path
    cert: Path
    key: Path


@dataclass
class SyncStats:
    """Counters, for logs, status and tests."""

    connects: int = 0
    refused: int = 0
    records_sent: int = 0
    chunks_sent: int = 0
    chunk_bytes_sent: int = 0
    haves_sent: int = 0
    acks: int = 0
    acks_bad_signature: int = 0
    acks_ignored: int = 0
    publish_denied: int = 0
    broker: str = ""
    last_error: str = ""
    first_publish_at: float = 0.0  # time.monotonic() of the first publish (for throughput figures)
    last_final_at: float = 0.0  # time.monotonic() of the last ack that made a row final


@dataclass
class _FileFlow:
    size: int
    acked: int  # what the server last said it holds (contiguous from 0)
    sent_until: int  # bytes published in this connection
    progress_at: float
    stalls: int = 0
    blocked_until: float = 0.0
    # (end offset, when published) of each chunk sent and not yet acknowledged: ack delay samples —
    # none once anything of the file was sent again (``timed`` False).
    sends: collections.deque[tuple[int, float]] = field(default_factory=collections.deque)
    timed: bool = True

    def acked_until(self, received: int, now: float, delay: AckDelay) -> None:
        """The server holds ``received`` bytes: one delay sample, from the newest chunk it covers."""
        sent_at = None
        while self.sends and self.sends[0][0] <= received:
            sent_at = self.sends.popleft()[1]
        if sent_at is not None and self.timed:
            delay.sample(now - sent_at)


class AckDelay:
    """How long the server takes to answer, estimated from what this dock sees — the first resend waits
    for that instead of a fixed ``ack_timeout_s`` when the server is slower.

    Samples: a chunk's publication to the ack that first covers it, and a record's first publication to
    its first answer. Chunks or records sent again give no sample (an ack cannot tell which send it
    answers). The estimate is TCP's retransmission timer (RFC 6298): smoothed delay plus four times its
    mean deviation. A burst of docks into one server queues at the broker, and every dock's answers come
    later and later: the deviation grows with them, so the dock waits instead of resending what is only
    queued (docs/server-ingest.md, "Resends under a burst"). ``ack_timeout_s`` stays the floor, and the
    caller's back-off the ceiling.
    """

    def __init__(self) -> None:
        self.samples = 0
        self.smoothed = 0.0
        self.deviation = 0.0

    def sample(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        if not self.samples:
            self.smoothed, self.deviation = seconds, seconds / 2
        else:
            self.deviation = 0.75 * self.deviation + 0.25 * abs(self.smoothed - seconds)
            self.smoothed = 0.875 * self.smoothed + 0.125 * seconds
        self.samples += 1

    def timeout(self, floor: float) -> float:
        """The wait before a first resend: the estimate, never less than ``floor``."""
        return max(floor, self.smoothed + 4 * self.deviation) if self.samples else floor


@dataclass
class _Flow:
    """One recorder's sending state within the current connection (nothing here is durable)."""

    recorder: str
    rows: list[OutboxRow] | None = None
    dirty: bool = True
    # True when ``rows`` held every open row at its load (fewer than the limit came back): answers
    # that make rows final then only remove them, and nothing is missing until an enqueue wakes it.
    complete: bool = False
    have_sent_at: float | None = None
    have_tries: int = 0
    have: dict[str, Any] | None = None
    inflight: dict[int, float] = field(default_factory=dict)  # seq → when its record was last sent
    first_sent: dict[int, float] = field(default_factory=dict)  # seq → its only send so far (a sample)
    files: dict[int, _FileFlow] = field(default_factory=dict)

    def reset(self) -> None:
        self.rows, self.dirty = None, True
        self.have_sent_at, self.have_tries, self.have = None, 0, None
        self.inflight.clear()
        self.first_sent.clear()
        self.files.clear()


class SyncClient:
    """Sends the outbox to the server over MQTT v5 and records the server's signed answers."""

    def __init__(
        self,
        *,
        dock_id: str,
        brokers: Sequence[tuple[str, int]],
        outbox: Outbox,
        server_keys: Mapping[str, Ed25519PublicKey],
        files: Callable[[str], Path | None],
        prefix: str = DEFAULT_PREFIX,
        tls: TlsFiles | None = None,
        keepalive_s: int = 30,
        broker_stall_s: float = 15.0,
        chunk_bytes: int = DEFAULT_CHUNK,
        window: int = WINDOW,
        chunk_window: int = 32,
        retry_min_s: float = 0.5,
        retry_max_s: float = 60.0,
        ack_timeout_s: float = 10.0,
        connect_timeout_s: float = 5.0,
        session_expiry_s: int = 3600,
        client_id: str | None = None,
        on_final: Callable[[OutboxRow], None] | None = None,
    ) -> None:
        if not brokers:
            raise SyncError("no broker to connect to; list at least one in [mqtt] brokers")
        self.dock_id = dock_id
        self.brokers = list(brokers)
        self.outbox = outbox
        self.server_keys = dict(server_keys)
        self.files = files
        self.topics = Topics(prefix, dock_id)
        self.keepalive_s = keepalive_s
        self.broker_stall_s = broker_stall_s
        self.chunk_bytes = chunk_bytes
        self.window = window
        self.chunk_window = chunk_window
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.ack_timeout_s = ack_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.session_expiry_s = session_expiry_s
        self.on_final = on_final
        self.stats = SyncStats()
        self.ack_delay = AckDelay()  # the first resend waits for what the server's answers take
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_lock = threading.Lock()
        self._woken: dict[str, bool] = {}  # recorder → docked anew (ask have? again)
        self._flows: dict[str, _Flow] = {}
        self._active: set[str] = set()
        self._active_checked = 0.0
        self._last_have = 0.0
        self._broker_index = 0
        self._failed_rounds = 0
        self._connack: Any = None
        self._mids: dict[int, tuple[str, int, str]] = {}  # mid → (recorder, seq, what)
        # The watchdog's view of this connection (monotonic times): every QoS 1 publication not yet
        # answered by a PUBACK, oldest first (mid → when published), and when the broker last sent
        # anything the callbacks see (CONNACK, PUBACK, PUBLISH).
        self._unanswered: dict[int, float] = {}
        self._heard_at = 0.0
        self._last_ack: tuple[bytes, dict[str, Any]] = (b"", {})  # the last ack that verified
        self._recorders: dict[str, dict[str, Any]] = {}  # recorder → its last status read over the link
        self._state_dirty = False
        self._state_at = 0.0
        self._conn_at = ""  # when the current connection was made (custody timestamp): orders states
        self._client = self._make_client(client_id or f"{dock_id}-sync", tls)

    def _make_client(self, client_id: str, tls: TlsFiles | None) -> mqtt.Client:
        client = _Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if tls is not None:
            for what, path in (("CA chain", tls.ca), ("certificate", tls.cert), ("key", tls.key)):
                if not path.is_file():
                    raise SyncError(f"the dock's TLS {what} {path} is missing; see [mqtt.tls] in dock.toml")
            try:
                client.tls_set(ca_certs=str(tls.ca), certfile=str(tls.cert), keyfile=str(tls.key))
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise SyncError(
                    f"cannot load the dock's TLS identity ({tls.cert}, {tls.key}): {exc}"
                ) from exc
        client.connect_timeout = self.connect_timeout_s
        # The outbox bounds what is in flight; paho's own limit only delays beyond it.
        client.max_inflight_messages_set(max(20, self.window * 2 + self.chunk_window * 4))
        self._set_will(client)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    # -- life cycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Run on a background thread until ``stop``."""
        # The chunks' 1 MiB buffers, freed after every send, are kept mapped for the next ones instead
        # of faulted in again (fieldproof/malloc.py: 16 % of the dock's CPU went to page faults).
        keep_large_buffers()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"sync-{self.dock_id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Say goodbye on the state topic (when connected), disconnect and end the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def recorder_status(self, status: Mapping[str, Any]) -> None:
        """A docked recorder's status as read over the control link (``status["recorder"]`` names it):
        published in the retained state message (protocol §1a), at most once per ``STATE_INTERVAL_S``."""
        with self._wake_lock:
            self._recorders[str(status["recorder"])] = dict(status)
            while len(self._recorders) > MAX_STATE_RECORDERS:  # the oldest read goes first
                oldest = min(self._recorders, key=lambda r: str(self._recorders[r].get("read_at", "")))
                del self._recorders[oldest]
            self._state_dirty = True

    def wake(self, recorder: str | None = None, *, docked: bool = False) -> None:
        """New work for ``recorder`` (or all): re-read the outbox; ``docked`` also asks ``have?`` again."""
        with self._wake_lock:
            if recorder is None:
                for r in list(self._flows):
                    self._woken[r] = self._woken.get(r, False) or docked
                self._woken[""] = False
            else:
                self._woken[recorder] = self._woken.get(recorder, False) or docked

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self.connected.is_set():
                    self._connect_round()
                    continue
                rc = self._client.loop(timeout=0.05)
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    self._lost(mqtt.error_string(rc))
                    continue
                if self._broker_hung():
                    continue
                self._take_wakes()
                self._pump()
                self._republish_state()
        except Exception:  # the thread must never die silently; the agent's watchdog sees it gone
            log.exception("the sync client stopped on an unexpected error")
            raise
        finally:
            self._goodbye()

    def _goodbye(self) -> None:
        if not self.connected.is_set():
            return
        info = self._client.publish(self.topics.state, self._state(False), qos=1, retain=True)
        deadline = time.monotonic() + 2
        while not info.is_published() and time.monotonic() < deadline:
            if self._client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                break
        self.connected.clear()  # before disconnect(): a goodbye is no lost connection
        self._client.disconnect()
        self._client.loop(timeout=0.05)

    def _state(self, online: bool) -> bytes:
        state: dict[str, Any] = {"online": online, "dock": self.dock_id, "at": now_timestamp()}
        if self._conn_at:
            state["conn"] = self._conn_at
        if online:
            state["broker"] = self.stats.broker
        with self._wake_lock:
            state["recorders"] = list(self._recorders.values())
            self._state_dirty = False
        return json.dumps(state, ensure_ascii=False).encode()

    def _set_will(self, client: mqtt.Client) -> None:
        """The last will for the next connection: offline, dated and ordered by that connection's start
        (protocol §1a), so a reader can tell it ends *that* connection and not a later one."""
        will: dict[str, Any] = {"online": False, "dock": self.dock_id}
        if self._conn_at:
            will.update(at=self._conn_at, conn=self._conn_at, will=True)
        client.will_set(self.topics.state, json.dumps(will).encode(), qos=1, retain=True)

    def _republish_state(self) -> None:
        if not self._state_dirty or time.monotonic() - self._state_at < STATE_INTERVAL_S:
            return
        self._state_at = time.monotonic()
        self._awaiting(self._client.publish(self.topics.state, self._state(True), qos=1, retain=True))

    # -- connecting --------------------------------------------------------------------------------

    def _connect_round(self) -> None:
        n = len(self.brokers)
        for i in range(n):
            if self._stop.is_set():
                return
            index = (self._broker_index + i) % n
            if self._try_connect(*self.brokers[index]):
                self._broker_index = index
                self._failed_rounds = 0
                self._connected()
                return
        delay = min(self.retry_max_s, self.retry_min_s * 2**self._failed_rounds)
        self._failed_rounds += 1
        delay *= random.uniform(0.8, 1.0)  # noqa: S311 - jitter, not security
        log.warning("no broker reachable (%s); next round in %.1fs", self.stats.last_error, delay)
        self._stop.wait(delay)

    def _try_connect(self, host: str, port: int) -> bool:
        self._connack = None
        self._conn_at = now_timestamp()
        self._set_will(self._client)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        # The broker keeps our subscription and the acks published while we are away for this long.
        props.SessionExpiryInterval = self.session_expiry_s
        where = f"{host}:{port}"
        try:
            rc = self._client.connect(
                host, port, keepalive=self.keepalive_s, clean_start=False, properties=props
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            return self._refused(where, f"connect: {exc}")
        if rc != mqtt.MQTT_ERR_SUCCESS:
            return self._refused(where, f"connect: {mqtt.error_string(rc)}")
        # With TLS 1.3 a refused client certificate shows only on the first read, i.e. here.
        deadline = time.monotonic() + self.connect_timeout_s
        while self._connack is None:
            rc = self._client.loop(timeout=0.05)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                return self._refused(where, f"after connect: {mqtt.error_string(rc)}")
            if time.monotonic() > deadline or self._stop.is_set():
                self._client.disconnect()
                return self._refused(where, f"no CONNACK within {self.connect_timeout_s:g}s")
        if self._connack.is_failure:
            self._client.disconnect()
            return self._refused(where, f"CONNACK: {self._connack}")
        self.stats.broker = where
        return True

    def _refused(self, where: str, why: str) -> bool:
        self.stats.refused += 1
        self.stats.last_error = f"{where}: {why}"
        log.warning("broker %s: %s", where, why)
        return False

    def _connected(self) -> None:
        self.stats.connects += 1
        self._mids.clear()
        self._unanswered.clear()  # paho's replays of the last connection's publications are not timed
        self._heard_at = time.monotonic()  # the CONNACK
        self._client.subscribe(self.topics.down("#"), options=SubscribeOptions(qos=1))
        self._state_at = time.monotonic()
        self._awaiting(self._client.publish(self.topics.state, self._state(True), qos=1, retain=True))
        for flow in self._flows.values():
            flow.reset()  # resume from have?: whatever was in flight may be lost
        self._active_checked = 0.0
        self.connected.set()
        log.info("connected to %s as %s", self.stats.broker, self.dock_id)

    def _lost(self, why: str, *, unresponsive: bool = False) -> None:
        """The connection is gone; ``_run`` starts a new round. ``unresponsive``: the broker stopped
        answering (watchdog, keepalive) rather than closing the connection, so the round starts at the
        next broker: a hung broker still accepts TCP and would hold the round for ``connect_timeout_s``."""
        if self.connected.is_set():
            log.warning("lost the broker %s: %s", self.stats.broker, why)
            if unresponsive:
                self._broker_index = (self._broker_index + 1) % len(self.brokers)
        self.connected.clear()
        self.stats.last_error = f"{self.stats.broker}: {why}"

    def _awaiting(self, info: mqtt.MQTTMessageInfo) -> None:
        """Time a QoS 1 publication until its PUBACK (the watchdog's view, ``_broker_hung``)."""
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self._unanswered.pop(info.mid, None)  # a reused mid goes to the end: the order is the age
            self._unanswered[info.mid] = time.monotonic()

    def _broker_hung(self) -> bool:
        """The liveness watchdog: True (and the connection dropped) when publications have waited
        ``broker_stall_s`` for their PUBACK while nothing at all came from the broker.

        A frozen broker (SIGSTOP, a host gone without FIN or RST) keeps the TCP connection open; paho
        notices only through keepalive, after about 2 × ``keepalive_s`` — and it cannot tell us sooner:
        it counts a PINGREQ it sends as bytes received. Silence is therefore timed from what the public
        callbacks see (CONNACK, PUBACK, PUBLISH), and only while something awaits its PUBACK, counted
        from the later of the last thing heard and the oldest publication still waiting (a dock idle
        for an hour that publishes now waits a full ``broker_stall_s``). Mosquitto answers a QoS 1
        publish on receipt, whatever the server behind it does, so a slow server never trips this; a
        slow link does only when one chunk takes longer than ``broker_stall_s`` to cross it.
        """
        if not self._unanswered:
            return False
        oldest = next(iter(self._unanswered.values()))  # dicts keep publication order
        silent = time.monotonic() - max(self._heard_at, oldest)
        if silent < self.broker_stall_s:
            return False
        self._lost(
            f"no answer for {silent:.1f}s with {len(self._unanswered)} publications awaiting their "
            f"PUBACK (broker_stall_s {self.broker_stall_s:g})",
            unresponsive=True,
        )
        # Drop the connection as if it had broken: close the socket without a DISCONNECT (a normal
        # DISCONNECT would tell a broker that wakes up again to discard the will). From here on it is
        # the lost-connection path: the next round's connect() replaces the socket, and what is sent
        # again is what the outbox (and paho's replay of unacknowledged publications) sends after any loss.
        sock = self._client.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError as exc:
                log.debug("closing the hung broker's socket: %s", exc)
        return True

    # -- paho callbacks (this thread, inside loop()) -----------------------------------------------

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self._connack = rc  # judged by _try_connect; a refusal never sets ``connected``

    def _on_disconnect(self, _c: Any, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        # paho's keepalive gave up: the broker stopped answering (it did not close the connection).
        hung = not flags.is_disconnect_packet_from_server and rc == "Keep alive timeout"
        self._lost(f"disconnected ({rc})", unresponsive=hung)

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        self._heard_at = time.monotonic()
        self._unanswered.pop(mid, None)
        what = self._mids.pop(mid, None)
        if what is None or not rc.is_failure:
            return
        # Over MQTT v5 a publish the ACL denies is answered "Not authorized": never silent.
        recorder, seq, kind = what
        self.stats.publish_denied += 1
        text = f"the broker refused the {kind} publish: {rc}"
        self.stats.last_error = text
        log.error("%s/%s: %s", recorder, seq, text)
        try:
            self.outbox.set_error(recorder, seq, text)
        except Exception:
            log.exception("cannot note the refusal in the outbox")

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._heard_at = time.monotonic()
        try:
            if msg.topic == self.topics.down("ack"):
                self._on_ack(bytes(msg.payload))
            elif msg.topic == self.topics.down("have"):
                self._on_have(bytes(msg.payload))
        except Exception:  # a raising callback would stop paho's loop; the resend timers recover
            log.exception("cannot handle a message on %s", msg.topic)

    def _on_ack(self, payload: bytes) -> None:
        again = payload == self._last_ack[0]
        if again:
            # The server answers the chunks it made durable together with the very same signed bytes
            # (protocol §8 rule 10): verified once, a copy needs no second check.
            ack = dict(self._last_ack[1])
        else:
            try:
                ack = parse_ack(payload, self.server_keys)
            except ProtocolError as exc:
                self.stats.acks_bad_signature += 1
                log.warning("ignoring an ack that does not verify (%s): %r", exc, payload[:200])
                return
            self._last_ack = (payload, dict(ack))
        self.stats.acks += 1
        recorder, seq, status = ack.get("recorder"), ack.get("seq"), ack["status"]
        if not isinstance(recorder, str) or not isinstance(seq, int):
            self.stats.acks_ignored += 1
            return
        flow = self._flows.setdefault(recorder, _Flow(recorder))
        first_sent = flow.first_sent.pop(seq, None)
        if first_sent is not None:  # the first answer to a record sent once
            self.ack_delay.sample(time.monotonic() - first_sent)
        if status == "rejected" and str(ack.get("reason", "")).startswith("unannounced"):
            # A chunk overtook its record (another ingest worker): not about the record. Resend it.
            flow.inflight.pop(seq, None)
            flow.files.pop(seq, None)
            flow.dirty = True
            return
        if again and status == "pending":
            ff = flow.files.get(seq)
            got = ack.get("received")
            if ff is not None and isinstance(got, int) and got <= ff.acked:
                return  # the same answer once more (one per chunk of a batch): already applied
        row = self.outbox.apply_ack(ack, payload)
        if row is None:
            held = self.outbox.get(recorder, seq)
            if status != "pending" or held is None or held.state != "pending" or held.hash != ack.get("hash"):
                self.stats.acks_ignored += 1
                return
            row = held
        self._keep_row(flow, row)
        self._active.add(recorder)
        if row.state == "pending":
            got = ack.get("received")
            received: int = got if isinstance(got, int) and got >= 0 else row.acked_offset
            if row.has_file:
                ff = flow.files.get(seq)
                now = time.monotonic()
                if ff is None:
                    assert row.size is not None
                    flow.files[seq] = _FileFlow(
                        size=row.size, acked=received, sent_until=received, progress_at=now
                    )
                elif received > ff.acked:
                    ff.acked_until(received, now, self.ack_delay)
                    ff.acked, ff.progress_at, ff.stalls = received, now, 0
                    ff.sent_until = max(ff.sent_until, received)
        elif row.final:
            self.stats.last_final_at = now = time.monotonic()
            flow.inflight.pop(seq, None)
            done = flow.files.pop(seq, None)
            if done is not None and row.size is not None:
                done.acked_until(row.size, now, self.ack_delay)
            if row.state == "rejected":
                log.warning("%s/%d rejected by the server: %s", recorder, seq, row.last_error)
            if self.on_final is not None:
                self.on_final(row)

    def _keep_row(self, flow: _Flow, row: OutboxRow) -> None:
        """Bring the loaded open rows up to date with a row an ack changed, without reading them all
        again: the changed row replaces its old self, or leaves the list once final. (Reading the
        window's open rows back after every ack cost the dock about a tenth of its CPU, bench/sync_bench.py
        under py-spy.) The rows are read again only when the row was not among them, or when finals
        left fewer than half of a load that had stopped at its limit (more open rows wait behind)."""
        rows = flow.rows
        at = next((i for i, r in enumerate(rows or ()) if r.seq == row.seq), None)
        if rows is None or at is None:
            flow.dirty = True
            return
        if not row.final:
            rows[at] = row
            return
        del rows[at]
        if not flow.complete and len(rows) < self._rows_limit // 2:
            flow.dirty = True

    @property
    def _rows_limit(self) -> int:
        """How many open rows a recorder's flow loads at once."""
        return self.window * 4 + 64

    def _on_have(self, payload: bytes) -> None:
        try:
            ans = parse_have_answer(payload)
        except ProtocolError as exc:
            log.warning("ignoring a malformed have answer: %s", exc)
            return
        recorder = ans["recorder"]
        flow = self._flows.get(recorder)
        if flow is None:
            return  # a recorder not docked here now: nothing to do (§6)
        flow.have = ans
        next_seq, last_hash = ans["next_seq"], ans.get("last_hash")
        if next_seq > 0 and last_hash:
            held = self.outbox.get(recorder, next_seq - 1)
            if held is not None and held.hash != last_hash:
                log.error(
                    "fork: the server holds %s at %s/%d, this dock %s",
                    last_hash,
                    recorder,
                    next_seq - 1,
                    held.hash,
                )
        log.info(
            "%s: the server has up to seq %d, %d files pending", recorder, next_seq - 1, len(ans["pending"])
        )

    # -- sending -------------------------------------------------------------------------------------

    def _take_wakes(self) -> None:
        with self._wake_lock:
            woken, self._woken = self._woken, {}
        if "" in woken:
            self._active_checked = 0.0
            woken.pop("")
        for recorder, docked in woken.items():
            flow = self._flows.setdefault(recorder, _Flow(recorder))
            if docked:
                flow.reset()
            flow.dirty = True
            self._active.add(recorder)

    def _pump(self) -> None:
        now = time.monotonic()
        if now - self._active_checked > 2.0:
            self._active |= set(self.outbox.recorders_with_work())
            self._active_checked = now
        for recorder in sorted(self._active):
            flow = self._flows.setdefault(recorder, _Flow(recorder))
            if not self._pump_recorder(flow, now):
                self._active.discard(recorder)
            if not self.connected.is_set():
                return

    def _timeout(self, attempts: int) -> float:
        first = self.ack_delay.timeout(self.ack_timeout_s)
        return float(min(self.retry_max_s, first * 2.0 ** max(0, attempts - 1)))

    def _pump_recorder(self, flow: _Flow, now: float) -> bool:
        """Send what the window allows; False when the recorder has nothing left to send."""
        if flow.dirty or flow.rows is None:
            flow.rows = self.outbox.open_rows(flow.recorder, limit=self._rows_limit)
            flow.complete = len(flow.rows) < self._rows_limit
            flow.dirty = False
        if not flow.rows:
            flow.inflight.clear()
            flow.files.clear()
            return False
        if flow.have is None:
            due = flow.have_sent_at is None or now - flow.have_sent_at > HAVE_WAIT_S * 2
            if due and flow.have_tries < HAVE_TRIES and now - self._last_have >= HAVE_INTERVAL_S:
                if self._publish(self.topics.up("have"), have_question(flow.recorder)) is None:
                    return True
                self.stats.haves_sent += 1
                flow.have_sent_at = self._last_have = now
                flow.have_tries += 1
            if flow.have_sent_at is None or now - flow.have_sent_at < HAVE_WAIT_S:
                return True  # give the answer a moment; then go on without it
        rows = {r.seq: r for r in flow.rows}
        sends: list[OutboxRow] = []
        for seq, sent_at in list(flow.inflight.items()):
            row = rows.get(seq)
            if row is None:
                flow.inflight.pop(seq)
                continue
            ff = flow.files.get(seq)
            if row.state == "pending" and ff is not None:
                if ff.sent_until < ff.size:
                    continue  # the file is still going: _pump_files watches its progress
                sent_at = max(sent_at, ff.progress_at)  # all sent, no last word: ask again below
            if now - sent_at > self._timeout(row.attempts):
                sends.append(row)  # no answer: resend the record (with back-off)
        free = self.window - len(flow.inflight)
        for row in flow.rows:
            if free <= 0:
                break
            if row.seq not in flow.inflight:
                sends.append(row)
                free -= 1
        sent = []
        for row in sends:
            cert = [row.cert] if row.cert else None
            mid = self._publish(
                self.topics.up("record"),
                record_message(row.recorder, row.line, cert),
                (row.recorder, row.seq),
            )
            if mid is None:
                break
            flow.inflight[row.seq] = now
            if row.attempts == 0 and row.seq not in flow.first_sent:
                flow.first_sent[row.seq] = now
            else:
                flow.first_sent.pop(row.seq, None)  # sent again: its answer is no sample
            sent.append(row.seq)
        if sent:
            self.stats.records_sent += len(sent)
            self.outbox.mark_sent(flow.recorder, sent)
            marked = set(sent)  # the loaded rows as the outbox now holds them (no reading back)
            flow.rows = [as_sent(r) if r.seq in marked else r for r in flow.rows]
        self._pump_files(flow, rows, now)
        return True

    def _pump_files(self, flow: _Flow, rows: dict[int, OutboxRow], now: float) -> None:
        if not flow.files:
            return
        try:
            root = self.files(flow.recorder)
        except Exception:
            log.exception("cannot locate the spool of %s", flow.recorder)
            root = None
        if root is None:
            return  # not docked: its files wait for the next docking
        budget = self.chunk_window * self.chunk_bytes - sum(
            ff.sent_until - ff.acked for ff in flow.files.values()
        )
        for seq in sorted(flow.files):
            ff, row = flow.files[seq], rows.get(seq)
            if row is None or not row.has_file:
                flow.files.pop(seq)
                continue
            if ff.sent_until > ff.acked and now - ff.progress_at > self._timeout(ff.stalls + 1):
                # No progress: what was sent since the last ack is presumed lost; send it again.
                budget += ff.sent_until - ff.acked
                ff.sent_until, ff.progress_at = ff.acked, now
                ff.stalls += 1
                ff.sends.clear()
                ff.timed = False  # an ack may now answer either send
            if now < ff.blocked_until:
                continue
            while budget > 0 and ff.sent_until < ff.size:
                length = min(self.chunk_bytes, ff.size - ff.sent_until)
                data = self._read(root, row, ff.sent_until, length)
                if data is None:
                    ff.blocked_until = now + self._timeout(ff.stalls + 1)
                    ff.stalls += 1
                    break
                assert row.digest is not None
                props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                props.UserProperty = chunk_properties(
                    recorder=row.recorder, seq=row.seq, digest=row.digest, offset=ff.sent_until, size=ff.size
                )
                if self._publish(self.topics.up("chunk"), data, (row.recorder, row.seq), props) is None:
                    return
                if ff.sent_until == ff.acked:
                    ff.progress_at = now
                ff.sent_until += len(data)
                ff.sends.append((ff.sent_until, now))
                budget -= len(data)
                self.stats.chunks_sent += 1
                self.stats.chunk_bytes_sent += len(data)
            # No early return once the budget is spent: every later file still needs its stall check above.

    def _read(self, root: Path, row: OutboxRow, offset: int, length: int) -> bytes | None:
        assert row.file is not None
        path = root / "media" / row.file
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read(length)
        except OSError as exc:
            self._file_error(row, f"cannot read {path}: {exc.strerror or exc}")
            return None
        if len(data) != length:
            self._file_error(row, f"{path} is shorter than the {row.size} bytes its record signed")
            return None
        return data

    def _file_error(self, row: OutboxRow, text: str) -> None:
        log.warning("%s/%d: %s", row.recorder, row.seq, text)
        if row.last_error != text:
            self.outbox.set_error(row.recorder, row.seq, text)

    def _publish(
        self,
        topic: str,
        payload: bytes,
        about: tuple[str, int] | None = None,
        properties: Properties | None = None,
    ) -> int | None:
        if not self.connected.is_set():
            return None  # never into paho's memory while offline: the outbox keeps it
        info = self._client.publish(topic, payload, qos=1, properties=properties)
        if not self.stats.first_publish_at:
            self.stats.first_publish_at = time.monotonic()
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self._lost(f"publish: {mqtt.error_string(info.rc)}")
            return None
        self._awaiting(info)
        if about is not None:
            self._mids[info.mid] = (*about, topic.rsplit("/", 1)[-1])
        return info.mid
