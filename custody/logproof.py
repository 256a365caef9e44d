"""Checking custody-log entries offline: a signed checkpoint and events' inclusion proofs (pure).

The same rules as ``server/custody_log/format.py`` and ``verify.py`` (docs/custody-log.md), kept here
with nothing but ``cryptography`` so that ``fieldproof verify BUNDLE`` needs no server package. A test
checks both implementations agree on what the server produces.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from custody.canonical import MAX_SAFE_INTEGER, canonical
from custody.errors import CustodyError
from custody.merkle import MerkleProofError, leaf_hash, verify_inclusion
from custody.signing import key_id

CHECKPOINT_CONTEXT: Final = b"fieldproof/checkpoint/v1\n"
LOG_NAME: Final = "fieldproof custody log"
LEAF_VERSION: Final = 1
EVENT_MEMBERS: Final = frozenset(
    ("v", "id", "time", "kind", "code", "device", "seq", "record_hash", "digest", "dock", "actor", "detail")
)
_HEX_RE: Final = re.compile(r"[0-9a-f]{64}")
_TIME_RE: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
_KID_RE: Final = re.compile(r"sha256:[0-9a-f]{64}")


class LogEntryError(CustodyError):
    """A checkpoint or an event's inclusion proof does not verify: do not rely on the event."""


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A signed tree head of the custody log."""

    tree_size: int
    root_hash: bytes
    time: str
    key_id: str
    signature: bytes

    def signed_bytes(self) -> bytes:
        """The context, then RFC 8785 of the body: what the server signed."""
        body = {
            "v": 1,
            "log": LOG_NAME,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex(),
            "time": self.time,
            "key_id": self.key_id,
        }
        return CHECKPOINT_CONTEXT + canonical(body)

    @classmethod
    def from_json(cls, data: Any) -> SignedCheckpoint:
        """Parse the API's JSON form strictly."""
        if not isinstance(data, Mapping):
            raise LogEntryError("a checkpoint must be a JSON object")
        want = {"tree_size", "root_hash", "time", "key_id", "signature"}
        if set(data) != want:
            raise LogEntryError(f"a checkpoint has exactly the members {sorted(want)}")
        size, time, kid, sig = data["tree_size"], data["time"], data["key_id"], data["signature"]
        if type(size) is not int or not 1 <= size <= MAX_SAFE_INTEGER:
            raise LogEntryError(f"the checkpoint's tree_size {size!r} is not a positive integer")
        if not isinstance(time, str) or not _TIME_RE.fullmatch(time):
            raise LogEntryError(f"the checkpoint's time {time!r} is not a log time")
        if not isinstance(kid, str) or not _KID_RE.fullmatch(kid):
            raise LogEntryError(f"the checkpoint's key_id {kid!r} is not a certificate fingerprint")
        if not isinstance(sig, str):
            raise LogEntryError("the checkpoint's signature must be base64 text")
        try:
            signature = base64.b64decode(sig.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise LogEntryError("the checkpoint's signature is not valid base64") from None
        return cls(size, parse_hash(data["root_hash"], "the checkpoint's root_hash"), time, kid, signature)


def parse_hash(text: Any, what: str) -> bytes:
    """32 bytes from 64 lowercase hex digits; LogEntryError otherwise."""
    if not isinstance(text, str) or not _HEX_RE.fullmatch(text):
        raise LogEntryError(f"{what} must be 64 lowercase hex digits")
    return bytes.fromhex(text)


def verify_checkpoint(checkpoint: SignedCheckpoint, certificate: x509.Certificate) -> None:
    """The checkpoint is signed by the server-signing ``certificate``, within its validity."""
    pub = certificate.public_key()
    if not isinstance(pub, Ed25519PublicKey):
        raise LogEntryError("the server-signing certificate does not hold an Ed25519 key")
    if checkpoint.key_id != key_id(certificate):
        raise LogEntryError(
            f"the checkpoint names key {checkpoint.key_id}, not the server-signing certificate given"
        )
    try:
        pub.verify(checkpoint.signature, checkpoint.signed_bytes())
    except InvalidSignature:
        raise LogEntryError(
            f"the signature of the checkpoint of size {checkpoint.tree_size} does not verify: its size, "
            "root, time or signature was altered"
        ) from None
    when = datetime.fromisoformat(checkpoint.time.replace("Z", "+00:00"))
    if not certificate.not_valid_before_utc <= when <= certificate.not_valid_after_utc:
        raise LogEntryError("the checkpoint is dated outside the server-signing certificate's validity")


def verify_entry(entry: Any, checkpoint: SignedCheckpoint) -> dict[str, Any]:
    """``{event, leaf_index, inclusion_proof}`` proves the event is in the log of ``checkpoint``.

    The checkpoint's signature is checked separately (:func:`verify_checkpoint`), once. Returns the event.
    """
    if not isinstance(entry, Mapping):
        raise LogEntryError("a custody-log entry must be a JSON object")
    event, index, proof = entry.get("event"), entry.get("leaf_index"), entry.get("inclusion_proof")
    if not isinstance(event, Mapping) or set(event) != EVENT_MEMBERS or event.get("v") != LEAF_VERSION:
        raise LogEntryError(f"the event must have exactly the members {sorted(EVENT_MEMBERS)}, v = 1")
    if type(index) is not int:
        raise LogEntryError(f"the leaf index {index!r} is not an integer")
    if not isinstance(proof, list):
        raise LogEntryError("inclusion_proof must be a list of hex hashes")
    hashes = [parse_hash(h, f"inclusion_proof[{i}]") for i, h in enumerate(proof)]
    try:
        leaf = leaf_hash(canonical(dict(event)))
    except ValueError as exc:
        raise LogEntryError(f"the event cannot be encoded (RFC 8785): {exc}") from None
    try:
        verify_inclusion(
            leaf_hash=leaf,
            index=index,
            tree_size=checkpoint.tree_size,
            proof=hashes,
            root=checkpoint.root_hash,
        )
    except MerkleProofError as exc:
        raise LogEntryError(
            f"event {event.get('id')!r} is not proven to be leaf {index} of the log signed at size "
            f"{checkpoint.tree_size}: {exc}"
        ) from None
    return dict(event)
