"""Dock fixtures: a fleet (CA, recorders, docks), Mosquitto from the generated broker config, spools."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from custody.signing import Ed25519Signer
from edge.recorder.link import RecorderLink, load_server_keys
from fieldproof.sample_chain import write_sample_spool
from provisioning import enroll, init_ca, write_broker_config
from tests.edge.dock.helpers import PREFIX, PtyPair, Responder, SpoolRecorder, pty_pair
from tests.provisioning.helpers import Broker, free_port

_N = itertools.count(1)
# Records are dated inside the certificates' validity (dated one hour back by provisioning).
START = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


@dataclass(frozen=True)
class Fleet:
    """Our CA with recorders and docks enrolled."""

    ca: Path

    def bundle(self, device: str) -> Path:
        return self.ca / "devices" / device

    def signer(self, device: str) -> Ed25519Signer:
        b = self.bundle(device)
        return Ed25519Signer.from_files(b / "signing.key", b / "signing.pem")

    def server_keys(self) -> dict[str, object]:
        return dict(load_server_keys(self.ca / "server-signing.pem", ca_chain=self.ca / "ca-chain.pem"))

    def make_spool(
        self, root: Path, device: str = "REC-0001", *, segments: int = 3, size: int = 150_000
    ) -> Path:
        """A signed sample spool: boot, segments (random bytes), marker, annotation, clock."""
        w = write_sample_spool(
            root,
            signer=self.signer(device),
            device=device,
            segments=segments,
            media=lambda i: os.urandom(size + 997 * i),
            ca_chain=(self.ca / "ca-chain.pem").read_bytes(),
            start=START,
        )
        w.close()
        return root


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    ca = tmp_path_factory.mktemp("dock-fleet") / "ca"
    init_ca(ca)
    for device, role in (
        ("REC-0001", "recorder"),
        ("REC-0002", "recorder"),
        ("REC-0003", "recorder"),
        ("DOCK-01", "dock"),
        ("DOCK-02", "dock"),
        ("DOCK-03", "dock"),
    ):
        enroll(ca, device=device, role=role)
    return Fleet(ca)


@pytest.fixture
def start_broker(fleet: Fleet, tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Mosquitto from ``provisioning.write_broker_config`` (mTLS, ACL) on a free port; stopped by PID."""
    brokers: list[Broker] = []

    def start(*, port: int | None = None, run: bool = True, ca: Path | None = None) -> Broker:
        n = next(_N)
        port = port or free_port()
        conf = write_broker_config(ca or fleet.ca, out=tmp_path / f"broker-{n}", port=port, user=None)
        broker = Broker(conf=conf, port=port, log=tmp_path / f"mosquitto-{n}.log")
        brokers.append(broker)
        if run:
            broker.start()
        return broker

    yield start
    for b in brokers:
        b.stop()


@pytest.fixture
def broker(start_broker: Callable[..., Broker]) -> Broker:
    return start_broker()


@pytest.fixture
def make_responder(fleet: Fleet) -> Iterator[Callable[..., Responder]]:
    made: list[Responder] = []

    def make(broker: Broker, **kw: object) -> Responder:
        r = Responder(broker.port, fleet.ca, **kw)  # type: ignore[arg-type]
        made.append(r)
        return r.start()

    yield make
    for r in made:
        r.stop()


@pytest.fixture
def make_pty(tmp_path: Path) -> Iterator[Callable[[str], PtyPair]]:
    pairs: list[PtyPair] = []

    def make(name: str = "link") -> PtyPair:
        p = pty_pair(tmp_path, name)
        pairs.append(p)
        return p

    yield make
    for p in pairs:
        p.stop()


def dock_toml(
    fleet: Fleet,
    where: Path,
    *,
    brokers: list[int],
    dock: str = "DOCK-01",
    mount_dir: Path | None = None,
    chunk_bytes: int = 64 * 1024,
    keepalive_s: int = 10,
    sync: str = "",
) -> Path:
    """A dock.toml for the test brokers, with the dock's bundle as its TLS identity; ``sync``: the body of
    a ``[sync]`` table (none when empty)."""
    b = fleet.bundle(dock)
    where.mkdir(parents=True, exist_ok=True)
    text = f"""
device_id = "{dock}"
mount_dir = "{mount_dir or where / "media"}"
chunk_bytes = {chunk_bytes}

[mqtt]
brokers = [{", ".join(f'"127.0.0.1:{p}"' for p in brokers)}]
topic_prefix = "{PREFIX}"
keepalive_s = {keepalive_s}

[mqtt.tls]
ca = "{b / "ca-chain.pem"}"
cert = "{b / "tls.pem"}"
key = "{b / "tls.key"}"

[outbox]
path = "{where / "outbox.sqlite"}"

[clock]
reference = "rtc"
"""
    if sync:
        text += f"\n[sync]\n{sync}\n"
    path = where / "dock.toml"
    path.write_text(text)
    return path


@dataclass
class Docked:
    """A recorder on the dock: its spool (the 'mount') and the recorder's end of its control link."""

    spool: Path
    recorder: SpoolRecorder
    link: RecorderLink
    pty: PtyPair
    gone: bool = False

    def undock(self) -> None:
        if self.gone:
            return
        self.gone = True
        try:
            self.link.stop()
        finally:
            self.pty.stop()  # socat is stopped by PID whatever happened above
            self.recorder.writer.close()


@pytest.fixture
def dock_recorder(fleet: Fleet, tmp_path: Path) -> Iterator[Callable[..., Docked]]:
    made: list[Docked] = []
    ports = tmp_path / "ports"
    ports.mkdir()

    def dock(spool: Path, device: str, name: str) -> Docked:
        rec = SpoolRecorder(spool, fleet.signer(device), device)
        pty = pty_pair(ports, name)
        link = RecorderLink(
            str(pty.a),
            identity=rec.identity(),
            status=rec.status,
            chain_clock=rec.chain_clock,
            release=rec.release,
            server_keys=fleet.server_keys(),  # type: ignore[arg-type]
        )
        link.start()
        d = Docked(spool, rec, link, pty)
        made.append(d)
        return d

    yield dock
    for d in made:
        d.undock()
