"""The CSR flow: keys made on the device, only CSRs reach the CA, every CSR checked before signing."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from provisioning import ProvisioningError, sign_csrs
from provisioning.device_keys import keygen, make_csr
from tests.provisioning.helpers import openssl, run_cli, verify


def csr_pem(
    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey,
    cn: str,
    ou: str | None = "recorder",
    ca: bool = False,
) -> bytes:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if ou is not None:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


def test_keygen_sign_csr_end_to_end(ca: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    device_dir = tmp_path / "on-device"
    code, out, _ = run_cli(
        capsys, "provision", "keygen", "--device", "REC-0100", "--role", "recorder", "--out", device_dir
    )
    assert code == 0
    assert "tls.csr" in out
    for key in ("tls.key", "signing.key"):
        assert stat.S_IMODE((device_dir / key).stat().st_mode) == 0o600
    # the CSRs are well-formed and self-signed, by openssl's judgement too
    for csr in ("tls.csr", "signing.csr"):
        result = openssl("req", "-in", device_dir / csr, "-noout", "-verify")
        assert result.returncode == 0, result.stderr

    code, out, err = run_cli(
        capsys,
        "provision",
        "sign-csr",
        ca,
        "--csr",
        device_dir / "tls.csr",
        "--csr",
        device_dir / "signing.csr",
        "--role",
        "recorder",
    )
    assert code == 0, err
    assert f"wrote {device_dir / 'tls.pem'}" in out
    for cert_name, key_name in (("tls.pem", "tls.key"), ("signing.pem", "signing.key")):
        assert verify(ca, device_dir / cert_name).returncode == 0
        cert = x509.load_pem_x509_certificate((device_dir / cert_name).read_bytes())
        key = serialization.load_pem_private_key((device_dir / key_name).read_bytes(), password=None)
        assert cert.public_key() == key.public_key()

    # The CA recorded the device, without ever seeing its private keys.
    bundle = ca / "devices" / "REC-0100"
    assert not (bundle / "tls.key").exists()
    assert not (bundle / "signing.key").exists()
    assert (bundle / "tls.pem").read_bytes() == (device_dir / "tls.pem").read_bytes()
    info = json.loads((bundle / "device.json").read_text())
    assert info["role"] == "recorder"
    assert info["tls_serial"] is not None
    assert info["signing_serial"] is not None
    assert (bundle / "recorder.toml").is_file()
    code, out, _ = run_cli(capsys, "provision", "list", ca)
    assert code == 0
    assert "REC-0100" in out
    assert "active" in out


def test_csrs_one_at_a_time_and_renewal(ca: Path, tmp_path: Path) -> None:
    first = tmp_path / "first"
    keygen(device="DOCK-02", role="dock", out=first)
    sign_csrs(ca, csrs=[(first / "tls.csr").read_bytes()], role="dock")
    bundle = ca / "devices" / "DOCK-02"
    assert json.loads((bundle / "device.json").read_text())["signing_serial"] is None  # not yet complete
    sign_csrs(ca, csrs=[(first / "signing.csr").read_bytes()], role="dock")
    complete = json.loads((bundle / "device.json").read_text())
    assert complete["signing_serial"] is not None

    with pytest.raises(ProvisioningError, match="already enrolled"):
        sign_csrs(ca, csrs=[(first / "tls.csr").read_bytes()], role="dock")

    # Renewal: new keys on the device, then the two CSRs one by one; the old bundle is kept whole.
    second = tmp_path / "second"
    keygen(device="DOCK-02", role="dock", out=second)
    sign_csrs(ca, csrs=[(second / "tls.csr").read_bytes()], role="dock", renew=True)
    sign_csrs(ca, csrs=[(second / "signing.csr").read_bytes()], role="dock", renew=True)
    (previous,) = bundle.glob("previous-*")
    assert json.loads((previous / "device.json").read_text()) == complete
    renewed = json.loads((bundle / "device.json").read_text())
    assert renewed["tls_serial"] not in (None, complete["tls_serial"])
    assert renewed["signing_serial"] not in (None, complete["signing_serial"])


def test_keygen_never_overwrites_device_keys(tmp_path: Path) -> None:
    keygen(device="REC-0001", role="recorder", out=tmp_path)
    before = (tmp_path / "tls.key").read_bytes()
    with pytest.raises(ProvisioningError, match="already exists"):
        keygen(device="REC-0001", role="recorder", out=tmp_path)
    assert (tmp_path / "tls.key").read_bytes() == before


def test_tampered_csr_is_refused(ca: Path) -> None:
    pem = make_csr(ec.generate_private_key(ec.SECP256R1()), device="REC-0001", role="recorder")
    der = x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)
    # Change the requested identity after signing: REC-0001 -> REC-0002.
    forged = x509.load_der_x509_csr(der.replace(b"REC-0001", b"REC-0002"))
    with pytest.raises(ProvisioningError, match="bad signature"):
        sign_csrs(ca, csrs=[forged.public_bytes(serialization.Encoding.PEM)], role="recorder")
    assert list((ca / "devices").iterdir()) == []


@pytest.mark.parametrize(
    ("key", "match"),
    [
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RSAPublicKey"),
        (ec.generate_private_key(ec.SECP384R1()), "TLS keys must be P-256"),
    ],
)
def test_wrong_key_types_are_refused(
    ca: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, match: str
) -> None:
    with pytest.raises(ProvisioningError, match=match):
        sign_csrs(ca, csrs=[csr_pem(key, "REC-0001")], role="recorder")


def test_csr_identity_checks(ca: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(ProvisioningError, match="not a valid device id"):
        sign_csrs(ca, csrs=[csr_pem(key, "fieldproof-ingest")], role="recorder")
    with pytest.raises(ProvisioningError, match="made for role 'dock'"):
        sign_csrs(ca, csrs=[csr_pem(key, "REC-0001", ou="dock")], role="recorder")
    with pytest.raises(ProvisioningError, match="not a PEM certificate signing request"):
        sign_csrs(ca, csrs=[b"-----BEGIN CERTIFICATE REQUEST-----\nxx\n"], role="recorder")
    tls, signing = ec.generate_private_key(ec.SECP256R1()), ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(ProvisioningError, match="different devices"):
        sign_csrs(ca, csrs=[csr_pem(tls, "REC-0001"), csr_pem(signing, "REC-0002")], role="recorder")
    assert list((ca / "devices").iterdir()) == []


def test_extensions_requested_in_a_csr_are_ignored(ca: Path) -> None:
    _, (cert,) = sign_csrs(
        ca, csrs=[csr_pem(ec.generate_private_key(ec.SECP256R1()), "REC-0001", ca=True)], role="recorder"
    )
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_sign_csr_errors_exit_2(ca: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csr"
    bad.write_bytes(csr_pem(ec.generate_private_key(ec.SECP256R1()), "rec-1"))
    code, _, err = run_cli(capsys, "provision", "sign-csr", ca, "--csr", bad, "--role", "recorder")
    assert code == 2
    assert "not a valid device id" in err
    assert "Traceback" not in err
    assert not bad.with_suffix(".pem").exists()
