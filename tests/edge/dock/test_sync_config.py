"""dock.toml's [sync] table: where the server's signing certificate is, and the sync client's settings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.config import load_dock_config
from edge.dock.agent import DockAgent, dock_server_keys, server_cert_path
from edge.dock.errors import DockError
from fieldproof import cli
from provisioning import init_ca
from tests.edge.dock.conftest import Fleet, dock_toml
from tests.edge.dock.helpers import Responder, journal_facts
from tests.provisioning.helpers import Broker

ROOT = Path(__file__).resolve().parents[3]


def with_sync(path: Path, table: str) -> Path:
    """Add a [sync] table to a dock.toml written by ``dock_toml``."""
    path.write_text(path.read_text("utf-8") + f"\n[sync]\n{table}\n", encoding="utf-8")
    return path


def test_a_freshly_enrolled_dock_bundle_names_its_server_certificate(fleet: Fleet) -> None:
    bundle = fleet.bundle("DOCK-01")
    config = load_dock_config(bundle / "dock.toml")
    assert config.sync.server_cert_given
    assert server_cert_path(config) == bundle.resolve() / "server-signing.pem"
    assert dock_server_keys(config, server_cert_path(config)) == fleet.server_keys()
    # Written relative, so the bundle still works after it is copied to /etc/fieldproof/.
    assert 'server_cert = "server-signing.pem"' in (bundle / "dock.toml").read_text("utf-8")


def test_sync_settings_reach_the_sync_client_and_flags_override_them(fleet: Fleet, tmp_path: Path) -> None:
    path = with_sync(
        dock_toml(fleet, tmp_path / "dock", brokers=[1883]),
        "window = 3\nchunk_window = 2\nretry_max_s = 7\nack_timeout_s = 1.5\nsession_expiry_s = 120\npoll_s = 0.5\n"
        "broker_stall_s = 4",
    )
    config = load_dock_config(path)
    agent = DockAgent(config, server_keys=fleet.server_keys())  # type: ignore[arg-type]
    try:
        c = agent.client
        assert (c.window, c.chunk_window, c.retry_max_s, c.ack_timeout_s) == (3, 2, 7.0, 1.5)
        assert (c.session_expiry_s, c.chunk_bytes, agent.poll_s) == (120, 64 * 1024, 0.5)
        assert (c.broker_stall_s, c.keepalive_s) == (4.0, 10)
    finally:
        agent.close()
    agent = DockAgent(
        config,
        server_keys=fleet.server_keys(),  # type: ignore[arg-type]
        poll_s=0.2,
        retry_max_s=2.0,
        ack_timeout_s=None,
    )
    try:
        assert (agent.client.retry_max_s, agent.client.ack_timeout_s, agent.poll_s) == (2.0, 1.5, 0.2)
        assert agent.client.window == 3
    finally:
        agent.close()
    with pytest.raises(
        DockError, match=r"out of bounds for \[sync\]: ack_timeout_s: .*greater than or equal to 0\.5"
    ):
        DockAgent(config, server_keys=fleet.server_keys(), ack_timeout_s=0.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("problem", ["missing", "foreign", "flag-out-of-bounds"])
def test_sync_once_refuses_a_bad_server_certificate_or_setting_with_exit_2(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str], problem: str
) -> None:
    spool = fleet.make_spool(tmp_path / "spool", "REC-0001", segments=1, size=1000)
    cert = tmp_path / "elsewhere" / "server-signing.pem"
    cert.parent.mkdir()
    extra: list[str] = []
    if problem == "foreign":
        init_ca(tmp_path / "other-ca")
        shutil.copy(tmp_path / "other-ca" / "server-signing.pem", cert)
        expected = "is not the fleet's server-signing certificate"
    elif problem == "missing":
        expected = f"{cert} is missing"
    else:
        shutil.copy(fleet.ca / "server-signing.pem", cert)
        extra = ["--ack-timeout", "0"]
        expected = "out of bounds for [sync]: ack_timeout_s"
    # Named in [sync], the certificate is used as named: not searched for beside the TLS CA, where the
    # bundle's genuine one is.
    config = with_sync(dock_toml(fleet, tmp_path / "dock", brokers=[1883]), f'server_cert = "{cert}"')
    argv = ["dock", "sync-once", "--config", str(config), "--spool", str(spool), "--timeout", "5", *extra]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fieldproof dock: ")
    assert expected in err
    assert "Traceback" not in err


def test_sync_once_runs_on_the_sync_table_alone(
    fleet: Fleet, broker: Broker, make_responder: Callable[..., Responder], tmp_path: Path
) -> None:
    responder = make_responder(broker)
    spool = fleet.make_spool(tmp_path / "spool", "REC-0002", segments=2, size=50_000)
    cert = tmp_path / "certs" / "server.pem"
    cert.parent.mkdir()
    shutil.copy(fleet.ca / "server-signing.pem", cert)
    # DOCK-02, not DOCK-03: test_sync revokes DOCK-03 in the session's fleet.
    config = with_sync(
        dock_toml(fleet, tmp_path / "dock", brokers=[broker.port], dock="DOCK-02"),
        f'server_cert = "{cert}"\nretry_max_s = 1\nack_timeout_s = 1\nchunk_window = 2',
    )
    # No --server-cert, --retry-max or --ack-timeout: everything comes from [sync].
    argv = ["sync-once", "--config", str(config), "--spool", str(spool), "--timeout", "60"]
    proc = subprocess.run(
        [sys.executable, "-m", "edge.dock", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["finished"] is True
    assert set(summary["states"]) <= {"stored", "duplicate"}
    assert responder.holds("REC-0002", len(journal_facts(spool)))
