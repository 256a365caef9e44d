"""The verifier's trust: fleet root(s), the device CA, device signing certificates, and the CRL.

Only the roots given by the custodian are trusted. Intermediate and device certificates may come from
the spool or bundle under examination; they count only when they chain to a given root. Revocation
times come from CRLs that a trusted CA signed — so an attacker who edits a spool cannot un-revoke.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID

from custody.digest import Digest
from custody.errors import TrustError
from custody.signing import key_id


class KeyStatus(StrEnum):
    """Why a signing certificate can or cannot vouch for a device's records."""

    TRUSTED = "trusted"
    FOREIGN_CA = "foreign-ca"  # does not chain to any given root
    NOT_SIGNING_KEY = "not-signing-key"  # chains, but is not an Ed25519 evidence-signing certificate


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A device signing certificate as the verifier sees it."""

    key_id: Digest
    device: str  # the certificate's CN
    status: KeyStatus
    detail: str
    public_key: bytes  # raw Ed25519 public key (empty when not Ed25519)
    not_before: datetime
    not_after: datetime
    revoked_at: datetime | None  # from a trusted CRL


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate in a PEM file (or in each *.pem of a folder)."""
    files = sorted(path.glob("*.pem")) + sorted(path.glob("*.crt")) if path.is_dir() else [path]
    certs: list[x509.Certificate] = []
    for f in files:
        try:
            data = f.read_bytes()
        except OSError as exc:
            raise TrustError(f"cannot read certificate file {f}: {exc.strerror}") from exc
        if b"-----BEGIN CERTIFICATE-----" not in data:
            continue  # keys, CSRs and other PEM objects live beside certificates in bundles
        blocks = data.count(b"-----BEGIN CERTIFICATE-----")
        try:
            found = x509.load_pem_x509_certificates(data)
            if len(found) != blocks or data.count(b"-----END CERTIFICATE-----") != blocks:
                # A damaged BEGIN/END line makes the parser pass a block over: not a readable file.
                raise ValueError(f"{blocks} certificate blocks, {len(found)} readable")
            for cert in found:
                # The parser is lazy: a damaged name, extension or key only fails when first read.
                # Read them all here, so a bad byte is this error and not a crash later on.
                _ = (cert.subject, cert.issuer, cert.extensions, cert.public_key(), cert.not_valid_after_utc)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise TrustError(f"{f} is not a readable PEM certificate file: {exc}") from exc
        certs.extend(found)
    return certs


