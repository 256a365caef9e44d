"""`fieldproof provision …` as an IT person runs it: what it prints, exit 2 with a plain message on errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning import sign_csrs
from provisioning.device_keys import keygen
from tests.provisioning.helpers import run_cli


def test_init_enroll_list_broker_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = tmp_path / "ca"
    code, out, _ = run_cli(capsys, "provision", "init-ca", ca, "--server-name", "evidence.example.org")
    assert code == 0
    assert str(ca / "root-ca.key") in out
    assert "offline" in out

    code, out, _ = run_cli(capsys, "provision", "enroll", ca, "--device", "REC-0001", "--role", "recorder")
    assert code == 0
    assert str(ca / "devices" / "REC-0001" / "tls.key") in out

    code, _, err = run_cli(capsys, "provision", "enroll", ca, "--device", "REC-0001", "--role", "recorder")
    assert code == 2
    assert "already enrolled" in err
    assert "--renew" in err
    code, out, _ = run_cli(
        capsys, "provision", "enroll", ca, "--device", "REC-0001", "--role", "recorder", "--renew"
    )
    assert code == 0

    code, _, err = run_cli(capsys, "provision", "enroll", ca, "--device", "rec-1", "--role", "recorder")
    assert code == 2
    assert "not a valid device id" in err
    assert "Traceback" not in err

    keygen(device="DOCK-01", role="dock", out=tmp_path / "dock")
    sign_csrs(ca, csrs=[(tmp_path / "dock" / "tls.csr").read_bytes()], role="dock")
    code, out, _ = run_cli(capsys, "provision", "list", ca)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["DEVICE", "ROLE", "STATUS"]
    assert lines[1].split()[:3] == ["DOCK-01", "dock", "incomplete"]
    assert lines[2].split()[:3] == ["REC-0001", "recorder", "active"]
    assert lines[2].split()[4] == "1"  # one renewal

    code, out, _ = run_cli(
        capsys,
        "provision",
        "broker-config",
        ca,
        "--out",
        tmp_path / "broker",
        "--port",
        "18883",
        "--user",
        "root",
    )
    assert code == 0
    assert f"wrote {tmp_path / 'broker' / 'mosquitto.conf'}" in out
    assert "the CRL is valid until" in out


def test_sign_csr_never_overwrites_the_csr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = tmp_path / "ca"
    run_cli(capsys, "provision", "init-ca", ca)
    keygen(device="REC-0001", role="recorder", out=tmp_path / "dev")
    csr = tmp_path / "dev" / "request.pem"
    (tmp_path / "dev" / "tls.csr").rename(csr)
    code, _, err = run_cli(capsys, "provision", "sign-csr", ca, "--csr", csr, "--role", "recorder")
    assert code == 2
    assert "overwrite the CSR" in err
    code, _out, _ = run_cli(
        capsys,
        "provision",
        "sign-csr",
        ca,
        "--csr",
        csr,
        "--role",
        "recorder",
        "--out",
        tmp_path / "dev" / "tls.pem",
    )
    assert code == 0
    assert (tmp_path / "dev" / "tls.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")


def test_missing_ca_is_a_plain_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "provision", "revoke", tmp_path / "nowhere", "--device", "REC-0001")
    assert code == 2
    assert "does not hold a Fieldproof CA" in err
    assert "init-ca" in err
