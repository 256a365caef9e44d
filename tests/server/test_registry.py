"""The device registry follows the CA directory: enrolments, renewals and revocations without restart,
and a damaged CRL never un-revokes anyone."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from custody.signing import key_id
from custody.trust import KeyStatus
from provisioning import enroll, init_ca, revoke
from server.devices.registry import DeviceRegistry
from server.errors import SettingsError


def _kid(bundle: Path) -> str:
    from cryptography import x509

    return key_id(x509.load_pem_x509_certificate((bundle / "signing.pem").read_bytes()))


def test_registry_follows_the_ca_directory(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    init_ca(ca)
    first = enroll(ca, device="REC-0001", role="recorder")
    reg = DeviceRegistry(ca)
    judged = reg.judge(_kid(first))
    assert judged is not None
    assert (judged.key.status, judged.key.device, judged.revoked_at) == (KeyStatus.TRUSTED, "REC-0001", None)
    assert reg.role("REC-0001") == "recorder"

    # Enrolled and renewed after the server started: found by a rescan of devices/.
    later = enroll(ca, device="REC-0002", role="recorder")
    renewed = enroll(ca, device="REC-0001", role="recorder", renew=True)
    reg._last_scan = 0.0  # the rescan is rate-limited to once a second
    assert reg.judge(_kid(later)) is not None
    assert reg.judge(_kid(renewed)) is not None
    assert reg.judge(_kid(first)) is not None  # the previous key still verifies old evidence

    # Revoked: the CRL and revocations.json change, the next look-up sees it, for old and new keys.
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    revoke(ca, device="REC-0001", at=at)
    for bundle in (first, renewed):
        j = reg.judge(_kid(bundle))
        assert j is not None
        assert j.revoked_at == at

    # A damaged CRL: the previous state is kept, and revocations.json still speaks.
    (ca / "crl.pem").write_text("not a CRL")
    entries = json.loads((ca / "revocations.json").read_text())
    entries.append(
        {
            "device": "REC-0002",
            "role": "recorder",
            "serials": [],
            "revoked_at": "2026-01-01T00:00:00Z",
            "reason": "keyCompromise",
        }
    )
    (ca / "revocations.json").write_text(json.dumps(entries))
    j = reg.judge(_kid(later))
    assert j is not None
    assert j.revoked_at == datetime(2026, 1, 1, tzinfo=UTC)
    j = reg.judge(_kid(first))
    assert j is not None
    assert j.revoked_at == at


def test_an_unusable_ca_directory_is_refused(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    init_ca(ca)
    (ca / "crl.pem").write_text("not a CRL")
    with pytest.raises(SettingsError, match="cannot read the trust"):
        DeviceRegistry(ca)
