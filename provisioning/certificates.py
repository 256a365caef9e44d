"""Building, serialising and reading the X.509 objects of the fleet CA."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from provisioning.errors import ProvisioningError
from provisioning.layout import ORGANIZATION, SERVER_TLS_CN

CaKey = ec.EllipticCurvePrivateKey
LeafKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

# id-kp-documentSigning (RFC 9336). Putting an EKU on the evidence-signing certificate that is *not*
# clientAuth makes TLS stacks refuse it as a client certificate, so a signing key can never log in
# to the broker and a TLS key can never pass for an evidence signature.
DOCUMENT_SIGNING_EKU = ObjectIdentifier("1.3.6.1.5.5.7.3.36")

ROOT_DAYS = 20 * 365 + 5
DEVICE_CA_DAYS = 10 * 365 + 2
LEAF_DAYS = 5 * 365 + 1
# Leaf certificates are dated an hour back: a device whose clock is a little behind at first boot
# must not see its fresh certificate as "not yet valid".
BACKDATE = timedelta(hours=1)


def utc_now() -> datetime:
    """Now, timezone-aware UTC, to the second (certificates carry no fractions)."""
    return datetime.now(UTC).replace(microsecond=0)


def iso_z(moment: datetime) -> str:
    """ISO-8601 UTC with a trailing Z, e.g. 2026-11-26T08:00:00Z."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def serial_hex(serial: int) -> str:
    """A serial number as lower-case hex bytes, the way ``openssl x509 -serial`` groups it."""
    return serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big").hex()


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, as ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def new_p256_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def new_ed25519_key() -> ed25519.Ed25519PrivateKey:
    """A fresh Ed25519 private key."""
    return ed25519.Ed25519PrivateKey.generate()


def key_pem(key: LeafKey) -> bytes:
    """PKCS#8 PEM of a private key, unencrypted: file mode 0600 protects it (see docs)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    """PEM of a certificate."""
    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert(path: Path) -> x509.Certificate:
    """Read the first certificate in a PEM file, or raise ProvisioningError."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise ProvisioningError(f"{path} is missing") from None
    except ValueError as exc:
        raise ProvisioningError(f"{path} is not a PEM certificate ({exc})") from None


