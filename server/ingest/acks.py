"""The server's signed acknowledgements (docs/sync-protocol.md §3), made with ``edge.sync.protocol``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from custody.signing import key_id
from custody.timefmt import now_timestamp
from edge.sync.protocol import signed_ack
from server.errors import SettingsError


@dataclass(frozen=True)
class AckSigner:
    """The server-signing key (Ed25519, CN fieldproof-server) and its key id."""

    private_key: Ed25519PrivateKey
    certificate: x509.Certificate

    @property
    def key_id(self) -> str:
        """sha256 of the certificate's DER, as record signatures name keys."""
        return key_id(self.certificate)

    @property
    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """What a dock or recorder checks acks with (``edge.sync.protocol.parse_ack``)."""
        pub = self.certificate.public_key()
        assert isinstance(pub, Ed25519PublicKey)
        return {self.key_id: pub}

    @classmethod
    def from_ca_dir(cls, ca_dir: Path) -> AckSigner:
        """Load ``server-signing.key`` and ``.pem`` from the CA directory; SettingsError if unusable."""
        key_path, cert_path = ca_dir / "server-signing.key", ca_dir / "server-signing.pem"
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise SettingsError(
                f"cannot load the server-signing key or certificate in {ca_dir}: {exc}"
            ) from None
        pub = cert.public_key()
        if not isinstance(key, Ed25519PrivateKey) or not isinstance(pub, Ed25519PublicKey):
            raise SettingsError(f"{key_path} / {cert_path} are not an Ed25519 key and certificate")
        if key.public_key().public_bytes_raw() != pub.public_bytes_raw():
            raise SettingsError(f"{key_path} does not belong to {cert_path}")
        return cls(private_key=key, certificate=cert)

    def ack(
        self, *, recorder: str, seq: int, hash: str, status: str, reason: str = "", received: int = 0
    ) -> bytes:
        """A signed ack with exactly the members the protocol (and a release record) expects."""
        return signed_ack(
            self.private_key,
            self.key_id,
            recorder=recorder,
            seq=seq,
            hash=hash,
            status=status,
            reason=reason[:500],
            received=received,
            server_time=now_timestamp(),
        )
