"""PUBLISH packets decoded with one copy of the payload instead of five (paho-mqtt 2.2).

paho-mqtt 2.2's ``_packet.decode_publish`` peels a PUBLISH apart with ``struct.unpack(f"!H{n}s")`` and
slices: the topic length, the topic, the packet id and the properties each copy *the whole rest of the
packet*, and the payload is sliced once more — four copies of every 1 MiB chunk, plus about twenty
inside ``Properties.unpack``, which re-slices the rest of the packet for every property field it reads
(a chunk has six user properties). Measured: 2.7–2.9 ms per 1 MiB chunk against 0.8 ms with only the
properties' own bytes handed to paho, and less again with one copy of the payload — CPU the worker's
network thread spends holding the GIL, ≈ 2 CPU-seconds per GB.

``install()`` puts ``decode_publish_once`` in paho's place: the same fields, the same parser for the
properties (paho's own, given just their bytes), the same ``MalformedPacket`` for a packet that does
not add up, and the payload copied once out of the packet buffer — or, on a network thread that
called ``views_in_this_thread``, not copied at all (a ``memoryview``). Idempotent.
"""

from __future__ import annotations

import ssl
import sys
import threading
from typing import Any, Final

import paho.mqtt._packet as paho_packet
import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties, VariableByteIntegers

_INSTALLED: Final = "_fieldproof_one_copy"
_thread = threading.local()
#: paho's own decoder (kept for comparison: tests/server/test_packets.py).
PAHO_DECODE_PUBLISH: Final = paho_packet.decode_publish


@paho_packet.convert_exception
def decode_publish_once(
    header: int, packet: bytes | bytearray, protocol: MQTTProtocolVersion
) -> paho_packet.PublishPacket:
    """paho's ``decode_publish``, reading from a view of the packet: the payload is copied at most once."""
    dup = ((header & 0x08) >> 3) != 0
    qos = (header & 0x06) >> 1
    retain = (header & 0x01) != 0
    with memoryview(packet) as view:
        end = len(view)
        if end < 2:
            raise MalformedPacket("PUBLISH too short for its topic length")
        slen = int.from_bytes(view[0:2], "big")
        pos = 2 + slen
        if pos > end:
            raise MalformedPacket("PUBLISH topic runs past the packet")
        topic = bytes(view[2:pos])
        if protocol != MQTTProtocolVersion.MQTTv5 and len(topic) == 0:
            raise MalformedPacket("topic can't be empty in MQTTv3")
        mid = 0
        if qos > 0:
            if pos + 2 > end:
                raise MalformedPacket("PUBLISH too short for its packet identifier")
            mid = int.from_bytes(view[pos : pos + 2], "big")
            pos += 2
        properties = None
        if protocol == MQTTProtocolVersion.MQTTv5:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            length, header_len = VariableByteIntegers.decode(bytes(view[pos : pos + 4]))  # type: ignore[no-untyped-call]
            stop = pos + header_len + length
            if stop > end:
                raise MalformedPacket("PUBLISH properties run past the packet")
            _, props_len = properties.unpack(bytes(view[pos:stop]))  # type: ignore[no-untyped-call]
            pos += props_len
    # For a client whose network thread asked for views (the ingest worker's): not even one copy, a
    # view of the packet's own buffer (paho gives each packet a new bytearray and never touches it
    # again). Every other client in the process gets bytes, as paho gives.
    payload = memoryview(packet)[pos:] if getattr(_thread, "views", False) else bytes(packet[pos:])
    return paho_packet.PublishPacket(
        dup=dup, qos=qos, retain=retain, topic=topic, mid=mid, properties=properties, payload=payload
    )


def views_in_this_thread() -> None:
    """PUBLISH payloads decoded on the calling thread (a paho network thread: call it from the client's
    ``on_connect``) are ``memoryview``s of their packet, not copies. Only for a client whose
    ``on_message`` copies whatever it keeps as bytes, as the ingest worker does."""
    _thread.views = True


def install() -> None:
    """Have every paho client in this process decode PUBLISH packets with ``decode_publish_once``."""
    if getattr(paho_packet.decode_publish, _INSTALLED, False):
        return
    setattr(decode_publish_once, _INSTALLED, True)
    paho_packet.decode_publish = decode_publish_once


#: Packet bodies larger than this are read by ``ReadIntoClient`` into a buffer of their own (a chunk's);
#: smaller ones (fixed headers, acks, records of a few KiB) as paho reads them.
_BIG_READ: Final = 64 * 1024


