"""Sync throughput: a dock's segments to the server — stored, verified, acked — against raw MQTT clients
moving the same bytes in the same chunk size through the same broker, in the same run, with and without TLS.

Contenders, each in its own processes, one connection each way, QoS 1, the same chunk size:

- **ours**: the dock's real sync path (``edge.sync.client.SyncClient`` with an ``Outbox``, in a child
  process) → Mosquitto → the real ingest (``fieldproof server ingest``, SQLite and a local store in a
  temporary directory, migrated). Timed from the dock's first publish to the last ack that made an
  outbox row final. Then checked: every record filed once, every blob hashes to its signed digest,
  every outbox row ``stored`` with an ack whose server signature verifies.
- **raw CLI** (the issue's baseline): ``mosquitto_pub --repeat N -f CHUNK`` → ``mosquitto_sub -C N``
  (Debian's mosquitto-clients 2.0.11), ``--nodelay`` on both (over TLS they otherwise stall ≈ 20 ms a
  message, FACTS.md). Timed from the publisher's first PUBLISH to the subscriber's Nth message.
  ``--repeat`` sends the next message only after the last one's PUBACK: one message in flight.
- **raw paho**: a bare paho-mqtt publisher (20 in flight) → paho subscriber, the faster raw pair
  (FACTS.md): what Python clients can move at all, with nothing of the protocol.

TLS: provisioning's broker config (mutual TLS, ACL), the dock's and ingest's own certificates. Plain: a
second Mosquitto with a plain listener on 127.0.0.1 (anonymous, no ACL — for this benchmark only), the
dock with ``tls=None`` and the ingest worker with ``tls=False`` (a constructor argument no setting
exposes). Runs are interleaved per repeat, so noise on a shared machine hits every contender alike;
medians are printed, with CPU seconds per GB of each process. ``--profile`` adds one run per mode
under py-spy (``pip install --target DIR py-spy``; give ``--py-spy DIR/bin/py-spy``) and prints where
the dock's and the ingest's time goes.

    .venv/bin/python bench/sync_bench.py [--gigabytes 1] [--segment-mib 4] [--chunk-kib 1024]
        [--repeat 3] [--modes tls,plain] [--profile] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

PREFIX = "fieldproof/v1"
RECORDER, DOCK = "REC-0001", "DOCK-01"
MOSQUITTO = "/usr/sbin/mosquitto"
HERE = Path(__file__).resolve()
WAIT = 20.0
#: The CLI clients' stdout line-buffered, so that each line is read when it is written (timing).
STDBUF = ("stdbuf", "-oL")

# -- processes -------------------------------------------------------------------------------------


def _ticks(pid: int) -> float:
    """CPU seconds (user + system) a live process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Proc:
    """A child process, stopped by PID; its CPU seconds are read when it is reaped."""

    name: str
    popen: subprocess.Popen[bytes]
    cpu: float = 0.0

    @classmethod
    def start(cls, name: str, argv: list[str], *, log: Path | None = None, **kw: Any) -> Proc:
        if log is not None:
            with open(log, "ab") as f:
                return cls(name, subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, **kw))
        return cls(name, subprocess.Popen(argv, **kw))

    def reap(self, timeout: float) -> int:
        """Wait for the process to end (kill it past ``timeout``); returns its exit code."""
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(self.popen.pid, os.WNOHANG)
            if pid:
                self.cpu = usage.ru_utime + usage.ru_stime
                self.popen.returncode = os.waitstatus_to_exitcode(status)
                return self.popen.returncode
            if time.monotonic() > deadline:
                os.kill(self.popen.pid, signal.SIGKILL)
                deadline = time.monotonic() + 5
            time.sleep(0.01)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM by PID, then reap (SIGKILL if it does not go)."""
        if self.popen.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGTERM)
            return self.reap(timeout)
        return self.popen.returncode


def _wait_for_text(path: Path, text: str, proc: Proc, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if proc.popen.poll() is not None:
            break
        time.sleep(0.02)
    raise SystemExit(f"{what} did not start:\n{path.read_text(errors='replace')[-3000:]}")


# -- set-up: fleet, spool, brokers -------------------------------------------------------------------


@dataclass(frozen=True)
class Fleet:
    """A test fleet CA with the recorder and the dock enrolled."""

    ca: Path

    def bundle(self, device: str) -> Path:
        return self.ca / "devices" / device


def make_fleet(root: Path) -> Fleet:
    from provisioning import enroll, init_ca

    ca = root / "ca"
    init_ca(ca)
    enroll(ca, device=RECORDER, role="recorder")
    enroll(ca, device=DOCK, role="dock")
    return Fleet(ca)


def make_spool(fleet: Fleet, root: Path, total: int, segment: int) -> tuple[Path, int, int]:
    """A spool signed with the recorder's enrolled key; returns (path, segments, media bytes)."""
    from custody.signing import Ed25519Signer
    from fieldproof.sample_chain import write_sample_spool

    n = max(1, math.ceil(total / segment))
    b = fleet.bundle(RECORDER)
    signer = Ed25519Signer.from_files(b / "signing.key", b / "signing.pem")
    block = os.urandom(segment + 997 * n)
    sizes = [segment + 997 * (i % 7) for i in range(n)]
    # Dated inside the certificates' validity (provisioning dates them an hour back).
    seconds = max(1, min(10, 2400 // n))
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=50)
    spool = root / "spool"
    w = write_sample_spool(
        spool,
        signer=signer,
        device=RECORDER,
        segments=n,
        media=lambda i: i.to_bytes(8, "big") + block[8 : sizes[i]],  # distinct files, no dedup
        ca_chain=(fleet.ca / "ca-chain.pem").read_bytes(),
        start=start,
        seconds=seconds,
    )
    w.close()
    return spool, n, sum(sizes)


@dataclass
class Broker:
    """A Mosquitto process on 127.0.0.1."""

    mode: str
    port: int
    proc: Proc


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_broker(fleet: Fleet, root: Path, mode: str) -> Broker:
    """TLS: provisioning's config (mTLS, ACL). Plain: the same settings, one plain loopback listener."""
    from provisioning import write_broker_config

    port = _free_port()
    conf = write_broker_config(fleet.ca, out=root / f"broker-{mode}", port=port, user=None)
    if mode == "plain":
        keep = []
        for line in conf.read_text().splitlines():
            key = line.split(" ", 1)[0]
            if key in ("cafile", "certfile", "keyfile", "crlfile", "tls_version", "require_certificate"):
                continue
            if key in ("use_identity_as_username", "acl_file"):
                continue
            keep.append("allow_anonymous true" if key == "allow_anonymous" else line)
        conf.write_text("\n".join(keep) + "\n")
    log = root / f"mosquitto-{mode}.log"
    proc = Proc.start(f"mosquitto-{mode}", [MOSQUITTO, "-c", str(conf)], log=log)
    _wait_for_text(log, "running", proc, f"mosquitto ({mode})")
    return Broker(mode, port, proc)


# -- one measured run ------------------------------------------------------------------------------


@dataclass
class Result:
    """One contender's run: bytes moved, seconds, CPU seconds per process."""

    name: str
    mode: str
    nbytes: int
    seconds: float
    cpu: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def mbps(self) -> float:
        return self.nbytes / self.seconds / 1e6


def identity(fleet: Fleet, who: str) -> tuple[Path, Path, Path]:
    """(CA chain, certificate, key): the dock's own, or the ingest workers' (``fieldproof-ingest``)."""
    if who == "ingest":
        return fleet.ca / "ca-chain.pem", fleet.ca / "ingest.pem", fleet.ca / "ingest.key"
    b = fleet.bundle(DOCK)
    return b / "ca-chain.pem", b / "tls.pem", b / "tls.key"


def _tls_args(fleet: Fleet, who: str, tls: bool) -> list[str]:
    ca, cert, key = identity(fleet, who)
    return ["--cafile", str(ca), "--cert", str(cert), "--key", str(key)] if tls else []


class _Lines:
    """Reads a child's stdout lines on a thread, noting when each interesting one arrived."""

    def __init__(self, proc: Proc, marks: dict[str, bytes]) -> None:
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.count: Counter[str] = Counter()
        self.events = {k: threading.Event() for k in marks}
        self._marks = marks
        assert proc.popen.stdout is not None
        self._out = proc.popen.stdout
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self._out:
            t = time.monotonic()
            for k, m in self._marks.items():
                if m in line:
                    self.first.setdefault(k, t)
                    self.last[k] = t
                    self.count[k] += 1
                    self.events[k].set()


def raw_cli(fleet: Fleet, broker: Broker, chunk_file: Path, n: int, tls: bool) -> Result:
    """mosquitto_pub --repeat N -f CHUNK → mosquitto_sub -C N, one connection each, QoS 1."""
    topic = f"{PREFIX}/dev/{DOCK}/bench/raw"
    common = f"-V mqttv5 -q 1 -h 127.0.0.1 -p {broker.port} --nodelay -d".split()
    sub_args = [*_tls_args(fleet, "ingest", tls), *f"-i bench-raw-sub -t {topic} -C {n} -F %l".split()]
    sub = Proc.start("mosquitto_sub", [*STDBUF, "mosquitto_sub", *common, *sub_args], stdout=subprocess.PIPE)
    sub_lines = _Lines(sub, {"suback": b"received SUBACK", "msg": b"received PUBLISH"})
    if not sub_lines.events["suback"].wait(WAIT):
        sub.stop()
        raise SystemExit("mosquitto_sub did not subscribe")
    cpu0 = _ticks(broker.proc.popen.pid)
    pub_args = [*_tls_args(fleet, "dock", tls), *f"-i bench-raw-pub -t {topic} --repeat {n}".split()]
    pub_args += ["-f", str(chunk_file)]
    pub = Proc.start("mosquitto_pub", [*STDBUF, "mosquitto_pub", *common, *pub_args], stdout=subprocess.PIPE)
    pub_lines = _Lines(pub, {"publish": b"sending PUBLISH"})
    sub.reap(600)
    pub.reap(60)
    sub_lines.thread.join(5)
    pub_lines.thread.join(5)
    got = sub_lines.count["msg"]
    if got != n:
        raise SystemExit(f"mosquitto_sub received {got} of {n} messages")
    seconds = sub_lines.last["msg"] - pub_lines.first["publish"]
    cpu = {"publisher": pub.cpu, "broker": _ticks(broker.proc.popen.pid) - cpu0, "subscriber": sub.cpu}
    return Result("raw mosquitto_pub/sub", broker.mode, n * chunk_file.stat().st_size, seconds, cpu)


def disk(work: Path, chunk_file: Path, n: int, segment: int, mode: str) -> Result:
    """The storage ceiling: the same bytes written durably in the same chunks, one fsync per segment
    file, on the disk the server's store uses — what any ingest must at least do, with no network."""
    data = chunk_file.read_bytes()
    root = work / "disk"
    root.mkdir()
    cpu0 = time.process_time()
    t0 = time.monotonic()
    fd, written = -1, segment
    for i in range(n):
        if written >= segment:
            if fd >= 0:
                os.fsync(fd)
                os.close(fd)
            fd, written = os.open(root / f"seg{i:06d}", os.O_WRONLY | os.O_CREAT, 0o640), 0
        os.write(fd, data)
        written += len(data)
    os.fsync(fd)
    os.close(fd)
    seconds = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    shutil.rmtree(root)
    return Result("disk (write + fsync)", mode, n * len(data), seconds, {"writer": cpu})


def _child(role: str, cfg: dict[str, Any], **kw: Any) -> Proc:
    argv = [sys.executable, str(HERE), "--child", role, json.dumps(cfg)]
    return Proc.start(role, argv, **kw)


def raw_paho(fleet: Fleet, broker: Broker, chunk: int, n: int, tls: bool) -> Result:
    """A bare paho publisher (20 in flight) → a paho subscriber, QoS 1."""
    topic = f"{PREFIX}/dev/{DOCK}/bench/raw"
    base = {"port": broker.port, "topic": topic, "n": n, "chunk": chunk}
    tls_of = {who: [str(p) for p in identity(fleet, who)] if tls else None for who in ("ingest", "dock")}
    sub = _child("paho-sub", base | {"tls": tls_of["ingest"]}, stdout=subprocess.PIPE)
    assert sub.popen.stdout is not None
    if sub.popen.stdout.readline().strip() != b"ready":
        raise SystemExit("the paho subscriber did not subscribe")
    cpu0 = _ticks(broker.proc.popen.pid)
    pub = _child("paho-pub", base | {"tls": tls_of["dock"]}, stdout=subprocess.PIPE)
    assert pub.popen.stdout is not None
    t0 = json.loads(pub.popen.stdout.read())["first_publish_at"]
    t1 = json.loads(sub.popen.stdout.read())["last_message_at"]
    sub.reap(60)
    pub.reap(60)
    cpu = {"publisher": pub.cpu, "broker": _ticks(broker.proc.popen.pid) - cpu0, "subscriber": sub.cpu}
    return Result("raw paho pub/sub", broker.mode, n * chunk, t1 - t0, cpu)


@dataclass
class Ours:
    """What the real path needs: the spool, where to put the server's data, the knobs under test."""

    fleet: Fleet
    spool: Path
    media_bytes: int
    chunk: int
    chunk_window: int
    work: Path
    ingest_workers: int = 1
    py_spy: str | None = None
    profile_dir: Path | None = None


def run_ours(o: Ours, broker: Broker, tag: str) -> Result:
    """Dock child → broker → ingest process; timed by the dock; then every claim checked."""
    from server.db import migrate

    tls = broker.mode == "tls"
    run = o.work / f"ours-{tag}"
    data = run / "server"
    data.mkdir(parents=True)
    url = f"sqlite:///{data / 'fieldproof.db'}"
    migrate(url)
    env = {
        **os.environ,
        "FIELDPROOF_DATA_DIR": str(data),
        "FIELDPROOF_CA_DIR": str(o.fleet.ca),
        "FIELDPROOF_MQTT_HOST": "127.0.0.1",
        "FIELDPROOF_MQTT_PORT": str(broker.port),
    }
    ingests: list[Proc] = []
    spies: list[Proc] = []
    try:
        for i in range(o.ingest_workers):
            log = run / f"ingest-{i}.log"
            if tls:
                fieldproof = str(Path(sys.executable).parent / "fieldproof")
                ingests.append(Proc.start("ingest", [fieldproof, "server", "ingest"], log=log, env=env))
            else:
                ingests.append(_child("ingest-plain", {}, log=log, env=env))
            _wait_for_text(log, "subscribed", ingests[-1], "the ingest worker")
        cfg = {
            "spool": str(o.spool),
            "outbox": str(run / "outbox.sqlite"),
            "port": broker.port,
            "tls": tls,
            "bundle": str(o.fleet.bundle(DOCK)),
            "chunk": o.chunk,
            "chunk_window": o.chunk_window,
        }
        dock = _child("dock", cfg, stdout=subprocess.PIPE)
        if o.py_spy and o.profile_dir:
            for who, p in (("ingest", ingests[0]), ("dock", dock)):
                out = o.profile_dir / f"{tag}-{who}.txt"
                argv = [
                    o.py_spy,
                    *f"record --pid {p.popen.pid} --format raw --rate 100 --threads --native -o".split(),
                ]
                spies.append(Proc.start(f"py-spy {who}", [*argv, str(out)], log=out.with_suffix(".log")))
        cpu0, ingest0 = _ticks(broker.proc.popen.pid), [_ticks(p.popen.pid) for p in ingests]
        assert dock.popen.stdout is not None
        out = dock.popen.stdout.read()
        if dock.reap(60) != 0:
            raise SystemExit(f"the dock failed:\n{out.decode(errors='replace')}")
        broker_cpu = _ticks(broker.proc.popen.pid) - cpu0
        ingest_cpu = sum(_ticks(p.popen.pid) - c for p, c in zip(ingests, ingest0, strict=True))
    finally:
        for p in ingests:
            p.stop()
        for s in spies:
            s.reap(30)
    res = json.loads(out)
    notes = check_server(o, url, data / "store") | check_outbox(o, run / "outbox.sqlite")
    notes["dock"] = res["stats"]
    seconds = res["stats"]["last_final_at"] - res["stats"]["first_publish_at"]
    cpu = {"dock": res["sync_cpu"], "broker": broker_cpu, "ingest": ingest_cpu}
    shutil.rmtree(data / "store", ignore_errors=True)  # a gigabyte per run
    shutil.rmtree(data / "staging", ignore_errors=True)
    return Result("ours (dock → ingest)", broker.mode, o.media_bytes, seconds, cpu, notes)


def check_server(o: Ours, url: str, store: Path) -> dict[str, Any]:
    """Every record filed once, every file stored and hashing to its signed digest."""
    from sqlalchemy import func, select

    from custody.digest import file_digest
    from custody.spool import Spool
    from server.custody_log.models import CustodyEvent
    from server.db import make_engine, session_factory
    from server.evidence.models import EvidenceFile
    from server.ingest.models import Record

    lines = Spool.open(o.spool).read_journal()
    engine = make_engine(url)
    try:
        with session_factory(engine)() as s:
            records = s.execute(select(Record.seq, Record.status)).all()
            files = s.execute(
                select(EvidenceFile.digest, EvidenceFile.size, EvidenceFile.status, EvidenceFile.blob_key)
            ).all()
            filed = s.execute(
                select(CustodyEvent.seq, func.count())
                .where(CustodyEvent.kind == "filed")
                .group_by(CustodyEvent.seq)
            ).all()
            bad = s.scalar(select(func.count()).where(CustodyEvent.kind.in_(("rejected", "error"))))
    finally:
        engine.dispose()
    problems = []
    if sorted(r.seq for r in records) != list(range(len(lines))):
        problems.append(f"{len(records)} records held, the journal has {len(lines)}")
    if any(r.status not in ("stored", "filed") for r in records):
        problems.append("records not stored: " + str(Counter(r.status for r in records)))
    if any(n != 1 for _, n in filed) or len(filed) != len(records):
        problems.append(f"filed events: {len(filed)} seqs for {len(records)} records, some twice")
    if bad:
        problems.append(f"{bad} rejected/error custody events")
    stored = 0
    for f in files:
        if f.status != "stored" or file_digest(store / f.blob_key) != (f.digest, f.size):
            problems.append(f"{f.digest} is {f.status} or does not hash to its digest")
        stored += f.size
    if stored != o.media_bytes:
        problems.append(f"{stored} bytes stored of {o.media_bytes}")
    if problems:
        raise SystemExit("the server's state is wrong: " + "; ".join(problems))
    return {"records": len(records), "files": len(files), "verified_bytes": stored}


def check_outbox(o: Ours, path: Path) -> dict[str, Any]:
    """Every row final and ``stored``, with an ack that verifies against the server-signing key."""
    from edge.recorder.link import load_server_keys
    from edge.sync.outbox import Outbox
    from edge.sync.protocol import parse_ack

    b = o.fleet.bundle(DOCK)
    keys = load_server_keys(b / "server-signing.pem", ca_chain=b / "ca-chain.pem")
    with Outbox(path) as ob:
        rows = ob.rows(RECORDER)
    for r in rows:
        if r.state != "stored" or r.ack is None or parse_ack(r.ack.encode(), keys)["status"] != "stored":
            raise SystemExit(f"outbox row {r.seq} is {r.state}, not stored with a signed ack")
    return {"outbox_rows": len(rows)}


# -- child processes ---------------------------------------------------------------------------------


def child_dock(cfg: dict[str, Any]) -> None:
    """The dock's sync path: spool → outbox (durable) → SyncClient until every row has its last word."""
    from custody.spool import Spool
    from edge.dock.intake import journal_items
    from edge.recorder.link import load_server_keys
    from edge.sync.client import SyncClient, TlsFiles
    from edge.sync.outbox import Outbox

    spool = Spool.open(Path(cfg["spool"]))
    intake = journal_items(spool, spool.read_journal())
    outbox = Outbox(Path(cfg["outbox"]))
    outbox.enqueue(intake.items)
    b = Path(cfg["bundle"])
    done = threading.Event()
    final = Counter[str]()

    def on_final(row: Any) -> None:
        final[row.state] += 1
        if sum(final.values()) == len(intake.items):
            done.set()

    client = SyncClient(
        dock_id=DOCK,
        brokers=[("127.0.0.1", cfg["port"])],
        outbox=outbox,
        server_keys=load_server_keys(b / "server-signing.pem", ca_chain=b / "ca-chain.pem"),
        files=lambda _r: spool.root,
        prefix=PREFIX,
        tls=TlsFiles(b / "ca-chain.pem", b / "tls.pem", b / "tls.key") if cfg["tls"] else None,
        chunk_bytes=cfg["chunk"],
        chunk_window=cfg["chunk_window"],
        on_final=on_final,
    )
    cpu0 = time.process_time()  # the sync only: not imports, not taking the spool into the outbox
    client.start()
    ok = done.wait(1800)
    cpu = time.process_time() - cpu0
    client.stop()
    outbox.close()
    print(json.dumps({"ok": ok, "final": final, "stats": vars(client.stats), "sync_cpu": cpu}))
    sys.exit(0 if ok and set(final) == {"stored"} else 1)


def child_ingest_plain(_cfg: dict[str, Any]) -> None:
    """The real ingest worker over plain TCP (bench only): settings from FIELDPROOF_* as the CLI does."""
    import logging

    from server.config import load_settings
    from server.ingest.worker import IngestWorker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    worker = IngestWorker(load_settings(), tls=False)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker.run(stop)


def _paho(cfg: dict[str, Any], who: str) -> Any:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-paho-{who}", protocol=mqtt.MQTTv5)
    if cfg["tls"]:
        ca, cert, key = cfg["tls"]
        c.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
    return c


def child_paho_sub(cfg: dict[str, Any]) -> None:
    c = _paho(cfg, "sub")
    got = [0]

    def on_message(_c: Any, _u: Any, _m: Any) -> None:
        got[0] += 1
        if got[0] == cfg["n"]:
            print(json.dumps({"last_message_at": time.monotonic()}), flush=True)
            c.disconnect()

    c.on_connect = lambda *_a: c.subscribe(cfg["topic"], qos=1)
    c.on_subscribe = lambda *_a: print("ready", flush=True)
    c.on_message = on_message
    c.connect("127.0.0.1", cfg["port"])
    c.loop_forever()


def child_paho_pub(cfg: dict[str, Any]) -> None:
    c = _paho(cfg, "pub")
    room = threading.Semaphore(20)  # paho's default max_inflight; more queued would only cost memory
    c.on_publish = lambda *_a: room.release()
    c.connect("127.0.0.1", cfg["port"])
    c.loop_start()
    payload = os.urandom(cfg["chunk"])
    t0 = time.monotonic()
    infos = []
    for _ in range(cfg["n"]):
        room.acquire()
        infos.append(c.publish(cfg["topic"], payload, qos=1))
    for info in infos:
        info.wait_for_publish(60)
    c.disconnect()
    c.loop_stop()
    print(json.dumps({"first_publish_at": t0}))


CHILDREN = {
    "dock": child_dock,
    "ingest-plain": child_ingest_plain,
    "paho-sub": child_paho_sub,
    "paho-pub": child_paho_pub,
}

# -- profile summary ---------------------------------------------------------------------------------

#: Samples whose innermost frame is one of these are a thread waiting for work: left out of the shares.
IDLE = (
    "pthread_cond_timedwait",
    "pthread_cond_wait",
    "select (",
    "poll (",
    "epoll_wait",
    "sem_wait",
    "PyThread_acquire_lock_timed",
    "futex",
)
#: Where a busy sample's time goes: the first bucket with a pattern anywhere in its stack names it
#: (so TLS inside paho's write counts as TLS, a SQLite commit's fdatasync as the commit).
BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("SQLite commit (WAL fsync)", ("pysqlite_connection_commit", "sqlite3WalFrames")),
    (
        "fsync / fdatasync (store, staging)",
        ("fsync (", "fdatasync (", "fsync_dir", "os_fsync", "os_fdatasync"),
    ),
    ("SHA-256 (commit's read-back hash)", ("file_digest", "SHA256", "sha256")),
    ("writing staged bytes (pwrite)", ("pwrite",)),
    ("reading segment files", ("SyncClient._read",)),
    (
        "Ed25519 (ack signatures, record signatures)",
        ("ed25519", "Ed25519", "EVP_DigestSign", "EVP_DigestVerify"),
    ),
    ("SQLAlchemy / SQLite queries", ("sqlalchemy", "sqlite3")),
    ("TLS (encrypt / decrypt)", ("SSL_", "ssl3_", "_ssl__", "ssl.py", "EVP_Encrypt", "EVP_Decrypt")),
    ("socket send / recv", ("send (", "recv (", "sendall", "socket.py", "sock_send", "sock_recv")),
    ("paho (packets, properties, callbacks)", ("paho",)),
    ("record checks (JSON, canonical form)", ("examine", "canonical", "json", "parse_record")),
    ("other Python (handler, worker, store logic)", ("",)),
)


