"""The dock agent end to end: spools appearing under mount_dir, control links on ptys, a real broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from edge.config import load_dock_config
from edge.dock.agent import DockAgent
from edge.sync.outbox import Outbox
from tests.edge.dock.conftest import Docked, Fleet, dock_toml
from tests.edge.dock.helpers import Responder, journal_facts, settled, sound, wait_for
from tests.provisioning.helpers import Broker

ROOT = Path(__file__).resolve().parents[3]


def test_two_recorders_docked_at_once_are_synced_clocked_and_freed(
    fleet: Fleet,
    broker: Broker,
    make_responder: Callable[..., Responder],
    dock_recorder: Callable[..., Docked],
    tmp_path: Path,
) -> None:
    responder = make_responder(broker)
    mount = tmp_path / "media"
    cfg = load_dock_config(dock_toml(fleet, tmp_path / "dock", brokers=[broker.port], mount_dir=mount))
    agent = DockAgent(
        cfg,
        server_keys=fleet.server_keys(),
        poll_s=0.2,
        retry_max_s=1.0,
        ack_timeout_s=1.0,  # type: ignore[arg-type]
        ports=str(tmp_path / "ports" / "*-dock"),
    )
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    runner.start()
    try:
        # A spool appears whole, as a mount does (the agent polls the mount directory while it is written).
        s1 = _appear(fleet.make_spool(tmp_path / "new" / "sdb1", "REC-0001", segments=4, size=120_000), mount)
        s2 = _appear(fleet.make_spool(tmp_path / "new" / "sdc1", "REC-0002", segments=3, size=90_000), mount)
        d1 = dock_recorder(s1, "REC-0001", "acm0")
        d2 = dock_recorder(s2, "REC-0002", "acm1")
        wait_for("REC-0001 settled", settled(cfg.outbox.path, "REC-0001", s1), timeout=30)
        wait_for("REC-0002 settled", settled(cfg.outbox.path, "REC-0002", s2), timeout=30)
        for d in (d1, d2):
            facts = journal_facts(d.spool)
            # The clock was measured over the link and chained, signed, by the recorder itself.
            [clock] = d.recorder.clock_calls
            assert clock["reference"] == "dock:DOCK-01/rtc"
            assert any(f.kind == "clock" and f.seq > 6 for f in facts)
            # Every file was freed, only after the server's signed ack, and the chain is still sound.
            assert not list((d.spool / "media").rglob("*.mp4"))
            assert sound(fleet, d.spool) == []
            with responder.lock:
                assert {s for (r, s) in responder.records if r == d.recorder.device} == {f.seq for f in facts}
        assert agent.status()["connected"] is True
        with Outbox(cfg.outbox.path) as ob:
            reports = ob.dockings("REC-0001")
        assert reports[0]["report"]["verified"] is True
        assert reports[0]["report"]["all_sound"] is True
    finally:
        stop.set()
        runner.join(timeout=15)
    assert not runner.is_alive()


def test_undocked_mid_transfer_resumes_at_the_next_docking(
    fleet: Fleet,
    broker: Broker,
    make_responder: Callable[..., Responder],
    dock_recorder: Callable[..., Docked],
    tmp_path: Path,
) -> None:
    responder = make_responder(broker, chunk_delay=0.01)
    mount = tmp_path / "media"
    mount.mkdir()
    cfg = load_dock_config(dock_toml(fleet, tmp_path / "dock", brokers=[broker.port], mount_dir=mount))
    agent = DockAgent(
        cfg,
        server_keys=fleet.server_keys(),
        poll_s=0.1,
        retry_max_s=1.0,
        ack_timeout_s=1.0,  # type: ignore[arg-type]
        ports=str(tmp_path / "ports" / "*-dock"),
    )
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    runner.start()
    try:
        away = fleet.make_spool(tmp_path / "recorder", "REC-0001", segments=10, size=250_000)
        spool = mount / "sdb1"
        away.rename(spool)  # docked: the mount appears
        d = dock_recorder(spool, "REC-0001", "acm0")
        wait_for("part of the transfer", lambda: len(responder.stored) >= 4)
        d.undock()
        spool.rename(away)  # undocked mid-transfer: the mount is gone
        wait_for("the agent to notice", lambda: agent.spool_root("REC-0001") is None)
        with responder.lock:
            chunks = sum(responder.chunk_msgs.values())
        time.sleep(1.0)
        with Outbox(cfg.outbox.path) as ob:
            assert ob.open_rows("REC-0001")  # unfinished, kept
        with responder.lock:
            # Without the spool no file moves (records without files may still go: their lines are kept).
            # at most the chunks already in flight
            assert sum(responder.chunk_msgs.values()) <= chunks + cfg.sync.chunk_window
        spool = mount / "sdd1"  # next time: another kernel name
        away.rename(spool)
        dock_recorder(spool, "REC-0001", "acm1")
        wait_for("REC-0001 settled", settled(cfg.outbox.path, "REC-0001", spool), timeout=30)
        assert not responder.forks
        assert sound(fleet, spool) == []
        for f in journal_facts(spool):
            if f.digest:
                assert f.digest in responder.complete
    finally:
        stop.set()
        runner.join(timeout=15)


def _sync_once(config: Path, spool: Path, link: Path | None = None, *extra: str) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "edge.dock", "sync-once", "--config", str(config), "--spool", str(spool)]
    if link is not None:
        args += ["--link", str(link)]
    args += ["--retry-max", "1", "--ack-timeout", "1", "--timeout", "60", *extra]
    return subprocess.Popen(
        args,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_sync_once_with_a_link_frees_everything_and_exits_0(
    fleet: Fleet,
    broker: Broker,
    make_responder: Callable[..., Responder],
    dock_recorder: Callable[..., Docked],
    tmp_path: Path,
) -> None:
    make_responder(broker)
    spool = fleet.make_spool(tmp_path / "spool", "REC-0002", segments=3, size=80_000)
    d = dock_recorder(spool, "REC-0002", "acm0")
    config = dock_toml(fleet, tmp_path / "dock", brokers=[broker.port], dock="DOCK-02")
    proc = _sync_once(config, spool, d.pty.b)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["finished"] is True
    assert summary["rejected"] == []
    assert summary["verification"]["all_sound"] is True
    assert summary["clock"]["applied"] is False  # the recorder here cannot set its clock
    assert len(summary["released"]) == 3
    assert set(summary["states"]) <= {"stored", "duplicate"}
    assert journal_facts(spool)[-1].kind == "release"
    assert not list((spool / "media").rglob("*.mp4"))


def test_sync_once_reports_rejections_with_exit_1_and_config_errors_with_2(
    fleet: Fleet,
    broker: Broker,
    make_responder: Callable[..., Responder],
    tmp_path: Path,
) -> None:
    make_responder(broker, reject={1: "bad-signature: test"})
    spool = fleet.make_spool(tmp_path / "spool", "REC-0001", segments=1, size=1000)
    config = dock_toml(fleet, tmp_path / "dock", brokers=[broker.port], dock="DOCK-02")
    proc = _sync_once(config, spool)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 1, err
    assert json.loads(out)["rejected"] == [{"seq": 1, "reason": "bad-signature: test"}]
    proc = _sync_once(config, spool, None, "--server-cert", str(tmp_path / "missing.pem"))
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "missing.pem" in err
    assert "Traceback" not in err


def test_sync_once_killed_9_mid_sync_resumes_from_its_outbox(
    fleet: Fleet,
    broker: Broker,
    make_responder: Callable[..., Responder],
    tmp_path: Path,
) -> None:
    responder = make_responder(broker, chunk_delay=0.01)
    spool = fleet.make_spool(tmp_path / "spool", "REC-0003", segments=12, size=250_000)
    n = len(journal_facts(spool))
    config = dock_toml(fleet, tmp_path / "dock", brokers=[broker.port], dock="DOCK-02")
    proc = _sync_once(config, spool)
    outbox = tmp_path / "dock" / "outbox.sqlite"

    def some_acked() -> bool:
        if not outbox.exists():
            return False
        with Outbox(outbox) as ob:
            return ob.summary("REC-0003").get("stored", 0) >= 6

    try:
        wait_for("part of the transfer acknowledged", some_acked, timeout=30)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # a power cut, as far as the dock process can tell
        proc.communicate(timeout=10)
    with Outbox(outbox) as ob:
        assert ob.integrity_check() == "ok"
        done_before = {r.seq for r in ob.rows("REC-0003") if r.final}
        assert len(ob.rows("REC-0003")) == n  # every record was taken before anything was sent
    assert 0 < len(done_before) < n
    with responder.lock:
        sent_before = dict(responder.record_msgs)
    proc = _sync_once(config, spool)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    assert json.loads(out)["finished"] is True
    assert responder.holds("REC-0003", n)
    assert not responder.forks
    with responder.lock:
        # What the server had acknowledged before the cut was not sent again.
        assert all(
            responder.record_msgs[("REC-0003", s)] == sent_before[("REC-0003", s)] for s in done_before
        )


def _appear(spool: Path, mount: Path) -> Path:
    """Move a finished spool into the mount directory in one rename (same filesystem)."""
    mount.mkdir(parents=True, exist_ok=True)
    target = mount / spool.name
    os.replace(spool, target)
    return target