#: Body buffers a ``ReadIntoClient`` keeps for reuse, at most (each at least ``_MIN_CAPACITY``).
_POOL_MAX: Final = 96
#: A kept buffer's least size: a 1 MiB chunk's body (payload, topic, properties) and room to spare.
_MIN_CAPACITY: Final = 1024 * 1024 + 64 * 1024


class _Whole:
    """A packet body ``ReadIntoClient`` read whole: paho sees its length, and its ``+=`` adopts it."""

    __slots__ = ("body",)

    def __init__(self, body: memoryview) -> None:
        self.body = body

    def __len__(self) -> int:
        return len(self.body)


class _Adopting(bytearray):
    """The empty packet buffer paho appends a body to: ``+=`` of a ``_Whole`` hands back that body itself."""

    def __iadd__(self, other: Any) -> Any:
        if isinstance(other, _Whole) and not self:
            return other.body
        return super().__iadd__(other)


class ReadIntoClient(mqtt.Client):
    """paho's client, reading a large packet's body straight into a buffer of its own, never copied.

    paho reads a packet's body with ``recv(remaining)`` in a loop: over TLS each call returns one record
    (16 KiB), for which CPython first allocates a bytes object of the whole remaining size, and paho
    appends each piece to the packet's bytearray, which grows (and is copied) as it goes — with the
    GIL held: measured with py-spy on bench/sync_bench.py, that append alone was 14 % of the time the
    ingest held the GIL. Here a body over ``_BIG_READ`` is read with ``recv_into`` into a bytearray of
    its own, across as many reads as it takes (paho is told "nothing yet" until it is whole), and then
    handed to paho as the packet itself (a view of exactly its bytes): no append, no copy. The chunk's
    payload is later a view of that buffer (``views_in_this_thread``). Same bytes, same errors as
    paho's ``_sock_recv``.

    The buffers are kept and used again once nothing refers to them any more — no view of a payload
    waiting to be written, held or hashed: CPython's reference count says so exactly. A new bytearray
    per packet was the next cost (py-spy, GIL held: 23 %, zero-filling and faulting in 1 MiB each time).
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._body: bytearray | None = None  # the buffer being filled, ``_body_size`` bytes of it
        self._body_size = 0
        self._body_got = 0
        self._body_for: object = None  # the paho packet state (a dict, new per packet) it belongs to
        self._pool: list[bytearray] = []

    def _take_buffer(self, size: int) -> bytearray:
        """A kept buffer of at least ``size`` bytes that nothing refers to any more, or a new one."""
        for buf in self._pool:
            # Free when only the pool holds it: references from the list, from ``buf`` here and from
            # getrefcount's own argument. A view of it anywhere (a payload) holds one more.
            if len(buf) >= size and sys.getrefcount(buf) == 3:
                return buf
        buf = bytearray(max(_MIN_CAPACITY, size))
        if len(self._pool) < _POOL_MAX:
            self._pool.append(buf)
        return buf

    def _sock_recv(self, bufsize: int) -> Any:
        sock = self._sock
        state = self._in_packet
        if bufsize <= _BIG_READ or sock is None or state["packet"]:
            return super()._sock_recv(bufsize)
        if self._body is None or self._body_for is not state or self._body_size != bufsize:
            self._body = None  # (a body of a packet paho dropped: its buffer is free again)
            self._body = self._take_buffer(bufsize)
            self._body_size, self._body_got, self._body_for = bufsize, 0, state
        body = self._body
        got = self._body_got
        try:
            with memoryview(body)[:bufsize] as view:
                while got < bufsize:
                    n = sock.recv_into(view[got:])
                    if not n:  # closed mid-packet: paho's empty read, and this body is dropped
                        self._body, self._body_for = None, None
                        return b""
                    got += n
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError) as err:
            if got > self._body_got:
                with self._msgtime_mutex:
                    self._last_bytes_received = mqtt.time_func()
            self._body_got = got
            if isinstance(err, ssl.SSLWantWriteError):
                self._call_socket_register_write()
            raise BlockingIOError() from err  # paho: "nothing yet", and it asks again with the same size
        except OSError:
            self._body, self._body_for = None, None
            raise
        self._body, self._body_for = None, None
        state["packet"] = _Adopting()  # paho's next ``packet += data`` takes the body as the packet
        return _Whole(memoryview(body)[:bufsize])
