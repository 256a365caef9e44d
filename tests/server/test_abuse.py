"""Tampering and abuse through the real broker: each is refused with the protocol's code, kept as a
custody event, and nothing wrong is filed."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from custody.signing import seal
from custody.timefmt import parse_timestamp, utc_timestamp
from edge.sync.protocol import MAX_CHUNK, MAX_RECORD_MESSAGE, chunk_properties, record_message
from provisioning import revoke
from server.config import ServerSettings
from server.custody_log.service import events_for
from server.db import make_engine, session_factory
from server.evidence.models import EvidenceFile, Segment
from server.ingest.models import Record
from tests.server.conftest import Fleet, RunningIngest
from tests.server.dock import TestDock, spool_records

ZERO = "sha256:" + "0" * 64


def _events(settings: ServerSettings, **kw: Any) -> list[Any]:
    with session_factory(make_engine(settings.db_url))() as s:
        return events_for(session=s, **kw)


def _count(settings: ServerSettings, model: Any, *where: Any) -> int:
    with session_factory(make_engine(settings.db_url))() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where)) or 0


def test_tampered_and_abusive_messages_are_rejected_and_logged(
    tmp_path: Path, fleet: Fleet, settings: ServerSettings, ingest: RunningIngest, dock: TestDock
) -> None:
    spool = fleet.make_spool(tmp_path / "spool", segments=3)
    records = spool_records(spool)
    cert = fleet.cert("REC-0001")
    seg_i = [i for i, (_, r) in enumerate(records) if r["kind"] == "segment"]
    assert dock.send_record("REC-0001", records[0][0], [cert])["status"] == "stored"

    # -- an altered record: a changed member breaks the signature; changed spacing breaks the form.
    line, rec = records[1]
    altered = line.replace(b'"index":0', b'"index":7')
    assert altered != line
    ack = dock.send_record("REC-0001", altered)
    assert (ack["status"], ack["reason"].split(":")[0]) == ("rejected", "bad-signature")
    ack = dock.send_record("REC-0001", line.replace(b'{"record":{', b'{"record": {'))
    assert (ack["status"], ack["reason"].split(":")[0]) == ("rejected", "malformed")

    # -- altered file bytes: the whole file arrives, its hash is not the signed one.
    assert dock.send_record("REC-0001", line)["status"] == "pending"
    data = (spool / "media" / rec["body"]["file"]).read_bytes()
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0x01
    ack = dock.send_chunks("REC-0001", rec["seq"], rec["body"]["digest"], bytes(bad))
    assert (ack["status"], ack["reason"].split(":")[0]) == ("rejected", "hash-mismatch")
    assert _count(settings, EvidenceFile, EvidenceFile.status == "stored") == 0
    # The staged bytes were discarded; the dock may resend once, and the right bytes are filed.
    assert dock.have("REC-0001")["pending"] == {rec["body"]["digest"]: 0}
    assert dock.send_chunks("REC-0001", rec["seq"], rec["body"]["digest"], data)["status"] == "stored"

    # -- a chunk for a file no accepted record announced; a chunk whose size is not the signed one.
    ack = dock.send_chunks("REC-0001", 99, ZERO, b"x" * 100)
    assert (ack["status"], ack["reason"].split(":")[0]) == ("rejected", "unannounced")
    rec2 = records[seg_i[1]][1]
    for i in range(2, seg_i[1] + 1):
        dock.send_record("REC-0001", records[i][0])
    ack = dock.send_chunks(
        "REC-0001", rec2["seq"], rec2["body"]["digest"], b"y" * 10, size=rec2["body"]["size"] + 1
    )
    assert (ack["status"], ack["reason"].split(":")[0]) == ("rejected", "size-mismatch")
    # A chunk running past the size it states.
    since = dock.mark()
    props = chunk_properties(
        recorder="REC-0001", seq=rec2["seq"], digest=rec2["body"]["digest"], offset=5, size=8
    )
    dock.publish("chunk", b"0123456789", props)
    assert dock.wait_ack(since, seq=rec2["seq"], status="rejected")["reason"].startswith("size-mismatch")

    # -- replays: the same record again is a duplicate (nothing changes); another record with a seq the
    # server holds (a chain restarted with the same key) is a fork; a wrong prev is a broken link.
    assert dock.send_record("REC-0001", records[0][0])["status"] == "duplicate"
    other = spool_records(fleet.make_spool(tmp_path / "other-spool", segments=1))
    ack = dock.send_record("REC-0001", other[1][0])
    assert (ack["status"], ack["reason"].split(":")[0]) == ("rejected", "fork")
    held = seg_i[1]
    forged = dict(records[held + 1][1])
    forged["prev"] = records[0][1]["prev"] or ZERO
    forged_line = seal(forged, fleet.signer("REC-0001")).line
    ack = dock.send_record("REC-0001", forged_line)
    assert (ack["status"], ack["reason"].split(":")[0]) == ("rejected", "broken-link")

    # -- a foreign CA's device with our recorder's id; and a key the server has no certificate for.
    foreign = spool_records(fleet.make_spool(tmp_path / "foreign", "REC-0001", segments=1, foreign=True))
    ack = dock.send_record("REC-0001", foreign[0][0], [fleet.cert("REC-0001", foreign=True)])
    assert (ack["status"], ack["reason"].split(":")[0]) == ("rejected", "foreign-ca")
    ack = dock.send_record("REC-0001", foreign[0][0])
    assert (ack["status"], ack["reason"].split(":")[0]) == ("rejected", "unknown-device")
    # A record signed by REC-0002's key that claims to be REC-0001's.
    claim = dict(records[held + 1][1])
    ack = dock.send_record("REC-0001", seal(claim, fleet.signer("REC-0002")).line, [fleet.cert("REC-0002")])
    assert (ack["status"], ack["reason"].split(":")[0]) == ("rejected", "unknown-device")

    # -- oversize: a record message past 256 KiB, a chunk past 8 MiB.
    big = json.loads(record_message("REC-0001", records[held + 1][0]))
    big["certs"] = ["x" * (MAX_RECORD_MESSAGE // 2)] * 3
    since = dock.mark()
    dock.send_raw_record(json.dumps(big).encode())
    ack = dock.wait_ack(since, seq=records[held + 1][1]["seq"])
    assert (ack["status"], ack["reason"].split(":")[0]) == ("rejected", "too-large")
    ack = dock.send_chunks(
        "REC-0001",
        rec2["seq"],
        rec2["body"]["digest"],
        os.urandom(MAX_CHUNK + 1),
        chunk=MAX_CHUNK + 1,
        size=rec2["body"]["size"],
    )
    assert (ack["status"], ack["reason"].split(":")[0]) == ("rejected", "too-large")

    # -- malformed payloads: not JSON (no one to answer); JSON naming a recorder and seq (answered).
    dock.send_raw_record(b"\xff\xfe not json")
    since = dock.mark()
    dock.send_raw_record(
        json.dumps(
            {"v": 1, "msg": "record", "recorder": "REC-0001", "line": '{"record":{"seq":41}}'}
        ).encode()
    )
    ack = dock.wait_ack(since, seq=41)
    assert (ack["status"], ack["reason"].split(":")[0]) == ("rejected", "malformed")
    dock.publish("nonsense", b"{}")

    # Wait for the last one to be handled: a have? is answered in order after it.
    dock.have("REC-0001")
    codes = {e.code for e in _events(settings, kind="rejected")}
    assert codes >= {
        "bad-signature",
        "malformed",
        "hash-mismatch",
        "unannounced",
        "size-mismatch",
        "fork",
        "broken-link",
        "foreign-ca",
        "unknown-device",
        "too-large",
    }
    # The not-JSON record and the unknown topic are events without an answer.
    heads = [
        json.loads(e.detail).get("payload_head", "")
        for e in _events(settings, kind="rejected", code="malformed")
    ]
    assert any("not json" in h for h in heads)
    assert any("unknown topic" in json.loads(e.detail)["reason"] for e in _events(settings, code="malformed"))
    # A fork is evidence in itself: its signed line is kept whole in the event.
    fork = _events(settings, code="fork")[0]
    assert json.loads(fork.detail)["line"].encode() == other[1][0]

    # Nothing wrong was filed: exactly the spool's own records, the two segment files with their bytes.
    with session_factory(make_engine(settings.db_url))() as s:
        held_lines = {r.seq: r.line for r in s.scalars(select(Record))}
        assert held_lines == {r["seq"]: line for line, r in records[: seg_i[1] + 1]}
        assert {seg.digest for seg in s.scalars(select(Segment))} == {
            records[i][1]["body"]["digest"] for i in seg_i[:2]
        }
    assert not dock.forged
    assert ingest.alive()


def test_revoked_device_after_its_revocation_time(
    tmp_path: Path, fleet: Fleet, settings: ServerSettings, ingest: RunningIngest, dock: TestDock
) -> None:
    device = fleet.enroll_recorder()
    spool = fleet.make_spool(tmp_path / "spool", device, segments=3)
    records = spool_records(spool)
    seg_i = [i for i, (_, r) in enumerate(records) if r["kind"] == "segment"]
    first_upload = records[: seg_i[0] + 1]
    for i, (line, rec) in enumerate(first_upload):
        ack = dock.send_record(device, line, [fleet.cert(device)] if i == 0 else None)
        if ack["status"] == "pending":
            data = (spool / "media" / rec["body"]["file"]).read_bytes()
            assert dock.send_chunks(device, rec["seq"], rec["body"]["digest"], data)["status"] == "stored"

    # The device is lost; IT revokes it as of the moment it was lost: just before segment 3 was recorded.
    last_seg = records[seg_i[2]][1]
    lost_at = parse_timestamp(last_seg["time"]).replace(microsecond=0)
    assert records[seg_i[2] - 1][1]["time"] < utc_timestamp(lost_at) <= last_seg["time"]
    revoke(fleet.ca, device=device, at=lost_at, reason="keyCompromise")

    # The server picks up the new CRL and revocations.json without a restart.
    later = records[seg_i[0] + 1 :]
    answers = {rec["seq"]: dock.send_record(device, line) for line, rec in later}
    for _, rec in later:
        a = answers[rec["seq"]]
        if rec["time"] >= utc_timestamp(lost_at):
            assert (a["status"], a["reason"].split(":")[0]) == ("rejected", "revoked"), rec["kind"]
        else:
            assert a["status"] in ("stored", "pending"), (rec["kind"], a)
    assert answers[last_seg["seq"]]["status"] == "rejected"
    revoked = _events(settings, kind="rejected", code="revoked")
    assert {e.seq for e in revoked} == {r["seq"] for _, r in later if r["time"] >= utc_timestamp(lost_at)}
    # Records dated before the loss but received after the revocation are filed with a warning.
    warned = {e.seq for e in _events(settings, kind="warning", device=device)}
    assert warned == {r["seq"] for _, r in later if r["time"] < utc_timestamp(lost_at)}
    # What was filed before the revocation stays (a duplicate is answered as such).
    assert dock.send_record(device, records[0][0])["status"] == "duplicate"
    assert _count(settings, Record, Record.device == device, Record.seq == last_seg["seq"]) == 0
    assert timedelta(0) < parse_timestamp(last_seg["time"]) - lost_at < timedelta(seconds=1)
