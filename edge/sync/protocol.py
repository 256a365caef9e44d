"""Sync protocol v1: topics, message builders and parsers, signed acks (docs/sync-protocol.md).

Shared by the dock and the server so that both read the contract the same way. Light on purpose:
the standard library, ``custody`` and ``cryptography`` only.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from custody.canonical import canonical, parse
from custody.digest import is_digest
from custody.record import DEVICE_ID_RE
from fieldproof.errors import FieldproofError

VERSION: Final = 1
DEFAULT_PREFIX: Final = "fieldproof/v1"
ACK_CONTEXT: Final = b"fieldproof/ack/v1\n"
MAX_RECORD_MESSAGE: Final = 256 * 1024
MAX_CHUNK: Final = 8 * 1024 * 1024
DEFAULT_CHUNK: Final = 1024 * 1024
MAX_FILE: Final = 4 * 1024**3
WINDOW: Final = 16
MAX_SEQ: Final = 2**53 - 1
ACK_STATUSES: Final = ("stored", "pending", "duplicate", "rejected")
REJECT_CODES: Final = (
    "malformed",
    "bad-signature",
    "unknown-device",
    "foreign-ca",
    "revoked",
    "fork",
    "broken-link",
    "hash-mismatch",
    "size-mismatch",
    "unannounced",
    "too-large",
)
CHUNK_PROPERTIES: Final = ("v", "recorder", "seq", "digest", "offset", "size")


class ProtocolError(FieldproofError):
    """A message that does not follow the sync protocol; ``code`` is the rejection code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass(frozen=True)
class Topics:
    """The topic names of one dock under a prefix."""

    prefix: str
    dock: str

    def up(self, what: str) -> str:
        """``P/dev/<dock>/up/<what>`` (record, chunk, have)."""
        return f"{self.prefix}/dev/{self.dock}/up/{what}"

    def down(self, what: str) -> str:
        """``P/dev/<dock>/down/<what>`` (ack, have)."""
        return f"{self.prefix}/dev/{self.dock}/down/{what}"

    @property
    def state(self) -> str:
        """The dock's retained state topic."""
        return f"{self.prefix}/dev/{self.dock}/state"


def ingest_subscription(prefix: str = DEFAULT_PREFIX, group: str = "ingest") -> str:
    """The shared subscription ingest workers use."""
    return f"$share/{group}/{prefix}/dev/+/up/#"


def parse_topic(topic: str, prefix: str = DEFAULT_PREFIX) -> tuple[str, str, str]:
    """Split ``P/dev/<dock>/<up|down>/<what>`` into (dock, direction, what), or raise ProtocolError."""
    head = prefix + "/dev/"
    if not topic.startswith(head):
        raise ProtocolError("malformed", f"topic {topic!r} is not under {head}")
    parts = topic[len(head) :].split("/")
    if len(parts) != 3 or parts[1] not in ("up", "down") or not DEVICE_ID_RE.fullmatch(parts[0]):
        raise ProtocolError("malformed", f"topic {topic!r} is not <dock>/<up|down>/<what>")
    return parts[0], parts[1], parts[2]


