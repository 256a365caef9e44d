"""broker-config against a real Mosquitto: mutual TLS, CN as username, per-device ACL, CRL."""

from __future__ import annotations

import contextlib
import os
import pwd
import queue
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from provisioning import ProvisioningError, enroll, revoke, write_broker_config
from provisioning.ca import load_device_ca
from provisioning.certificates import utc_now
from provisioning.crl import build_crl, crl_pem
from provisioning.layout import CaLayout
from provisioning.revocation import refresh_crl
from tests.provisioning.helpers import Broker, Client, RefusedError, run_cli, tls_alert

PREFIX = "fieldproof/v1"
StartBroker = Callable[..., Broker]
MakeClient = Callable[..., Client]


def device_client(make: MakeClient, broker: Broker, ca: Path, device: str, *, kind: str = "tls") -> Client:
    bundle = ca / "devices" / device
    return make(broker, ca_dir=ca, cert=bundle / f"{kind}.pem", key=bundle / f"{kind}.key", client_id=device)


def ingest_client(make: MakeClient, broker: Broker, ca: Path, client_id: str = "ingest-1") -> Client:
    return make(broker, ca_dir=ca, cert=ca / "ingest.pem", key=ca / "ingest.key", client_id=client_id)


def alert(broker: Broker, ca_dir: Path, cert: Path, key: Path) -> str | None:
    return tls_alert(broker.port, cafile=ca_dir / "root-ca.pem", cert=cert, key=key)


def test_config_files(ca: Path, tmp_path: Path) -> None:
    out = tmp_path / "broker"
    conf = write_broker_config(ca, out=out, port=18883, prefix="bureau/tj/v1")
    text = conf.read_text()
    for line in (
        "per_listener_settings false",
        "listener 18883 127.0.0.1",
        f"cafile {out / 'ca-chain.pem'}",
        f"certfile {out / 'server-chain.pem'}",
        f"keyfile {out / 'server.key'}",
        f"crlfile {out / 'crl.pem'}",
        "require_certificate true",
        "use_identity_as_username true",
        "tls_version tlsv1.2",
        "allow_anonymous false",
        f"acl_file {out / 'acl'}",
        "max_queued_messages 100000",
        "persistence true",
        f"persistence_location {out / 'persistence'}/",
        "log_dest stderr",
    ):
        assert line in text.splitlines(), line
    acl = (out / "acl").read_text().splitlines()
    assert "pattern readwrite bureau/tj/v1/dev/%u/#" in acl
    assert acl[acl.index("user fieldproof-ingest") + 1] == "topic readwrite bureau/tj/v1/#"
    assert stat.S_IMODE((out / "server.key").stat().st_mode) == 0o600
    assert (out / "crl.pem").read_bytes() == (ca / "crl.pem").read_bytes()
    assert (out / "server-chain.pem").read_bytes() == (ca / "server.pem").read_bytes() + (
        ca / "device-ca.pem"
    ).read_bytes()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"port": 0}, "not a TCP port"),
        ({"port": 8883, "prefix": "fieldproof/#"}, "--prefix"),
        ({"port": 8883, "prefix": "/fieldproof"}, "--prefix"),
        ({"port": 8883, "prefix": "fieldproof/v1\n"}, "--prefix"),
        ({"port": 8883, "bind": "not an address!"}, "--bind"),
        ({"port": 8883, "user": "no-such-user-here"}, "does not exist"),
    ],
)
def test_config_refusals(ca: Path, tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ProvisioningError, match=match):
        write_broker_config(ca, out=tmp_path / "broker", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "broker").exists()


def test_device_publishes_to_its_own_topics_only(
    ca: Path, start_broker: StartBroker, mqtt_client: MakeClient
) -> None:
    enroll(ca, device="REC-0001", role="recorder")
    broker = start_broker(ca)
    ingest = ingest_client(mqtt_client, broker, ca)
    ingest.connect()
    assert not ingest.subscribe(f"{PREFIX}/#").is_failure
    device = device_client(mqtt_client, broker, ca, "REC-0001")
    device.connect()

    assert not device.publish(f"{PREFIX}/dev/REC-0001/x", b"segment-1").is_failure
    msg = ingest.next_message()
    assert (msg.topic, msg.payload) == (f"{PREFIX}/dev/REC-0001/x", b"segment-1")

    # Another device's topic, and one outside the device tree: refused, and visibly so over MQTT v5.
    for topic in (f"{PREFIX}/dev/OTHER/x", f"{PREFIX}/server/x"):
        rc = device.publish(topic, b"forged")
        assert rc.is_failure
        assert str(rc) == "Not authorized"

    # Messages from one publisher arrive in order: once this one is in, the refused ones never will be.
    assert not device.publish(f"{PREFIX}/dev/REC-0001/x", b"segment-2").is_failure
    assert ingest.next_message().payload == b"segment-2"
    with pytest.raises(queue.Empty):
        ingest.messages.get_nowait()

    # The server writes to the device (acks), and the device receives on its own subtree only.
    # Mosquitto's acl_file does not check SUBSCRIBE (it grants it); it checks each delivery instead.
    assert not device.subscribe(f"{PREFIX}/dev/REC-0001/ack/#").is_failure
    assert not device.subscribe(f"{PREFIX}/dev/OTHER/#").is_failure
    assert not ingest.publish(f"{PREFIX}/dev/OTHER/ack/1", b"not for you").is_failure
    assert not ingest.publish(f"{PREFIX}/dev/REC-0001/ack/1", b"durable").is_failure
    msg = device.next_message()
    assert (msg.topic, msg.payload) == (f"{PREFIX}/dev/REC-0001/ack/1", b"durable")
    with pytest.raises(queue.Empty):
        device.messages.get_nowait()


