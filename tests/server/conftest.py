"""Server fixtures: real databases (SQLite and Debian's PostgreSQL 15), a real fleet CA and Mosquitto,
an ingest worker on its own thread, and a test dock speaking the sync protocol over mutual TLS.

Migrations run once per database engine, into a template; every test gets a fresh copy of it
(a file copy for SQLite, ``CREATE DATABASE … TEMPLATE`` for PostgreSQL), so ingest threads and
subprocesses see ordinary committed data — no rolled-back-transaction trick could span them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from custody.signing import Ed25519Signer
from fieldproof.sample_chain import write_sample_spool
from provisioning import enroll, init_ca, write_broker_config
from server.config import ServerSettings
from server.db import migrate
from server.ingest.acks import AckSigner
from server.ingest.worker import IngestWorker
from tests.provisioning.helpers import WAIT, Broker, free_port
from tests.server.dock import TestDock
from tests.server.seaweed import ACCESS_KEY, Seaweed

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SAMPLE_START = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
_NAMES = itertools.count(1)


# -- databases -------------------------------------------------------------------------------------


@dataclass
class Postgres:
    """A PostgreSQL 15 cluster in a temporary directory, run as the postgres user, stopped by pg_ctl."""

    root: Path
    port: int

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, db: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def create(self, db: str, template: str | None = None) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db}"' + (f' TEMPLATE "{template}"' if template else ""))


def _pg(*args: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """Start Debian's PostgreSQL 15 (FACTS.md recipe: initdb refuses root, so run it as postgres)."""
    # Not under pytest's tmp dir: that is 0700 root, which the postgres user cannot traverse.
    root = Path(tempfile.mkdtemp(prefix="fieldproof-pg-"))
    shutil.chown(root, "postgres", "postgres")
    port = free_port()
    _pg(
        str(PG_BIN / "initdb"),
        "-D",
        f"{root}/data",
        "-U",
        "postgres",
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--locale=C.UTF-8",
        "-N",
    )
    # fsync stays on: the tests check durability claims, and it costs little on this disk.
    _pg(
        str(PG_BIN / "pg_ctl"),
        "-D",
        f"{root}/data",
        "-l",
        f"{root}/pg.log",
        "-w",
        "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200",
        "start",
    )
    try:
        yield Postgres(root, port)
    finally:
        _pg(str(PG_BIN / "pg_ctl"), "-D", f"{root}/data", "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database file to copy."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_template(postgres: Postgres) -> str:
    """A migrated PostgreSQL database to use as a template."""
    postgres.create("fp_template")
    migrate(postgres.url("fp_template"))
    return "fp_template"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated database of each kind."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "fieldproof.db"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"
    pg: Postgres = request.getfixturevalue("postgres")
    name = f"fp_{next(_NAMES)}_{os.getpid()}"
    pg.create(name, template=request.getfixturevalue("postgres_template"))
    return pg.url(name)


# -- fleet and broker --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fleet:
    """A provisioned fleet: our CA with recorders and docks, and a foreign CA."""

    ca: Path
    foreign_ca: Path

    def bundle(self, device: str, *, foreign: bool = False) -> Path:
        return (self.foreign_ca if foreign else self.ca) / "devices" / device

    def signer(self, device: str, *, foreign: bool = False) -> Ed25519Signer:
        b = self.bundle(device, foreign=foreign)
        return Ed25519Signer.from_files(b / "signing.key", b / "signing.pem")

    def cert(self, device: str, *, foreign: bool = False) -> str:
        return (self.bundle(device, foreign=foreign) / "signing.pem").read_text()

    def enroll_recorder(self) -> str:
        """A fresh recorder id, enrolled now (for tests that revoke it)."""
        device = f"REC-T{next(_NAMES):04d}-{os.getpid() % 10000}"
        enroll(self.ca, device=device, role="recorder")
        return device

    def make_spool(
        self,
        root: Path,
        device: str = "REC-0001",
        *,
        segments: int = 3,
        size: int = 200_000,
        foreign: bool = False,
        start: datetime = SAMPLE_START,
    ) -> Path:
        write_sample_spool(
            root,
            signer=self.signer(device, foreign=foreign),
            device=device,
            segments=segments,
            media=lambda i: os.urandom(size + 1000 * i),
            ca_chain=((self.foreign_ca if foreign else self.ca) / "ca-chain.pem").read_bytes(),
            start=start,
        )
        return root


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    base = tmp_path_factory.mktemp("server-fleet")
    ca, foreign = base / "ca", base / "foreign-ca"
    init_ca(ca)
    for device, role in (
        ("REC-0001", "recorder"),
        ("REC-0002", "recorder"),
        ("DOCK-01", "dock"),
        ("DOCK-02", "dock"),
    ):
        enroll(ca, device=device, role=role)
    init_ca(foreign)
    enroll(foreign, device="REC-0001", role="recorder")  # the same id as ours, another CA
    return Fleet(ca, foreign)


@pytest.fixture(scope="session")
def broker(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One Mosquitto for the session, configured by provisioning for our CA (mTLS, ACL, raised queues)."""
    out = tmp_path_factory.mktemp("server-broker")
    port = free_port()
    conf = write_broker_config(fleet.ca, out=out / "conf", port=port, user=None)
    b = Broker(conf=conf, port=port, log=out / "mosquitto.log")
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="session", autouse=True)
def evidence_s3() -> Iterator[Seaweed | None]:
    """FIELDPROOF_TEST_STORE=s3: one SeaweedFS for the session (tests/server/seaweed.py), else None.
    Its FIELDPROOF_S3_* variables are set for the session, so every ServerSettings a test makes (and
    every server process it starts) uses it; the ``settings`` fixture adds a prefix per test."""
    if os.environ.get("FIELDPROOF_TEST_STORE", "local") != "s3":
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="fieldproof-seaweed-"))
    sw = Seaweed(root).start()
    env = {
        "FIELDPROOF_STORE_BACKEND": "s3",
        "FIELDPROOF_S3_ENDPOINT": sw.endpoint,
        "FIELDPROOF_S3_BUCKET": "evidence",
        "FIELDPROOF_S3_ACCESS_KEY_ID": ACCESS_KEY,
        "FIELDPROOF_S3_SECRET_ACCESS_KEY": sw.secret_key,
        "FIELDPROOF_S3_OBJECT_LOCK_DAYS": "1",
    }
    saved = {k: os.environ.get(k) for k in env}
    try:
        sw.make_bucket("evidence")
        os.environ.update(env)
        yield sw
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        sw.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def settings(
    tmp_path: Path, database_url: str, fleet: Fleet, broker: Broker, evidence_s3: Seaweed | None
) -> ServerSettings:
    """Server settings for one test: its own database, data dir and store, and its own share group.
    The store is local, or (FIELDPROOF_TEST_STORE=s3) a prefix of its own in SeaweedFS."""
    s3 = {} if evidence_s3 is None else {"s3_prefix": f"t{next(_NAMES)}-{os.getpid()}/"}
    return ServerSettings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        ca_dir=fleet.ca,
        mqtt_host="127.0.0.1",
        mqtt_port=broker.port,
        share_group=f"ingest{next(_NAMES)}",
        **s3,  # type: ignore[arg-type]
    )


@pytest.fixture
def server_keys(fleet: Fleet) -> dict[str, object]:
    """What a dock checks acks with: the server-signing certificate's key."""
    return dict(AckSigner.from_ca_dir(fleet.ca).public_keys)


# -- ingest worker and dock ----------------------------------------------------------------------------


@dataclass
class RunningIngest:
    """An ingest worker running on a thread of the test process."""

    worker: IngestWorker
    thread: threading.Thread
    stop: threading.Event

    def alive(self) -> bool:
        return self.thread.is_alive()


@pytest.fixture
def ingest(settings: ServerSettings) -> Iterator[RunningIngest]:
    """Start an ingest worker and wait until it holds its subscription; stopped after the test."""
    settings.check_data_dir()
    worker = IngestWorker(settings, client_id=f"test-ingest-{next(_NAMES)}")
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), name="ingest", daemon=True)
    thread.start()
    if not worker.subscribed.wait(WAIT):
        stop.set()
        pytest.fail("the ingest worker did not subscribe within the wait")
    running = RunningIngest(worker, thread, stop)
    yield running
    stop.set()
    thread.join(WAIT)


@pytest.fixture
def make_dock(
    fleet: Fleet, broker: Broker, server_keys: dict[str, object]
) -> Iterator[Callable[..., TestDock]]:
    """Docks connected over mTLS with their own identity, subscribed to their down/ topics."""
    docks: list[TestDock] = []

    def make(dock_id: str = "DOCK-01") -> TestDock:
        dock = TestDock(broker=broker, ca=fleet.ca, dock=dock_id, server_keys=server_keys)
        docks.append(dock)
        dock.connect()
        return dock

    yield make
    for d in docks:
        with contextlib.suppress(Exception):
            d.close()


@pytest.fixture
def dock(make_dock: Callable[..., TestDock]) -> TestDock:
    return make_dock("DOCK-01")
