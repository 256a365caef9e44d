"""Many docks at once into several ingest workers on one MQTT v5 shared subscription — judged exactly once.

The fault campaign's pieces (``campaign``, ``processes``, ``judge``, ``recorder``), for N docks and M
workers instead of one of each:

- **one Mosquitto** from ``provisioning.write_broker_config`` (mTLS, ACL, CRL) on 127.0.0.1;
- **M ingest workers**: ``fieldproof server ingest`` processes with one ``FIELDPROOF_SHARE_GROUP``, so
  all subscribe ``$share/<group>/P/dev/+/up/#`` (checked in each worker's log), on SQLite or PostgreSQL
  (``database_url``), migrated by ``fieldproof server migrate``, and the local evidence store;
- **N docks**: ``fieldproof dock sync-once --link PTY`` processes, each an enrolled dock identity with its
  own outbox, docked with its own enrolled recorder: a signed spool (``fieldproof.sample_chain``; random
  bytes stand in for camera and microphone) and, in this process, the real ``RecorderLink`` on a socat
  pty with the campaign's ``WatchedRecorder`` (frees a file only on a signed ack, after looking that the
  server holds it);
- **two taps** (``mosquitto_sub`` as the ingest identity, receive time first): every chunk the broker
  relays (topic, length, user properties) and every ack (payload), for the time from a segment's last
  chunk to its ``stored`` ack — measured where the dock's own messages pass, without touching the dock.

Optionally one worker is killed -9 (by PID) when a given fraction of all file bytes has been acknowledged;
the others carry on alone. CPU seconds of every process are read from ``/proc`` (``tests.faults.cpu``);
the docks' from ``getrusage(RUSAGE_CHILDREN)`` around their exits. Judged per recorder with
``judge.check_exactly_once`` (every seq once, blobs re-hashed, one ``filed`` event per record, outbox
final, spool empty, chain verifies).
"""

from __future__ import annotations

import contextlib
import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from edge.recorder.link import RecorderLink
from fieldproof.sample_chain import write_sample_spool
from provisioning import enroll, init_ca, write_broker_config
from server.evidence.store import BlobStore
from tests.edge.dock.conftest import Fleet, dock_toml
from tests.edge.dock.helpers import PREFIX, PtyPair, pty_pair
from tests.faults.cpu import CpuMeter, proc_io
from tests.faults.judge import MIB, check_exactly_once, open_rows_text, outbox_state
from tests.faults.processes import FIELDPROOF, ROOT, CampaignError, Child, child_env, tap_argv, wait_until
from tests.faults.recorder import WatchedRecorder, dispose_engines
from tests.provisioning.helpers import Broker, free_port

__all__ = ["ParallelRun", "ParallelSettings", "make_spools", "pairs", "provision_fleet"]

TAP_SKEW_S = 0.05  # how much later the chunk tap may print a final chunk than the ack tap its answer


def pairs(n: int) -> list[tuple[str, str]]:
    """(recorder, dock) ids for ``n`` docking rooms' worth of devices: REC-0001/DOCK-01 …"""
    return [(f"REC-{i:04d}", f"DOCK-{i:02d}") for i in range(1, n + 1)]


def provision_fleet(ca: Path, n: int) -> Fleet:
    """A fresh CA with ``n`` recorders and ``n`` docks enrolled (``fieldproof provision``'s own code)."""
    init_ca(ca)
    for recorder, dock in pairs(n):
        enroll(ca, device=recorder, role="recorder")
        enroll(ca, device=dock, role="dock")
    return Fleet(ca)


def make_spools(fleet: Fleet, where: Path, n: int, *, segments: int, segment_bytes: int, seed: int) -> int:
    """One signed spool per recorder under ``where/<recorder>`` (copied afresh for each run); total bytes."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    total = 0
    for recorder, _dock in pairs(n):
        media = random.Random(f"{seed}-{recorder}")
        w = write_sample_spool(
            where / recorder,
            signer=fleet.signer(recorder),
            device=recorder,
            segments=segments,
            media=lambda _i, m=media: m.randbytes(segment_bytes),  # type: ignore[misc]
            ca_chain=(fleet.ca / "ca-chain.pem").read_bytes(),
            start=start,
        )
        w.close()
        total += segments * segment_bytes
    return total


@dataclass
class ParallelSettings:
    """How many docks and workers, the dock's timing, and whether (when) one worker is killed."""

    docks: int = 10
    workers: int = 2
    chunk_bytes: int = MIB
    ack_timeout_s: float = 10.0  # the dock's first resend (its default)
    retry_max_s: float = 20.0
    kill_worker_at: float | None = None  # fraction of the file bytes acknowledged; None: no kill
    deadline_s: float = 900.0
    stall_s: float = 90.0
    seed: int | None = None
    # Docks are separate boxes in a bureau; here they share two cores with the server. A positive
    # niceness gives broker, workers and PostgreSQL the CPU first, as their own machines would.
    dock_nice: int = 0