def _cn(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _signed_crl(ca: x509.Certificate, crl: x509.CertificateRevocationList) -> bool:
    key = ca.public_key()
    # CAs of this fleet hold ECDSA keys; anything else cannot have signed a CRL we accept.
    return isinstance(key, ec.EllipticCurvePublicKey | Ed25519PublicKey) and crl.is_signature_valid(key)


class TrustStore:
    """Roots, CAs that chain to them, CRLs they signed; answers for device signing certificates."""

    def __init__(
        self,
        *,
        roots: Iterable[x509.Certificate],
        untrusted: Iterable[x509.Certificate] = (),
        crls: Iterable[x509.CertificateRevocationList] = (),
    ) -> None:
        self.roots = [c for c in roots if _is_ca(c)]
        if not self.roots:
            raise TrustError("no CA certificate among the given trust roots (--ca)")
        self._untrusted = list(untrusted)
        self.trusted_cas = self._chain_cas()
        self.revocations: dict[tuple[str, int], datetime] = {}
        self.crl_notes: list[str] = []
        # CRLs are matched to their issuer lazily: the device CA that signs them may only arrive with
        # the evidence (add_untrusted), and counts once it chains to a root.
        self._pending_crls = list(crls)
        #: Whether any CRL was given; without one, revocation cannot be checked at all.
        self.revocation_checked = bool(self._pending_crls)

    @classmethod
    def from_paths(
        cls, *, ca: Iterable[Path], crl: Iterable[Path] = (), certs: Iterable[Path] = ()
    ) -> TrustStore:
        """Build from files: roots (--ca), CRLs (--crl, PEM or DER) and extra certificates."""
        roots = [c for p in ca for c in load_certificates(p)]
        extra = [c for p in certs for c in load_certificates(p)]
        crls: list[x509.CertificateRevocationList] = []
        for p in crl:
            try:
                data = p.read_bytes()
            except OSError as exc:
                raise TrustError(f"cannot read CRL {p}: {exc.strerror}") from exc
            try:
                crls.append(
                    x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)
                )
            except ValueError as exc:
                raise TrustError(f"{p} is not a readable CRL: {exc}") from exc
        return cls(roots=roots, untrusted=extra, crls=crls)

    def add_untrusted(self, certs: Iterable[x509.Certificate]) -> None:
        """Add certificates found beside the evidence (they count only if they chain to a root)."""
        self._untrusted.extend(certs)
        self.trusted_cas = self._chain_cas()

    def _resolve_crls(self) -> None:
        for crl in self._pending_crls:
            self._add_crl(crl)
        self._pending_crls = []

    def _chain_cas(self) -> list[x509.Certificate]:
        # Grow the set of trusted CAs from the roots through CA certificates they (transitively) issued.
        trusted = list(self.roots)
        grew = True
        while grew:
            grew = False
            for c in self._untrusted:
                if _is_ca(c) and c not in trusted and any(_issued_by(c, t) for t in trusted):
                    trusted.append(c)
                    grew = True
        return trusted

    def _add_crl(self, crl: x509.CertificateRevocationList) -> None:
        issuer = next(
            (ca for ca in self.trusted_cas if ca.subject == crl.issuer and _signed_crl(ca, crl)), None
        )
        if issuer is None and not any(ca.subject == crl.issuer for ca in self.trusted_cas):
            raise TrustError(
                f"the CA that issued the CRL ({crl.issuer.rfc4514_string()}) is not among the certificates "
                "given; pass the fleet's ca-chain.pem with --certs"
            )
        if issuer is None:
            raise TrustError(
                f"the CRL issued by {crl.issuer.rfc4514_string()} is not signed by a trusted CA; "
                "use the CRL published by the fleet's device CA"
            )
        nxt = crl.next_update_utc
        if nxt is not None and nxt < datetime.now(UTC):
            self.crl_notes.append(
                f"the CRL of {crl.issuer.rfc4514_string()} expired at {nxt.isoformat()}; "
                "revocations after that date are unknown to this verification"
            )
        for entry in crl:
            self.revocations[(crl.issuer.rfc4514_string(), entry.serial_number)] = entry.revocation_date_utc

    def signing_keys(self, certs: Iterable[x509.Certificate]) -> dict[Digest, SigningKey]:
        """Evaluate every end-entity certificate given, by key id."""
        self._resolve_crls()
        out: dict[Digest, SigningKey] = {}
        for cert in certs:
            if _is_ca(cert):
                continue
            kid = key_id(cert)
            if kid in out:
                continue
            out[kid] = self.evaluate(cert)
        return out

    def evaluate(self, cert: x509.Certificate) -> SigningKey:
        """How far ``cert`` can be trusted as a device's evidence-signing certificate."""
        pub = cert.public_key()
        raw = pub.public_bytes_raw() if isinstance(pub, Ed25519PublicKey) else b""
        issuer = next((ca for ca in self.trusted_cas if _issued_by(cert, ca)), None)
        revoked_at = None
        if issuer is None:
            status, detail = (
                KeyStatus.FOREIGN_CA,
                (
                    f"certificate of {_cn(cert)!r} was issued by {cert.issuer.rfc4514_string()}, "
                    "which does not chain to the trusted fleet root"
                ),
            )
        elif not raw:
            status, detail = (
                KeyStatus.NOT_SIGNING_KEY,
                f"certificate of {_cn(cert)!r} is not an Ed25519 signing key",
            )
        else:
            status, detail = KeyStatus.TRUSTED, f"issued by {issuer.subject.rfc4514_string()}"
            revoked_at = self.revocations.get((issuer.subject.rfc4514_string(), cert.serial_number))
        return SigningKey(
            key_id=key_id(cert),
            device=_cn(cert),
            status=status,
            detail=detail,
            public_key=raw,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            revoked_at=revoked_at,
        )
