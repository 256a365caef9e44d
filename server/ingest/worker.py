"""The ingest worker: an MQTT v5 client (paho-mqtt 2, mutual TLS as ``fieldproof-ingest``) on the shared
subscription, feeding a handler thread.

paho's network thread only queues messages; the handler (fsync, database commits) runs on the worker's
own thread, so the network loop never waits on a disk. Messages are acknowledged to the broker
(``manual_ack``) only after they were handled and their answers published. If the process dies, what
it had not acked is resent by the dock (its outbox keeps everything until the server's signed ack), so
nothing is lost and nothing is done twice (idempotent by (device, seq) and digest).

Flow control: we announce a Receive Maximum at CONNECT, but Mosquitto 2.0.11 honours it only for the
first window — measured: after each PUBACK it sends up to Receive Maximum more, so unacknowledged
messages pile up. The worker therefore also bounds its backlog by bytes: past ``max_backlog_bytes``
the network thread waits (TCP back-pressure on the broker) until the handler catches up.
"""

from __future__ import annotations

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
from server.evidence.store import LocalBlobStore
from server.ingest.acks import AckSigner
from server.ingest.handler import IngestHandler

log = logging.getLogger(__name__)

#: Bytes of received messages waiting for the handler before the network thread waits.
MAX_BACKLOG_BYTES: Final = 64 * 1024 * 1024
#: The network thread waits at most this long at a time, so paho still answers keepalives between.
_BACKLOG_WAIT: Final = 5.0


@dataclass(frozen=True)
class _Incoming:
    topic: str
    payload: bytes
    properties: list[tuple[str, str]] | None
    qos: int
    mid: int
    connection: int  # which connection it came on: a PUBACK is only meaningful on that one


class IngestWorker:
    """One ingest worker process's MQTT side and handler loop."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        client_id: str | None = None,
        max_backlog_bytes: int = MAX_BACKLOG_BYTES,
    ) -> None:
        ca_dir = settings.check_ca_dir()
        settings.check_data_dir()
        self.settings = settings
        self.engine = make_engine(settings.db_url, immediate=True)
        check_migrated(self.engine)
        self.client_id = client_id or f"fieldproof-ingest-{socket.gethostname()}-{os.getpid()}"
        self.handler = IngestHandler(
            prefix=settings.topic_prefix,
            factory=session_factory(self.engine),
            store=LocalBlobStore(settings.store_root, settings.staging_dir),
            registry=DeviceRegistry(ca_dir),
            signer=AckSigner.from_ca_dir(ca_dir),
            actor=f"ingest:{self.client_id}"[:64],
        )
        self.queue: queue.Queue[_Incoming] = queue.Queue()
        self.subscribed = threading.Event()
        self.handled = 0
        self._connection = 0
        self.max_backlog_bytes = max_backlog_bytes
        self.backlog_bytes = 0
        self.peak_backlog_bytes = 0
        self._backlog = threading.Condition()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5, manual_ack=True
        )
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
        topic = ingest_subscription(self.settings.topic_prefix, self.settings.share_group)
        client.subscribe(topic, options=SubscribeOptions(qos=1))
        log.info(
            "connected to %s:%d; subscribing to %s", self.settings.mqtt_host, self.settings.mqtt_port, topic
        )

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, rcs: list[Any], _p: Any) -> None:
        if any(rc.is_failure for rc in rcs):
            log.error("the broker refused ingest's subscription: %s", rcs)
            return
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
            item = _Incoming(topic, bytes(msg.payload), props, msg.qos, msg.mid, self._connection)
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
        """Handle the next message, if one comes within ``timeout``; True when one was handled."""
        try:
            item = self.queue.get(timeout=timeout)
        except queue.Empty:
            return False
        try:
            answers = self.handler.handle(item.topic, item.payload, item.properties)
        finally:
            with self._backlog:
                self.backlog_bytes -= len(item.payload)
                self._backlog.notify_all()
        for out in answers:
            # Published only now: handle() returned, so everything the answer claims is committed.
            info = self.client.publish(out.topic, out.payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                log.warning("answer on %s not sent now (%s); the dock will ask again", out.topic, info.rc)
        if item.qos > 0 and item.connection == self._connection:
            self.client.ack(item.mid, item.qos)
        self.handled += 1
        return True

    def run(self, stop: threading.Event) -> None:
        """Connect, and handle messages until ``stop`` is set; then disconnect."""
        props = Properties(PacketTypes.CONNECT)
        props.ReceiveMaximum = self.settings.receive_maximum
        props.SessionExpiryInterval = 0
        self.client.connect_async(
            self.settings.mqtt_host, self.settings.mqtt_port, keepalive=30, clean_start=True, properties=props
        )
        self.client.loop_start()
        try:
            while not stop.is_set():
                self.process_one()
        finally:
            self.client.disconnect()
            self.client.loop_stop()
            self.engine.dispose()
