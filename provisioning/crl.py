"""The certificate revocation list: built from its entries, signed by the device CA, numbered upwards."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from provisioning.certificates import Issuer
from provisioning.errors import ProvisioningError

# How long a CRL is good for. Mosquitto (OpenSSL) refuses *every* client once nextUpdate has passed,
# so the CRL must be re-signed (any revoke, or `provision refresh-crl`) well within this period.
CRL_VALIDITY = timedelta(days=30)

#: Reasons an IT person may give, with their RFC 5280 codes. "unspecified" is written as no reason
#: code at all, as RFC 5280 §5.3.1 asks.
REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
}


@dataclass(frozen=True)
class CrlEntry:
    """One revoked serial."""

    serial: int
    revoked_at: datetime
    reason: str


def check_reason(reason: str) -> str:
    """Return ``reason`` if it is one of REASONS, else raise ProvisioningError."""
    if reason not in REASONS:
        raise ProvisioningError(f"unknown revocation reason {reason!r}: use one of {', '.join(REASONS)}")
    return reason


def build_crl(
    *, issuer: Issuer, entries: Iterable[CrlEntry], number: int, now: datetime
) -> x509.CertificateRevocationList:
    """A CRL over ``entries`` with CRL number ``number``, valid from ``now`` for CRL_VALIDITY."""
    ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(now)
        .next_update(now + CRL_VALIDITY)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    )
    for entry in sorted(entries, key=lambda e: e.serial):
        revoked = (
            x509.RevokedCertificateBuilder().serial_number(entry.serial).revocation_date(entry.revoked_at)
        )
        if entry.reason != "unspecified":
            revoked = revoked.add_extension(x509.CRLReason(REASONS[entry.reason]), critical=False)
        builder = builder.add_revoked_certificate(revoked.build())
    return builder.sign(issuer.key, hashes.SHA256())


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    """PEM of a CRL."""
    return crl.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class CrlState:
    """What the current CRL says."""

    number: int
    entries: list[CrlEntry]
    next_update: datetime


def load_crl(path: Path, *, issuer: Issuer) -> CrlState:
    """Read the CA's CRL and check the device CA signed it."""
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except FileNotFoundError:
        raise ProvisioningError(f"{path} is missing: the CA directory is incomplete") from None
    except ValueError as exc:
        raise ProvisioningError(f"{path} is not a PEM CRL ({exc})") from None
    if not crl.is_signature_valid(issuer.key.public_key()):
        raise ProvisioningError(f"{path} is not signed by this CA's device CA: restore crl.pem from a backup")
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        raise ProvisioningError(f"{path} has no CRL number: it was not written by this tool") from None
    entries = []
    for revoked in crl:
        try:
            flag = revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason
            reason = next(k for k, v in REASONS.items() if v == flag)
        except (x509.ExtensionNotFound, StopIteration):
            reason = "unspecified"
        entries.append(CrlEntry(revoked.serial_number, revoked.revocation_date_utc, reason))
    if crl.next_update_utc is None:
        raise ProvisioningError(f"{path} has no nextUpdate: it was not written by this tool")
    return CrlState(number, entries, crl.next_update_utc)
