"""Every finding the verifier can make, each provoked on a real signed spool."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from custody.findings import FindingCode as F
from custody.findings import Severity
from custody.report import render_text
from custody.spool import JOURNAL, MEDIA, Spool
from custody.timefmt import utc_timestamp
from custody.trust import TrustStore
from custody.verify import ChainVerifier
from tests.custody.conftest import REVOKED_AT, SAMPLE_START, Fleet


def lines(root: Path) -> list[bytes]:
    return (root / JOURNAL).read_bytes().splitlines(keepends=True)


def write_lines(root: Path, ls: list[bytes]) -> None:
    (root / JOURNAL).write_bytes(b"".join(ls))


def segment_lines(root: Path) -> list[int]:
    return [i for i, ln in enumerate(lines(root)) if b'"kind":"segment"' in ln]


def test_a_pristine_spool_is_all_sound(fleet: Fleet, pristine: Path) -> None:
    report = fleet.verify(pristine)
    assert report.all_sound, report.findings
    assert len(report.records) == 8  # boot, 4 segments, a marker, an annotation, a clock record
    assert report.sound_seqs == list(range(len(report.records)))
    assert {r.kind for r in report.records} == {"boot", "segment", "marker", "annotation", "clock"}


def test_an_altered_record_has_a_bad_signature_and_only_it_is_unsound(fleet: Fleet, spool_copy: Path) -> None:
    ls = lines(spool_copy)
    i = segment_lines(spool_copy)[1]
    record = json.loads(ls[i])
    record["record"]["body"]["proof"] = "篡改后的证明对象"
    import rfc8785

    ls[i] = rfc8785.dumps(record) + b"\n"
    write_lines(spool_copy, ls)
    report = fleet.verify(spool_copy)
    assert report.codes() == {F.BAD_SIGNATURE}
    bad = [r for r in report.records if not r.sound]
    assert [r.line for r in bad] == [i + 1]
    assert len(report.sound_seqs) == len(report.records) - 1


def test_media_changes(fleet: Fleet, spool_copy: Path) -> None:
    files = sorted((spool_copy / MEDIA).rglob("*.mp4"))
    data = bytearray(files[0].read_bytes())
    data[100] ^= 0x01
    files[0].write_bytes(bytes(data))
    files[1].write_bytes(files[1].read_bytes()[:-1])
    files[2].unlink()
    report = fleet.verify(spool_copy)
    found = {(f.code, f.message.split(": ")[1].split(" ")[0].rsplit("/", 1)[-1]) for f in report.findings}
    assert found == {
        (F.HASH_MISMATCH, "0000.mp4"),
        (F.SIZE_MISMATCH, "0001.mp4"),
        (F.HASH_MISMATCH, "0001.mp4"),
        (F.MISSING_FILE, "media"),
    }
    assert "0002.mp4" in next(f.message for f in report.findings if f.code is F.MISSING_FILE)


def test_a_planted_media_file_is_an_orphan(fleet: Fleet, spool_copy: Path) -> None:
    (spool_copy / MEDIA / "planted.mp4").write_bytes(b"x")
    report = fleet.verify(spool_copy)
    assert report.codes() == {F.ORPHAN_FILE}
    assert all(f.severity is Severity.WARNING for f in report.findings)
    assert len(report.sound_seqs) == len(report.records)


def test_deleted_record_is_a_gap(fleet: Fleet, spool_copy: Path) -> None:
    ls = lines(spool_copy)
    del ls[3]
    write_lines(spool_copy, ls)
    report = fleet.verify(spool_copy)
    gap = [f for f in report.findings if f.code is F.GAP]
    assert len(gap) == 1
    assert gap[0].missing == (3, 3)


def test_deleted_first_records_are_a_gap_at_the_start(fleet: Fleet, spool_copy: Path) -> None:
    write_lines(spool_copy, lines(spool_copy)[2:])
    report = fleet.verify(spool_copy)
    assert [f.missing for f in report.findings if f.code is F.GAP] == [(0, 1)]


def test_duplicated_and_reordered_records(fleet: Fleet, spool_copy: Path) -> None:
    ls = lines(spool_copy)
    write_lines(spool_copy, [*ls, ls[2]])
    assert F.DUPLICATE in fleet.verify(spool_copy).codes()
    ls[2], ls[3] = ls[3], ls[2]
    write_lines(spool_copy, ls)
    report = fleet.verify(spool_copy)
    assert F.REORDERED in report.codes()
    assert F.GAP not in report.codes()


def test_truncation_needs_a_witness(fleet: Fleet, spool_copy: Path) -> None:
    ls = lines(spool_copy)
    last = json.loads(ls[-1])["record"]["seq"]
    write_lines(spool_copy, ls[:-2])
    assert fleet.verify(spool_copy).all_sound  # the chain alone cannot tell
    report = fleet.verify(spool_copy, expect_last=(last, None))
    assert [f.code for f in report.findings] == [F.TRUNCATED]


def test_a_fork_two_signed_records_with_one_seq(fleet: Fleet, spool_copy: Path, tmp_path: Path) -> None:
    # The device key signs a second, different record 2 (what a cloned or rolled-back device does).
    from custody.chain import ChainHead, ChainWriter
    from custody.signing import SealedRecord

    ls = lines(spool_copy)
    rec1 = json.loads(ls[1])["record"]
    import hashlib

    import rfc8785

    head = ChainHead(next_seq=2, last_hash="sha256:" + hashlib.sha256(rfc8785.dumps(rec1)).hexdigest())  # type: ignore[arg-type]
    writer = ChainWriter(device="REC-0001", signer=fleet.signer("REC-0001"), head=head)
    other: SealedRecord = writer.seal_next(
        "marker",
        {
            "recording": "",
            "at": "2026-11-20T01:30:20.000Z",
            "label": "x",
            "note": "",
            "officer": "",
            "location": {"fix": False, "reason": "none"},
        },
        time="2026-11-20T01:30:20.000Z",
    )
    write_lines(spool_copy, [*ls[:3], other.line, *ls[3:]])
    report = fleet.verify(spool_copy)
    forks = [f for f in report.findings if f.code is F.FORK]
    assert len(forks) == 2
    assert {f.seq for f in forks} == {2}


def test_malformed_and_torn_lines(fleet: Fleet, spool_copy: Path) -> None:
    ls = lines(spool_copy)
    ls[4] = b'{"record": "this is not a record"}\n'
    ls[-1] = ls[-1][:-30]  # torn: a power cut mid-write
    write_lines(spool_copy, ls)
    report = fleet.verify(spool_copy)
    mal = [f for f in report.findings if f.code is F.MALFORMED]
    assert {f.line for f in mal} == {5, len(ls)}
    assert any("torn" in f.message for f in mal)


def test_noncanonical_encoding_is_malformed(fleet: Fleet, spool_copy: Path) -> None:
    ls = lines(spool_copy)
    ls[1] = json.dumps(json.loads(ls[1]), ensure_ascii=False).encode() + b"\n"  # same data, spaced out
    write_lines(spool_copy, ls)
    report = fleet.verify(spool_copy)
    malformed = [f for f in report.findings if f.code is F.MALFORMED]
    assert [(f.line, f.seq) for f in malformed] == [(2, 1)]
    assert "canonical" in malformed[0].message
    # The unusable record leaves a hole in the sound chain, and its media file has no sound record.
    assert [f.missing for f in report.findings if f.code is F.GAP] == [(1, 1)]


def test_records_of_an_unknown_device_key(fleet: Fleet, spool_copy: Path) -> None:
    for p in (spool_copy / "certs").glob("signing-*.pem"):
        p.unlink()
    report = fleet.verify(spool_copy)
    assert report.codes() == {F.UNKNOWN_DEVICE}
    assert report.sound_seqs == []


def test_a_chain_from_a_foreign_ca_is_flagged(fleet: Fleet, tmp_path: Path) -> None:
    root = tmp_path / "foreign"
    fleet.make_spool(root, foreign=True, segments=1)
    report = fleet.verify(root)
    assert report.codes() == {F.FOREIGN_CA}
    assert report.sound_seqs == []


def test_records_signed_after_revocation(fleet: Fleet, tmp_path: Path) -> None:
    root = tmp_path / "rev"
    fleet.make_spool(root, device="REC-0003", segments=6)
    report = fleet.verify(root)
    revoked = [r for r in report.records if F.REVOKED in r.findings]
    assert revoked, "records after the revocation time must be flagged"
    assert all(r.time >= utc_timestamp(REVOKED_AT) for r in revoked)
    assert all(r.sound for r in report.records if r.time < utc_timestamp(REVOKED_AT))
    # Without the CRL the verifier cannot know: everything is sound, and the report says what was not checked.
    plain = ChainVerifier(fleet.trust(crl=False), workers=1).verify_spool(Spool.open(root))
    assert plain.all_sound
    assert plain.notes == ["No CRL was given (--crl): revocations were not checked."]
    assert "Note: No CRL was given" in render_text(plain)


def test_a_record_of_another_device_in_the_chain(fleet: Fleet, spool_copy: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    fleet.make_spool(other, device="REC-0002", segments=1)
    ls = lines(spool_copy)
    ls.append(lines(other)[1])
    shutil.copy(next((other / "certs").glob("signing-*.pem")), spool_copy / "certs" / "signing-other.pem")
    write_lines(spool_copy, ls)
    assert F.WRONG_DEVICE in fleet.verify(spool_copy).codes()


def test_clock_going_backwards(fleet: Fleet, tmp_path: Path) -> None:
    from datetime import timedelta

    from custody.signing import Ed25519Signer
    from edge.journal import SpoolWriter
    from fieldproof.sample_chain import segment_body

    root = tmp_path / "clock"
    bundle = fleet.bundle("REC-0001")
    spool = SpoolWriter.create(
        root,
        signer=Ed25519Signer.from_files(bundle / "signing.key", bundle / "signing.pem"),
        device="REC-0001",
    )
    for i, minute in enumerate((0, 1, -1)):
        start = SAMPLE_START + timedelta(minutes=minute)
        tmp = root / "tmp" / "x"
        tmp.write_bytes(b"seg%d" % i)
        digest, size = spool.store_media(tmp, f"r/{i}.mp4")
        body = segment_body(recording="r", index=i, file=f"r/{i}.mp4", digest=digest, size=size, start=start)
        if i == 1:
            body["end"] = utc_timestamp(start - timedelta(seconds=1))  # ends before it starts
        spool.append("segment", body, time=utc_timestamp(start + timedelta(seconds=10)))
    spool.close()
    report = fleet.verify(root)
    clock = [f for f in report.findings if f.code is F.CLOCK_BACKWARDS]
    assert {f.seq for f in clock} == {1, 2}
    assert len(report.sound_seqs) == 3  # a clock anomaly is a warning, not a forgery


def test_crl_not_signed_by_the_fleet_is_refused(fleet: Fleet, pristine: Path) -> None:
    from custody.errors import TrustError

    trust = TrustStore.from_paths(ca=[fleet.ca / "root-ca.pem"], crl=[fleet.foreign_ca / "crl.pem"])
    with pytest.raises(TrustError, match=r"not signed by a trusted CA|not among the certificates"):
        ChainVerifier(trust, workers=1).verify_spool(Spool.open(pristine))


def test_files_released_after_the_servers_ack_are_not_missing(fleet: Fleet, spool_copy: Path) -> None:
    import hashlib

    import rfc8785
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from custody.signing import key_id as cert_key_id
    from edge.journal import SpoolWriter
    from edge.sync.protocol import signed_ack

    server_key = serialization.load_pem_private_key((fleet.ca / "server-signing.key").read_bytes(), None)
    server_cert = x509.load_pem_x509_certificate((fleet.ca / "server-signing.pem").read_bytes())
    segs = [json.loads(ln)["record"] for ln in lines(spool_copy) if b'"kind":"segment"' in ln][:2]
    targets, acks = [], []
    for r in segs:
        h = "sha256:" + hashlib.sha256(rfc8785.dumps(r)).hexdigest()
        targets.append({"seq": r["seq"], "hash": h, "file": r["body"]["file"], "digest": r["body"]["digest"]})
        ack = signed_ack(
            server_key,
            cert_key_id(server_cert),
            recorder="REC-0001",
            seq=r["seq"],
            hash=h,
            status="stored",
            reason="",
            received=r["body"]["size"],
            server_time="2026-11-26T09:00:00.000Z",
        )
        acks.append(json.loads(ack))
        (spool_copy / MEDIA / r["body"]["file"]).unlink()
    assert F.MISSING_FILE in fleet.verify(spool_copy).codes()  # freed without a release: missing
    writer = SpoolWriter(spool_copy, signer=fleet.signer("REC-0001"), device="REC-0001")
    writer.append("release", {"targets": targets, "acks": acks})
    writer.close()
    report = fleet.verify(spool_copy)
    assert report.all_sound, report.findings


@pytest.mark.parametrize(
    ("field", "value"),
    [("sig", "签名"), ("time", "2026-11-26T08:00:00.000Z\n"), ("device", "REC-0001\n")],
)
def test_odd_text_is_reported_never_a_crash(fleet: Fleet, spool_copy: Path, field: str, value: str) -> None:
    import rfc8785

    ls = lines(spool_copy)
    env = json.loads(ls[1])
    if field == "sig":
        env["sig"]["value"] = value
    else:
        env["record"][field] = value
    ls[1] = rfc8785.dumps(env) + b"\n"
    write_lines(spool_copy, ls)
    report = fleet.verify(spool_copy)
    assert {f.code for f in report.findings if f.line == 2} & {F.MALFORMED, F.BAD_SIGNATURE}