def test_ingest_workers_share_a_subscription(
    ca: Path, start_broker: StartBroker, mqtt_client: MakeClient
) -> None:
    enroll(ca, device="DOCK-01", role="dock")
    broker = start_broker(ca)
    workers = [ingest_client(mqtt_client, broker, ca, f"ingest-{i}") for i in range(2)]
    for worker in workers:
        worker.connect()
        assert not worker.subscribe(f"$share/ingest/{PREFIX}/dev/+/#").is_failure
    device = device_client(mqtt_client, broker, ca, "DOCK-01")
    device.connect()
    for i in range(10):
        assert not device.publish(f"{PREFIX}/dev/DOCK-01/chunk/{i}", b"%d" % i).is_failure
    got: list[bytes] = []
    while len(got) < 10:
        for worker in workers:
            with contextlib.suppress(queue.Empty):
                got.append(worker.messages.get(timeout=0.05).payload)
    assert sorted(got) == sorted(b"%d" % i for i in range(10))  # each message once, to one worker


def test_acl_file_lets_a_device_join_the_ingest_share_group_and_drop_messages(
    ca: Path, start_broker: StartBroker, mqtt_client: MakeClient
) -> None:
    """A known limit of Mosquitto 2.0's acl_file, pinned so that a change of behaviour is noticed.

    acl_file checks deliveries, not SUBSCRIBE: a device that joins the ingest share group is dealt its
    share of messages, which the read ACL then drops. The broker cannot be the delivery guarantee; the
    sync protocol's application acks and the dock's durable outbox are (docs/provisioning.md).
    """
    enroll(ca, device="DOCK-01", role="dock")
    enroll(ca, device="REC-0001", role="recorder")
    broker = start_broker(ca)
    worker = ingest_client(mqtt_client, broker, ca)
    worker.connect()
    worker.subscribe(f"$share/ingest/{PREFIX}/dev/+/#")
    intruder = device_client(mqtt_client, broker, ca, "REC-0001")
    intruder.connect()
    intruder.subscribe(f"$share/ingest/{PREFIX}/dev/+/#")
    dock = device_client(mqtt_client, broker, ca, "DOCK-01")
    dock.connect()
    for i in range(8):
        dock.publish(f"{PREFIX}/dev/DOCK-01/chunk/{i}", b"%d" % i)
    got = []
    with contextlib.suppress(queue.Empty):
        while len(got) < 8:
            got.append(worker.messages.get(timeout=1.0).payload)
    assert intruder.messages.empty()  # the intruder reads nothing of another device…
    assert 0 < len(got) < 8  # …but the worker lost the share dealt to it


def test_foreign_and_wrong_kind_certificates_are_refused_at_the_handshake(
    ca: Path, foreign_ca: Path, start_broker: StartBroker, mqtt_client: MakeClient
) -> None:
    bundle = enroll(ca, device="REC-0001", role="recorder")
    broker = start_broker(ca)
    foreign = foreign_ca / "devices" / "REC-0001"
    # Same device id, other CA: the CN alone must never be enough.
    assert alert(broker, ca, foreign / "tls.pem", foreign / "tls.key") == "TLSV1_ALERT_UNKNOWN_CA"
    with pytest.raises(RefusedError):
        device_client(mqtt_client, broker, foreign_ca, "REC-0001").connect()
    # The evidence-signing key cannot log in: its certificate is not for TLS clients.
    assert (
        alert(broker, ca, bundle / "signing.pem", bundle / "signing.key")
        == "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE"
    )
    with pytest.raises(RefusedError):
        device_client(mqtt_client, broker, ca, "REC-0001", kind="signing").connect()
    # The server's own TLS certificate is not a client certificate either.
    assert alert(broker, ca, ca / "server.pem", ca / "server.key") == "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE"
    # and the genuine device gets in.
    device_client(mqtt_client, broker, ca, "REC-0001").connect()