def summarize_profile(path: Path) -> dict[str, Any]:
    """py-spy raw (collapsed) stacks → shares of busy samples per bucket and per thread, top leaf frames."""
    buckets: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    busy = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        leaf = next((f for f in reversed(frames) if not f.startswith("0x")), frames[-1])
        if any(w in leaf for w in IDLE):
            idle += n
            continue
        busy += n
        threads[frames[0].split(": ", 1)[-1][:40]] += n
        leaves[leaf[:90]] += n
        buckets[next(b for b, pats in BUCKETS if any(p in stack for p in pats))] += n

    def share(c: Counter[str]) -> dict[str, float]:
        return {k: round(100 * v / max(busy, 1), 1) for k, v in c.most_common(12)}

    return {
        "busy_samples": busy,
        "idle_samples": idle,
        "buckets_pct": share(buckets),
        "threads_pct": share(threads),
        "top_leaf_pct": share(leaves),
    }


# -- main ----------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    ap.add_argument("config", nargs="?", help=argparse.SUPPRESS)
    ap.add_argument("--gigabytes", type=float, default=1.0, help="segment bytes to sync (default 1 GB)")
    ap.add_argument("--segment-mib", type=float, default=4.0, help="segment file size (default 4 MiB)")
    ap.add_argument("--chunk-kib", type=int, default=1024, help="chunk size (default 1024 = the protocol's)")
    ap.add_argument(
        "--chunk-window", type=int, help="dock's chunks in flight per recorder (default: dock.toml's)"
    )
    ap.add_argument(
        "--ingest-workers",
        type=int,
        default=1,
        help="ingest processes on the shared subscription (default 1)",
    )
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--modes", default="tls,plain")
    ap.add_argument("--contenders", default="cli,paho,ours,disk")
    ap.add_argument("--profile", action="store_true", help="one more run of ours per mode under py-spy")
    ap.add_argument("--py-spy", default=shutil.which("py-spy"), help="the py-spy binary")
    ap.add_argument("--profile-dir", type=Path, help="keep py-spy's collapsed stacks here")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    if args.child:
        CHILDREN[args.child](json.loads(args.config))
        return

    chunk_window = args.chunk_window or _shipped_chunk_window()
    modes = args.modes.split(",")
    contenders = args.contenders.split(",")
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="fp-sync-bench-", dir=os.environ.get("BENCH_DIR")) as d:
        root = Path(d)
        t = time.monotonic()
        fleet = make_fleet(root)
        spool, segments, media = make_spool(
            fleet, root, int(args.gigabytes * 1e9), int(args.segment_mib * 2**20)
        )
        chunk = args.chunk_kib * 1024
        n = math.ceil(media / chunk)
        chunk_file = root / "chunk.bin"
        chunk_file.write_bytes(os.urandom(chunk))
        print(
            f"spool: {segments} segments, {media / 1e9:.2f} GB ({time.monotonic() - t:.0f}s to make); "
            f"chunk {chunk} B ({n} chunks), dock chunk window {chunk_window}, "
            f"{args.ingest_workers} ingest process(es)",
            flush=True,
        )
        brokers = {m: start_broker(fleet, root, m) for m in modes}
        ours = Ours(fleet, spool, media, chunk, chunk_window, root, ingest_workers=args.ingest_workers)
        results: list[Result] = []
        try:
            for rep in range(args.repeat):
                for m in modes:
                    b = brokers[m]
                    if "cli" in contenders:
                        results.append(raw_cli(fleet, b, chunk_file, n, m == "tls"))
                        _say(results[-1])
                    if "paho" in contenders:
                        results.append(raw_paho(fleet, b, chunk, n, m == "tls"))
                        _say(results[-1])
                    if "ours" in contenders:
                        results.append(run_ours(ours, b, f"{m}-{rep}"))
                        _say(results[-1])
                if "disk" in contenders:
                    results.append(disk(root, chunk_file, n, int(args.segment_mib * 2**20), "disk"))
                    _say(results[-1])
            profiles = {}
            if args.profile:
                if not args.py_spy:
                    raise SystemExit(
                        "--profile needs py-spy: pip install --target DIR py-spy; --py-spy DIR/bin/py-spy"
                    )
                ours.py_spy, ours.profile_dir = args.py_spy, args.profile_dir or root / "profiles"
                ours.profile_dir.mkdir(parents=True, exist_ok=True)
                for m in modes:
                    r = run_ours(ours, brokers[m], f"{m}-profiled")
                    print(f"  (profiled run, {m}: {r.mbps:.0f} MB/s under py-spy)")
                    profiles[m] = {
                        who: summarize_profile(ours.profile_dir / f"{m}-profiled-{who}.txt")
                        for who in ("ingest", "dock")
                    }
        finally:
            for b in brokers.values():
                b.proc.stop()
    report(results, profiles, load0, args, segments, media, chunk, chunk_window)


