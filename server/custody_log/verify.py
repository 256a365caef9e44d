"""Checking the custody log's checkpoints and proofs offline (an export bundle, an auditor's script).

Needs only the event objects, proofs and checkpoints the API serves (or a bundle carries) and the
server-signing certificate; no database. Whoever calls this must already trust that certificate —
check it against the fleet's root CA (``openssl verify -CAfile root-ca.pem -untrusted ca-chain.pem``).
The checks themselves are ``custody.logproof``'s; this module reads the API's answers and raises the
server's :class:`LogProofError`, so a forgotten return value can never pass a bad proof.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from custody import logproof
from server.custody_log.errors import LogProofError
from server.custody_log.format import Checkpoint


@contextmanager
def _as_proof_error() -> Iterator[None]:
    try:
        yield
    except logproof.LogEntryError as exc:
        raise LogProofError(str(exc)) from None


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
    with _as_proof_error():
        logproof.verify_checkpoint(checkpoint, certificate)


def verify_event(
    *,
    event: Mapping[str, Any],
    leaf_index: int,
    proof: Sequence[bytes],
    checkpoint: Checkpoint,
    certificate: x509.Certificate,
) -> None:
    """``event`` is leaf ``leaf_index`` of the log the signed ``checkpoint`` describes."""
    with _as_proof_error():
        logproof.verify_checkpoint(checkpoint, certificate)
        logproof.verify_inclusion_of(event=event, leaf_index=leaf_index, proof=proof, checkpoint=checkpoint)


def verify_log_consistency(
    *, first: Checkpoint, second: Checkpoint, proof: Sequence[bytes], certificate: x509.Certificate
) -> None:
    """The log of the signed ``first`` checkpoint is a prefix of the one of ``second``: nothing rewritten."""
    with _as_proof_error():
        logproof.verify_checkpoint(first, certificate)
        logproof.verify_checkpoint(second, certificate)
        logproof.verify_consistency_of(first=first, second=second, proof=proof)


def _members(answer: Any, what: str, members: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(answer, Mapping):
        raise LogProofError(f"{what} must be a JSON object")
    for member in members:
        if member not in answer:
            raise LogProofError(f"{what} lacks its {member!r} member")
    return answer


def verify_event_answer(answer: Any, certificate: x509.Certificate) -> dict[str, Any]:
    """Check an API answer (or bundle entry) ``{event, leaf_index, inclusion_proof, checkpoint}``.

    Returns the event object once proven; raises LogProofError otherwise.
    """
    answer = _members(answer, "an event proof", ("event", "leaf_index", "inclusion_proof", "checkpoint"))
    with _as_proof_error():
        checkpoint = Checkpoint.from_json(answer["checkpoint"])
        logproof.verify_checkpoint(checkpoint, certificate)
        return logproof.verify_entry(answer, checkpoint)


def verify_consistency_answer(answer: Any, certificate: x509.Certificate) -> None:
    """Check an API answer ``{first, second, consistency_proof}``; LogProofError if it fails."""
    answer = _members(answer, "a consistency proof", ("first", "second", "consistency_proof"))
    with _as_proof_error():
        verify_log_consistency(
            first=Checkpoint.from_json(answer["first"]),
            second=Checkpoint.from_json(answer["second"]),
            proof=logproof.parse_proof(answer["consistency_proof"], "consistency_proof"),
            certificate=certificate,
        )
