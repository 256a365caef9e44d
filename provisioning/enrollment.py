"""Enrolling a device: certificates for its keys, and the bundle it is installed from.

Two ways in, one result in ``devices/<ID>/``:

* ``sign_csrs`` — the proper flow: keys made on the device (``keygen``), only CSRs reach the CA;
  the bundle holds no private key.
* ``enroll`` — keys, CSRs and certificates made here in one step, for the demo and the factory bench.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from fieldproof.durable import exclusive_lock, make_dir, write_file, write_private
from provisioning import certificates as c
from provisioning.ca import CheckedCsr, check_csr, issue_device_cert, load_device_ca, open_ca
from provisioning.device_config import build_device_config, write_device_config
from provisioning.device_keys import generate_keys, make_csrs
from provisioning.errors import ProvisioningError
from provisioning.layout import (
    BUNDLE_CHAIN,
    BUNDLE_ROOT,
    BUNDLE_SERVER_SIGNING,
    SIGNING_KEY,
    TLS_KEY,
    CaLayout,
    check_device_id,
    check_role,
)
from provisioning.registry import (
    CERT_FILES,
    archive_current,
    bundle_certs,
    read_record,
    record_for,
    write_record,
)
from provisioning.revocation import revocation_of


def enroll(ca_dir: Path, *, device: str, role: str, renew: bool = False) -> Path:
    """Generate keys, issue both certificates and write the device bundle; return its directory."""
    layout = open_ca(ca_dir)
    check_device_id(device)
    check_role(role)
    keys = generate_keys()
    # The same CSR path a real device takes, so the checks in check_csr guard this flow too.
    requests = [check_csr(pem, role=role) for pem in make_csrs(keys, device=device, role=role)]
    private = {TLS_KEY: c.key_pem(keys.tls), SIGNING_KEY: c.key_pem(keys.signing)}
    with exclusive_lock(layout.lock):
        bundle, _ = _issue(layout, device=device, role=role, requests=requests, renew=renew, keys=private)
    return bundle


def sign_csrs(
    ca_dir: Path, *, csrs: Sequence[bytes], role: str, renew: bool = False
) -> tuple[Path, list[x509.Certificate]]:
    """Sign one or two CSRs of one device (TLS and/or signing); record them; return the bundle and certs."""
    layout = open_ca(ca_dir)
    if not 1 <= len(csrs) <= 2:
        raise ProvisioningError("give one or two CSRs (the device's tls.csr and signing.csr)")
    requests = [check_csr(pem, role=role, source=f"CSR #{i + 1}") for i, pem in enumerate(csrs)]
    devices = {r.device for r in requests}
    if len(devices) > 1:
        raise ProvisioningError(
            f"the CSRs name different devices ({', '.join(sorted(devices))}); sign them one by one"
        )
    if len({r.kind for r in requests}) != len(requests):
        raise ProvisioningError(
            "both CSRs are for the same kind of key; give one TLS (P-256) and one signing (Ed25519) CSR"
        )
    with exclusive_lock(layout.lock):
        return _issue(layout, device=requests[0].device, role=role, requests=requests, renew=renew, keys=None)


def _issue(
    layout: CaLayout,
    *,
    device: str,
    role: str,
    requests: Sequence[CheckedCsr],
    renew: bool,
    keys: dict[str, bytes] | None,
) -> tuple[Path, list[x509.Certificate]]:
    """Check the device may get these certificates, archive what they replace, write the bundle."""
    bundle = layout.device_dir(device)
    revoked = revocation_of(layout, device)
    if revoked is not None:
        # A replacement under the same id would restart the evidence chain (seq from 0) and be
        # indistinguishable from the lost device in old records.
        raise ProvisioningError(
            f"{device} was revoked at {revoked.revoked_at} ({revoked.reason}); a revoked id is never reused."
            " Enrol the replacement under a new id"
        )
    current = read_record(bundle)
    present = bundle_certs(bundle) if bundle.is_dir() else {}
    if current is not None and current.role != role:
        raise ProvisioningError(
            f"{device} is enrolled as a {current.role}, not a {role}; a device keeps its role — use a new id"
        )
    enrolled = current is not None or bool(present)
    # enroll replaces the whole bundle; a CSR replaces only the certificate of its kind, so the
    # second CSR of a renewal (after the first one archived the old bundle) goes in without clash.
    replaces = enrolled if keys is not None else any(r.kind in present for r in requests)
    if replaces and not renew:
        raise ProvisioningError(
            f"{device} is already enrolled (see {bundle}); nothing was changed. To give it new keys and"
            " certificates, add --renew (the old ones are kept under previous-*/)"
        )
    if renew and not enrolled:
        raise ProvisioningError(
            f"{device} is not enrolled, so there is nothing to renew; drop --renew to enrol it"
        )
    # Render and check the config and load the CA key before anything moves: a bad example or an
    # unreadable key must not leave half a bundle behind.
    config = build_device_config(device=device, role=role)
    issuer = load_device_ca(layout)
    now = c.utc_now()
    if replaces:
        archive_current(bundle, now=now)
        present = {}

    issued = [issue_device_cert(issuer=issuer, request=r, role=role, now=now) for r in requests]
    certs = dict(present)
    certs.update({r.kind: cert for r, cert in zip(requests, issued, strict=True)})

    make_dir(bundle)
    for name, pem in (keys or {}).items():
        write_private(bundle / name, pem)
    for r, cert in zip(requests, issued, strict=True):
        write_file(bundle / CERT_FILES[r.kind], c.cert_pem(cert))
    write_file(bundle / BUNDLE_CHAIN, layout.chain.read_bytes())
    write_file(bundle / BUNDLE_ROOT, layout.root_cert.read_bytes())
    write_file(bundle / BUNDLE_SERVER_SIGNING, layout.server_signing_cert.read_bytes())
    write_device_config(bundle, config)
    # device.json last: it is what marks the bundle as enrolled.
    write_record(bundle, record_for(device=device, role=role, certs=certs, issued_at=now))
    return bundle, issued
