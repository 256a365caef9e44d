"""Dock → the real server ingest (server/ingest, SQLite), over the real broker: records filed, files freed."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from custody.digest import file_digest
from edge.config import load_dock_config
from edge.dock.agent import DockAgent
from edge.sync.outbox import Outbox
from server.config import ServerSettings
from server.db import make_engine, migrate, session_factory
from server.evidence.models import EvidenceFile
from server.ingest.models import Record
from server.ingest.worker import IngestWorker
from tests.edge.dock.conftest import Docked, Fleet, dock_toml
from tests.edge.dock.helpers import journal_facts, settled, sound, wait_for
from tests.provisioning.helpers import Broker

_GROUPS = itertools.count(1)


@pytest.fixture
def ingest(fleet: Fleet, broker: Broker, tmp_path: Path) -> Iterator[ServerSettings]:
    """One real ingest worker on a thread, on a freshly migrated SQLite database."""
    data = tmp_path / "server"
    data.mkdir()
    url = f"sqlite:///{data / 'fieldproof.db'}"
    migrate(url)
    settings = ServerSettings(
        data_dir=data,
        database_url=url,
        ca_dir=fleet.ca,
        mqtt_host="127.0.0.1",
        mqtt_port=broker.port,
        share_group=f"dockingest{next(_GROUPS)}",
    )
    settings.check_data_dir()
    worker = IngestWorker(settings, client_id=f"dock-test-ingest-{next(_GROUPS)}")
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert worker.subscribed.wait(10), "the ingest worker did not subscribe"
        yield settings
    finally:
        stop.set()
        thread.join(10)


def _run_agent(
    fleet: Fleet, broker: Broker, where: Path, mount: Path, dock: str
) -> tuple[DockAgent, Callable[[], None]]:
    cfg = load_dock_config(dock_toml(fleet, where, brokers=[broker.port], mount_dir=mount, dock=dock))
    agent = DockAgent(
        cfg,
        server_keys=fleet.server_keys(),
        poll_s=0.2,
        retry_max_s=1.0,
        ack_timeout_s=2.0,  # type: ignore[arg-type]
        ports=str(mount.parent / "ports" / "*-dock"),
    )
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    runner.start()

    def halt() -> None:
        stop.set()
        runner.join(15)

    return agent, halt


def test_dock_to_real_ingest_files_everything_and_the_recorder_frees_on_its_signed_acks(
    fleet: Fleet, broker: Broker, ingest: ServerSettings, dock_recorder: Callable[..., Docked], tmp_path: Path
) -> None:
    mount = tmp_path / "media"
    spool = fleet.make_spool(mount / "sdb1", "REC-0002", segments=4, size=300_000)
    originals = {f.digest: (spool / "media" / f.file).read_bytes() for f in journal_facts(spool) if f.file}
    agent, halt = _run_agent(fleet, broker, tmp_path / "dock", mount, "DOCK-01")
    try:
        first = dock_recorder(spool, "REC-0002", "acm0")
        wait_for("the spool settled through ingest", settled(agent.config.outbox.path, "REC-0002", spool), 60)
        # The committed files' staging, set aside by their commits, is removed by the worker's tidy
        # thread while it runs (only the 256 lock files stay).
        wait_for(
            "the committed files' staging removed",
            lambda: not [p.name for p in ingest.staging_dir.iterdir() if not p.name.startswith(".lock-")],
            10,
        )
    finally:
        halt()
        first.undock()
    facts = journal_facts(spool)
    kinds = [f.kind for f in facts]
    # Chained while docked, signed by the recorder: the clock correction, then the release(s).
    assert kinds[8] == "clock"
    assert kinds[9:]
    assert set(kinds[9:]) == {"release"}
    engine = make_engine(ingest.db_url)
    with session_factory(engine)() as s:
        seqs = s.scalars(select(Record.seq).where(Record.device == "REC-0002").order_by(Record.seq)).all()
        assert seqs == [f.seq for f in facts]
        files = s.scalars(select(EvidenceFile)).all()
        assert {f.digest for f in files} == set(originals)
        for f in files:
            assert f.status == "stored"
            assert file_digest(ingest.store_root / f.blob_key) == (f.digest, f.size)
            assert (ingest.store_root / f.blob_key).read_bytes() == originals[f.digest]
    # The recorder freed each file on the server's real signature, and its chain says so soundly.
    assert not list((spool / "media").rglob("*.mp4"))
    assert sound(fleet, spool) == []

    # Another dock, its own empty outbox, the same spool docked again: what the server holds comes back
    # `duplicate` and is not filed again; only the new clock record of this docking is new.
    agent2, halt2 = _run_agent(fleet, broker, tmp_path / "dock2", mount, "DOCK-02")
    try:
        dock_recorder(spool, "REC-0002", "acm1")
        wait_for(
            "the second docking settled",
            settled(agent2.config.outbox.path, "REC-0002", spool, len(facts) + 1),
            60,
        )
    finally:
        halt2()
    now = journal_facts(spool)
    assert [f.kind for f in now[len(facts) :]] == ["clock"]
    with Outbox(agent2.config.outbox.path) as ob:
        states = {r.seq: r.state for r in ob.rows("REC-0002")}
    assert {states[f.seq] for f in facts} == {"duplicate"}
    assert states[now[-1].seq] == "stored"
    with session_factory(engine)() as s:
        assert s.scalar(select(func.count()).select_from(Record).where(Record.device == "REC-0002")) == len(
            now
        )
    engine.dispose()
