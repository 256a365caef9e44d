"""enroll: a complete device bundle in one step, renewals that keep the old certificates."""

from __future__ import annotations

import hashlib
import json
import stat
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge.config import load_dock_config, load_recorder_config
from provisioning import ProvisioningError, enroll, revoke
from tests.provisioning.helpers import verify

REPO = Path(__file__).resolve().parents[2]


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def names(cert: x509.Certificate) -> tuple[str, str]:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    ou = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value
    return str(cn), str(ou)


def test_bundle_contents(ca: Path) -> None:
    bundle = enroll(ca, device="REC-0001", role="recorder")
    assert bundle == ca / "devices" / "REC-0001"
    assert {p.name for p in bundle.iterdir()} >= {
        "tls.key",
        "tls.pem",
        "signing.key",
        "signing.pem",
        "ca-chain.pem",
        "root-ca.pem",
        "device.json",
        "recorder.toml",
    }
    for key in ("tls.key", "signing.key"):
        assert stat.S_IMODE((bundle / key).stat().st_mode) == 0o600
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o700
    assert (bundle / "ca-chain.pem").read_bytes() == (ca / "ca-chain.pem").read_bytes()
    assert (bundle / "root-ca.pem").read_bytes() == (ca / "root-ca.pem").read_bytes()