def _shipped_chunk_window() -> int:
    """The dock's configured default (dock.toml [sync] chunk_window), which the agent passes on."""
    from edge.config.dock import SyncConfig

    default: int = SyncConfig.model_fields["chunk_window"].default
    return default


def _say(r: Result) -> None:
    cpu = ", ".join(f"{k} {v:.1f}" for k, v in r.cpu.items())
    extra = ""
    if "dock" in r.notes:
        d = r.notes["dock"]
        extra = (
            f"; sent {d['chunk_bytes_sent'] / r.nbytes:.2f}× the bytes, {d['records_sent']} record sends"
            f" for {r.notes['records']}, {d['haves_sent']} have?"
        )
    print(
        f"  {r.mode:5s} {r.name:24s} {r.mbps:7.0f} MB/s  ({r.seconds:.2f} s; CPU s: {cpu}{extra})", flush=True
    )


def report(
    results: list[Result],
    profiles: dict[str, Any],
    load0: tuple[float, ...],
    args: Any,
    segments: int,
    media: int,
    chunk: int,
    chunk_window: int,
) -> None:
    print(f"\nload average before {load0[0]:.2f}, after {os.getloadavg()[0]:.2f}; cores: {os.cpu_count()}")
    out: dict[str, Any] = {
        "segments": segments,
        "bytes": media,
        "chunk": chunk,
        "chunk_window": chunk_window,
        "load_before": load0,
        "load_after": os.getloadavg(),
        "modes": {},
    }
    print("| mode | contender | MB/s (median) | runs | CPU s per GB by process |")
    print("|---|---|---|---|---|")
    for mode in dict.fromkeys(r.mode for r in results):
        med: dict[str, float] = {}
        for name in dict.fromkeys(r.name for r in results if r.mode == mode):
            rs = [r for r in results if r.mode == mode and r.name == name]
            med[name] = statistics.median(r.mbps for r in rs)
            cpu = {k: statistics.median(r.cpu[k] / (r.nbytes / 1e9) for r in rs) for k in rs[0].cpu}
            cpu_text = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
            runs = " / ".join(f"{r.mbps:.0f}" for r in rs)
            print(f"| {mode} | {name} | {med[name]:.0f} | {runs} | {cpu_text} |")
            out["modes"].setdefault(mode, {})[name] = {
                "mbps": [r.mbps for r in rs],
                "cpu_s_per_gb": cpu,
                "notes": [r.notes for r in rs],
            }
        ours = med.get("ours (dock → ingest)")
        for base in ("raw mosquitto_pub/sub", "raw paho pub/sub"):
            if ours and base in med:
                print(f"  {mode}: ours / {base} = {ours / med[base]:.2f}×")
                out["modes"][mode][f"ratio vs {base}"] = ours / med[base]
    print("  goal: ≥ 0.70× the raw mosquitto_pub/sub rate")
    for mode, who in profiles.items():
        for name, p in who.items():
            print(
                f"\nwhere the {name}'s busy time goes ({mode}; {p['busy_samples']} busy samples at 100 Hz,"
                f" {p['idle_samples']} idle left out):"
            )
            for k, v in p["buckets_pct"].items():
                print(f"  {v:5.1f} %  {k}")
            print("  threads: " + ", ".join(f"{k} {v}%" for k, v in p["threads_pct"].items()))
            print(
                "  top leaf frames: " + "; ".join(f"{k} {v}%" for k, v in list(p["top_leaf_pct"].items())[:6])
            )
    out["profiles"] = profiles
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
