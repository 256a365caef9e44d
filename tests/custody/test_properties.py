"""Property-based tests: whatever is changed, removed, repeated or moved, the verifier notices."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custody.findings import FindingCode as F
from custody.spool import JOURNAL, MEDIA, Spool
from custody.timefmt import parse_timestamp, utc_timestamp
from custody.trust import TrustStore
from custody.verify import ChainVerifier
from tests.custody.conftest import Fleet

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# What a changed byte in a record line may legitimately be reported as, on that very line.
RECORD_CHANGE_CODES = {F.MALFORMED, F.BAD_SIGNATURE, F.UNKNOWN_DEVICE}


def fresh(pristine: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "case"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(pristine, dest)
    return dest


def journal(root: Path) -> list[bytes]:
    return (root / JOURNAL).read_bytes().splitlines(keepends=True)


@SETTINGS
@given(data=st.data())
def test_any_single_byte_change_in_any_record_is_found_on_that_record(
    fleet: Fleet, pristine: Path, tmp_path: Path, data: st.DataObject
) -> None:
    root = fresh(pristine, tmp_path)
    ls = journal(root)
    i = data.draw(st.integers(0, len(ls) - 1), label="line")
    pos = data.draw(st.integers(0, len(ls[i]) - 1), label="offset")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != ls[i][pos]), label="byte")
    changed = bytearray(ls[i])
    changed[pos] = new
    ls[i] = bytes(changed)
    (root / JOURNAL).write_bytes(b"".join(ls))
    report = fleet.verify(root)
    on_line = {f.code for f in report.findings if f.line == i + 1}
    assert on_line & RECORD_CHANGE_CODES, report.findings
    assert not next(r for r in report.records if r.line == i + 1).sound


@SETTINGS
@given(data=st.data())
def test_any_single_byte_change_in_any_media_file_is_a_hash_mismatch(
    fleet: Fleet, pristine: Path, tmp_path: Path, data: st.DataObject
) -> None:
    root = fresh(pristine, tmp_path)
    files = sorted((root / MEDIA).rglob("*.mp4"))
    f = data.draw(st.sampled_from(files), label="file")
    blob = bytearray(f.read_bytes())
    pos = data.draw(st.integers(0, len(blob) - 1), label="offset")
    blob[pos] ^= data.draw(st.integers(1, 255), label="xor")
    f.write_bytes(bytes(blob))
    report = fleet.verify(root)
    name = f.relative_to(root / MEDIA).as_posix()
    assert [(x.code, name in x.message) for x in report.findings] == [(F.HASH_MISMATCH, True)]


@SETTINGS
@given(data=st.data())
def test_deleting_any_record_is_found(
    fleet: Fleet, pristine: Path, tmp_path: Path, data: st.DataObject
) -> None:
    root = fresh(pristine, tmp_path)
    ls = journal(root)
    last_seq = json.loads(ls[-1])["record"]["seq"]
    i = data.draw(st.integers(0, len(ls) - 1), label="deleted line")
    del ls[i]
    (root / JOURNAL).write_bytes(b"".join(ls))
    report = fleet.verify(root, expect_last=(last_seq, None))
    codes = report.codes()
    if i == len(ls):  # the last record: only a witness can tell
        assert F.TRUNCATED in codes
    else:
        assert [f.missing for f in report.findings if f.code is F.GAP] == [(i, i)]
    # Without a witness, deletion of anything but the tail is still found.
    if i < len(ls):
        assert F.GAP in fleet.verify(root).codes()


@SETTINGS
@given(data=st.data())
def test_duplicating_any_record_is_found(
    fleet: Fleet, pristine: Path, tmp_path: Path, data: st.DataObject
) -> None:
    root = fresh(pristine, tmp_path)
    ls = journal(root)
    i = data.draw(st.integers(0, len(ls) - 1), label="copied line")
    at = data.draw(st.integers(0, len(ls)), label="inserted at")
    ls.insert(at, ls[i])
    (root / JOURNAL).write_bytes(b"".join(ls))
    assert F.DUPLICATE in fleet.verify(root).codes()


@SETTINGS
@given(data=st.data())
def test_reordering_any_two_records_is_found(
    fleet: Fleet, pristine: Path, tmp_path: Path, data: st.DataObject
) -> None:
    root = fresh(pristine, tmp_path)
    ls = journal(root)
    i = data.draw(st.integers(0, len(ls) - 2), label="first")
    j = data.draw(st.integers(i + 1, len(ls) - 1), label="second")
    ls[i], ls[j] = ls[j], ls[i]
    (root / JOURNAL).write_bytes(b"".join(ls))
    report = fleet.verify(root)
    assert F.REORDERED in report.codes()
    assert F.BAD_SIGNATURE not in report.codes()  # moved, not altered


@pytest.fixture(scope="module")
def revoked_spool(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("revocable") / "spool"
    fleet.make_spool(root, device="REC-0002", segments=6)
    return root


@SETTINGS
@given(offset_s=st.integers(-30, 120))
def test_records_signed_after_any_revocation_time_are_flagged(
    fleet: Fleet, revoked_spool: Path, offset_s: int
) -> None:
    # A CRL revoking REC-0002's signing certificate at a drawn time, signed by the fleet's device CA.
    spool = Spool.open(revoked_spool)
    times = [json.loads(x)["record"]["time"] for x in spool.read_journal()]
    revoked_at = (parse_timestamp(times[0]) + timedelta(seconds=offset_s)).replace(microsecond=0)
    ca_key = serialization.load_pem_private_key((fleet.ca / "device-ca.key").read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((fleet.ca / "device-ca.pem").read_bytes())
    serial = x509.load_pem_x509_certificate(
        (fleet.bundle("REC-0002") / "signing.pem").read_bytes()
    ).serial_number
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(revoked_at)
        .next_update(revoked_at + timedelta(days=3650))
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(revoked_at).build()
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    trust = TrustStore(
        roots=[x509.load_pem_x509_certificate((fleet.ca / "root-ca.pem").read_bytes())],
        untrusted=[ca_cert],
        crls=[crl],
    )
    report = ChainVerifier(trust, workers=1).verify_spool(spool)
    cut = utc_timestamp(revoked_at)
    flagged = {r.line for r in report.records if F.REVOKED in r.findings}
    assert flagged == {i + 1 for i, t in enumerate(times) if t >= cut}
    assert all(r.sound for r in report.records if r.line not in flagged)


def test_a_foreign_chain_is_flagged_on_every_record(fleet: Fleet, tmp_path: Path) -> None:
    root = tmp_path / "foreign"
    fleet.make_spool(root, device="REC-0001", foreign=True, segments=2)
    report = fleet.verify(root)
    assert all(F.FOREIGN_CA in r.findings and not r.sound for r in report.records)
