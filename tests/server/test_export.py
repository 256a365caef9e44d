"""Export on both databases: a case bag built from footage filed by the real ingest handler, checked by
three outside-independent judges — `fieldproof verify BUNDLE`, the `bagit.py` CLI and `sha256sum -c` —
which all accept it, and all refuse it once one byte of a media file is flipped; an altered custody event
fails `fieldproof verify` even when the manifests are rewritten to match."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from custody.logproof import SignedCheckpoint
from server.custody_log import service as log
from server.custody_log.format import Checkpoint
from server.custody_log.sequencer import CheckpointSigner, sequence_pending
from server.custody_log.verify import load_signing_certificate, verify_event_answer
from tests.server.case_helpers import CASE_A
from tests.server.conftest import SAMPLE_START, Fleet
from tests.server.seaweed import Seaweed
from tests.server.test_verification import CaseWorld, make_world

VENV = Path(sys.executable).parent
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def fieldproof_verify(bag: Path, fleet: Fleet, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV / "fieldproof"), "verify", str(bag), "--ca", str(fleet.ca / "root-ca.pem"), *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )


def bagit_validate(bag: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV / "bagit.py"), "--validate", str(bag)], capture_output=True, text=True, timeout=120
    )


def sha256sum_check(bag: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sha256sum", "--strict", "-c", "manifest-sha256.txt"],
        cwd=bag,
        capture_output=True,
        text=True,
        timeout=120,
    )


def rewrite_manifests(bag: Path) -> None:
    """What a forger would do: make the manifests agree with altered files."""
    lines = []
    for line in (bag / "manifest-sha256.txt").read_text().splitlines():
        _, rel = line.split(None, 1)
        lines.append(f"{hashlib.sha256((bag / rel).read_bytes()).hexdigest()}  {rel}\n")
    (bag / "manifest-sha256.txt").write_text("".join(lines))
    files = [p for p in (bag / "data").rglob("*") if p.is_file()]
    oxum = f"{sum(p.stat().st_size for p in files)}.{len(files)}"
    info = [
        f"Payload-Oxum: {oxum}" if x.startswith("Payload-Oxum:") else x
        for x in (bag / "bag-info.txt").read_text().splitlines()
    ]
    (bag / "bag-info.txt").write_text("\n".join(info) + "\n")
    tags = []
    for line in (bag / "tagmanifest-sha256.txt").read_text().splitlines():
        _, rel = line.split(None, 1)
        tags.append(f"{hashlib.sha256((bag / rel).read_bytes()).hexdigest()}  {rel}\n")
    (bag / "tagmanifest-sha256.txt").write_text("".join(tags))


@pytest.fixture
def world(tmp_path: Path, database_url: str, fleet: Fleet) -> CaseWorld:
    w = make_world(tmp_path, database_url, fleet)
    # A corrected proof statement (a signed server annotation) and a text record go into the bag too.
    fixed = w.handler.post(
        "/api/v1/annotations",
        json={
            "targets": [{"device": w.device, "seq": w.recs[0]["seq"]}],
            "proof": "出示执法证件并告知权利义务",
            "reason": "证明对象更正",
        },
    )
    assert fixed.status_code == 201, fixed.text
    case_id = w.handler.get(f"/api/v1/cases/by-number/{CASE_A}").json()["case"]["id"]
    up = w.handler.post(
        f"/api/v1/cases/{case_id}/text-records",
        data={"kind": "inspection-note", "title": "现场检查笔录"},
        files={"file": ("note.pdf", PDF, "application/pdf")},
    )
    assert up.status_code == 201, up.text
    return w


def _export(w: CaseWorld) -> tuple[dict[str, Any], Path]:
    got = w.custodian.post(f"/api/v1/cases/by-number/{CASE_A}/export", params={"reason": "移送法院"})
    assert got.status_code == 201, got.text
    body = got.json()
    return body, w.api.settings.data_dir / "exports" / body["export_id"]


def test_exported_bag_passes_all_three_judges_and_fails_them_after_one_flipped_byte(
    world: CaseWorld, fleet: Fleet, tmp_path: Path
) -> None:
    w = world
    body, bag = _export(w)
    assert body["clips"] == 3
    assert sorted(p.name for p in bag.iterdir()) == [
        "bag-info.txt",
        "bagit.txt",
        "data",
        "manifest-sha256.txt",
        "tagmanifest-sha256.txt",
    ]
    # The journal lines are the device's signed lines, byte for byte.
    spool_lines = (w.spool / "chain.jsonl").read_bytes().splitlines(keepends=True)
    assert (bag / "data" / "records" / f"{w.device}.jsonl").read_bytes() == b"".join(spool_lines[1:])
    report = json.loads((bag / "data" / "report.json").read_text())
    first = report["clips"][0]
    assert (first["case_number"], first["collector"], first["proof"]) == (
        CASE_A,
        w.recs[0]["body"]["officer"],
        "出示执法证件并告知权利义务",
    )
    assert first["sha256"] == w.recs[0]["body"]["digest"]
    assert "lat_e7" in first["place"]
    assert len(report["text_records"]) == 1
    assert len(report["annotations"]) == 1
    assert "证明对象" in (bag / "data" / "report.txt").read_text()

    ok = fieldproof_verify(bag, fleet)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Result: ALL SOUND" in ok.stdout
    js = fieldproof_verify(bag, fleet, "--json")
    assert js.returncode == 0
    verdict = json.loads(js.stdout)
    assert verdict["all_sound"] is True
    assert verdict["clips"] == 3
    assert verdict["annotations"] == 1
    assert verdict["custody_events"] >= 9  # received, verified, filed … for each clip
    assert bagit_validate(bag).returncode == 0
    assert sha256sum_check(bag).returncode == 0, sha256sum_check(bag).stdout

    # One flipped byte in one media file: all three refuse.
    broken = tmp_path / "broken-bag"
    shutil.copytree(bag, broken)
    media = broken / "data" / first["file"]
    data = bytearray(media.read_bytes())
    data[1234] ^= 0x40
    media.write_bytes(bytes(data))
    bad = fieldproof_verify(broken, fleet, "--json")
    assert bad.returncode == 1
    codes = {f["code"] for f in json.loads(bad.stdout)["findings"]}
    assert {"manifest-mismatch", "media-altered"} <= codes
    assert bagit_validate(broken).returncode != 0
    assert sha256sum_check(broken).returncode != 0
    # Even with manifests rewritten to match, the signed record still convicts the file.
    rewrite_manifests(broken)
    assert bagit_validate(broken).returncode == 0
    again = fieldproof_verify(broken, fleet, "--json")
    assert again.returncode == 1
    assert {f["code"] for f in json.loads(again.stdout)["findings"]} == {"media-altered"}


def test_altered_custody_event_fails_even_with_rewritten_manifests(
    world: CaseWorld, fleet: Fleet, tmp_path: Path
) -> None:
    _, bag = _export(world)
    forged = tmp_path / "forged"
    shutil.copytree(bag, forged)
    events_file = forged / "data" / "custody-log" / "events.json"
    events = json.loads(events_file.read_text())
    events[0]["event"]["actor"] = "someone-else"
    events_file.write_text(json.dumps(events, ensure_ascii=False, indent=2))
    assert fieldproof_verify(forged, fleet).returncode == 1
    rewrite_manifests(forged)
    assert bagit_validate(forged).returncode == 0
    assert sha256sum_check(forged).returncode == 0
    got = fieldproof_verify(forged, fleet, "--json")
    assert got.returncode == 1
    assert "bad-log-entry" in {f["code"] for f in json.loads(got.stdout)["findings"]}
    # A bag checked against another root trusts nothing in it: cannot run or all untrusted.
    foreign = subprocess.run(
        [str(VENV / "fieldproof"), "verify", str(bag), "--ca", str(fleet.foreign_ca / "root-ca.pem")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert foreign.returncode in (1, 2)


def test_export_is_logged_after_the_bag_and_downloadable(
    world: CaseWorld, fleet: Fleet, tmp_path: Path
) -> None:
    w = world
    body, bag = _export(w)
    exported = w.api.events("exported")
    assert len(exported) == 1
    e = exported[0]
    assert (e["actor"], e["target_id"], e["export_id"]) == ("user:custodian1", CASE_A, body["export_id"])
    assert e["manifest_sha256"] == hashlib.sha256((bag / "manifest-sha256.txt").read_bytes()).hexdigest()
    assert e["reason"] == "移送法院"
    assert len(e["clips"]) == 3
    # The bag proves against the checkpoint taken before it; the export event gets its leaf afterwards.
    checkpoint = json.loads((bag / "data" / "custody-log" / "checkpoint.json").read_text())
    assert checkpoint["tree_size"] == e["checkpoint_tree_size"]
    signer = CheckpointSigner.from_ca_dir(fleet.ca)
    sequence_pending(factory=w.api.factory, signer=signer)
    with w.api.factory() as s:
        proof = log.event_proof(session=s, event_id=body["exported_event"]).to_json()
    assert proof["leaf_index"] >= checkpoint["tree_size"]
    # custody/logproof.py (what `fieldproof verify` uses) signs and encodes as the server's own code does.
    assert (
        SignedCheckpoint.from_json(checkpoint).signed_bytes()
        == Checkpoint.from_json(checkpoint).signed_bytes()
    )
    cert = load_signing_certificate((fleet.ca / "server-signing.pem").read_bytes())
    assert json.loads(verify_event_answer(proof, cert)["detail"])["export_id"] == body["export_id"]

    got = w.custodian.get(body["download"])
    assert got.status_code == 200, got.text
    with zipfile.ZipFile(io.BytesIO(got.content)) as z:
        z.extractall(tmp_path / "unzipped")
    unzipped = tmp_path / "unzipped" / body["export_id"]
    assert fieldproof_verify(unzipped, fleet).returncode == 0
    assert w.custodian.get(body["download"], params={"format": "tar"}).status_code == 200
    assert [x["target_kind"] for x in w.api.events("downloaded")][-2:] == ["export", "export"]
    assert w.handler.get(body["download"]).status_code == 403
    assert w.custodian.get(f"/api/v1/cases/by-number/{CASE_A}/exports/nope").status_code == 404


def test_only_custodians_export(world: CaseWorld) -> None:
    w = world
    for client in (w.handler, w.reviewer, w.auditor):
        assert client.post(f"/api/v1/cases/by-number/{CASE_A}/export").status_code == 403
    assert w.api.events("exported") == []
    assert not (w.api.settings.data_dir / "exports").exists()


def test_altered_blob_is_never_sealed_into_a_bag(world: CaseWorld, evidence_s3: Seaweed | None) -> None:
    """Local store: the blob's bytes altered on disk. S3: the sealed version deleted behind the S3 API and
    a forgery locked under its key (test_verification.replace_behind_s3_api)."""
    from tests.server.test_verification import _alter_blob, replace_behind_s3_api

    w = world
    if evidence_s3 is None:
        _alter_blob(w.api, w.recs[2]["body"]["digest"])
    else:
        replace_behind_s3_api(w, w.recs[2], evidence_s3)
    got = w.custodian.post(f"/api/v1/cases/by-number/{CASE_A}/export")
    assert got.status_code == 409
    assert "verification" in got.json()["detail"]
    assert w.api.events("exported") == []
    assert [p.name for p in (w.api.settings.data_dir / "exports").iterdir()] == []


def test_server_export_command(world: CaseWorld, fleet: Fleet, tmp_path: Path) -> None:
    import os

    w = world
    settings = w.api.settings
    env = os.environ | {
        "FIELDPROOF_DATA_DIR": str(settings.data_dir),
        "FIELDPROOF_DATABASE_URL": settings.db_url,
        "FIELDPROOF_CA_DIR": str(fleet.ca),
        "FIELDPROOF_S3_PREFIX": settings.s3_prefix,  # the test's own prefix, when the store is S3
    }
    out = tmp_path / "court"
    done = subprocess.run(
        [str(VENV / "fieldproof"), "server", "export", CASE_A, "--as", "custodian1", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (bag,) = out.iterdir()
    assert fieldproof_verify(bag, fleet).returncode == 0
    assert [e["via"] for e in w.api.events("exported")] == ["shell"]
    refused = subprocess.run(
        [str(VENV / "fieldproof"), "server", "export", CASE_A, "--as", "handler1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert refused.returncode == 2
    assert "custodian" in refused.stderr


def test_report_text_and_text_records_are_checked(world: CaseWorld, fleet: Fleet, tmp_path: Path) -> None:
    _, bag = _export(world)
    for rel, change in (
        ("data/report.txt", lambda b: b.replace("证明对象".encode(), "证明事项".encode(), 1)),
        ("data/text-records/index.json", None),
    ):
        forged = tmp_path / rel.replace("/", "_")
        shutil.copytree(bag, forged)
        if change is not None:
            (forged / rel).write_bytes(change((forged / rel).read_bytes()))
        else:
            (pdf,) = (forged / "data" / "text-records").glob("*.pdf")
            pdf.write_bytes(pdf.read_bytes() + b"%appended\n")
        rewrite_manifests(forged)
        got = fieldproof_verify(forged, fleet, "--json")
        assert got.returncode == 1, rel
        codes = {f["code"] for f in json.loads(got.stdout)["findings"]}
        assert codes == ({"report-mismatch"} if change else {"text-record-altered"}), rel


def test_case_set_by_a_device_annotation_verifies(world: CaseWorld, fleet: Fleet, tmp_path: Path) -> None:
    from edge.journal import SpoolWriter
    from tests.server.case_helpers import USCC_A, Seg, ingest, write_spool

    w = world
    spool = tmp_path / "spool-rec2"
    recs = write_spool(spool, fleet, "REC-0002", [Seg(case="", subject=USCC_A)], start=SAMPLE_START)
    writer = SpoolWriter.create(spool, signer=fleet.signer("REC-0002"), device="REC-0002")
    writer.append(
        "annotation",
        {
            "targets": [{"device": "REC-0002", "seq": recs[0]["seq"], "hash": recs[0]["hash"]}],
            "set": {"case": CASE_A},
            "by": "12010019001",
            "reason": "立案后补录案件编号",
        },
    )
    ingest(w.api, spool, "REC-0002")
    body, bag = _export(w)
    assert body["clips"] == 4
    report = json.loads((bag / "data" / "report.json").read_text())
    clip = next(c for c in report["clips"] if c["device"] == "REC-0002")
    assert (clip["case_number"], clip["case_source"]) == (CASE_A, "device-annotation")
    assert len((bag / "data" / "records" / "REC-0002.jsonl").read_bytes().splitlines()) == 2
    ok = fieldproof_verify(bag, fleet)
    assert ok.returncode == 0, ok.stdout
