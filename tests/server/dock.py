"""A test dock: sends a spool's records and file chunks over MQTT v5 (mTLS, its own identity) as
docs/sync-protocol.md describes, and checks the signature of every answer it gets."""

from __future__ import annotations

import json
import queue
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.sync.protocol import (
    ProtocolError,
    Topics,
    chunk_properties,
    have_question,
    parse_ack,
    parse_have_answer,
    record_message,
)
from tests.provisioning.helpers import WAIT, Broker, Client

PREFIX = "fieldproof/v1"


class DockClient(Client):
    """helpers.Client with user properties on publish."""

    def publish_with(
        self, topic: str, payload: bytes, user: list[tuple[str, str]] | None, qos: int = 1
    ) -> int:
        props = None
        if user is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = user
        info = self.client.publish(topic, payload, qos=qos, properties=props)
        return info.mid

    def wait_puback(self, mid: int, timeout: float = WAIT) -> ReasonCode:
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._acks, timeout=timeout):
                raise TimeoutError(f"no PUBACK for mid {mid}")
            return self._acks[mid]


@dataclass
class TestDock:
    """A dock identity on the broker, with the answers it received."""

    broker: Broker
    ca: Path
    dock: str
    server_keys: dict[str, Any]
    acks: list[dict[str, Any]] = field(default_factory=list)
    haves: list[dict[str, Any]] = field(default_factory=list)
    forged: list[bytes] = field(default_factory=list)  # answers whose signature did not verify

    __test__ = False  # not a test class, despite its name

    def __post_init__(self) -> None:
        bundle = self.ca / "devices" / self.dock
        self.topics = Topics(PREFIX, self.dock)
        self.mqtt = DockClient(
            self.broker.port,
            self.ca / "root-ca.pem",
            bundle / "tls.pem",
            bundle / "tls.key",
            f"{self.dock}-test-{secrets.token_hex(3)}",
        )
        self.mqtt.client.max_inflight_messages_set(200)
        self._cond = threading.Condition()
        self._stop = threading.Event()

    def connect(self) -> None:
        self.mqtt.connect()
        assert not self.mqtt.subscribe(self.topics.down("#")).is_failure
        threading.Thread(target=self._collect, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self.mqtt.close()

    def _collect(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.mqtt.messages.get(timeout=0.1)
            except queue.Empty:
                continue
            with self._cond:
                try:
                    if msg.topic.endswith("/down/ack"):
                        self.acks.append(parse_ack(msg.payload, self.server_keys))
                    elif msg.topic.endswith("/down/have"):
                        self.haves.append(parse_have_answer(msg.payload))
                except ProtocolError:
                    self.forged.append(msg.payload)
                self._cond.notify_all()

    # -- waiting for answers ---------------------------------------------------------------------

    def mark(self) -> int:
        with self._cond:
            return len(self.acks)

    def wait_ack(self, since: int, timeout: float = WAIT, **match: Any) -> dict[str, Any]:
        """The first ack received after position ``since`` whose members equal ``match``."""

        def find() -> dict[str, Any] | None:
            return next((a for a in self.acks[since:] if all(a.get(k) == v for k, v in match.items())), None)

        with self._cond:
            if not self._cond.wait_for(lambda: find() is not None, timeout=timeout):
                raise TimeoutError(f"no ack {match} after #{since}; got {self.acks[since:][-5:]}")
            found = find()
            assert found is not None
            return found

    # -- sending ---------------------------------------------------------------------------------

    def publish(self, what: str, payload: bytes, user: list[tuple[str, str]] | None = None) -> ReasonCode:
        rc = self.mqtt.wait_puback(self.mqtt.publish_with(self.topics.up(what), payload, user))
        assert not rc.is_failure, rc
        return rc

    def send_record(self, recorder: str, line: bytes, certs: list[str] | None = None) -> dict[str, Any]:
        """Send one record and return the server's answer to it."""
        seq = json.loads(line)["record"]["seq"]
        since = self.mark()
        self.publish("record", record_message(recorder, line, certs))
        return self.wait_ack(since, recorder=recorder, seq=seq)

    def send_raw_record(self, payload: bytes) -> None:
        self.publish("record", payload)

    def send_chunks(
        self,
        recorder: str,
        seq: int,
        digest: str,
        data: bytes,
        *,
        start: int = 0,
        stop: int | None = None,
        chunk: int = 64 * 1024,
        size: int | None = None,
    ) -> dict[str, Any]:
        """Send data[start:stop] in chunks (without waiting between them); return the last chunk's answer."""
        stop = len(data) if stop is None else stop
        size = len(data) if size is None else size
        since = self.mark()
        mids = []
        for off in range(start, stop, chunk):
            props = chunk_properties(recorder=recorder, seq=seq, digest=digest, offset=off, size=size)
            mids.append(
                self.mqtt.publish_with(self.topics.up("chunk"), data[off : min(off + chunk, stop)], props)
            )
        for mid in mids:
            assert not self.mqtt.wait_puback(mid).is_failure
        n = len(mids)
        deadline = time.monotonic() + WAIT
        with self._cond:
            # One answer per chunk; return the last one (a final chunk's answer may be `stored`).
            while True:
                answers = [a for a in self.acks[since:] if a["recorder"] == recorder and a["seq"] == seq]
                if len(answers) >= n or any(a["status"] in ("stored", "rejected") for a in answers):
                    return answers[-1]
                if not self._cond.wait(timeout=max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"{len(answers)} of {n} chunk answers for {recorder}/{seq}")

    def have(self, recorder: str) -> dict[str, Any]:
        """Ask ``have?`` and return the answer (waits out the server's once-per-second limit)."""
        deadline = time.monotonic() + 3 * WAIT
        while time.monotonic() < deadline:
            with self._cond:
                n = len(self.haves)
            self.publish("have", have_question(recorder))
            with self._cond:
                if self._cond.wait_for(lambda n=n: len(self.haves) > n, timeout=1.2):
                    return self.haves[n]
        raise TimeoutError(f"no have answer for {recorder}")

    def upload(
        self, spool: Path, recorder: str, *, chunk: int = 64 * 1024, certs: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """Send every record of a spool in order, and each file after its record; the final answers."""
        final = []
        lines = (spool / "chain.jsonl").read_bytes().splitlines(keepends=True)
        for i, line in enumerate(lines):
            rec = json.loads(line)["record"]
            ack = self.send_record(recorder, line, certs if i == 0 else None)
            if ack["status"] == "pending":
                data = (spool / "media" / rec["body"]["file"]).read_bytes()
                ack = self.send_chunks(
                    recorder, rec["seq"], rec["body"]["digest"], data, start=ack["received"], chunk=chunk
                )
            final.append(ack)
        return final


def spool_records(spool: Path) -> list[tuple[bytes, dict[str, Any]]]:
    """(line, record) of every journal line of a spool."""
    return [
        (line, json.loads(line)["record"])
        for line in (spool / "chain.jsonl").read_bytes().splitlines(keepends=True)
    ]
