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
import threading
from typing import Final

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


#: Reads asked for more than this go through ``ReadIntoClient``'s buffer (a chunk's body); smaller
#: ones (fixed headers, acks, records of a few KiB) as paho reads them.
_BIG_READ: Final = 64 * 1024


class ReadIntoClient(mqtt.Client):
    """paho's client, reading a large packet body into one buffer it keeps.

    paho reads a packet's body with ``recv(remaining)`` in a loop: over TLS each call returns one record
    (16 KiB), for which CPython first allocates a bytes object of the whole remaining size, and paho
    appends each piece to the packet's bytearray, which grows (and is copied) many times — about 14 %
    of the ingest's time holding the GIL at 1 MiB chunks (py-spy, bench/sync_bench.py). Here one
    read takes everything the socket has, up to what paho asked for, into a buffer decrypted into in
    place (``recv_into``); paho's append then copies it once. Same bytes, same errors as paho's own
    ``_sock_recv``; the returned view is valid until the next read, and paho copies it at once.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._read_buffer = bytearray(_BIG_READ)

    def _sock_recv(self, bufsize: int) -> bytes:
        sock = self._sock
        if bufsize <= _BIG_READ or sock is None:
            return super()._sock_recv(bufsize)
        if len(self._read_buffer) < bufsize:
            self._read_buffer = bytearray(bufsize)
        view = memoryview(self._read_buffer)
        got = 0
        try:
            while got < bufsize:
                n = sock.recv_into(view[got:bufsize])
                if not n:
                    break  # closed: what came so far now, an empty read next time
                got += n
        except ssl.SSLWantReadError as err:
            if not got:
                raise BlockingIOError() from err
        except ssl.SSLWantWriteError as err:
            if not got:
                self._call_socket_register_write()
                raise BlockingIOError() from err
        except BlockingIOError:
            if not got:
                raise
        return view[:got]  # type: ignore[return-value]  # paho only takes len() and appends it
