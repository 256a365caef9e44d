"""Helpers for provisioning tests: a Mosquitto process, paho MQTT v5 clients, the openssl judge."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

MOSQUITTO = "/usr/sbin/mosquitto"
# Every wait in these tests is bounded by this: a broken broker fails a test, it never hangs it.
WAIT = 5.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Broker:
    """A Mosquitto process started from a generated config, stopped by PID."""

    conf: Path
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the broker and wait until it accepts TCP connections."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"mosquitto exited with {self.proc.returncode}:\n{self.log_text()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.02)
        self.stop()
        pytest.fail(f"mosquitto did not listen on port {self.port} within {WAIT}s:\n{self.log_text()}")

    def stop(self) -> None:
        """Stop the broker: SIGTERM, then SIGKILL if it does not go."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=WAIT)

    def reload(self) -> None:
        """SIGHUP, and wait until the broker logs that it reloaded."""
        assert self.proc is not None
        before = self.log_text().count("Reloading config")
        os.kill(self.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + WAIT
        while self.log_text().count("Reloading config") == before:
            if time.monotonic() > deadline:
                pytest.fail(f"mosquitto did not reload within {WAIT}s:\n{self.log_text()}")
            time.sleep(0.02)

    def log_text(self) -> str:
        """What the broker wrote to stderr so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class RefusedError(Exception):
    """The broker refused the client (TLS handshake, CONNACK, or the connection dropped)."""


@dataclass
class Client:
    """A paho MQTT v5 client with a TLS client certificate; every call waits at most WAIT seconds."""

    port: int
    cafile: Path
    cert: Path
    key: Path
    client_id: str
    messages: queue.Queue[mqtt.MQTTMessage] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        self.client.tls_set(ca_certs=str(self.cafile), certfile=str(self.cert), keyfile=str(self.key))
        # Short back-off: after a broker restart the network thread must not sleep through teardown.
        self.client.reconnect_delay_set(min_delay=0.05, max_delay=0.2)
        self._connack: ReasonCode | None = None
        self._acks: dict[int, ReasonCode] = {}
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._cond = threading.Condition()
        self.disconnected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_disconnect = lambda *_a: self.disconnected.set()

    def _on_connect(self, _c: object, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        with self._cond:
            self._connack = rc
            self._cond.notify_all()

    def _on_publish(self, _c: object, _u: object, mid: int, rc: ReasonCode, _p: object) -> None:
        with self._cond:
            self._acks[mid] = rc
            self._cond.notify_all()

    def _on_subscribe(self, _c: object, _u: object, mid: int, rcs: list[ReasonCode], _p: object) -> None:
        with self._cond:
            self._subacks[mid] = rcs
            self._cond.notify_all()

    def connect(self) -> None:
        """Connect and wait for CONNACK; raise RefusedError if the broker does not accept us."""
        try:
            rc = self.client.connect("127.0.0.1", self.port, keepalive=30)
        except (ssl.SSLError, OSError) as exc:
            raise RefusedError(f"connect: {exc}") from exc
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise RefusedError(f"connect: {mqtt.error_string(rc)}")
        # Drive the network loop by hand until CONNACK: with TLS 1.3 a refused client certificate
        # shows only here, when the broker's alert arrives after the client's handshake finished.
        deadline = time.monotonic() + WAIT
        while self._connack is None:
            rc = self.client.loop(timeout=0.05)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                raise RefusedError(f"after connect: {mqtt.error_string(rc)}")
            if time.monotonic() > deadline:
                raise RefusedError(f"no CONNACK within {WAIT}s")
        if self._connack.is_failure:
            raise RefusedError(f"CONNACK: {self._connack}")
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        """Publish QoS 1 and return the reason code of the PUBACK."""
        info = self.client.publish(topic, payload, qos=1)
        with self._cond:
            if not self._cond.wait_for(lambda: info.mid in self._acks, timeout=WAIT):
                raise TimeoutError(f"no PUBACK for {topic} within {WAIT}s")
            return self._acks[info.mid]

    def subscribe(self, topic: str) -> ReasonCode:
        """Subscribe QoS 1 and return the SUBACK's reason code."""
        _, mid = self.client.subscribe(topic, qos=1)
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._subacks, timeout=WAIT):
                raise TimeoutError(f"no SUBACK for {topic} within {WAIT}s")
            return self._subacks[mid][0]

    def next_message(self) -> mqtt.MQTTMessage:
        """The next message received, waiting at most WAIT seconds."""
        return self.messages.get(timeout=WAIT)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()


def tls_alert(port: int, *, cafile: Path, cert: Path, key: Path) -> str | None:
    """Complete a TLS handshake with a client certificate and return the alert the broker sends, if any.

    With TLS 1.3 the broker judges the client certificate after the client's side of the handshake
    is done, so the alert (certificate revoked, unknown CA, …) arrives on the first read.
    """
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.load_cert_chain(str(cert), str(key))
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.settimeout(0.5)
                tls.recv(1)
        except ssl.SSLError as exc:
            return str(exc.reason)
        except TimeoutError:
            return None  # accepted: the broker waits for our CONNECT
    return None


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run openssl (the outside judge) and return the finished process; never raises on failure."""
    return subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, text=True, timeout=30, check=False
    )


def verify(ca_dir: Path, cert: Path, *extra: str | Path) -> subprocess.CompletedProcess[str]:
    """`openssl verify -CAfile root-ca.pem -untrusted device-ca.pem CERT` against ``ca_dir``."""
    return openssl(
        "verify", *extra, "-CAfile", ca_dir / "root-ca.pem", "-untrusted", ca_dir / "device-ca.pem", cert
    )


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    """Run `fieldproof ARGV…` in-process; return the exit code, stdout and stderr."""
    from fieldproof.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err