def _json(payload: bytes, limit: int) -> dict[str, Any]:
    if len(payload) > limit:
        raise ProtocolError("too-large", f"message of {len(payload)} bytes exceeds {limit}")
    try:
        msg = parse(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: deeply nested arrays/objects exhaust the C parser's stack guard.
        raise ProtocolError("malformed", f"not JSON: {exc}") from None
    # type() is int: ``true`` and ``1.0`` compare equal to 1 but are not version 1.
    if not isinstance(msg, dict) or type(msg.get("v")) is not int or msg["v"] != VERSION:
        raise ProtocolError("malformed", "not a v1 message object")
    if not isinstance(msg.get("msg"), str):
        raise ProtocolError("malformed", "not a v1 message object")
    return msg


def _recorder(msg: Mapping[str, Any]) -> str:
    rec = msg.get("recorder")
    if not isinstance(rec, str) or not DEVICE_ID_RE.fullmatch(rec):
        raise ProtocolError("malformed", "recorder is not a device id")
    return rec


# -- dock → server ---------------------------------------------------------------------------------


def record_message(recorder: str, line: bytes, certs: list[str] | None = None) -> bytes:
    """The ``record`` message relaying one journal line."""
    msg: dict[str, Any] = {
        "v": VERSION,
        "msg": "record",
        "recorder": recorder,
        "line": line.rstrip(b"\n").decode("utf-8"),
    }
    if certs:
        msg["certs"] = certs
    return json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class RecordMessage:
    """A parsed ``record`` message."""

    recorder: str
    line: bytes  # with its LF, as in the journal
    certs: tuple[str, ...]


def parse_record_message(payload: bytes) -> RecordMessage:
    """Parse a ``record`` message, or raise ProtocolError."""
    msg = _json(payload, MAX_RECORD_MESSAGE)
    if msg["msg"] != "record" or not isinstance(msg.get("line"), str):
        raise ProtocolError("malformed", "not a record message with a line")
    certs = msg.get("certs", [])
    if not isinstance(certs, list) or not all(isinstance(c, str) for c in certs) or len(certs) > 4:
        raise ProtocolError("malformed", "certs must be a list of at most 4 PEM strings")
    unknown = set(msg) - {"v", "msg", "recorder", "line", "certs"}
    if unknown:
        raise ProtocolError("malformed", f"unknown members {sorted(unknown)}")
    try:
        line = msg["line"].encode("utf-8") + b"\n"
    except UnicodeEncodeError:  # a lone surrogate (\ud800) parses as JSON but is no UTF-8 text
        raise ProtocolError("malformed", "line is not valid Unicode text") from None
    return RecordMessage(recorder=_recorder(msg), line=line, certs=tuple(certs))


@dataclass(frozen=True)
class Chunk:
    """A parsed chunk: which file, where, and the bytes."""

    recorder: str
    seq: int
    digest: str
    offset: int
    size: int
    data: bytes


def chunk_properties(
    *, recorder: str, seq: int, digest: str, offset: int, size: int
) -> list[tuple[str, str]]:
    """MQTT v5 user properties of a chunk."""
    return [
        ("v", str(VERSION)),
        ("recorder", recorder),
        ("seq", str(seq)),
        ("digest", digest),
        ("offset", str(offset)),
        ("size", str(size)),
    ]


def parse_chunk(properties: list[tuple[str, str]] | None, payload: bytes) -> Chunk:
    """Parse a chunk from its user properties and payload, or raise ProtocolError."""
    props = dict(properties or [])
    if set(CHUNK_PROPERTIES) - set(props) or props.get("v") != str(VERSION):
        raise ProtocolError("malformed", f"a chunk needs user properties {', '.join(CHUNK_PROPERTIES)}")
    if len(payload) > MAX_CHUNK:
        raise ProtocolError("too-large", f"chunk of {len(payload)} bytes exceeds {MAX_CHUNK}")
    try:
        seq, offset, size = int(props["seq"]), int(props["offset"]), int(props["size"])
    except ValueError:
        raise ProtocolError("malformed", "seq, offset and size must be decimal integers") from None
    # seq is a record's seq, so within the record domain (±(2^53 − 1)); unbounded it overflows databases.
    if not is_digest(props["digest"]) or min(seq, offset, size) < 0 or size > MAX_FILE or seq > MAX_SEQ:
        raise ProtocolError("malformed", "bad digest, negative numbers or a file over the size limit")
    if offset + len(payload) > size:
        raise ProtocolError(
            "size-mismatch", f"chunk at {offset}+{len(payload)} runs past the file's {size} bytes"
        )
    return Chunk(
        recorder=_recorder(props), seq=seq, digest=props["digest"], offset=offset, size=size, data=payload
    )


def have_question(recorder: str) -> bytes:
    """The ``have?`` message."""
    return json.dumps({"v": VERSION, "msg": "have?", "recorder": recorder}).encode()


def parse_have_question(payload: bytes) -> str:
    """The recorder a ``have?`` asks about."""
    msg = _json(payload, 4096)
    if msg["msg"] != "have?":
        raise ProtocolError("malformed", "not a have? message")
    return _recorder(msg)


# -- server → dock ---------------------------------------------------------------------------------


def have_answer(*, recorder: str, next_seq: int, last_hash: str | None, pending: Mapping[str, int]) -> bytes:
    """The ``have`` answer."""
    return json.dumps(
        {
            "v": VERSION,
            "msg": "have",
            "recorder": recorder,
            "next_seq": next_seq,
            "last_hash": last_hash,
            "pending": dict(pending),
        }
    ).encode()


def parse_have_answer(payload: bytes) -> dict[str, Any]:
    """Parse a ``have`` answer."""
    msg = _json(payload, MAX_RECORD_MESSAGE)
    if (
        msg["msg"] != "have"
        or not isinstance(msg.get("next_seq"), int)
        or not isinstance(msg.get("pending"), dict)
    ):
        raise ProtocolError("malformed", "not a have answer")
    _recorder(msg)
    return msg


def signed_ack(key: Ed25519PrivateKey, key_id: str, **fields: Any) -> bytes:
    """An ``ack`` signed by the server (fields: recorder, seq, hash, status, reason, received, server_time)."""
    ack = {"v": VERSION, "msg": "ack", **fields}
    if ack.get("status") not in ACK_STATUSES:
        raise ValueError(f"ack status must be one of {ACK_STATUSES}")
    sig = base64.b64encode(key.sign(ACK_CONTEXT + canonical(ack))).decode()
    ack["sig"] = {"alg": "ed25519", "key": key_id, "value": sig}
    return canonical(ack)


def parse_ack(payload: bytes, server_keys: Mapping[str, Ed25519PublicKey]) -> dict[str, Any]:
    """Parse an ack and check the server's signature; raises ProtocolError if it does not verify."""
    msg = _json(payload, 64 * 1024)
    if msg["msg"] != "ack" or msg.get("status") not in ACK_STATUSES:
        raise ProtocolError("malformed", "not an ack")
    sig = msg.pop("sig", None)
    if not isinstance(sig, dict) or sig.get("alg") != "ed25519" or sig.get("key") not in server_keys:
        raise ProtocolError("bad-signature", "the ack is not signed by a known server key")
    try:
        server_keys[sig["key"]].verify(
            base64.b64decode(sig["value"], validate=True), ACK_CONTEXT + canonical(msg)
        )
    except (InvalidSignature, ValueError, TypeError):
        raise ProtocolError("bad-signature", "the ack's signature does not verify") from None
    msg["sig"] = sig
    return msg
