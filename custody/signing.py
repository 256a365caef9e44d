"""Sealing records: canonical bytes, hash, signature, and the journal line that carries them.

A journal line is the RFC 8785 encoding of ``{"record": R, "sig": S}`` followed by LF. Because RFC 8785
sorts member names, the line is literally ``{"record":`` + JCS(R) + ``,"sig":`` + JCS(S) + ``}``.
The signature covers ``SIGNATURE_CONTEXT + JCS(R)``; the record's hash (what the next record's
``prev`` names) is SHA-256 over JCS(R) alone.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from custody.canonical import canonical, fast_canonical
from custody.digest import Digest, sha256_digest
from custody.errors import RecordFormatError, TrustError
from custody.record import record_problems

#: Domain separation: a record signature can never be replayed as a signature over anything else.
SIGNATURE_CONTEXT: Final = b"fieldproof/record/v1\n"
SIGNATURE_ALGORITHMS: Final = ("ed25519",)


def key_id(cert: x509.Certificate) -> Digest:
    """The id a signature gives for its key: the SHA-256 of the signing certificate (DER)."""
    return sha256_digest(cert.public_bytes(serialization.Encoding.DER))


class Signer(Protocol):
    """Something that signs record bytes for one device (a key file now; a secure element later)."""

    algorithm: str
    key_id: Digest

    def sign(self, message: bytes) -> bytes:
        """Sign ``message`` (already prefixed with the context)."""
        ...


@dataclass(frozen=True)
class Ed25519Signer:
    """A device's evidence-signing key and the certificate that names it."""

    private_key: Ed25519PrivateKey
    certificate: x509.Certificate
    algorithm: str = "ed25519"

    @property
    def key_id(self) -> Digest:
        """The certificate's fingerprint."""
        return key_id(self.certificate)

    def sign(self, message: bytes) -> bytes:
        """Ed25519 over ``message``."""
        return self.private_key.sign(message)

    @classmethod
    def from_files(cls, key_path: Path, cert_path: Path) -> Ed25519Signer:
        """Load the signing key (PEM, unencrypted, 0600 on the device) and its certificate."""
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise TrustError(
                f"cannot load the signing key {key_path} or certificate {cert_path}: {exc}"
            ) from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise TrustError(f"{key_path} is not an Ed25519 key; evidence is signed with Ed25519")
        if key.public_key().public_bytes_raw() != _ed25519_public(cert).public_bytes_raw():
            raise TrustError(f"{key_path} does not belong to the certificate {cert_path}")
        return cls(private_key=key, certificate=cert)


def _ed25519_public(cert: x509.Certificate) -> Ed25519PublicKey:
    pub = cert.public_key()
    if not isinstance(pub, Ed25519PublicKey):
        raise TrustError(f"certificate {cert.subject.rfc4514_string()} does not hold an Ed25519 key")
    return pub


@dataclass(frozen=True, slots=True)
class SealedRecord:
    """A record with its canonical bytes, hash, signature and journal line."""

    record: dict[str, Any]
    canonical: bytes
    hash: Digest
    signature: dict[str, str]
    line: bytes


def envelope_line(record_bytes: bytes, signature: dict[str, str]) -> bytes:
    """The journal line for canonical record bytes and a signature object."""
    return b'{"record":' + record_bytes + b',"sig":' + fast_canonical(signature) + b"}\n"


def seal(record: dict[str, Any], signer: Signer) -> SealedRecord:
    """Check, canonicalise and sign a record; raises RecordFormatError and signs nothing if it is bad."""
    problems = record_problems(record)
    if problems:
        raise RecordFormatError("refusing to sign a malformed record: " + "; ".join(problems))
    rbytes = canonical(record)
    sig = {
        "alg": signer.algorithm,
        "key": signer.key_id,
        "value": base64.b64encode(signer.sign(SIGNATURE_CONTEXT + rbytes)).decode("ascii"),
    }
    return SealedRecord(
        record=record,
        canonical=rbytes,
        hash=Digest("sha256:" + hashlib.sha256(rbytes).hexdigest()),
        signature=sig,
        line=envelope_line(rbytes, sig),
    )


def verify_signature(public_key: bytes, algorithm: str, record_bytes: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid signature by ``public_key`` over the record bytes."""
    if algorithm != "ed25519":
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, SIGNATURE_CONTEXT + record_bytes)
    except (InvalidSignature, ValueError):
        return False
    return True
