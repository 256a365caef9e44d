"""The offline bundle verifier (custody/bundle.py) on bags built here from a signed sample spool — no
server: signed records, media, certificates and CRL, a server-signed annotation, custody-log events with
RFC 9162 inclusion proofs against a signed checkpoint, a report, BagIt manifests. Any single changed byte
in the payload is found, and so are forgeries that rewrite the manifests to match."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custody.bundle import ANNOTATION_CONTEXT, BundleError, is_bundle, verify_bundle
from custody.canonical import canonical, parse
from custody.logproof import CHECKPOINT_CONTEXT, LOG_NAME, LogEntryError, SignedCheckpoint, verify_entry
from custody.merkle import inclusion_proof, leaf_hash, root_from_leaf_hashes
from custody.signing import key_id
from custody.trust import load_certificates
from tests.custody.conftest import Fleet

VENV = Path(sys.executable).parent


def _write_manifests(bag: Path) -> None:
    files = sorted(p for p in (bag / "data").rglob("*") if p.is_file())
    (bag / "manifest-sha256.txt").write_text(
        "".join(
            f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(bag).as_posix()}\n" for p in files
        )
    )
    (bag / "bag-info.txt").write_text(f"Payload-Oxum: {sum(p.stat().st_size for p in files)}.{len(files)}\n")
    tags = ("bagit.txt", "bag-info.txt", "manifest-sha256.txt")
    (bag / "tagmanifest-sha256.txt").write_text(
        "".join(f"{hashlib.sha256((bag / t).read_bytes()).hexdigest()}  {t}\n" for t in tags)
    )


def _stamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _event(
    i: int, kind: str, device: str | None, seq: int | None, record_hash: str | None, t0: datetime
) -> dict[str, Any]:
    return {
        "v": 1,
        "id": i,
        "time": _stamp(t0 + timedelta(seconds=i)),
        "kind": kind,
        "code": None,
        "device": device,
        "seq": seq,
        "record_hash": record_hash,
        "digest": None,
        "dock": "DOCK-01",
        "actor": "ingest",
        "detail": "{}",
    }


def build_bag(fleet: Fleet, spool: Path, bag: Path) -> None:
    """A bag as server/export writes one, from a spool's segments."""
    data = bag / "data"
    (data / "records").mkdir(parents=True)
    lines = (spool / "chain.jsonl").read_bytes().splitlines(keepends=True)
    segs = [(line, parse(line.rstrip(b"\n"))["record"]) for line in lines]
    segs = [(line, r) for line, r in segs if r["kind"] == "segment"]
    device = segs[0][1]["device"]
    (data / "records" / f"{device}.jsonl").write_bytes(b"".join(line for line, _ in segs))
    hashes = {r["seq"]: "sha256:" + hashlib.sha256(canonical(r)).hexdigest() for _, r in segs}
    for _, r in segs:
        dest = data / "media" / device / r["body"]["file"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(spool / "media" / r["body"]["file"], dest)
    (data / "certs" / "devices").mkdir(parents=True)
    for name in ("root-ca.pem", "ca-chain.pem", "crl.pem", "server-signing.pem"):
        shutil.copyfile(fleet.ca / name, data / "certs" / name)
    shutil.copyfile(fleet.bundle(device) / "signing.pem", data / "certs" / "devices" / "signing.pem")

    server_cert = load_certificates(fleet.ca / "server-signing.pem")[0]
    server_key = load_pem_private_key((fleet.ca / "server-signing.key").read_bytes(), None)
    assert isinstance(server_key, Ed25519PrivateKey)
    kid = key_id(server_cert)
    # Every time the server signs lies within its signing certificate's validity, which began when the
    # test's CA was made: never a fixed date, which a later day would put outside it.
    t0 = server_cert.not_valid_before_utc + timedelta(minutes=1)
    first = segs[0][1]
    ann = canonical(
        {
            "v": 1,
            "type": "fieldproof/footage-annotation",
            "time": _stamp(t0),
            "user_id": 7,
            "by": "user:li.ming",
            "targets": [{"device": device, "seq": first["seq"], "hash": hashes[first["seq"]]}],
            "set": {"case": "津人社监察〔2026〕17号", "proof": "更正后的证明对象"},
            "reason": "首段录制时尚未立案",
            "key_id": kid,
        }
    )
    (data / "annotations").mkdir()
    (data / "annotations" / "1.json").write_text(
        json.dumps(
            {
                "id": 1,
                "signed": ann.decode(),
                "signature": base64.b64encode(server_key.sign(ANNOTATION_CONTEXT + ann)).decode(),
                "key_id": kid,
            },
            ensure_ascii=False,
        )
    )

    events = [_event(1, "received", "DOCK-01", None, None, t0)]
    for _, r in segs:
        events.append(_event(len(events) + 1, "filed", device, r["seq"], hashes[r["seq"]], t0))
    leaves = [leaf_hash(canonical(e)) for e in events]
    root = root_from_leaf_hashes(leaves)
    body = {"v": 1, "log": LOG_NAME, "tree_size": len(leaves), "root_hash": root.hex()}
    body |= {"time": _stamp(t0 + timedelta(minutes=1)), "key_id": kid}
    checkpoint = {k: body[k] for k in ("tree_size", "root_hash", "time", "key_id")}
    checkpoint["signature"] = base64.b64encode(server_key.sign(CHECKPOINT_CONTEXT + canonical(body))).decode()
    (data / "custody-log").mkdir()
    (data / "custody-log" / "checkpoint.json").write_text(json.dumps(checkpoint))
    entries = [
        {"event": e, "leaf_index": i, "inclusion_proof": [h.hex() for h in inclusion_proof(leaves, i)]}
        for i, e in enumerate(events)
    ]
    (data / "custody-log" / "events.json").write_text(json.dumps(entries))

    clips = []
    for _, r in segs:
        b = r["body"]
        annotated = r["seq"] == first["seq"]
        fix = b["location"]["fixes"][0]
        clips.append(
            {
                "device": device,
                "seq": r["seq"],
                "record_hash": hashes[r["seq"]],
                "file": f"media/{device}/{b['file']}",
                "sha256": b["digest"],
                "size": b["size"],
                "case_number": "津人社监察〔2026〕17号" if annotated else b["case"],
                "start": b["start"],
                "end": b["end"],
                "place": {"lat_e7": fix["lat_e7"], "lon_e7": fix["lon_e7"]},
                "collector": b["officer"],
                "proof": "更正后的证明对象" if annotated else b["proof"],
            }
        )
    report = {
        "format": "fieldproof-export/1",
        "case": {"number": "津人社监察〔2026〕17号"},
        "checkpoint": checkpoint,
        "clips": clips,
    }
    (data / "report.json").write_text(json.dumps(report, ensure_ascii=False))
    (bag / "bagit.txt").write_text("BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n")
    _write_manifests(bag)


@pytest.fixture(scope="module")
def pristine_bag(fleet: Fleet, pristine: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    bag = tmp_path_factory.mktemp("bundle") / "bag"
    build_bag(fleet, pristine, bag)
    return bag


def _verify(fleet: Fleet, bag: Path) -> Any:
    return verify_bundle(bag, ca=[fleet.ca / "root-ca.pem"], workers=1)


def test_sound_bag(fleet: Fleet, pristine_bag: Path) -> None:
    assert is_bundle(pristine_bag)
    report = _verify(fleet, pristine_bag)
    assert report.findings == []
    assert report.all_sound
    assert (report.clips, report.annotations, report.events) == (4, 1, 5)
    assert list(report.chains) == ["REC-0001"]


def test_not_a_bag(fleet: Fleet, tmp_path: Path) -> None:
    (tmp_path / "bagit.txt").write_text("hello\n")
    with pytest.raises(BundleError):
        _verify(fleet, tmp_path)


def _codes(report: Any) -> set[str]:
    return {f.code for f in report.findings} | {
        str(f.code) for r in report.chains.values() for f in r.findings
    }


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_flipped_payload_byte_is_found_even_with_rewritten_manifests(
    fleet: Fleet, pristine_bag: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    bag = tmp_path_factory.mktemp("flip") / "bag"
    shutil.copytree(pristine_bag, bag)
    # root-ca.pem in the bag is a copy for reference: the verifier never reads it, so skip it here.
    files = sorted(p for p in (bag / "data").rglob("*") if p.is_file() and p.name != "root-ca.pem")
    target = data.draw(st.sampled_from(files))
    content = bytearray(target.read_bytes())
    i = data.draw(st.integers(0, len(content) - 1))
    content[i] ^= data.draw(st.integers(1, 255))
    target.write_bytes(bytes(content))
    first = _verify(fleet, bag)
    assert not first.all_sound
    assert "manifest-mismatch" in _codes(first)
    _write_manifests(bag)
    assert not _verify(fleet, bag).all_sound, target


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("key_id", lambda v: "r" + v[1:]),  # found by the property test above: 'sha256:…' → 'rha256:…'
        ("id", lambda v: v + 1),  # the order among the server's annotations (the latest wins)
        ("note", None),  # an unsigned member added
    ],
)
def test_an_annotation_file_s_unsigned_members_must_agree_with_what_it_signed(
    fleet: Fleet, pristine_bag: Path, tmp_path: Path, member: str, value: Any
) -> None:
    bag = tmp_path / "bag"
    shutil.copytree(pristine_bag, bag)
    (target,) = (bag / "data" / "annotations").glob("*.json")
    item = json.loads(target.read_text("utf-8"))
    item[member] = "added" if value is None else value(item[member])
    target.write_text(json.dumps(item, ensure_ascii=False, indent=2), "utf-8")
    _write_manifests(bag)
    report = _verify(fleet, bag)
    assert "bad-annotation" in _codes(report)
    assert not report.all_sound


def test_entry_proofs(pristine_bag: Path) -> None:
    checkpoint = SignedCheckpoint.from_json(
        json.loads((pristine_bag / "data/custody-log/checkpoint.json").read_text())
    )
    entries = json.loads((pristine_bag / "data/custody-log/events.json").read_text())
    assert verify_entry(entries[1], checkpoint)["kind"] == "filed"
    moved = dict(entries[1], leaf_index=2)
    with pytest.raises(LogEntryError):
        verify_entry(moved, checkpoint)


def test_cli_verifies_a_bag(fleet: Fleet, pristine_bag: Path, tmp_path: Path) -> None:
    ca = str(fleet.ca / "root-ca.pem")
    ok = subprocess.run(
        [str(VENV / "fieldproof"), "verify", str(pristine_bag), "--ca", ca, "--json"],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["all_sound"] is True
    assert (
        subprocess.run(
            [
                str(VENV / "fieldproof"),
                "verify",
                str(pristine_bag),
                "--ca",
                ca,
                "--crl",
                str(fleet.ca / "crl.pem"),
            ],
            capture_output=True,
        ).returncode
        == 2
    )
    bag = tmp_path / "bag"
    shutil.copytree(pristine_bag, bag)
    report = json.loads((bag / "data" / "report.json").read_text())
    report["clips"][1]["collector"] = "12010019999"
    (bag / "data" / "report.json").write_text(json.dumps(report, ensure_ascii=False))
    _write_manifests(bag)
    bad = subprocess.run(
        [str(VENV / "fieldproof"), "verify", str(bag), "--ca", ca], capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert "report's collector" in bad.stdout
