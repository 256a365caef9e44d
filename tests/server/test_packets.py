"""The worker's PUBLISH decoder (server/ingest/packets.py) reads what paho-mqtt's own reads, with one
copy of the payload (none on the worker's network thread); a packet that does not add up is
MalformedPacket, as with paho."""

from __future__ import annotations

import os
import random
from typing import Any

import paho.mqtt._packet as paho_packet
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.sync.protocol import chunk_properties
from server.ingest import packets

PAHO_DECODE = (
    paho_packet.decode_publish if not hasattr(paho_packet.decode_publish, "_fieldproof_one_copy") else None
)
QOS1 = 0x32


def _packet(topic: bytes, mid: int, props: Properties | None, payload: bytes) -> bytearray:
    out = bytearray(len(topic).to_bytes(2, "big") + topic + mid.to_bytes(2, "big"))
    out += props.pack() if props is not None else b""  # type: ignore[no-untyped-call]
    return out + payload


def _props() -> Properties:
    p = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    p.UserProperty = chunk_properties(
        recorder="REC-0001", seq=7, digest="sha256:" + "ab" * 32, offset=1 << 20, size=3 << 20
    )
    return p


def _fields(r: paho_packet.PublishPacket) -> tuple[object, ...]:
    props = None if r.properties is None else sorted(vars(r.properties).items(), key=str)
    return (r.dup, r.qos, r.retain, r.topic, r.mid, bytes(r.payload), props)


def test_a_chunk_decodes_as_paho_decodes_it() -> None:
    pkt = _packet(b"fieldproof/v1/dev/DOCK-01/up/chunk", 4242, _props(), os.urandom(1 << 20))
    for header in (QOS1, 0x34, 0x3B):  # QoS 1, QoS 2, QoS 1 with dup and retain
        ours = packets.decode_publish_once(header, pkt, MQTTProtocolVersion.MQTTv5)
        assert _fields(ours) == _fields(PAHO_DECODE(header, pkt, MQTTProtocolVersion.MQTTv5))
    assert packets.decode_publish_once(QOS1, pkt, MQTTProtocolVersion.MQTTv5).properties.UserProperty == (  # type: ignore[union-attr]
        _props().UserProperty
    )


def test_mangled_packets_are_malformed_or_read_as_paho_reads_them() -> None:
    rnd = random.Random(4)
    base = bytes(_packet(b"t/x", 9, _props(), b"payload"))
    agreed = refused = 0
    for _ in range(3000):
        data = bytearray(base[: rnd.randrange(len(base) + 1)])
        for _ in range(rnd.randrange(3)):
            if data:
                data[rnd.randrange(len(data))] = rnd.randrange(256)
        for protocol in (MQTTProtocolVersion.MQTTv5, MQTTProtocolVersion.MQTTv311):
            try:
                ours = packets.decode_publish_once(QOS1, data, protocol)
            except MalformedPacket:
                refused += 1  # paho may read some of these (properties running past the end): we don't
                continue
            assert _fields(ours) == _fields(PAHO_DECODE(QOS1, data, protocol))
            agreed += 1
    assert agreed > 100
    assert refused > 100


def test_install_is_idempotent_and_takes_paho_s_place() -> None:
    packets.install()
    packets.install()
    assert paho_packet.decode_publish is packets.decode_publish_once


def test_a_thread_that_asks_for_views_gets_the_packet_s_own_bytes_others_get_bytes() -> None:
    """The ingest worker's network thread takes chunk payloads as views of their packets (no copy at
    all); any other paho client in the process — on another thread — still gets bytes."""
    import threading

    payload = os.urandom(1 << 20)
    pkt = _packet(b"fieldproof/v1/dev/DOCK-01/up/chunk", 7, _props(), payload)
    seen: dict[str, object] = {}

    def worker_thread() -> None:
        packets.views_in_this_thread()
        seen["view"] = packets.decode_publish_once(QOS1, pkt, MQTTProtocolVersion.MQTTv5).payload

    t = threading.Thread(target=worker_thread)
    t.start()
    t.join()
    view = seen["view"]
    assert isinstance(view, memoryview)
    assert view.obj is pkt  # the packet's buffer itself, not a copy
    assert view == payload
    other = packets.decode_publish_once(QOS1, pkt, MQTTProtocolVersion.MQTTv5).payload
    assert type(other) is bytes
    assert other == payload


