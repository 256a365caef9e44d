"""The custody log's signed checkpoints and proofs: their encoding and their checks (pure).

The one implementation, used by the server (``server/custody_log``: it signs checkpoints with
:func:`signed_checkpoint_bytes` and serves what is checked here) and offline by ``fieldproof verify
BUNDLE``, which needs nothing but ``cryptography`` (docs/custody-log.md).

- A leaf is RFC 8785 (``custody.canonical``) of an event object with exactly :data:`EVENT_MEMBERS`;
  its hash is ``custody.merkle.leaf_hash`` of those bytes (:func:`event_leaf_hash`).
- A checkpoint signs :data:`CHECKPOINT_CONTEXT` + RFC 8785 of its body (the log's name, size, root,
  time and key id) with the server-signing key (Ed25519).

Every check returns nothing or the checked value and raises :class:`LogEntryError` on any failure,
so a forgotten return value can never pass a bad proof. Whoever calls them must already trust the
server-signing certificate (``fieldproof verify`` checks it against the fleet's root CA).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from custody.canonical import MAX_SAFE_INTEGER, canonical
from custody.errors import CustodyError
from custody.merkle import HASH_SIZE, MerkleProofError, leaf_hash, verify_consistency, verify_inclusion
from custody.signing import key_id

#: Domain separation: a checkpoint signature can never pass for an ack or a record signature.
CHECKPOINT_CONTEXT: Final = b"fieldproof/checkpoint/v1\n"
#: Names the log in every checkpoint body, so that a checkpoint cannot be read as another log's.
LOG_NAME: Final = "fieldproof custody log"
#: Version of the leaf encoding (the ``v`` member of every event object).
LEAF_VERSION: Final = 1
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
_KID_RE: Final = re.compile(r"sha256:[0-9a-f]{64}")
_CHECKPOINT_MEMBERS: Final = frozenset(("tree_size", "root_hash", "time", "key_id", "signature"))


class LogEntryError(CustodyError):
    """A checkpoint, inclusion proof or consistency proof does not verify: do not rely on the event."""


def signed_checkpoint_bytes(*, tree_size: int, root_hash: bytes, time: str, key_id: str) -> bytes:
    """CHECKPOINT_CONTEXT + RFC 8785 of the checkpoint body: what the server signs."""
    body = {
        "v": 1,
        "log": LOG_NAME,
        "tree_size": tree_size,
        "root_hash": root_hash.hex(),
        "time": time,
        "key_id": key_id,
    }
    return CHECKPOINT_CONTEXT + canonical(body)


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A signed tree head: the first ``tree_size`` leaves have root ``root_hash``, says the server."""

    tree_size: int
    root_hash: bytes
    time: str  # UTC with microseconds (``2026-11-27T08:30:00.123456Z``): what is signed
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
    def from_json(cls, data: Any) -> SignedCheckpoint:
        """Parse the JSON form strictly; LogEntryError names what is wrong."""
        if not isinstance(data, Mapping):
            raise LogEntryError("a checkpoint must be a JSON object")
        if set(data) != _CHECKPOINT_MEMBERS:
            raise LogEntryError(
                f"a checkpoint has exactly the members {sorted(_CHECKPOINT_MEMBERS)}, not {sorted(data)}"
            )
        size, time, kid, sig = data["tree_size"], data["time"], data["key_id"], data["signature"]
        if type(size) is not int or not 1 <= size <= MAX_SAFE_INTEGER:
            raise LogEntryError(f"the checkpoint's tree_size {size!r} is not a positive integer")
        if not isinstance(time, str) or not _TIME_RE.fullmatch(time):
            raise LogEntryError(f"the checkpoint's time {time!r} is not a log time (…T…:…:….uuuuuuZ)")
        if not isinstance(kid, str) or not _KID_RE.fullmatch(kid):
            raise LogEntryError(f"the checkpoint's key_id {kid!r} is not a sha256 certificate fingerprint")
        if not isinstance(sig, str):
            raise LogEntryError("the checkpoint's signature must be base64 text")
        try:
            signature = base64.b64decode(sig.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise LogEntryError("the checkpoint's signature is not valid base64") from None
        return cls(size, parse_hash(data["root_hash"], "the checkpoint's root_hash"), time, kid, signature)


def parse_hash(text: Any, what: str) -> bytes:
    """A SHA-256 hash from 64 lowercase hex digits; LogEntryError otherwise."""
    if not isinstance(text, str) or not _HEX_RE.fullmatch(text):
        raise LogEntryError(f"{what} must be {2 * HASH_SIZE} lowercase hex digits, not {str(text)[:80]!r}")
    return bytes.fromhex(text)


def parse_proof(items: Any, what: str) -> list[bytes]:
    """A proof: a JSON array of hex hashes; LogEntryError otherwise."""
    if not isinstance(items, list):
        raise LogEntryError(f"{what} must be a JSON array of hex hashes")
    return [parse_hash(h, f"{what}[{i}]") for i, h in enumerate(items)]


def event_leaf_hash(event: Mapping[str, Any]) -> bytes:
    """SHA-256(0x00 ‖ RFC 8785 of the event object). ValueError for a value RFC 8785 cannot hold."""
    return leaf_hash(canonical(dict(event)))


def verify_checkpoint(checkpoint: SignedCheckpoint, certificate: x509.Certificate) -> None:
    """The checkpoint is signed by the server-signing ``certificate``'s key, within its validity."""
    pub = certificate.public_key()
    if not isinstance(pub, Ed25519PublicKey):
        raise LogEntryError("the server-signing certificate does not hold an Ed25519 key")
    expected = key_id(certificate)
    if checkpoint.key_id != expected:
        raise LogEntryError(
            f"the checkpoint of size {checkpoint.tree_size} names key {checkpoint.key_id}, but the"
            f" certificate given is {expected}: verify with the certificate the server used then"
        )
    try:
        pub.verify(checkpoint.signature, checkpoint.signed_bytes())
    except InvalidSignature:
        raise LogEntryError(
            f"the signature of the checkpoint of size {checkpoint.tree_size} does not verify: its size,"
            " root, time or signature was altered, or it was never signed by this server"
        ) from None
    when = datetime.fromisoformat(checkpoint.time.replace("Z", "+00:00"))
    if not certificate.not_valid_before_utc <= when <= certificate.not_valid_after_utc:
        raise LogEntryError(
            f"the checkpoint of size {checkpoint.tree_size} is dated {checkpoint.time}, outside the"
            " server-signing certificate's validity"
        )


def verify_inclusion_of(
    *, event: Mapping[str, Any], leaf_index: Any, proof: Sequence[bytes], checkpoint: SignedCheckpoint
) -> None:
    """``event`` is leaf ``leaf_index`` of the log ``checkpoint`` describes (its signature is checked
    separately, once: :func:`verify_checkpoint`)."""
    if set(event) != set(EVENT_MEMBERS) or event.get("v") != LEAF_VERSION:
        raise LogEntryError(
            f"the event object must have exactly the members {list(EVENT_MEMBERS)} with v = {LEAF_VERSION}"
        )
    if type(leaf_index) is not int:
        raise LogEntryError(f"the leaf index {leaf_index!r} is not an integer")
    try:
        leaf = event_leaf_hash(event)
    except ValueError as exc:
        raise LogEntryError(f"the event object cannot be encoded as a leaf (RFC 8785): {exc}") from None
    try:
        verify_inclusion(
            leaf_hash=leaf,
            index=leaf_index,
            tree_size=checkpoint.tree_size,
            proof=proof,
            root=checkpoint.root_hash,
        )
    except MerkleProofError as exc:
        raise LogEntryError(
            f"event {event.get('id')!r} is not proven to be leaf {leaf_index} of the custody log signed at"
            f" size {checkpoint.tree_size}: {exc}"
        ) from None


def verify_entry(entry: Any, checkpoint: SignedCheckpoint) -> dict[str, Any]:
    """``{event, leaf_index, inclusion_proof}`` (an export bundle's entry) proves the event is in the
    log of ``checkpoint``. Returns the event."""
    if not isinstance(entry, Mapping):
        raise LogEntryError("a custody-log entry must be a JSON object")
    event = entry.get("event")
    if not isinstance(event, Mapping):
        raise LogEntryError("the entry's 'event' must be a JSON object")
    verify_inclusion_of(
        event=event,
        leaf_index=entry.get("leaf_index"),
        proof=parse_proof(entry.get("inclusion_proof"), "inclusion_proof"),
        checkpoint=checkpoint,
    )
    return dict(event)


def verify_consistency_of(
    *, first: SignedCheckpoint, second: SignedCheckpoint, proof: Sequence[bytes]
) -> None:
    """The log of ``first`` is a prefix of the one of ``second``: nothing rewritten (signatures are
    checked separately)."""
    try:
        verify_consistency(
            size1=first.tree_size,
            size2=second.tree_size,
            root1=first.root_hash,
            root2=second.root_hash,
            proof=proof,
        )
    except MerkleProofError as exc:
        raise LogEntryError(
            f"the custody log at size {second.tree_size} is not proven to extend the log at size"
            f" {first.tree_size}: {exc}"
        ) from None