def load_key(path: Path) -> LeafKey:
    """Read an unencrypted PEM private key of a type this CA uses, or raise ProvisioningError."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise ProvisioningError(f"{path} is missing") from None
    except (ValueError, TypeError) as exc:
        raise ProvisioningError(f"{path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise ProvisioningError(f"{path} holds a {type(key).__name__}; expected ECDSA P-256 or Ed25519")
    return key


def name(common_name: str, unit: str | None = None) -> x509.Name:
    """Subject name: O=Fieldproof, optional OU, CN."""
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)]
    if unit is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def common_name(subject: x509.Name) -> str | None:
    """The single CN of a name, or None when there is none or more than one."""
    values = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(values) != 1:
        return None
    value = values[0].value
    return value if isinstance(value, str) else None


def unit(subject: x509.Name) -> str | None:
    """The single OU of a name, or None."""
    values = subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if len(values) != 1:
        return None
    value = values[0].value
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Issuer:
    """A CA certificate with its key."""

    cert: x509.Certificate
    key: CaKey


def _ku(
    *, digital_signature: bool = False, content_commitment: bool = False, cert_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=content_commitment,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _builder(
    *,
    subject: x509.Name,
    issuer_name: x509.Name,
    public_key: PublicKey,
    not_before: datetime,
    days: int,
    cap: datetime | None,
) -> x509.CertificateBuilder:
    not_after = not_before + timedelta(days=days)
    if cap is not None and not_after > cap:
        # A certificate must not outlive its issuer; path validation would fail after the issuer expires.
        not_after = cap
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def make_root(*, key: CaKey, now: datetime, tag: str) -> x509.Certificate:
    """Self-signed root: CA:TRUE, pathlen 1, 20 years. ``tag`` tells this CA's names from another fleet's."""
    subject = name(f"Fieldproof Root CA {tag}")
    return (
        _builder(
            subject=subject,
            issuer_name=subject,
            public_key=key.public_key(),
            not_before=now,
            days=ROOT_DAYS,
            cap=None,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_ku(cert_sign=True), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def make_device_ca(*, root: Issuer, key: CaKey, now: datetime, tag: str) -> x509.Certificate:
    """Device CA: CA:TRUE, pathlen 0, signed by the root, 10 years."""
    return (
        _builder(
            subject=name(f"Fieldproof Device CA {tag}"),
            issuer_name=root.cert.subject,
            public_key=key.public_key(),
            not_before=now,
            days=DEVICE_CA_DAYS,
            cap=root.cert.not_valid_after_utc,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ku(cert_sign=True), critical=True)
        .add_extension(_aki(root), critical=False)
        .sign(root.key, hashes.SHA256())
    )


def _aki(issuer: Issuer) -> x509.AuthorityKeyIdentifier:
    ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _leaf(
    *, issuer: Issuer, subject: x509.Name, public_key: PublicKey, now: datetime
) -> x509.CertificateBuilder:
    return (
        _builder(
            subject=subject,
            issuer_name=issuer.cert.subject,
            public_key=public_key,
            not_before=now - BACKDATE,
            days=LEAF_DAYS,
            cap=issuer.cert.not_valid_after_utc,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_aki(issuer), critical=False)
    )


def make_tls_client(
    *, issuer: Issuer, subject: x509.Name, public_key: ec.EllipticCurvePublicKey, now: datetime
) -> x509.Certificate:
    """TLS client certificate (devices, ingest): KU digitalSignature, EKU clientAuth."""
    return (
        _leaf(issuer=issuer, subject=subject, public_key=public_key, now=now)
        .add_extension(_ku(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(issuer.key, hashes.SHA256())
    )


def make_signing(
    *, issuer: Issuer, subject: x509.Name, public_key: ed25519.Ed25519PublicKey, now: datetime
) -> x509.Certificate:
    """Evidence/checkpoint signing certificate: KU digitalSignature + nonRepudiation, EKU documentSigning."""
    return (
        _leaf(issuer=issuer, subject=subject, public_key=public_key, now=now)
        .add_extension(_ku(digital_signature=True, content_commitment=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([DOCUMENT_SIGNING_EKU]), critical=False)
        .sign(issuer.key, hashes.SHA256())
    )


def make_tls_server(
    *, issuer: Issuer, public_key: ec.EllipticCurvePublicKey, names: Sequence[str], now: datetime
) -> x509.Certificate:
    """TLS server certificate with SANs localhost, 127.0.0.1 and ``names`` (DNS names or IP addresses)."""
    sans: list[x509.GeneralName] = []
    seen: set[str] = set()
    for entry in ("localhost", "127.0.0.1", *names):
        key = entry.lower()
        if key in seen:
            continue
        seen.add(key)
        sans.append(general_name(entry))
    return (
        _leaf(issuer=issuer, subject=name(SERVER_TLS_CN), public_key=public_key, now=now)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(_ku(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(issuer.key, hashes.SHA256())
    )


def general_name(entry: str) -> x509.GeneralName:
    """An IP address SAN for an address, a DNS SAN for a host name; raise on anything else."""
    try:
        return x509.IPAddress(ipaddress.ip_address(entry))
    except ValueError:
        pass
    labels = entry.rstrip(".").split(".")
    label_ok = all(
        0 < len(lab) <= 63 and lab[0] != "-" and lab[-1] != "-" and all(c.isalnum() or c == "-" for c in lab)
        for lab in labels
    )
    if not entry.isascii() or not label_ok or len(entry) > 253:
        raise ProvisioningError(
            f"--server-name {entry!r} is neither an IP address nor a DNS host name"
            " (e.g. evidence.example.org)"
        )
    return x509.DNSName(entry.rstrip(".").lower())
