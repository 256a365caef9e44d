"""Key generation on the device: the private keys never leave it, only CSRs do.

A device holds two keys with separate jobs: an ECDSA P-256 key for mutual TLS to the broker, and an
Ed25519 key that signs capture records. Losing the TLS key lets someone talk to the broker as the
device; losing the signing key lets someone forge evidence — keeping them apart means the signing
key is never exposed to the network stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from fieldproof.durable import make_dir, write_file, write_private
from provisioning import certificates as c
from provisioning.errors import ProvisioningError
from provisioning.layout import SIGNING_CSR, SIGNING_KEY, TLS_CSR, TLS_KEY, check_device_id, check_role


@dataclass(frozen=True)
class DeviceKeys:
    """A device's two private keys."""

    tls: ec.EllipticCurvePrivateKey
    signing: ed25519.Ed25519PrivateKey


def generate_keys() -> DeviceKeys:
    """Fresh TLS (P-256) and signing (Ed25519) keys."""
    return DeviceKeys(tls=c.new_p256_key(), signing=c.new_ed25519_key())


def make_csr(key: c.LeafKey, *, device: str, role: str) -> bytes:
    """A PEM CSR with subject O=Fieldproof, OU=role, CN=device, signed by ``key``."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(c.name(device, role))
    # Ed25519 signs the message itself; it takes no separate hash algorithm.
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


def make_csrs(keys: DeviceKeys, *, device: str, role: str) -> tuple[bytes, bytes]:
    """The TLS and signing CSRs for ``keys``."""
    return make_csr(keys.tls, device=device, role=role), make_csr(keys.signing, device=device, role=role)


def keygen(*, device: str, role: str, out: Path) -> list[Path]:
    """Generate keys and CSRs into ``out`` (keys 0600); refuse to overwrite existing keys."""
    check_device_id(device)
    check_role(role)
    out = Path(out)
    existing = [out / n for n in (TLS_KEY, SIGNING_KEY) if (out / n).exists()]
    if existing:
        raise ProvisioningError(
            f"{existing[0]} already exists; nothing was changed. Overwriting a device key would cut the"
            " device off before its new certificate arrives: generate into a new directory instead"
        )
    make_dir(out)
    keys = generate_keys()
    tls_csr, signing_csr = make_csrs(keys, device=device, role=role)
    written = [out / TLS_KEY, out / SIGNING_KEY, out / TLS_CSR, out / SIGNING_CSR]
    write_private(written[0], c.key_pem(keys.tls))
    write_private(written[1], c.key_pem(keys.signing))
    write_file(written[2], tls_csr)
    write_file(written[3], signing_csr)
    return written
