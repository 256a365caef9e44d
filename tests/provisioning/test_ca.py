"""init-ca: the CA directory contract, judged by openssl."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provisioning import ProvisioningError, enroll, init_ca
from provisioning.layout import CaLayout
from tests.provisioning.helpers import openssl, verify

KEYS = ("root-ca.key", "device-ca.key", "server.key", "server-signing.key", "ingest.key")
LEAVES = ("server.pem", "server-signing.pem", "ingest.pem")


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_layout_is_exactly_the_contract(ca: Path) -> None:
    names = {p.name for p in ca.iterdir() if not p.name.startswith(".")}
    assert names == {
        "root-ca.pem",
        "root-ca.key",
        "device-ca.pem",
        "device-ca.key",
        "server.pem",
        "server.key",
        "server-signing.pem",
        "server-signing.key",
        "ingest.pem",
        "ingest.key",
        "ca-chain.pem",
        "crl.pem",
        "revocations.json",
        "devices",
    }
    assert (ca / "revocations.json").read_text().strip() == "[]"
    assert list((ca / "devices").iterdir()) == []


def test_private_keys_are_0600_and_the_dirs_0700(ca: Path) -> None:
    for name in KEYS:
        assert stat.S_IMODE((ca / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(ca.stat().st_mode) == 0o700
    assert stat.S_IMODE((ca / "devices").stat().st_mode) == 0o700


def test_openssl_accepts_every_issued_certificate(ca: Path) -> None:
    for name in (*LEAVES, "device-ca.pem"):
        result = verify(ca, ca / name)
        assert result.returncode == 0, (name, result.stderr)
        assert result.stdout.strip().endswith(": OK")


def test_openssl_rejects_certificates_of_another_ca(ca: Path, foreign_ca: Path) -> None:
    for cert in (foreign_ca / "server.pem", foreign_ca / "devices" / "REC-0001" / "tls.pem"):
        result = verify(ca, cert)
        assert result.returncode != 0
        assert "unable to get local issuer certificate" in result.stdout + result.stderr


def test_root_and_device_ca_constraints(ca: Path) -> None:
    root, dca = load(ca / "root-ca.pem"), load(ca / "device-ca.pem")
    for cert, pathlen, years in ((root, 1, 20), (dca, 0, 10)):
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        assert isinstance(cert.public_key().curve, ec.SECP256R1)  # type: ignore[union-attr]
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical
        assert bc.value.ca
        assert bc.value.path_length == pathlen
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert ku.key_cert_sign
        assert ku.crl_sign
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert abs(lifetime.days - 365 * years) < 10
    assert root.issuer == root.subject
    assert dca.issuer == root.subject
    chain = (ca / "ca-chain.pem").read_bytes()
    assert chain == (ca / "device-ca.pem").read_bytes() + (ca / "root-ca.pem").read_bytes()


def test_server_certificates(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    init_ca(ca, server_names=["evidence.example.org", "10.1.2.3", "localhost"])
    server = load(ca / "server.pem")
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "evidence.example.org"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.1.2.3"),
    ]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert server.issuer == load(ca / "device-ca.pem").subject
    # openssl agrees the server cert is fit for a TLS server and matches the names clients use.
    for host in ("localhost", "evidence.example.org"):
        assert (
            verify(ca, ca / "server.pem", "-purpose", "sslserver", "-verify_hostname", host).returncode == 0
        )
    assert verify(ca, ca / "server.pem", "-verify_ip", "127.0.0.1").returncode == 0
    assert verify(ca, ca / "server.pem", "-verify_hostname", "evil.example.org").returncode != 0

    signing = load(ca / "server-signing.pem")
    assert isinstance(signing.public_key(), ed25519.Ed25519PublicKey)
    assert signing.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "fieldproof-server"

    ingest = load(ca / "ingest.pem")
    assert ingest.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "fieldproof-ingest"
    assert verify(ca, ca / "ingest.pem", "-purpose", "sslclient").returncode == 0


def test_crl_is_empty_signed_by_the_device_ca_and_numbered(ca: Path) -> None:
    result = openssl("crl", "-in", ca / "crl.pem", "-noout", "-text")
    assert result.returncode == 0, result.stderr
    assert "No Revoked Certificates" in result.stdout
    assert "X509v3 CRL Number" in result.stdout
    crl = x509.load_pem_x509_crl((ca / "crl.pem").read_bytes())
    dca = load(ca / "device-ca.pem")
    assert crl.issuer == dca.subject
    assert crl.is_signature_valid(dca.public_key())  # type: ignore[arg-type]
    assert crl.next_update_utc is not None
    assert (crl.next_update_utc - crl.last_update_utc).days == 30
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 1
    check = openssl("crl", "-in", ca / "crl.pem", "-CAfile", ca / "ca-chain.pem", "-noout")
    assert check.returncode == 0
    assert "verify OK" in check.stderr + check.stdout


def test_two_cas_have_different_names(ca: Path, foreign_ca: Path) -> None:
    # Verifiers match CRLs and issuers by name: two fleets must never share one.
    assert load(ca / "device-ca.pem").subject != load(foreign_ca / "device-ca.pem").subject
    assert load(ca / "root-ca.pem").subject != load(foreign_ca / "root-ca.pem").subject


def snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_init_twice_is_refused_and_changes_nothing(ca: Path) -> None:
    enroll(ca, device="REC-0001", role="recorder")
    before = snapshot(ca)
    with pytest.raises(ProvisioningError, match="already holds a CA"):
        init_ca(ca)
    assert snapshot(ca) == before


def test_init_refuses_a_partial_ca_and_a_non_empty_dir(tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "root-ca.key").write_text("left over")
    with pytest.raises(ProvisioningError, match=r"already holds a CA \(root-ca.key"):
        init_ca(partial)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(ProvisioningError, match="not an empty directory"):
        init_ca(other)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_init_into_an_empty_existing_dir(tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    init_ca(target)
    assert CaLayout(target).device_ca_key.is_file()
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    # nothing of the staging directory is left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_bad_server_name_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ProvisioningError, match="neither an IP address nor a DNS host name"):
        init_ca(tmp_path / "ca", server_names=["not a host!"])
    assert list(tmp_path.iterdir()) == []