def test_revoked_device_is_refused_after_reload(
    ca: Path, start_broker: StartBroker, mqtt_client: MakeClient
) -> None:
    lost = enroll(ca, device="REC-0001", role="recorder")
    enroll(ca, device="REC-0002", role="recorder")
    broker = start_broker(ca)
    connected = device_client(mqtt_client, broker, ca, "REC-0001")
    connected.connect()

    revoke(ca, device="REC-0001", reason="keyCompromise")
    # Until the broker reloads, it still holds the old CRL: the lost device gets in.
    assert alert(broker, ca, lost / "tls.pem", lost / "tls.key") is None
    write_broker_config(ca, out=broker.conf.parent, port=broker.port)
    broker.reload()

    assert alert(broker, ca, lost / "tls.pem", lost / "tls.key") == "SSLV3_ALERT_CERTIFICATE_REVOKED"
    with pytest.raises(RefusedError):
        mqtt_client(
            broker, ca_dir=ca, cert=lost / "tls.pem", key=lost / "tls.key", client_id="again"
        ).connect()
    device_client(mqtt_client, broker, ca, "REC-0002").connect()
    # Mosquitto 2.0 keeps sessions that were open before SIGHUP (docs/provisioning.md says so):
    # only a restart cuts a revoked device that is connected right now.
    assert not connected.publish(f"{PREFIX}/dev/REC-0001/x", b"still here").is_failure
    broker.stop()
    assert connected.disconnected.wait(5)
    broker.start()
    assert alert(broker, ca, lost / "tls.pem", lost / "tls.key") == "SSLV3_ALERT_CERTIFICATE_REVOKED"


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A directory under /tmp that other accounts may enter (pytest's tmp_path is 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="fieldproof-broker-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="handing files to another account needs root")
def test_broker_as_the_mosquitto_user(
    ca: Path,
    tmp_path: Path,
    reachable_dir: Path,
    start_broker: StartBroker,
    mqtt_client: MakeClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    try:
        account = pwd.getpwnam("mosquitto")
    except KeyError:
        pytest.fail("the Debian mosquitto package creates the mosquitto account; run scripts/setup.sh")
    # pytest's tmp_path sits in a 0700 root directory the broker could not enter: refused, clearly.
    code, _, err = run_cli(
        capsys, "provision", "broker-config", ca, "--out", tmp_path / "b", "--port", "8883"
    )
    assert code == 2
    assert "cannot enter" in err

    enroll(ca, device="REC-0001", role="recorder")
    broker = start_broker(ca, out=reachable_dir / "broker", user="mosquitto")
    out = reachable_dir / "broker"
    assert (out / "server.key").stat().st_uid == account.pw_uid
    assert stat.S_IMODE((out / "server.key").stat().st_mode) == 0o600
    assert broker.proc is not None
    status = Path(f"/proc/{broker.proc.pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == [str(account.pw_uid)] * 4  # dropped to mosquitto
    device_client(mqtt_client, broker, ca, "REC-0001").connect()

    # After a revocation, the refreshed copies stay readable to the broker across a reload.
    revoke(ca, device="REC-0001")
    write_broker_config(ca, out=out, port=broker.port, user="mosquitto")
    assert (out / "crl.pem").stat().st_uid == account.pw_uid
    broker.reload()
    bundle = ca / "devices" / "REC-0001"
    assert alert(broker, ca, bundle / "tls.pem", bundle / "tls.key") == "SSLV3_ALERT_CERTIFICATE_REVOKED"


def expire_crl(ca: Path) -> None:
    """Replace the CA's CRL by one whose nextUpdate passed a day ago (a CA nobody refreshed)."""
    issuer = load_device_ca(CaLayout(ca))
    stale = build_crl(issuer=issuer, entries=(), number=7, now=utc_now() - timedelta(days=31))
    (ca / "crl.pem").write_bytes(crl_pem(stale))


def test_an_expired_crl_locks_every_device_out_until_refreshed(
    ca: Path, start_broker: StartBroker, mqtt_client: MakeClient
) -> None:
    bundle = enroll(ca, device="REC-0001", role="recorder")
    broker = start_broker(ca)
    expire_crl(ca)
    with pytest.raises(ProvisioningError, match="refresh-crl"):
        write_broker_config(ca, out=broker.conf.parent, port=broker.port)
    # What happens if the stale CRL reaches the broker anyway: every device is refused, and the alert
    # says "certificate expired" although the certificate is fine — the CRL is what expired.
    (broker.conf.parent / "crl.pem").write_bytes((ca / "crl.pem").read_bytes())
    broker.reload()
    assert alert(broker, ca, bundle / "tls.pem", bundle / "tls.key") == "SSLV3_ALERT_CERTIFICATE_EXPIRED"

    assert refresh_crl(ca) == 8
    write_broker_config(ca, out=broker.conf.parent, port=broker.port)
    broker.reload()
    device_client(mqtt_client, broker, ca, "REC-0001").connect()