def test_certificates_are_what_devices_and_verifiers_expect(ca: Path) -> None:
    bundle = enroll(ca, device="DOCK-01", role="dock")
    tls, signing = load(bundle / "tls.pem"), load(bundle / "signing.pem")
    for name in ("tls.pem", "signing.pem"):
        assert verify(ca, bundle / name).returncode == 0

    assert names(tls) == ("DOCK-01", "dock")
    assert isinstance(tls.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(tls.public_key().curve, ec.SECP256R1)  # type: ignore[union-attr]
    assert list(tls.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    ku = tls.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature
    assert not ku.content_commitment
    assert verify(ca, bundle / "tls.pem", "-purpose", "sslclient").returncode == 0

    assert names(signing) == ("DOCK-01", "dock")
    assert isinstance(signing.public_key(), ed25519.Ed25519PublicKey)
    ku = signing.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature
    assert ku.content_commitment
    # The signing certificate must not pass as a TLS client certificate (tested live in test_broker).
    assert verify(ca, bundle / "signing.pem", "-purpose", "sslclient").returncode != 0

    # The keys in the bundle are the ones certified.
    for key_name, cert in (("tls.key", tls), ("signing.key", signing)):
        key = serialization.load_pem_private_key((bundle / key_name).read_bytes(), password=None)
        assert key.public_key() == cert.public_key()


def test_device_json_describes_the_certificates(ca: Path) -> None:
    bundle = enroll(ca, device="REC-0002", role="recorder")
    info = json.loads((bundle / "device.json").read_text())
    tls, signing = load(bundle / "tls.pem"), load(bundle / "signing.pem")
    assert info["device"] == "REC-0002"
    assert info["role"] == "recorder"
    assert int(info["tls_serial"], 16) == tls.serial_number
    assert int(info["signing_serial"], 16) == signing.serial_number
    der = tls.public_bytes(serialization.Encoding.DER)
    assert info["tls_fingerprint"] == "sha256:" + hashlib.sha256(der).hexdigest()
    der = signing.public_bytes(serialization.Encoding.DER)
    assert info["signing_fingerprint"] == "sha256:" + hashlib.sha256(der).hexdigest()
    assert info["issued_at"].endswith("Z")
    assert info["not_after"] == tls.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_recorder_config_is_valid_and_names_the_device(ca: Path) -> None:
    bundle = enroll(ca, device="REC-0042", role="recorder")
    config = load_recorder_config(bundle / "recorder.toml")
    assert config.device_id == "REC-0042"
    example = tomllib.loads((REPO / "firmware-config" / "recorder.example.toml").read_text())
    written = tomllib.loads((bundle / "recorder.toml").read_text())
    # Everything but the id is the example's.
    assert {k: v for k, v in written.items() if k not in ("device_id", "policy")} == {
        k: v for k, v in example.items() if k not in ("device_id", "policy")
    }
    assert config.policy_path().is_file()


def test_dock_config_points_at_the_bundle_certificates(ca: Path) -> None:
    bundle = enroll(ca, device="DOCK-07", role="dock")
    config = load_dock_config(bundle / "dock.toml")
    assert config.device_id == "DOCK-07"
    assert config.mqtt.tls is not None
    # Relative in the file, so the bundle can be copied to /etc/fieldproof/ and still work.
    assert config.mqtt.tls.cert == bundle.resolve() / "tls.pem"
    assert config.mqtt.tls.key == bundle.resolve() / "tls.key"
    assert config.mqtt.tls.ca == bundle.resolve() / "ca-chain.pem"
    assert 'cert = "tls.pem"' in (bundle / "dock.toml").read_text()


def test_a_fresh_bundle_checks_acks_without_hand_edits(ca: Path) -> None:
    from edge.recorder.link import load_server_keys

    recorder = load_recorder_config(enroll(ca, device="REC-0043", role="recorder") / "recorder.toml")
    dock = load_dock_config(enroll(ca, device="DOCK-08", role="dock") / "dock.toml")
    # Both name the bundle's server-signing.pem, and it chains to the bundle's fleet CA chain.
    for cert, chain in (
        (recorder.signing.server_cert, recorder.signing.ca_chain),
        (dock.sync.server_cert, dock.mqtt.tls.ca if dock.mqtt.tls else None),
    ):
        assert chain is not None
        assert cert.name == "server-signing.pem"
        assert cert.parent == chain.parent
        assert len(load_server_keys(cert, ca_chain=chain)) == 1
    assert dock.sync.server_cert_given
    assert recorder.link_port() == Path("/dev/ttyGS0")


def test_rendering_fills_what_an_example_leaves_out() -> None:
    from provisioning.device_config import render

    bare = {"device_id": "X", "spool": {"dir": "/s"}}
    recorder = render(bare, device="REC-0044", role="recorder")
    assert recorder["signing"] == {
        "cert": "signing.pem",
        "key": "signing.key",
        "ca_chain": "ca-chain.pem",
        "server_cert": "server-signing.pem",
    }
    assert recorder["link"] == {"enabled": True, "port": "/dev/ttyGS0"}
    kept = render({**bare, "link": {"enabled": False}}, device="REC-0044", role="recorder")
    assert kept["link"] == {"enabled": False}  # an example's own [link] is kept as written
    dock = render({"device_id": "X", "sync": {"window": 8}}, device="DOCK-09", role="dock")
    assert dock["sync"] == {"window": 8, "server_cert": "server-signing.pem"}
    assert "link" not in dock
    assert bare == {"device_id": "X", "spool": {"dir": "/s"}}  # the example itself is not changed


def test_enrolling_twice_is_refused_and_changes_nothing(ca: Path) -> None:
    bundle = enroll(ca, device="REC-0001", role="recorder")
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    with pytest.raises(ProvisioningError, match=r"already enrolled.*--renew"):
        enroll(ca, device="REC-0001", role="recorder")
    with pytest.raises(ProvisioningError, match="enrolled as a recorder"):
        enroll(ca, device="REC-0001", role="dock", renew=True)
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before


@pytest.mark.parametrize(
    "device",
    [
        "rec-0001",
        "R1",
        "-REC",
        "REC_0001",
        "REC 0001",
        "A" * 33,
        "",
        "REC-0001/../x",
        "fieldproof-ingest",
        "REC-0001\n",
        "ÄBC",
    ],
)
def test_bad_device_ids_are_refused(ca: Path, device: str) -> None:
    with pytest.raises(ProvisioningError, match="not a valid device id"):
        enroll(ca, device=device, role="recorder")
    assert list((ca / "devices").iterdir()) == []


def test_bad_role_is_refused(ca: Path) -> None:
    with pytest.raises(ProvisioningError, match="unknown role"):
        enroll(ca, device="REC-0001", role="camera")


def test_enroll_needs_a_ca(tmp_path: Path) -> None:
    with pytest.raises(ProvisioningError, match="does not hold a Fieldproof CA"):
        enroll(tmp_path, device="REC-0001", role="recorder")


def test_renew_keeps_the_previous_certificates(ca: Path) -> None:
    bundle = enroll(ca, device="REC-0001", role="recorder")
    old = {n: (bundle / n).read_bytes() for n in ("tls.pem", "signing.pem", "signing.key", "device.json")}
    enroll(ca, device="REC-0001", role="recorder", renew=True)
    previous = sorted(bundle.glob("previous-*"))
    assert len(previous) == 1
    assert {n: (previous[0] / n).read_bytes() for n in old} == old
    assert (bundle / "signing.pem").read_bytes() != old["signing.pem"]
    assert (bundle / "tls.key").read_bytes() != (previous[0] / "tls.key").read_bytes()
    # Evidence signed before the renewal is still checked against a certificate that chains.
    assert verify(ca, previous[0] / "signing.pem").returncode == 0
    assert verify(ca, bundle / "signing.pem").returncode == 0

    enroll(ca, device="REC-0001", role="recorder", renew=True)
    assert len(list(bundle.glob("previous-*"))) == 2


def test_renew_of_an_unknown_device_is_refused(ca: Path) -> None:
    with pytest.raises(ProvisioningError, match="nothing to renew"):
        enroll(ca, device="REC-0009", role="recorder", renew=True)


def test_a_revoked_id_is_never_reused(ca: Path) -> None:
    enroll(ca, device="REC-0001", role="recorder")
    revoke(ca, device="REC-0001")
    with pytest.raises(ProvisioningError, match="revoked id is never reused"):
        enroll(ca, device="REC-0001", role="recorder", renew=True)
