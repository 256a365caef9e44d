"""Dock test material: a server stand-in speaking the sync protocol, socat pty pairs, a recorder's side.

``Responder`` plays the server with ``edge.sync.protocol`` only (in memory, signed acks with the test
CA's server-signing key) and counts everything it receives, so that tests can say what was resent.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

from custody.canonical import canonical
from custody.examine import examine_line
from custody.signing import Ed25519Signer, key_id
from custody.spool import JOURNAL, Spool
from custody.timefmt import now_timestamp
from custody.trust import TrustStore
from custody.verify import ChainVerifier
from edge.journal import SpoolWriter
from edge.sync.outbox import Outbox
from edge.sync.protocol import (
    ProtocolError,
    Topics,
    have_answer,
    parse_chunk,
    parse_have_question,
    parse_record_message,
    parse_topic,
    signed_ack,
)
from fieldproof.durable import fsync_dir

PREFIX = "fieldproof/v1"
WAIT = 10.0  # the bound on every wait in these tests


def wait_for(what: str, cond: Callable[[], bool], timeout: float = WAIT, every: float = 0.02) -> None:
    """Poll ``cond`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


# -- the server stand-in -----------------------------------------------------------------------------


@dataclass
class Responder:
    """A minimal ingest: records and files in memory, signed acks, counters of every message."""

    port: int
    ca: Path
    prefix: str = PREFIX
    chunk_delay: float = 0.0  # seconds per chunk, to keep a transfer going long enough to break it
    reject: dict[int, str] = field(default_factory=dict)  # seq → rejection code
    records: dict[tuple[str, int], str] = field(default_factory=dict)  # (recorder, seq) → hash
    record_msgs: Counter[tuple[str, int]] = field(default_factory=Counter)
    chunk_msgs: Counter[tuple[str, int]] = field(default_factory=Counter)  # (digest, offset)
    have_msgs: int = 0
    forks: list[tuple[str, int, str]] = field(default_factory=list)
    stored: set[tuple[str, int]] = field(default_factory=set)
    files: dict[str, bytearray] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    complete: set[str] = field(default_factory=set)
    file_of: dict[tuple[str, int], str] = field(default_factory=dict)
    acks_sent: int = 0

    def __post_init__(self) -> None:
        self.key = serialization.load_pem_private_key((self.ca / "server-signing.key").read_bytes(), None)
        assert isinstance(self.key, Ed25519PrivateKey)
        self.key_id = key_id(x509.load_pem_x509_certificate((self.ca / "server-signing.pem").read_bytes()))
        self.lock = threading.RLock()
        self.subscribed = threading.Event()
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"responder-{os.getpid()}-{id(self)}", protocol=mqtt.MQTTv5
        )
        c.tls_set(
            ca_certs=str(self.ca / "ca-chain.pem"),
            certfile=str(self.ca / "ingest.pem"),
            keyfile=str(self.ca / "ingest.key"),
        )
        c.reconnect_delay_set(min_delay=0.05, max_delay=0.2)
        c.max_inflight_messages_set(1000)
        c.on_connect = self._on_connect
        c.on_subscribe = lambda *_a: self.subscribed.set()
        c.on_disconnect = lambda *_a: self.subscribed.clear()
        c.on_message = self._on_message
        self.client = c

    def start(self) -> Responder:
        self.client.connect_async("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        wait_for("the responder's subscription", self.subscribed.is_set)
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            client.subscribe(f"{self.prefix}/dev/+/up/#", options=SubscribeOptions(qos=1))

    def _ack(self, dock: str, recorder: str, seq: int, rhash: str, status: str, **kw: Any) -> None:
        payload = signed_ack(
            self.key,
            self.key_id,
            recorder=recorder,
            seq=seq,
            hash=rhash,
            status=status,
            reason=kw.get("reason", ""),
            received=kw.get("received", 0),
            server_time=now_timestamp(),
        )
        self.acks_sent += 1
        self.client.publish(Topics(self.prefix, dock).down("ack"), payload, qos=1)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            dock, _up, what = parse_topic(msg.topic, self.prefix)
            with self.lock:
                if what == "record":
                    self._record(dock, bytes(msg.payload))
                elif what == "chunk":
                    props = getattr(msg.properties, "UserProperty", None)
                    self._chunk(dock, props, bytes(msg.payload))
                elif what == "have":
                    self._have(dock, bytes(msg.payload))
        except Exception as exc:  # visible in the test output, never silent
            print(f"responder: {type(exc).__name__}: {exc}")

    def _record(self, dock: str, payload: bytes) -> None:
        m = parse_record_message(payload)
        facts = examine_line(1, m.line, {})
        assert facts.seq is not None
        key = (m.recorder, facts.seq)
        self.record_msgs[key] += 1
        if facts.seq in self.reject:
            self._ack(dock, m.recorder, facts.seq, facts.hash, "rejected", reason=self.reject[facts.seq])
            return
        held = self.records.get(key)
        if held is not None and held != facts.hash:
            self.forks.append((m.recorder, facts.seq, facts.hash))
            self._ack(dock, m.recorder, facts.seq, facts.hash, "rejected", reason="fork: another record")
            return
        new = held is None
        self.records[key] = facts.hash
        if facts.digest is None or facts.size is None:
            self.stored.add(key)
            self._ack(dock, m.recorder, facts.seq, facts.hash, "stored" if new else "duplicate")
            return
        self.file_of[key] = facts.digest
        self.sizes[facts.digest] = facts.size
        self.files.setdefault(facts.digest, bytearray())
        self._file_answer(dock, m.recorder, facts.seq, facts.hash, facts.digest, new=new)

    def _file_answer(self, dock: str, recorder: str, seq: int, rhash: str, digest: str, *, new: bool) -> None:
        got = self.files[digest]
        if digest not in self.complete and len(got) >= self.sizes[digest]:
            if "sha256:" + hashlib.sha256(got).hexdigest() == digest:
                self.complete.add(digest)
            else:
                self.files[digest] = bytearray()
                self._ack(dock, recorder, seq, rhash, "rejected", reason="hash-mismatch: bytes differ")
                return
        if digest in self.complete:
            first = (recorder, seq) not in self.stored
            self.stored.add((recorder, seq))
            self._ack(dock, recorder, seq, rhash, "stored" if first else "duplicate", received=len(got))
        else:
            self._ack(dock, recorder, seq, rhash, "pending", received=len(got))

    def _chunk(self, dock: str, props: Any, payload: bytes) -> None:
        if self.chunk_delay:
            time.sleep(self.chunk_delay)
        try:
            ch = parse_chunk(props, payload)
        except ProtocolError:
            return
        self.chunk_msgs[(ch.digest, ch.offset)] += 1
        key = (ch.recorder, ch.seq)
        if self.file_of.get(key) != ch.digest:
            self._ack(dock, ch.recorder, ch.seq, "", "rejected", reason="unannounced: no such record")
            return
        buf = self.files[ch.digest]
        if ch.offset <= len(buf) and ch.digest not in self.complete:
            buf[ch.offset : ch.offset + len(ch.data)] = ch.data  # contiguous from 0, as the protocol says
        self._file_answer(dock, ch.recorder, ch.seq, self.records[key], ch.digest, new=False)

    def _have(self, dock: str, payload: bytes) -> None:
        recorder = parse_have_question(payload)
        self.have_msgs += 1
        seqs = sorted(s for r, s in self.records if r == recorder)
        nxt = seqs[-1] + 1 if seqs else 0
        pending = {
            d: len(self.files[d])
            for (r, _s), d in self.file_of.items()
            if r == recorder and d not in self.complete
        }
        answer = have_answer(
            recorder=recorder,
            next_seq=nxt,
            last_hash=self.records.get((recorder, nxt - 1)),
            pending=pending,
        )
        self.client.publish(Topics(self.prefix, dock).down("have"), answer, qos=1)

    def holds(self, recorder: str, seqs: int) -> bool:
        """True once records 0..seqs-1 of ``recorder`` are stored, files complete."""
        with self.lock:
            return all((recorder, s) in self.stored for s in range(seqs))


# -- spools ---------------------------------------------------------------------------------------------


def journal_facts(spool: Path) -> list[Any]:
    """The examined records of a spool's journal."""
    return [
        examine_line(i + 1, raw, {}) for i, raw in enumerate((spool / JOURNAL).read_bytes().splitlines(True))
    ]


def spool_files(spool: Path) -> dict[str, str]:
    """digest → relative file of every file record in a spool."""
    return {f.digest: f.file for f in journal_facts(spool) if f.file}


# -- serial ---------------------------------------------------------------------------------------------


@dataclass
class PtyPair:
    """Two connected pseudo-terminals made by socat, stopped by PID."""

    a: Path
    b: Path
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


def pty_pair(where: Path, name: str = "link") -> PtyPair:
    """``socat pty,raw,echo=0,link=A pty,raw,echo=0,link=B`` (FACTS.md), waiting until both exist."""
    socat = shutil.which("socat")
    if socat is None:
        pytest.fail("socat is not installed: run scripts/setup.sh (Debian package socat)")
    a, b = where / f"{name}-recorder", where / f"{name}-dock"
    proc = subprocess.Popen(
        [socat, f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pair = PtyPair(a, b, proc)
    try:
        wait_for("socat's ptys", lambda: a.exists() and b.exists(), timeout=5)
    except BaseException:
        pair.stop()
        raise
    return pair


# -- the recorder's side of the link ----------------------------------------------------------------


class SpoolRecorder:
    """What the recorder agent does for the link (edge/recorder/agent.py), on a test spool."""

    def __init__(self, spool: Path, signer: Ed25519Signer, device: str) -> None:
        self.root = spool
        self.device = device
        self.writer = SpoolWriter(spool, signer=signer, device=device)
        self.lock = threading.Lock()
        self.clock_calls: list[dict[str, Any]] = []
        self.release_calls: list[list[dict[str, Any]]] = []

    def identity(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "role": "recorder",
            "firmware": "fieldproof-test",
            "spool": str(self.root),
        }

    def status(self) -> dict[str, Any]:
        return {"device": self.device, "recording": None}

    def chain_clock(self, **kw: Any) -> dict[str, Any]:
        from custody.timefmt import utc_timestamp

        self.clock_calls.append(kw)
        with self.lock:
            sealed = self.writer.append(
                "clock",
                {
                    "reference": kw["reference"],
                    "device_time": utc_timestamp(kw["device_time"]),
                    "reference_time": utc_timestamp(kw["reference_time"]),
                    "offset_ms": kw["offset_ms"],
                    "applied": kw["applied"],
                },
            )
        return {"seq": sealed.record["seq"], "hash": sealed.hash}

    def release(self, acks: list[dict[str, Any]]) -> list[str]:
        self.release_calls.append(acks)
        held = {f.seq: f for f in journal_facts(self.root) if f.file}
        targets, accepted = [], []
        for ack in acks:
            f = held.get(ack["seq"])
            if f is None or f.hash != ack["hash"] or not (self.root / "media" / f.file).exists():
                continue
            targets.append({"seq": f.seq, "hash": f.hash, "file": f.file, "digest": f.digest})
            accepted.append(ack)
        if not targets:
            return []
        with self.lock:
            self.writer.append("release", {"targets": targets, "acks": accepted})
        for t in targets:
            path = self.root / "media" / t["file"]
            path.unlink()
            fsync_dir(path.parent)
        return [t["file"] for t in targets]


def ack_bytes(ack: dict[str, Any]) -> bytes:
    """The canonical bytes the server signed."""
    return canonical(ack)


def sound(fleet: Any, spool: Path) -> list[str]:
    """Every finding of the custody verifier on a spool, with the fleet's root (empty: all sound)."""
    trust = TrustStore.from_paths(ca=[fleet.ca / "root-ca.pem"], certs=[fleet.ca / "ca-chain.pem"])
    return [
        f"{f.code}: {f.message}"
        for f in ChainVerifier(trust, workers=1).verify_spool(Spool.open(spool)).findings
    ]


def settled(outbox_path: Path, device: str, spool: Path, at_least: int | None = None) -> Callable[[], bool]:
    """Every record of the spool (also those chained while docked) acknowledged, every file freed.

    ``at_least``: the journal must hold this many records by then; default: it must end with a release.
    """

    def check() -> bool:
        facts = journal_facts(spool)
        with Outbox(outbox_path) as ob:
            rows = {r.seq: r for r in ob.rows(device)}
        return (
            len(rows) == len(facts)
            and all(r.state in ("stored", "duplicate") and r.released for r in rows.values())
            and (facts[-1].kind == "release" if at_least is None else len(facts) >= at_least)
        )

    return check
