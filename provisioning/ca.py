"""The fleet CA: creating it, loading it, and signing device CSRs after checking them."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from fieldproof.durable import PRIVATE_DIR, fsync_dir, make_dir, write_file, write_private
from provisioning import certificates as c
from provisioning.crl import build_crl, crl_pem
from provisioning.errors import ProvisioningError
from provisioning.layout import (
    INGEST_CN,
    ROLES,
    SERVER_SIGNING_CN,
    CaLayout,
    check_device_id,
    check_role,
)

#: The two certificates every device holds, by the key type each must have.
KINDS: tuple[str, ...] = ("tls", "signing")


def holds_ca(ca_dir: Path) -> bool:
    """True when ``ca_dir`` already holds a CA (even a partial one)."""
    layout = CaLayout(ca_dir)
    return any(p.exists() for p in layout.ca_files())


def init_ca(ca_dir: Path, *, server_names: Sequence[str] = ()) -> None:
    """Create a CA directory: root, device CA, server, server-signing and ingest certificates, empty CRL."""
    ca_dir = Path(ca_dir)
    layout = CaLayout(ca_dir)
    if holds_ca(ca_dir):
        present = next(p.name for p in layout.ca_files() if p.exists())
        raise ProvisioningError(
            f"{ca_dir} already holds a CA ({present} is there); nothing was changed. A second CA would"
            " orphan every enrolled device: to start over, move the directory away first"
        )
    if ca_dir.exists() and (not ca_dir.is_dir() or any(ca_dir.iterdir())):
        raise ProvisioningError(
            f"{ca_dir} exists and is not an empty directory; give a new or empty directory"
        )
    for entry in server_names:
        c.general_name(entry)  # refuse a bad --server-name before anything is written

    parent = ca_dir.absolute().parent
    make_dir(parent)
    # Build everything in a staging directory beside the target and rename it into place at the end,
    # so a crash half-way leaves no half-made CA that a later init would refuse.
    staging = parent / f".{ca_dir.name}.init-{secrets.token_hex(4)}"
    staging.mkdir(mode=PRIVATE_DIR)
    try:
        os.chmod(staging, PRIVATE_DIR)
        _write_new_ca(CaLayout(staging), server_names=server_names, now=c.utc_now())
        fsync_dir(staging)
        # rename(2) replaces an empty directory atomically; a non-empty one was refused above.
        os.replace(staging, ca_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_dir(parent)


def _write_new_ca(layout: CaLayout, *, server_names: Sequence[str], now: datetime) -> None:
    # Verifiers and CRL matching go by issuer name: a random tag keeps two fleets' CA names apart,
    # so a certificate or CRL from another installation can never be mistaken for ours by name.
    tag = secrets.token_hex(4)
    root_key = c.new_p256_key()
    root = c.Issuer(c.make_root(key=root_key, now=now, tag=tag), root_key)
    dca_key = c.new_p256_key()
    dca = c.Issuer(c.make_device_ca(root=root, key=dca_key, now=now, tag=tag), dca_key)

    server_key = c.new_p256_key()
    server = c.make_tls_server(issuer=dca, public_key=server_key.public_key(), names=server_names, now=now)
    signing_key = c.new_ed25519_key()
    signing = c.make_signing(
        issuer=dca, subject=c.name(SERVER_SIGNING_CN), public_key=signing_key.public_key(), now=now
    )
    ingest_key = c.new_p256_key()
    ingest = c.make_tls_client(
        issuer=dca, subject=c.name(INGEST_CN), public_key=ingest_key.public_key(), now=now
    )

    write_private(layout.root_key, c.key_pem(root_key))
    write_file(layout.root_cert, c.cert_pem(root.cert))
    write_private(layout.device_ca_key, c.key_pem(dca_key))
    write_file(layout.device_ca_cert, c.cert_pem(dca.cert))
    write_file(layout.chain, c.cert_pem(dca.cert) + c.cert_pem(root.cert))
    write_private(layout.server_key, c.key_pem(server_key))
    write_file(layout.server_cert, c.cert_pem(server))
    write_private(layout.server_signing_key, c.key_pem(signing_key))
    write_file(layout.server_signing_cert, c.cert_pem(signing))
    write_private(layout.ingest_key, c.key_pem(ingest_key))
    write_file(layout.ingest_cert, c.cert_pem(ingest))
    write_file(layout.crl, crl_pem(build_crl(issuer=dca, entries=(), number=1, now=now)))
    write_file(layout.revocations, b"[]\n")
    make_dir(layout.devices)


def open_ca(ca_dir: Path) -> CaLayout:
    """The layout of an existing CA directory, or ProvisioningError when it is not one."""
    layout = CaLayout(Path(ca_dir))
    if not layout.device_ca_cert.is_file() or not layout.device_ca_key.is_file():
        raise ProvisioningError(
            f"{ca_dir} does not hold a Fieldproof CA (no device-ca.pem/device-ca.key);"
            " create one with `fieldproof provision init-ca DIR`"
        )
    return layout


def load_device_ca(layout: CaLayout) -> c.Issuer:
    """The device CA certificate and key, checked to belong together."""
    cert = c.load_cert(layout.device_ca_cert)
    key = c.load_key(layout.device_ca_key)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise ProvisioningError(f"{layout.device_ca_key} does not match {layout.device_ca_cert}")
    return c.Issuer(cert, key)


@dataclass(frozen=True)
class CheckedCsr:
    """A CSR that passed every check, with what it asks for."""

    device: str
    kind: str  # "tls" or "signing", decided by the key type
    public_key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


def check_csr(pem: bytes, *, role: str, source: str = "CSR") -> CheckedCsr:
    """Check a device CSR: valid signature, CN a valid device id, OU the role, P-256 or Ed25519 key."""
    check_role(role)
    try:
        csr = x509.load_pem_x509_csr(pem)
    except ValueError as exc:
        raise ProvisioningError(f"{source} is not a PEM certificate signing request ({exc})") from None
    # The signature proves the requester holds the private key: without this check anyone could get
    # a certificate for a public key copied from elsewhere.
    if not csr.is_signature_valid:
        raise ProvisioningError(
            f"{source} has a bad signature: it was altered or not made by the device's key"
        )
    cn = c.common_name(csr.subject)
    if cn is None:
        raise ProvisioningError(f"{source} must carry exactly one CN (the device id)")
    try:
        device = check_device_id(cn)
    except ProvisioningError as exc:
        raise ProvisioningError(f"{source}: {exc}") from None
    ou = c.unit(csr.subject)
    if csr.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME) and ou not in ROLES:
        raise ProvisioningError(f"{source} names role {ou!r}; expected one of {', '.join(ROLES)}")
    if ou is not None and ou != role:
        raise ProvisioningError(
            f"{source} was made for role {ou!r} but --role is {role!r}; check which device this is"
        )
    key = csr.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ProvisioningError(f"{source} has an ECDSA key on {key.curve.name}; TLS keys must be P-256")
        return CheckedCsr(device, "tls", key)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return CheckedCsr(device, "signing", key)
    raise ProvisioningError(
        f"{source} has a {type(key).__name__}; use an ECDSA P-256 key for TLS or an Ed25519 key for signing"
        " (`fieldproof provision keygen` makes both)"
    )


def issue_device_cert(*, issuer: c.Issuer, request: CheckedCsr, role: str, now: datetime) -> x509.Certificate:
    """Issue the TLS or signing certificate a checked CSR asks for. Only CN and OU come from the CSR.

    Extensions the CSR may request (CA:TRUE, other EKUs, SANs) are ignored on purpose: the CA alone
    decides what a device certificate allows.
    """
    subject = c.name(request.device, role)
    if request.kind == "tls":
        assert isinstance(request.public_key, ec.EllipticCurvePublicKey)
        return c.make_tls_client(issuer=issuer, subject=subject, public_key=request.public_key, now=now)
    assert isinstance(request.public_key, ed25519.Ed25519PublicKey)
    return c.make_signing(issuer=issuer, subject=subject, public_key=request.public_key, now=now)
