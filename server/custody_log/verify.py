"""Checking the custody log's checkpoints and proofs offline (an export bundle, an auditor's script).

Needs only the event objects, proofs and checkpoints the API serves (or a bundle carries) and the
server-signing certificate; no database. Whoever calls this must already trust that certificate —
check it against the fleet's root CA (``openssl verify -CAfile root-ca.pem -untrusted ca-chain.pem``).
Every function returns nothing or the checked value and raises :class:`LogProofError` on any failure,
so a forgotten return value can never pass a bad proof.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from custody.merkle import MerkleProofError, verify_consistency, verify_inclusion
from custody.signing import key_id
from server.custody_log.errors import LogProofError
from server.custody_log.format import (
    EVENT_MEMBERS,
    LEAF_VERSION,
    Checkpoint,
    event_leaf_hash,
    parse_proof,
)


def load_signing_certificate(pem: bytes) -> x509.Certificate:
    """The server-signing certificate from PEM; LogProofError if it is not an Ed25519 certificate."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise LogProofError(f"the server-signing certificate is not a PEM certificate: {exc}") from None
    if not isinstance(cert.public_key(), Ed25519PublicKey):
        raise LogProofError("the server-signing certificate does not hold an Ed25519 key")
    return cert


def verify_checkpoint(checkpoint: Checkpoint, certificate: x509.Certificate) -> None:
    """The checkpoint is signed by ``certificate``'s key, within its validity."""
    pub = certificate.public_key()
    if not isinstance(pub, Ed25519PublicKey):
        raise LogProofError("the server-signing certificate does not hold an Ed25519 key")
    expected = key_id(certificate)
    if checkpoint.key_id != expected:
        raise LogProofError(
            f"the checkpoint of size {checkpoint.tree_size} names key {checkpoint.key_id}, but the"
            f" certificate given is {expected}: verify with the certificate the server used then"
        )
    try:
        pub.verify(checkpoint.signature, checkpoint.signed_bytes())
    except InvalidSignature:
        raise LogProofError(
            f"the signature of the checkpoint of size {checkpoint.tree_size} does not verify: its size,"
            " root, time or signature was altered, or it was never signed by this server"
        ) from None
    when = datetime.fromisoformat(checkpoint.time.replace("Z", "+00:00"))
    if not certificate.not_valid_before_utc <= when <= certificate.not_valid_after_utc:
        raise LogProofError(
            f"the checkpoint of size {checkpoint.tree_size} is dated {checkpoint.time}, outside the"
            f" server-signing certificate's validity"
        )


def verify_event(
    *,
    event: Mapping[str, Any],
    leaf_index: int,
    proof: Sequence[bytes],
    checkpoint: Checkpoint,
    certificate: x509.Certificate,
) -> None:
    """``event`` is leaf ``leaf_index`` of the log the signed ``checkpoint`` describes."""
    verify_checkpoint(checkpoint, certificate)
    if set(event) != set(EVENT_MEMBERS) or event.get("v") != LEAF_VERSION:
        raise LogProofError(
            f"the event object must have exactly the members {list(EVENT_MEMBERS)} with v = {LEAF_VERSION}"
        )
    if type(leaf_index) is not int:
        raise LogProofError(f"the leaf index {leaf_index!r} is not an integer")
    try:
        leaf = event_leaf_hash(event)
    except ValueError as exc:
        raise LogProofError(f"the event object cannot be encoded as a leaf (RFC 8785): {exc}") from None
    try:
        verify_inclusion(
            leaf_hash=leaf,
            index=leaf_index,
            tree_size=checkpoint.tree_size,
            proof=proof,
            root=checkpoint.root_hash,
        )
    except MerkleProofError as exc:
        raise LogProofError(
            f"event {event.get('id')!r} is not proven to be leaf {leaf_index} of the custody log signed at"
            f" size {checkpoint.tree_size}: {exc}"
        ) from None


def verify_log_consistency(
    *, first: Checkpoint, second: Checkpoint, proof: Sequence[bytes], certificate: x509.Certificate
) -> None:
    """The log of the signed ``first`` checkpoint is a prefix of the one of ``second``: nothing rewritten."""
    verify_checkpoint(first, certificate)
    verify_checkpoint(second, certificate)
    try:
        verify_consistency(
            size1=first.tree_size,
            size2=second.tree_size,
            root1=first.root_hash,
            root2=second.root_hash,
            proof=proof,
        )
    except MerkleProofError as exc:
        raise LogProofError(
            f"the custody log at size {second.tree_size} is not proven to extend the log at size"
            f" {first.tree_size}: {exc}"
        ) from None


def verify_event_answer(answer: Any, certificate: x509.Certificate) -> dict[str, Any]:
    """Check an API answer (or bundle entry) ``{event, leaf_index, inclusion_proof, checkpoint}``.

    Returns the event object once proven; raises LogProofError otherwise.
    """
    if not isinstance(answer, Mapping):
        raise LogProofError("an event proof must be a JSON object")
    for member in ("event", "leaf_index", "inclusion_proof", "checkpoint"):
        if member not in answer:
            raise LogProofError(f"the event proof lacks its {member!r} member")
    event = answer["event"]
    if not isinstance(event, Mapping):
        raise LogProofError("the event proof's 'event' must be a JSON object")
    verify_event(
        event=event,
        leaf_index=answer["leaf_index"],
        proof=parse_proof(answer["inclusion_proof"], "inclusion_proof"),
        checkpoint=Checkpoint.from_json(answer["checkpoint"]),
        certificate=certificate,
    )
    return dict(event)


def verify_consistency_answer(answer: Any, certificate: x509.Certificate) -> None:
    """Check an API answer ``{first, second, consistency_proof}``; LogProofError if it fails."""
    if not isinstance(answer, Mapping):
        raise LogProofError("a consistency proof must be a JSON object")
    for member in ("first", "second", "consistency_proof"):
        if member not in answer:
            raise LogProofError(f"the consistency proof lacks its {member!r} member")
    verify_log_consistency(
        first=Checkpoint.from_json(answer["first"]),
        second=Checkpoint.from_json(answer["second"]),
        proof=parse_proof(answer["consistency_proof"], "consistency_proof"),
        certificate=certificate,
    )