def _received_through(port: int, tls: dict[str, str] | None, publisher_tls: dict[str, str] | None) -> None:
    """Payloads around the big-read threshold, published through a real Mosquitto, arrive whole at a
    ReadIntoClient: what it reads into its buffer is what paho would have read; and every body over the
    threshold became the packet itself (adopted by paho's append, not copied into paho's buffer)."""
    import queue
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    topic = "fieldproof/v1/dev/DOCK-01/up/chunk"
    sizes = [1, 64 * 1024, 64 * 1024 + 1, 1 << 20, (3 << 20) + 7, 200_000]
    payloads = [os.urandom(n) for n in sizes]
    got: queue.Queue[bytes] = queue.Queue()
    subscribed = threading.Event()
    sub = packets.ReadIntoClient(
        CallbackAPIVersion.VERSION2, client_id="read-into-test", protocol=mqtt.MQTTv5
    )
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="read-into-pub", protocol=mqtt.MQTTv5)
    for client, files in ((sub, tls), (pub, publisher_tls)):
        if files is not None:
            client.tls_set(**files)
    sub.on_connect = lambda c, *_a: c.subscribe(topic, qos=1)
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.on_message = lambda _c, _u, msg: got.put(bytes(msg.payload))
    adopted: list[int] = []
    real_iadd = packets._Adopting.__iadd__

    def counting(self: Any, other: Any) -> Any:
        if isinstance(other, packets._Whole):
            adopted.append(len(other))
        return real_iadd(self, other)

    packets._Adopting.__iadd__ = counting  # type: ignore[method-assign]
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    try:
        assert subscribed.wait(10)
        pub.connect("127.0.0.1", port)
        pub.loop_start()
        for p in payloads:
            pub.publish(topic, p, qos=1).wait_for_publish(10)
        received = [got.get(timeout=10) for _ in payloads]
        assert [len(r) for r in received] == sizes
        assert received == payloads
        # Bodies over 64 KiB (each payload of 64 KiB or more, with its topic and properties) were adopted.
        assert len(adopted) == sum(1 for n in sizes if n >= 64 * 1024), adopted
    finally:
        packets._Adopting.__iadd__ = real_iadd  # type: ignore[method-assign]
        pub.loop_stop()
        pub.disconnect()
        sub.loop_stop()
        sub.disconnect()


def test_read_into_client_receives_what_was_published_over_mutual_tls(fleet: Any, broker: Any) -> None:
    dock = fleet.ca / "devices" / "DOCK-01"
    _received_through(
        broker.port,
        {
            "ca_certs": str(fleet.ca / "ca-chain.pem"),
            "certfile": str(fleet.ca / "ingest.pem"),
            "keyfile": str(fleet.ca / "ingest.key"),
        },
        {
            "ca_certs": str(fleet.ca / "root-ca.pem"),
            "certfile": str(dock / "tls.pem"),
            "keyfile": str(dock / "tls.key"),
        },
    )


def test_read_into_client_receives_what_was_published_over_plain_tcp(tmp_path: Any) -> None:
    from tests.provisioning.helpers import Broker, free_port

    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    b = Broker(conf=conf, port=port, log=tmp_path / "mosquitto.log")
    b.start()
    try:
        _received_through(port, None, None)
    finally:
        b.stop()


def test_a_body_buffer_is_used_again_only_once_nothing_refers_to_it() -> None:
    """ReadIntoClient keeps its body buffers: one is handed out again only when no view of it is left
    anywhere (a chunk's payload waiting to be written, held, hashed) — never under a payload in use."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = packets.ReadIntoClient(CallbackAPIVersion.VERSION2, client_id="pool-test", protocol=mqtt.MQTTv5)
    first = client._take_buffer(1 << 20)
    first_id = id(first)
    payload = memoryview(first)[100:200]  # a chunk's payload, still to be written
    del first
    second = client._take_buffer(1 << 20)
    assert id(second) != first_id  # the first is still under a payload
    second_id = id(second)
    del second
    third = client._take_buffer(1 << 20)
    assert id(third) == second_id  # nothing refers to the second any more
    payload.release()
    del payload
    fourth = client._take_buffer(1 << 20)
    assert id(fourth) == first_id  # the payload is gone: the first is free again
    big = client._take_buffer(3 << 20)  # larger than any kept: a new one, of that size
    assert len(big) >= 3 << 20
    assert id(big) not in (first_id, second_id)
    assert len(client._pool) == 3
