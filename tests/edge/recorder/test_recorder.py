"""The recorder end to end: record with metadata, buttons over the control socket, a spool that verifies."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from edge.recorder.control import request
from tests.edge.recorder.conftest import EXE, fieldproof, records, verify


def test_record_non_interactively_and_verify(make_recorder: Any, recorder_ca: Path) -> None:
    cfg, spool = make_recorder(segment_seconds=4, pre_event_seconds=3)
    fieldproof(
        "recorder",
        "record",
        "--config",
        str(cfg),
        "--fast",
        "--seconds",
        "10",
        "--pre-roll",
        "5",
        "--officer",
        "12010019001",
        "--case",
        "津人社监察〔2026〕17号",
        "--subject",
        "91120116MA05JQ2X4U",
        "--matter",
        "CF-02",
        "--scene",
        "onsite-inspection",
        "--proof",
        "现场检查情况",
        "--mark",
        "show-credentials",
    )
    report = verify(spool, recorder_ca)
    assert report["exit"] == 0, report["findings"]
    recs = records(spool)
    assert recs[0]["kind"] == "boot"
    assert recs[0]["body"]["reason"] == "power-on"
    segs = [r for r in recs if r["kind"] == "segment"]
    # 3 s of pre-event + 10 s of footage in 4 s segments.
    assert len(segs) >= 3
    assert sum(s["body"]["media"]["duration_ms"] for s in segs) >= 12_000
    first = segs[0]["body"]
    assert first["pre_event_s"] >= 2
    assert {first[k] for k in ("case", "officer", "matter", "scene")} == {
        "津人社监察〔2026〕17号",
        "12010019001",
        "CF-02",
        "onsite-inspection",
    }
    assert [s["body"]["index"] for s in segs] == list(range(len(segs)))
    assert [r["body"]["label"] for r in recs if r["kind"] == "marker"] == ["show-credentials"]
    assert all(
        s["body"]["location"] == {"fix": False, "reason": s["body"]["location"]["reason"]} for s in segs
    )


def test_bad_metadata_is_refused_before_anything_is_recorded(make_recorder: Any) -> None:
    cfg, spool = make_recorder()
    r = fieldproof(
        "recorder",
        "record",
        "--config",
        str(cfg),
        "--fast",
        "--seconds",
        "2",
        "--matter",
        "XX-99",
        check=False,
    )
    assert r.returncode == 2
    assert "enforcement-matter catalogue" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (spool / "chain.jsonl").exists()  # refused before the spool was touched


def wait_for_socket(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the recorder did not open its control socket"
        time.sleep(0.05)


def test_buttons_over_the_control_socket(make_recorder: Any, recorder_ca: Path, tmp_path: Path) -> None:
    cfg, spool = make_recorder(segment_seconds=2, pre_event_seconds=2)
    from edge.config import load_recorder_config

    sock = load_recorder_config(cfg).control.socket
    proc = subprocess.Popen(
        [EXE, "recorder", "run", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_socket(sock, proc)
        assert request(sock, {"cmd": "status"})["recording"] is None
        assert request(sock, {"cmd": "stop"}) == {"ok": False, "error": "not recording"}
        started = request(sock, {"cmd": "start"})
        assert started["ok"]
        assert request(sock, {"cmd": "mark", "label": "no-such-marker"})["ok"] is False
        assert request(sock, {"cmd": "mark", "label": "inform-rights", "note": "告知权利义务"})["ok"]
        time.sleep(5)  # live: a couple of 2 s segments are sealed
        answer = request(
            sock, {"cmd": "set", "fields": {"case": "津人社监察〔2026〕21号", "proof": "拒不提供工资台账"}}
        )
        assert answer["ok"], answer
        assert request(sock, {"cmd": "set", "fields": {"matter": "nonsense"}})["ok"] is False
        time.sleep(2.5)
        assert request(sock, {"cmd": "stop"})["ok"]
        status = request(sock, {"cmd": "status"})
        assert status["segments_sealed"] >= 3
        r = subprocess.run(
            [EXE, "recorder", "ctl", "--socket", str(sock), "set", "scene=inquiry"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["context"]["scene"] == "inquiry"
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert proc.returncode == 0
    assert not sock.exists()
    recs = records(spool)
    segs = [r for r in recs if r["kind"] == "segment"]
    set_at = next(i for i, r in enumerate(recs) if r["kind"] == "annotation")
    annotation = recs[set_at]["body"]
    # The segments sealed before the change are annotated, never edited; later ones carry it themselves.
    assert {t["seq"] for t in annotation["targets"]} == {
        r["seq"] for r in recs[:set_at] if r["kind"] == "segment"
    }
    assert annotation["set"] == {"case": "津人社监察〔2026〕21号", "proof": "拒不提供工资台账"}
    assert all(r["body"]["case"] == "" for r in recs[:set_at] if r["kind"] == "segment")
    assert all(r["body"]["case"] == "津人社监察〔2026〕21号" for r in recs[set_at:] if r["kind"] == "segment")
    assert len(segs) >= 3
    assert verify(spool, recorder_ca)["exit"] == 0
