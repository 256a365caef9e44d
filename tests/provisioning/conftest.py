"""Fixtures for provisioning tests: CA directories, a real Mosquitto, paho MQTT v5 clients over mTLS."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from provisioning import enroll, init_ca, write_broker_config
from tests.provisioning.helpers import Broker, Client, free_port


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    """A fresh CA directory."""
    path = tmp_path / "ca"
    init_ca(path)
    return path


@pytest.fixture
def foreign_ca(tmp_path: Path) -> Path:
    """A second, unrelated CA with a device that has the same id as ours."""
    path = tmp_path / "foreign-ca"
    init_ca(path)
    enroll(path, device="REC-0001", role="recorder")
    return path


@pytest.fixture
def start_broker(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Write a broker config for a CA and start Mosquitto on a free port; every broker is stopped after."""
    brokers: list[Broker] = []

    def start(ca_dir: Path, *, out: Path | None = None, user: str | None = None) -> Broker:
        port = free_port()
        out = out or tmp_path / f"broker-{len(brokers)}"
        conf = write_broker_config(ca_dir, out=out, port=port, user=user)
        broker = Broker(conf=conf, port=port, log=tmp_path / f"mosquitto-{len(brokers)}.log")
        brokers.append(broker)
        broker.start()
        return broker

    yield start
    for broker in brokers:
        broker.stop()


@pytest.fixture
def mqtt_client() -> Iterator[Callable[..., Client]]:
    """Make paho clients from a cert/key pair (trusting a CA's root-ca.pem); all are closed after."""
    clients: list[Client] = []

    def make(broker: Broker, *, ca_dir: Path, cert: Path, key: Path, client_id: str) -> Client:
        client = Client(broker.port, ca_dir / "root-ca.pem", cert, key, client_id)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
