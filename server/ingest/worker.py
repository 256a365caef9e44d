"""The ingest worker: an MQTT v5 client (paho-mqtt 2, mutual TLS as ``fieldproof-ingest``) on the shared
subscription, feeding a handler thread.

paho's network thread only queues messages; the handler (fsync, database commits) runs on the worker's
own thread, so the network loop never waits on a disk. Messages are acknowledged to the broker
(``manual_ack``) only after they were handled and their answers published; with the Receive Maximum
we announce at CONNECT, that bounds what the broker sends us before we finished — flow control
instead of Mosquitto's silent drops past ``max_queued_messages``. If the process dies, what it had not
acked is simply redelivered or resent by the dock (its outbox keeps everything until the server's
signed ack), so nothing is lost and nothing is done twice (idempotent by (device, seq) and digest).
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

#: QoS 0 messages (outside the protocol) are not bounded by Receive Maximum; past this many waiting,
#: they are dropped rather than let memory grow.
_QOS0_BACKLOG: Final = 1024


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

    def __init__(self, settings: ServerSettings, *, client_id: str | None = None) -> None:
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
        self._qos0_waiting = 0  # approximate (two threads, no lock): it only bounds a backlog
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
            if msg.qos == 0:
                if self._qos0_waiting >= _QOS0_BACKLOG:
                    log.warning("dropping a QoS 0 message on %r: the protocol uses QoS 1", topic)
                    return
                self._qos0_waiting += 1
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
        if item.qos == 0:
            self._qos0_waiting -= 1
        for out in self.handler.handle(item.topic, item.payload, item.properties):
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
