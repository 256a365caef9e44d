"""What the custody log hashes and signs: the canonical event (one leaf) and the checkpoint.

Pure data: no database, no server settings, so an export bundle's verifier can use it offline.

A leaf is RFC 8785 (``custody.canonical``) of the event object :func:`event_json` builds; its hash is
``custody.merkle.leaf_hash`` of those bytes. ``detail`` stays the exact JSON *text* the server stored
(a string member), so that no float or big integer inside it can make an event unencodable — and a
checkpoint signs ``CHECKPOINT_CONTEXT`` + RFC 8785 of its body (docs/custody-log.md).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from custody.canonical import MAX_SAFE_INTEGER, canonical
from custody.merkle import HASH_SIZE, leaf_hash
from server.custody_log.errors import LogProofError

#: Version of the leaf encoding (the ``v`` member of every event object).
LEAF_VERSION: Final = 1
#: Domain separation: a checkpoint signature can never pass for an ack or a record signature.
CHECKPOINT_CONTEXT: Final = b"fieldproof/checkpoint/v1\n"
#: Names the log in every checkpoint body, so that a checkpoint cannot be read as another log's.
LOG_NAME: Final = "fieldproof custody log"
#: The members of an event object, in the order the API lists them (the encoding sorts them anyway).
EVENT_MEMBERS: Final = (
    "v",
    "id",
    "time",
    "kind",
    "code",
    "device",
    "seq",
    "record_hash",
    "digest",
    "dock",
    "actor",
    "detail",
)
_HEX_RE: Final = re.compile(r"[0-9a-f]{64}")
_TIME_RE: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


class EventRow(Protocol):
    """What :func:`event_json` reads: a ``CustodyEvent`` row, or anything with its columns."""

    id: int
    time: datetime
    kind: str
    code: str | None
    device: str | None
    seq: int | None
    record_hash: str | None
    digest: str | None
    dock: str | None
    actor: str
    detail: str


def log_time(when: datetime) -> str:
    """UTC with microseconds, fixed width (``2026-11-27T08:30:00.123456Z``): text order is time order."""
    if when.tzinfo is None:
        raise ValueError("custody log times must be timezone-aware")
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _safe_int(value: int | None) -> int | str | None:
    # RFC 8785 numbers are IEEE doubles: a larger integer is kept exactly as its decimal text instead.
    if value is None or -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return value
    return str(value)


def event_json(event: EventRow) -> dict[str, Any]:
    """The event object a leaf encodes (and the API serves), from the stored row."""
    return {
        "v": LEAF_VERSION,
        "id": _safe_int(event.id),
        "time": log_time(event.time),
        "kind": event.kind,
        "code": event.code,
        "device": event.device,
        "seq": _safe_int(event.seq),
        "record_hash": event.record_hash,
        "digest": event.digest,
        "dock": event.dock,
        "actor": event.actor,
        "detail": event.detail,
    }


def leaf_data(event: Mapping[str, Any]) -> bytes:
    """The leaf's bytes: RFC 8785 of the event object. ValueError for a value RFC 8785 cannot hold."""
    return canonical(dict(event))


def event_leaf_hash(event: Mapping[str, Any]) -> bytes:
    """SHA-256(0x00 ‖ leaf bytes): the leaf hash of an event object."""
    return leaf_hash(leaf_data(event))


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed tree head: the first ``tree_size`` leaves have root ``root_hash``, says the server."""

    tree_size: int
    root_hash: bytes
    time: str  # log_time() text: what is signed
    key_id: str  # sha256 of the server-signing certificate (DER), as record signatures name keys
    signature: bytes  # Ed25519 over signed_bytes()

    def signed_bytes(self) -> bytes:
        """What the server signs: the context, then RFC 8785 of the body."""
        return signed_checkpoint_bytes(
            tree_size=self.tree_size, root_hash=self.root_hash, time=self.time, key_id=self.key_id
        )

    def to_json(self) -> dict[str, Any]:
        """The API's and an export bundle's form: hashes in hex, the signature in base64."""
        return {
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex(),
            "time": self.time,
            "key_id": self.key_id,
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    @classmethod
    def from_json(cls, data: Any) -> Checkpoint:
        """Parse the JSON form strictly; LogProofError names what is wrong."""
        if not isinstance(data, Mapping):
            raise LogProofError("a checkpoint must be a JSON object")
        want = {"tree_size", "root_hash", "time", "key_id", "signature"}
        if set(data) != want:
            raise LogProofError(f"a checkpoint has exactly the members {sorted(want)}, not {sorted(data)}")
        size, time, kid, sig = data["tree_size"], data["time"], data["key_id"], data["signature"]
        if type(size) is not int or not 1 <= size <= MAX_SAFE_INTEGER:
            raise LogProofError(f"the checkpoint's tree_size {size!r} is not a positive integer")
        if not isinstance(time, str) or not _TIME_RE.fullmatch(time):
            raise LogProofError(f"the checkpoint's time {time!r} is not a log time (…T…:…:….uuuuuuZ)")
        if not isinstance(kid, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", kid):
            raise LogProofError(f"the checkpoint's key_id {kid!r} is not a sha256 certificate fingerprint")
        if not isinstance(sig, str):
            raise LogProofError("the checkpoint's signature must be base64 text")
        try:
            signature = base64.b64decode(sig.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise LogProofError("the checkpoint's signature is not valid base64") from None
        return cls(size, parse_hash(data["root_hash"], "the checkpoint's root_hash"), time, kid, signature)


def signed_checkpoint_bytes(*, tree_size: int, root_hash: bytes, time: str, key_id: str) -> bytes:
    """CHECKPOINT_CONTEXT + RFC 8785 of the checkpoint body (the log's name, size, root, time, key)."""
    body = {
        "v": 1,
        "log": LOG_NAME,
        "tree_size": tree_size,
        "root_hash": root_hash.hex(),
        "time": time,
        "key_id": key_id,
    }
    return CHECKPOINT_CONTEXT + canonical(body)


def parse_hash(text: Any, what: str) -> bytes:
    """A SHA-256 hash from 64 lowercase hex digits; LogProofError otherwise."""
    if not isinstance(text, str) or not _HEX_RE.fullmatch(text):
        raise LogProofError(f"{what} must be {2 * HASH_SIZE} lowercase hex digits, not {str(text)[:80]!r}")
    return bytes.fromhex(text)


def parse_proof(items: Any, what: str) -> list[bytes]:
    """A proof: a JSON array of hex hashes; LogProofError otherwise."""
    if not isinstance(items, list):
        raise LogProofError(f"{what} must be a JSON array of hex hashes")
    return [parse_hash(h, f"{what}[{i}]") for i, h in enumerate(items)]
