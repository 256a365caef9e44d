"""revoke: both certificates (and earlier ones) on the CRL, judged by openssl."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from provisioning import ProvisioningError, enroll, revoke
from provisioning.revocation import refresh_crl
from tests.provisioning.helpers import openssl, run_cli, verify


def crl_text(ca: Path) -> str:
    result = openssl("crl", "-in", ca / "crl.pem", "-noout", "-text")
    assert result.returncode == 0, result.stderr
    return result.stdout


def crl_number(ca: Path) -> int:
    crl = x509.load_pem_x509_crl((ca / "crl.pem").read_bytes())
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def listed_serials(text: str) -> dict[int, str]:
    """Serial -> revocation date line, from `openssl crl -text`."""
    found = re.findall(r"Serial Number: ([0-9A-F]+)\s+Revocation Date: ([^\n]+)", text)
    return {int(serial, 16): date.strip() for serial, date in found}


def test_revoke_lists_both_certificates_with_the_date(ca: Path) -> None:
    bundle = enroll(ca, device="REC-0001", role="recorder")
    keep = enroll(ca, device="REC-0002", role="recorder")
    at = datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)
    revoke(ca, device="REC-0001", at=at, reason="keyCompromise")

    info = json.loads((bundle / "device.json").read_text())
    listed = listed_serials(crl_text(ca))
    assert set(listed) == {int(info["tls_serial"], 16), int(info["signing_serial"], 16)}
    assert set(listed.values()) == {"Mar 14 09:26:53 2026 GMT"}
    assert "Key Compromise" in crl_text(ca)
    assert crl_number(ca) == 2

    # openssl with CRL checking refuses the revoked certificates and still accepts the others.
    for name in ("tls.pem", "signing.pem"):
        result = verify(ca, bundle / name, "-crl_check", "-CRLfile", ca / "crl.pem")
        assert result.returncode != 0
        assert "certificate revoked" in result.stdout + result.stderr
    assert verify(ca, keep / "tls.pem", "-crl_check", "-CRLfile", ca / "crl.pem").returncode == 0

    entries = json.loads((ca / "revocations.json").read_text())
    assert entries == [
        {
            "device": "REC-0001",
            "role": "recorder",
            "serials": [info["tls_serial"], info["signing_serial"]],
            "revoked_at": "2026-03-14T09:26:53Z",
            "reason": "keyCompromise",
        }
    ]


def test_revoke_covers_earlier_renewals_and_numbers_upwards(ca: Path) -> None:
    bundle = enroll(ca, device="DOCK-01", role="dock")
    old = json.loads((bundle / "device.json").read_text())
    enroll(ca, device="DOCK-01", role="dock", renew=True)
    new = json.loads((bundle / "device.json").read_text())
    enroll(ca, device="REC-0001", role="recorder")
    revoke(ca, device="REC-0001")
    revoke(ca, device="DOCK-01")
    assert crl_number(ca) == 3
    serials = {
        int(s, 16)
        for s in (old["tls_serial"], old["signing_serial"], new["tls_serial"], new["signing_serial"])
    }
    assert serials <= set(listed_serials(crl_text(ca)))
    assert len(listed_serials(crl_text(ca))) == 6
    (previous,) = bundle.glob("previous-*")
    result = verify(ca, previous / "tls.pem", "-crl_check", "-CRLfile", ca / "crl.pem")
    assert "certificate revoked" in result.stdout + result.stderr


def test_revoking_twice_or_an_unknown_device_is_an_error(ca: Path) -> None:
    enroll(ca, device="REC-0001", role="recorder")
    with pytest.raises(ProvisioningError, match="not enrolled"):
        revoke(ca, device="REC-0404")
    revoke(ca, device="REC-0001")
    crl_before = (ca / "crl.pem").read_bytes()
    with pytest.raises(ProvisioningError, match="already revoked"):
        revoke(ca, device="REC-0001")
    assert (ca / "crl.pem").read_bytes() == crl_before
    assert len(json.loads((ca / "revocations.json").read_text())) == 1


def test_revocation_time_checks(ca: Path) -> None:
    enroll(ca, device="REC-0001", role="recorder")
    with pytest.raises(ProvisioningError, match="in the future"):
        revoke(ca, device="REC-0001", at=datetime.now(UTC) + timedelta(days=1))
    with pytest.raises(ProvisioningError, match="timezone-aware"):
        revoke(ca, device="REC-0001", at=datetime(2026, 1, 1))
    with pytest.raises(ProvisioningError, match="unknown revocation reason"):
        revoke(ca, device="REC-0001", reason="lost")
    assert json.loads((ca / "revocations.json").read_text()) == []


def test_revoke_cli(ca: Path, capsys: pytest.CaptureFixture[str]) -> None:
    enroll(ca, device="REC-0001", role="recorder")
    code, _, err = run_cli(
        capsys, "provision", "revoke", ca, "--device", "REC-0001", "--at", "2026-03-14 16:00"
    )
    assert code == 2
    assert "no time zone" in err
    code, out, err = run_cli(
        capsys,
        "provision",
        "revoke",
        ca,
        "--device",
        "REC-0001",
        "--at",
        "2026-03-14T16:00:00+08:00",
        "--reason",
        "cessationOfOperation",
    )
    assert code == 0, err
    assert "SIGHUP" in out
    assert json.loads((ca / "revocations.json").read_text())[0]["revoked_at"] == "2026-03-14T08:00:00Z"
    assert "Cessation Of Operation" in crl_text(ca)
    code, out, _ = run_cli(capsys, "provision", "list", ca)
    assert code == 0
    assert re.search(r"REC-0001\s+recorder\s+revoked 2026-03-14T08:00:00Z", out)
    code, _, err = run_cli(capsys, "provision", "revoke", ca, "--device", "REC-0001")
    assert code == 2
    assert "already revoked" in err


def test_refresh_crl_keeps_entries_and_moves_next_update(ca: Path) -> None:
    enroll(ca, device="REC-0001", role="recorder")
    revoke(ca, device="REC-0001", at=datetime(2026, 3, 14, tzinfo=UTC))
    before = x509.load_pem_x509_crl((ca / "crl.pem").read_bytes())
    assert refresh_crl(ca) == 3
    after = x509.load_pem_x509_crl((ca / "crl.pem").read_bytes())
    assert [(r.serial_number, r.revocation_date_utc) for r in after] == [
        (r.serial_number, r.revocation_date_utc) for r in before
    ]
    assert after.next_update_utc is not None
    assert before.next_update_utc is not None
    assert after.next_update_utc >= before.next_update_utc
