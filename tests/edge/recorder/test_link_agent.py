"""The recorder agent's control link: `fieldproof recorder run` with [link] on one end of a socat pty
pair, the dock's `DockLink` on the other — identity, status, the signed clock record, erase-after-ack."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from custody.examine import RecordFacts, examine_line
from custody.signing import key_id
from custody.spool import JOURNAL, Spool
from custody.timefmt import now_timestamp
from custody.trust import TrustStore
from custody.verify import ChainVerifier
from edge.recorder.agent import FIRMWARE
from edge.recorder.control import request
from edge.recorder.link import DockLink, LinkError
from edge.sync.protocol import signed_ack
from provisioning import init_ca
from tests.edge.dock.helpers import PtyPair, pty_pair, wait_for
from tests.edge.recorder.conftest import EXE


@dataclass
class Running:
    """`fieldproof recorder run` with its control link on ``pair.a``; the dock's end is ``pair.b``."""

    proc: subprocess.Popen[str]
    config: Path
    spool: Path
    socket: Path
    pair: PtyPair

    @property
    def bundle(self) -> Path:
        return self.config.parent

    @property
    def device(self) -> str:
        return self.bundle.name

    def dock(self, timeout: float = 30) -> DockLink:
        """A DockLink on the dock's end, once the recorder answers ``identity`` there."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, self.output()
            try:
                link = DockLink(str(self.pair.b), timeout=1.0)
            except LinkError:
                link = None  # the pty is not there (yet)
            if link is not None:
                try:
                    link.identity()
                    return link
                except LinkError:
                    link.close()
            assert time.monotonic() < deadline, f"no identity answer on {self.pair.b}\n{self.output()}"
            time.sleep(0.2)

    def stop(self) -> tuple[int, str, str]:
        """SIGTERM, as systemd stops it; returns the exit code and what it printed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=10)
        return self.proc.returncode, out, err

    def output(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        out, err = self.proc.communicate()
        return f"exit {self.proc.returncode}\n{out}\n{err}"


@pytest.fixture
def running(make_recorder: Any, tmp_path: Path) -> Iterator[Running]:
    ports = tmp_path / "ports"
    ports.mkdir()
    pair = pty_pair(ports, "ctl")
    run: Running | None = None
    try:
        config, spool = make_recorder(
            segment_seconds=2,
            pre_event_seconds=2,
            width=320,
            height=240,
            fps=15,
            audio=False,
            link={"port": str(pair.a)},  # a symlink to the pty, as udev would make one
        )
        proc = subprocess.Popen(
            [EXE, "recorder", "run", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # conftest's make_recorder puts the control socket at <tmp>/<device>.sock.
        run = Running(proc, config, spool, tmp_path / f"{config.parent.name}.sock", pair)
        yield run
    finally:
        if run is not None:
            run.stop()  # by PID (SIGTERM, then SIGKILL)
            run.pair.stop()
        pair.stop()


def record_segments(run: Running, dock: DockLink, n: int) -> None:
    """Press record, wait (asking over the link) until ``n`` segments are sealed, press stop."""
    wait_for("the control socket", run.socket.exists, timeout=30)
    answer = request(run.socket, {"cmd": "start"})
    assert answer["ok"], answer
    wait_for(f"{n} segments sealed", lambda: dock.status()["segments_sealed"] >= n, timeout=60)
    answer = request(run.socket, {"cmd": "stop"})
    assert answer["ok"], answer


def facts(run: Running) -> list[RecordFacts]:
    """Every journal line, its signature checked against the recorder's own signing key."""
    cert = x509.load_pem_x509_certificate((run.bundle / "signing.pem").read_bytes())
    pub = cert.public_key()
    assert isinstance(pub, Ed25519PublicKey)
    keys = {key_id(cert): pub}
    raw = (run.spool / JOURNAL).read_bytes().splitlines(True)
    return [examine_line(i + 1, line, keys) for i, line in enumerate(raw)]


def server_signer(ca: Path) -> tuple[Ed25519PrivateKey, str]:
    """The test CA's server-signing key (what the server's ingest signs acks with) and its key id."""
    key = serialization.load_pem_private_key((ca / "server-signing.key").read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    return key, key_id(x509.load_pem_x509_certificate((ca / "server-signing.pem").read_bytes()))


def ack(key: Ed25519PrivateKey, kid: str, **fields: Any) -> dict[str, Any]:
    base = {"reason": "", "received": 0, "server_time": now_timestamp()}
    parsed: dict[str, Any] = json.loads(signed_ack(key, kid, **{**base, **fields}))
    return parsed


def sound(ca: Path, spool: Path) -> list[str]:
    trust = TrustStore.from_paths(ca=[ca / "root-ca.pem"], certs=[ca / "ca-chain.pem"])
    report = ChainVerifier(trust, workers=1).verify_spool(Spool.open(spool))
    return [] if report.all_sound else [f.message for f in report.findings]


def media_files(spool: Path) -> set[str]:
    return {p.relative_to(spool / "media").as_posix() for p in (spool / "media").rglob("*.mp4")}


def test_the_dock_talks_to_the_running_recorder_over_its_link(running: Running, recorder_ca: Path) -> None:
    dock = running.dock()
    try:
        ident = dock.identity()
        assert ident == {
            "v": 1,
            "id": ident["id"],
            "ok": True,
            "device": running.device,
            "role": "recorder",
            "firmware": FIRMWARE,
            "spool": str(running.spool.resolve()),
            "link": 1,
        }

        record_segments(running, dock, 2)
        segments = [f for f in facts(running) if f.kind == "segment"]
        assert len(segments) >= 2
        st = dock.status()
        assert st["device"] == running.device
        assert st["recording"] is None
        assert st["segments_sealed"] == len(segments)
        assert st["next_seq"] == len(facts(running))
        assert st["spool"]["path"] == str(running.spool.resolve())
        assert st["spool"]["used_bytes"] >= sum(f.size or 0 for f in segments) > 0
        assert st["spool"]["free_bytes"] > 0

        # The clock exchange: the recorder measures, chains and signs; this recorder cannot step its clock.
        before = facts(running)
        out = dock.set_clock(reference="dock:DOCK-01/rtc", apply=True)
        assert out["applied"] is False
        assert abs(out["offset_ms"]) <= max(50, out["rtt_ms"])  # one machine, one clock
        after = facts(running)
        [clock] = after[len(before) :]
        assert (clock.kind, clock.ok, clock.signature_ok) == ("clock", True, True)
        assert clock.device == running.device
        assert clock.clock_applied is False
        assert out["record"] == {"seq": clock.seq, "hash": clock.hash}
        body = json.loads((running.spool / JOURNAL).read_bytes().splitlines()[-1])["record"]["body"]
        assert body["reference"] == "dock:DOCK-01/rtc"
        assert body["offset_ms"] == out["offset_ms"]

        # Erase-after-ack: only the server's genuine signature frees a file, and exactly that file.
        key, kid = server_signer(recorder_ca)
        s0, s1 = segments[0], segments[1]
        files_before = media_files(running.spool)
        assert {s0.file, s1.file} <= files_before
        lines_before = len(facts(running))

        forged = ack(
            Ed25519PrivateKey.generate(),
            kid,
            recorder=running.device,
            seq=s0.seq,
            hash=s0.hash,
            status="stored",
        )
        ans = dock.release([forged])
        assert ans["released"] == []
        assert ans["accepted"] == []
        assert [(r["seq"], r["reason"].split(":")[0]) for r in ans["refused"]] == [(s0.seq, "bad-signature")]
        # Signed by the server, but naming another record's hash at that seq: the agent's own check.
        mismatched = ack(key, kid, recorder=running.device, seq=s1.seq, hash=s0.hash, status="stored")
        ans = dock.release([mismatched])
        assert ans["released"] == []
        assert media_files(running.spool) == files_before
        assert len(facts(running)) == lines_before  # nothing chained for acks that free nothing

        good = ack(
            key, kid, recorder=running.device, seq=s0.seq, hash=s0.hash, status="stored", received=s0.size
        )
        ans = dock.release([good])
        assert ans["released"] == [s0.file]
        assert ans["accepted"] == [s0.seq]
        assert media_files(running.spool) == files_before - {s0.file}
        release = facts(running)[-1]
        assert (release.kind, release.ok, release.signature_ok) == ("release", True, True)
        assert release.released == ((s0.seq, s0.hash),)
        assert len(facts(running)) == lines_before + 1
        # Asked again: the file is gone, nothing more is freed or chained.
        assert dock.release([good])["released"] == []
        assert len(facts(running)) == lines_before + 1

        # The records chained while docked come over the link, as the dock reads them.
        lines = (running.spool / JOURNAL).read_bytes().splitlines(True)
        assert clock.seq is not None
        assert dock.records(clock.seq) == lines[clock.seq :]
    finally:
        dock.close()

    code, out, err = running.stop()
    assert code == 0, err
    assert "Traceback" not in err
    assert f"recorder {running.device}: stopped" in out
    # The freed file is covered by its release record: the chain verifies whole.
    assert sound(recorder_ca, running.spool) == []


def test_the_link_survives_undocking_and_answers_at_the_next_docking(
    running: Running, tmp_path: Path
) -> None:
    dock = running.dock()
    assert dock.identity()["device"] == running.device
    dock.close()
    running.pair.stop()  # undocked: the port is gone under the recorder's feet
    time.sleep(1.5)
    assert running.proc.poll() is None, running.output()
    running.pair = pty_pair(running.pair.a.parent, "ctl")  # docked again, a new port at the same name
    dock = running.dock(timeout=20)
    try:
        assert dock.identity()["device"] == running.device
        assert dock.status()["device"] == running.device
        out = dock.set_clock(reference="dock:DOCK-02/ntp", apply=False)
        assert out["record"]["seq"] == facts(running)[-1].seq
    finally:
        dock.close()
    code, _out, err = running.stop()
    assert code == 0, err
    assert "Traceback" not in err


@pytest.mark.parametrize("problem", ["missing", "foreign"])
def test_a_link_without_a_usable_server_certificate_is_a_config_error_at_start(
    make_recorder: Any, tmp_path: Path, problem: str
) -> None:
    config, spool = make_recorder(link={"port": "/dev/ttyGS0"}, audio=False)
    cert = config.parent / "server-signing.pem"
    if problem == "missing":
        cert.unlink()
        expected = "is missing"
    else:
        other = tmp_path / "other-ca"
        init_ca(other)
        shutil.copy(other / "server-signing.pem", cert)  # a planted certificate of another CA
        expected = "is not the fleet's server-signing certificate"
    r = subprocess.run(
        [EXE, "recorder", "run", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "[signing] server_cert" in r.stderr
    assert str(cert) in r.stderr
    assert expected in r.stderr
    # Refused before anything was chained.
    assert not (spool / JOURNAL).exists()


def test_without_a_link_the_server_certificate_is_not_needed_to_record(make_recorder: Any) -> None:
    config, spool = make_recorder(link={"enabled": False, "port": "/dev/ttyGS0"}, audio=False)
    (config.parent / "server-signing.pem").unlink()
    r = subprocess.run(
        [EXE, "recorder", "record", "--config", str(config), "--seconds", "2", "--fast"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    kinds = [json.loads(x)["record"]["kind"] for x in (spool / JOURNAL).read_text().splitlines()]
    assert kinds[0] == "boot"
    assert "segment" in kinds