@dataclass
class DockRig:
    """One docking: a dock process, its recorder's spool and the recorder's end of the control link."""

    recorder: str
    dock: str
    root: Path
    pty: PtyPair | None = None
    watched: WatchedRecorder | None = None
    link: RecorderLink | None = None
    child: Child | None = None
    exited_at: float | None = None

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def outbox(self) -> Path:
        return self.root / "outbox.sqlite"


@dataclass
class Tap:
    """A ``mosquitto_sub`` with the receive time in front of every line."""

    child: Child

    def read(self, fields: int) -> list[tuple[float, list[str]]]:
        out = []
        for line in self.child.text("out").splitlines():
            parts = line.split(" ", fields)
            if len(parts) > 1 and parts[1].startswith(PREFIX + "/"):
                with contextlib.suppress(ValueError):
                    out.append((float(parts[0]), parts[1:]))
        return out


class ParallelRun:
    """N docks, M workers, one broker, in ``work``; ``run()`` returns the summary (``problems`` empty: sound).

    ``spools``: the folder ``make_spools`` filled (copied, never changed). ``database_url``: an empty
    database (PostgreSQL); None: SQLite in the run's data directory. ``extra_env``: more ``FIELDPROOF_*``
    settings for the workers (another store backend); ``blobs`` and ``staging_left``: that store, to read
    blobs back from and to list what its staging area still holds.
    """

    def __init__(
        self,
        fleet: Fleet,
        work: Path,
        spools: Path,
        settings: ParallelSettings,
        *,
        database_url: str | None = None,
        extra_env: dict[str, str] | None = None,
        postgres_pid: int | None = None,
        blobs: BlobStore | None = None,
        staging_left: Callable[[], list[str]] | None = None,
        watch_pids: dict[str, int] | None = None,
    ) -> None:
        self.fleet = fleet
        self.work = work
        self.s = settings
        self.seed = settings.seed if settings.seed is not None else random.SystemRandom().randrange(2**32)
        self.rng = random.Random(self.seed)
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.data = work / "server"
        self.db = None if database_url else self.data / "fieldproof.db"
        self.url = database_url or f"sqlite:///{self.data / 'fieldproof.db'}"
        self.store = self.data / "store"
        self.extra_env = extra_env or {}
        self.postgres_pid = postgres_pid  # its postmaster: CPU of the whole cluster is measured
        self.blobs = blobs  # the store the workers use, when not the local directory (S3)
        self.staging_left = staging_left  # that store's staging objects left over, for the judgement
        self.watch_pids = watch_pids or {}  # more processes (and their children) to measure: SeaweedFS
        self.port = free_port()
        self.group = f"load{uuid.uuid4().hex[:8]}"
        self.rigs = [DockRig(r, d, work / "docks" / d) for r, d in pairs(settings.docks)]
        for rig in self.rigs:
            shutil.copytree(spools / rig.recorder, rig.spool)
        self.total = sum(
            p.stat().st_size for rig in self.rigs for p in (rig.spool / "media").rglob("*") if p.is_file()
        )
        self.segments = sum(1 for rig in self.rigs for p in (rig.spool / "media").rglob("*") if p.is_file())
        self.broker: Broker | None = None
        self.workers: list[Child] = []
        self.taps: dict[str, Tap] = {}
        self.cpu = CpuMeter()
        self.killed: list[dict[str, Any]] = []
        self.worker_io: dict[str, dict[str, int]] = {}
        self.t0 = 0.0

    def say(self, text: str) -> None:
        """A line of the run's log on stderr."""
        print(f"[load {time.monotonic() - self.t0:7.2f}s] {text}", file=sys.stderr, flush=True)

    # -- set-up ---------------------------------------------------------------------------------------

    def _server_env(self) -> dict[str, str]:
        return child_env(
            {
                "FIELDPROOF_DATA_DIR": str(self.data),
                "FIELDPROOF_DATABASE_URL": self.url,
                "FIELDPROOF_CA_DIR": str(self.fleet.ca),
                "FIELDPROOF_MQTT_PORT": str(self.port),
                "FIELDPROOF_SHARE_GROUP": self.group,
                **self.extra_env,
            }
        )

    def _dock_argv(self, rig: DockRig) -> list[str]:
        assert rig.pty is not None
        nice = ["/usr/bin/nice", "-n", str(self.s.dock_nice)] if self.s.dock_nice else []
        return [
            *nice,
            FIELDPROOF, "dock", "sync-once", "--config", str(rig.root / "dock.toml"), "--spool", str(rig.spool),
            "--link", str(rig.pty.b), "--retry-max", f"{self.s.retry_max_s:g}",
            "--ack-timeout", f"{self.s.ack_timeout_s:g}", "--timeout", f"{self.s.deadline_s:.0f}", "-v",
        ]  # fmt: skip

    def _tap(self, name: str, topic: str, fmt: str) -> Tap:
        tap = Tap(Child(name, lambda: tap_argv(self.fleet.ca, self.port, topic, fmt), self.logs))
        tap.child.start()
        wait_until(f"the {name} tap's subscription", lambda: "Subscribed (mid" in tap.child.text("out"), 10)
        return tap

    def setup(self) -> None:
        """Database, broker, taps, workers, the recorders' links; not yet the docks."""
        self.data.mkdir(parents=True)
        env = self._server_env()
        migrated = subprocess.run(
            [FIELDPROOF, "server", "migrate"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        if migrated.returncode != 0:
            raise CampaignError(f"fieldproof server migrate failed:\n{migrated.stderr}")
        conf = write_broker_config(self.fleet.ca, out=self.work / "broker", port=self.port, user=None)
        self.broker = Broker(conf=conf, port=self.port, log=self.logs / "mosquitto.log")
        self.broker.start()
        self.taps["chunk"] = self._tap("tap-chunk", f"{PREFIX}/dev/+/up/chunk", "%U %t %l %P")
        self.taps["ack"] = self._tap("tap-ack", f"{PREFIX}/dev/+/down/ack", "%U %t %p")
        for i in range(self.s.workers):
            w = Child(f"ingest{i + 1}", lambda: [FIELDPROOF, "server", "ingest"], self.logs, env)
            w.start()
            self.workers.append(w)
        for w in self.workers:

            def up(w: Child = w) -> bool:
                if not w.alive():
                    raise CampaignError(f"{w.name} exited with {w.reap()}:\n{w.tail()}")
                return "subscribed" in w.text()

            wait_until(f"{w.name} to subscribe", up, 60)
            want = f"subscribing to $share/{self.group}/{PREFIX}/dev/+/up/#"
            if want not in w.text():
                raise CampaignError(f"{w.name} is not on the shared subscription ({want!r}):\n{w.tail()}")
        (self.work / "ports").mkdir()
        for rig in self.rigs:
            dock_toml(
                self.fleet, rig.root, brokers=[self.port], dock=rig.dock, mount_dir=rig.root / "media",
                chunk_bytes=self.s.chunk_bytes,
            )  # fmt: skip
            rig.pty = pty_pair(self.work / "ports", rig.dock)
            rig.watched = WatchedRecorder(
                rig.spool,
                self.fleet.signer(rig.recorder),
                rig.recorder,
                server_db=self.db,
                server_url=None if self.db else self.url,
                store=self.store,
                blobs=self.blobs,
            )
            rig.link = RecorderLink(
                str(rig.pty.a),
                identity=rig.watched.identity(),
                status=rig.watched.status,
                chain_clock=rig.watched.chain_clock,
                release=rig.watched.release,
                server_keys=self.fleet.server_keys(),  # type: ignore[arg-type]
            )
            rig.link.start()
            rig.child = Child(f"dock-{rig.dock}", lambda r=rig: self._dock_argv(r), self.logs, child_env({}))
        assert self.broker.proc is not None
        self.cpu.watch("broker", self.broker.proc.pid)
        for w in self.workers:
            assert w.proc is not None
            self.cpu.watch(w.name, w.proc.pid)
        for name, tap in self.taps.items():
            assert tap.child.proc is not None
            self.cpu.watch(f"tap-{name}", tap.child.proc.pid)
        for rig in self.rigs:
            assert rig.pty is not None
            self.cpu.watch(f"socat-{rig.dock}", rig.pty.proc.pid)
        if self.postgres_pid is not None:
            self.cpu.watch("postgres", self.postgres_pid, tree=True)
        for name, pid in self.watch_pids.items():
            self.cpu.watch(name, pid, tree=True)

    # -- the run --------------------------------------------------------------------------------------

    def _progress(self) -> tuple[int, tuple[int, ...]]:
        acked, prints = 0, []
        for rig in self.rigs:
            state = outbox_state(rig.outbox)
            if state is not None:
                acked += state[0]
                prints += state[1]
        return acked, tuple(prints)

    def _kill_one_worker(self, acked: int) -> None:
        live = [w for w in self.workers if w.alive()]
        victim = self.rng.choice(live)
        assert victim.proc is not None
        self.cpu.sample()  # its last reading before it goes
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        struck = victim.kill9()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._rusage_not_docks += (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        self.killed.append(
            {
                "worker": victim.name,
                "pid": victim.proc.pid,
                "t": round(time.monotonic() - self.t_sync, 2),
                "acked": round(acked / self.total, 3),
                "struck": struck,
            }
        )
        self.say(f"kill -9 {victim.name} (pid {victim.proc.pid}) at {acked / self.total:.1%} acknowledged")

    def run(self) -> dict[str, Any]:
        """Set up, start every dock at once, (kill a worker), wait for all, stop everything, judge."""
        self.t0 = time.monotonic()
        try:
            self.setup()
            self.say(
                f"{len(self.rigs)} docks, {self.s.workers} workers, {self.segments} segments, "
                f"{self.total / MIB:.0f} MiB; seed {self.seed}"
            )
            self._rusage_not_docks = 0.0
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            self_ru0 = resource.getrusage(resource.RUSAGE_SELF)
            self.cpu.start()
            self.t_sync = time.monotonic()
            for rig in self.rigs:
                assert rig.child is not None
                rig.child.start()
            self._watch()
            sync_s = time.monotonic() - self.t_sync
            self.cpu.sample()
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            self_ru1 = resource.getrusage(resource.RUSAGE_SELF)
            docks_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime) - self._rusage_not_docks
            bench_cpu = (self_ru1.ru_utime + self_ru1.ru_stime) - (self_ru0.ru_utime + self_ru0.ru_stime)
            for w in self.workers:
                if w.alive() and w.proc is not None:
                    self.worker_io[w.name] = proc_io(w.proc.pid)
            self.say(f"every dock finished: {sync_s:.1f}s after they were started")
        finally:
            self.close()
        return self.summary(sync_s, docks_cpu, bench_cpu)

    def _watch(self) -> None:
        """Until every dock has exited 0: progress, the kill, stall and deadline checks, CPU samples."""
        deadline = self.t_sync + self.s.deadline_s
        moved_at, fingerprint, last_sample = time.monotonic(), (), 0.0
        kill_at = None if self.s.kill_worker_at is None else self.s.kill_worker_at * self.total
        assert self.broker is not None
        assert self.broker.proc is not None
        while True:
            now = time.monotonic()
            if now - last_sample >= 0.5:
                self.cpu.sample()
                last_sample = now
            running = 0
            for rig in self.rigs:
                assert rig.child is not None
                if rig.exited_at is not None:
                    continue
                if rig.child.alive():
                    running += 1
                    continue
                rig.exited_at = now
                rc = rig.child.reap()
                if rc != 0:
                    raise CampaignError(f"{rig.child.name} exited with {rc}:\n{rig.child.tail()}")
            if not running:
                return
            if self.broker.proc.poll() is not None:
                raise CampaignError(f"mosquitto exited by itself ({self.broker.proc.returncode})")
            for w in self.workers:
                if not w.alive() and not any(k["worker"] == w.name for k in self.killed):
                    raise CampaignError(f"{w.name} exited by itself ({w.reap()}):\n{w.tail()}")
            acked, prints = self._progress()
            if prints != fingerprint:
                fingerprint, moved_at = prints, now
            if kill_at is not None and not self.killed and acked >= kill_at:
                self._kill_one_worker(acked)
                moved_at = time.monotonic()
            if now - moved_at > self.s.stall_s:
                rows = "\n".join(
                    f"{r.dock}:\n{open_rows_text(r.outbox)}" for r in self.rigs if r.exited_at is None
                )
                raise CampaignError(
                    f"stalled: no outbox moved for {now - moved_at:.0f}s (seed {self.seed}; "
                    f"{acked / MIB:.1f} of {self.total / MIB:.1f} MiB acknowledged)\n{rows[:4000]}"
                )
            if now > deadline:
                raise CampaignError(f"deadline {self.s.deadline_s:g}s passed; {running} docks still running")
            time.sleep(0.05)  # a fast sync moves 60 MiB in under a second: look often enough to kill mid-way

    def close(self) -> None:
        """Stop everything, by PID: docks, workers, links, ptys, taps, broker."""
        for rig in self.rigs:
            if rig.child is not None:
                with contextlib.suppress(Exception):
                    rig.child.stop()
        for w in self.workers:
            with contextlib.suppress(Exception):
                w.stop()
        for rig in self.rigs:
            if rig.link is not None:
                rig.link.stop()
            if rig.pty is not None:
                rig.pty.stop()
            if rig.watched is not None:
                rig.watched.writer.close()
        for tap in self.taps.values():
            with contextlib.suppress(Exception):
                tap.child.stop()
        if self.broker is not None:
            self.broker.stop()
        dispose_engines()

    # -- figures and judgement ----------------------------------------------------------------------------

    def latency(self) -> dict[str, Any]:
        """From the taps: per segment, its last chunk relayed → its ``stored`` ack relayed (seconds).

        Both times are when the broker relayed the message to a tap, so they bracket what the dock sees
        (its publish a moment before the first, the ack a moment after the second). The last chunk is the
        one that ends the file (offset + length = size); if it was relayed more than once, the figures
        start at the relay just before the ack and, in ``from_first_publication``, at the first.

        The two taps are two processes, each stamping a message when it prints it: the chunk tap, reading
        1 MiB messages, can print a final chunk a millisecond or two after the ack tap printed its answer
        (seen in a run: 1.5 ms). A final chunk printed up to ``TAP_SKEW_S`` after the ack is taken as the
        one the ack answered, its wait counted as 0, and such pairs are counted in ``tap_skew_pairs``.
        """
        finals: dict[tuple[str, int], list[float]] = defaultdict(list)
        first_chunk = None
        for t, parts in self.taps["chunk"].read(3):
            if len(parts) < 3:
                continue
            props = dict(p.split(":", 1) for p in parts[2].split(" ") if ":" in p)
            first_chunk = t if first_chunk is None else min(first_chunk, t)
            with contextlib.suppress(KeyError, ValueError):
                if int(props["offset"]) + int(parts[1]) == int(props["size"]):
                    finals[(props["recorder"], int(props["seq"]))].append(t)
        stored: dict[tuple[str, int], float] = {}
        for t, parts in self.taps["ack"].read(2):
            with contextlib.suppress(ValueError, IndexError):
                ack = json.loads(parts[1])
                key = (ack["recorder"], int(ack["seq"]))
                if ack.get("status") in ("stored", "duplicate") and key in finals and key not in stored:
                    stored[key] = t
        waits, firsts, skewed = [], [], 0
        for key, t_ack in stored.items():
            before = [t for t in finals[key] if t <= t_ack + TAP_SKEW_S]
            if before:
                skewed += max(before) > t_ack
                waits.append(max(0.0, t_ack - max(before)))  # the publication the ack answered
                firsts.append(max(0.0, t_ack - min(before)))  # the first one: resend waits included
        waits.sort()
        firsts.sort()
        last_ack = max(stored.values(), default=None)

        def pct(p: float, xs: list[float] | None = None) -> float | None:
            xs = waits if xs is None else xs
            return round(xs[min(len(xs) - 1, int(p * len(xs)))], 3) if xs else None

        return {
            "segments_timed": len(waits),
            "p50_s": pct(0.50),
            "p90_s": pct(0.90),
            "p99_s": pct(0.99),
            "max_s": round(waits[-1], 3) if waits else None,
            "mean_s": round(statistics.fmean(waits), 3) if waits else None,
            # From the final chunk's *first* relay (a resend after a lost or slow answer counts in).
            "from_first_publication": {"p50_s": pct(0.5, firsts), "p99_s": pct(0.99, firsts)},
            "first_chunk_to_last_ack_s": (
                round(last_ack - first_chunk, 2) if last_ack is not None and first_chunk is not None else None
            ),
            "final_chunks_relayed_again": sum(len(v) - 1 for v in finals.values()),
            "tap_skew_pairs": skewed,
        }

    def summary(self, sync_s: float, docks_cpu: float, bench_cpu: float) -> dict[str, Any]:
        """Throughput, latency, CPU, per-worker bytes, and the exactly-once verdict per recorder."""
        problems: list[str] = []
        seen_by: dict[str, list[str]] = defaultdict(list)  # problem text -> the recorders it was seen for
        records = segments = rehashed = 0
        resent = Counter[str]()
        for rig in self.rigs:
            assert rig.watched is not None
            assert rig.child is not None
            verdict = check_exactly_once(
                fleet=self.fleet,
                device=rig.recorder,
                spool=rig.spool,
                outbox=rig.outbox,
                db=self.db,
                store=self.store,
                staging=self.data / "staging",
                database_url=None if self.db else self.url,
                own_events_only=True,
                blobs=self.blobs,
            )
            for p in verdict["problems"]:
                seen_by[p].append(rig.recorder)
            problems += [f"{rig.recorder}: erase-after-ack: {v}" for v in rig.watched.violations]
            records += verdict["records"]
            segments += verdict["segments"]
            rehashed += verdict["rehashed_bytes"]
            resent.update(verdict["resends"])
            try:
                final = json.loads(rig.child.text("out"))
            except ValueError:
                final = {}
                problems.append(f"{rig.dock}: the dock printed no summary:\n{rig.child.tail()}")
            if final and (final.get("finished") is not True or final.get("rejected") or final.get("forks")):
                problems.append(f"{rig.dock}: the dock did not finish cleanly: {final}")
        if self.staging_left is not None and (left := self.staging_left()):
            problems.append(f"the store's staging area still holds {len(left)} objects: {left[:5]}")
        # An event naming no device is judged with every recorder: one line for it, not fifty.
        problems = [
            f"{who[0] if len(who) == 1 else f'{len(who)} recorders'}: {text}" for text, who in seen_by.items()
        ] + problems
        chunks = self.taps["chunk"].read(3)
        chunk_keys = Counter(
            (dict(p.split(":", 1) for p in parts[2].split(" ") if ":" in p).get("digest"),
             dict(p.split(":", 1) for p in parts[2].split(" ") if ":" in p).get("offset"))
            for _t, parts in chunks if len(parts) >= 3
        )  # fmt: skip
        cpu = {k: round(v, 1) for k, v in self.cpu.used().items()}
        socat = round(sum(v for k, v in cpu.items() if k.startswith("socat-")), 1)
        cpu = {k: v for k, v in cpu.items() if not k.startswith("socat-")}
        busy, total = self.cpu.machine()
        ours = sum(cpu.values()) + socat + docks_cpu + bench_cpu
        io = {
            name: {
                "wchar_mib": round(v.get("wchar", 0) / MIB, 1),
                "rchar_mib": round(v.get("rchar", 0) / MIB, 1),
            }
            for name, v in self.worker_io.items()
        }
        return {
            "seed": self.seed,
            "settings": asdict(self.s),
            "database": self.url.split("://", 1)[0],
            "docks": len(self.rigs),
            "workers": self.s.workers,
            "bytes": self.total,
            "mib": round(self.total / MIB, 1),
            "segments_synced": self.segments,
            "sync_s": round(sync_s, 2),
            "mb_per_s": round(self.total / 1e6 / sync_s, 1),
            "segments_per_s": round(self.segments / sync_s, 1),
            "latency_last_chunk_to_stored_ack": self.latency(),
            "cpu_s": {
                **cpu,
                "docks (all)": round(docks_cpu, 1),
                "pty relays (socat, all)": socat,
                "bench process (recorder links, judge polls)": round(bench_cpu, 1),
            },
            "machine": {
                "core_s": round(total, 1),
                "busy_core_s": round(busy, 1),
                "busy_pct": round(100 * busy / total, 1) if total else None,
                "busy_not_ours_core_s": round(busy - ours, 1),
            },
            "worker_io": io,
            "killed": self.killed,
            "chunk_msgs_relayed": len(chunks),
            "chunk_msgs_relayed_again": sum(n - 1 for n in chunk_keys.values()),
            "records": records,
            "segments": segments,
            "rehashed_bytes": rehashed,
            "resends": dict(resent),
            "problems": problems,
            "exactly_once": not problems,
        }
