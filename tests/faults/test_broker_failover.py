"""Broker fail-over: two Mosquittos, an ingest worker on each, one dock listing both — kill -9 a broker mid-sync.

What runs (every piece real, started here and stopped by PID): two Mosquitto instances from the same
``provisioning.write_broker_config`` files (mTLS, ACL, CRL, persistence), each on its own free port; one
``fieldproof server ingest`` per broker, both on the same SQLite database, store and staging; the dock's
``fieldproof dock sync-once`` with ``[mqtt] brokers = [A, B]``; the recorder's side of the control link in
this process (``WatchedRecorder``); and a ``mosquitto_sub`` tap per broker on ``P/dev/<dock>/#`` printing the
time each message was relayed (``%U``), so what went through which broker — and when — is seen from outside.

The two brokers share nothing: no session, no queue, no retained state. What the dock sends after it moves
is therefore decided by the dock alone (``have?``, then every record not yet final, then each file from the
``received`` offset the server names) and by paho, which replays its unacknowledged QoS 1 publishes to the
new broker on connect.

Scenarios, each judged exactly once at the end (``tests/faults/judge.py``):

a. broker A killed -9 mid-sync: the dock moves to B and finishes (≥ 50 MB);
b. A killed; A started again; then B killed: the dock returns to A and finishes;
c. A killed while one large file is half acknowledged: its first part went through A, the rest through B,
   and the dock resumes at the offset the server holds, not at 0;
d. A frozen (SIGSTOP: its sockets stay open, nothing answers) mid-sync: the dock's liveness watchdog
   (``[sync] broker_stall_s``), not keepalive, drops A; the dock moves to B and finishes; A, thawed later,
   hands its stale backlog to its worker, and still every segment is filed once.

The switch time — kill (or freeze) → the dock's CONNACK from the other broker → the first message the other
broker relays from the dock → the first ack it relays back — is printed (``-s``) and bounded loosely.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from edge.recorder.link import RecorderLink
from fieldproof.sample_chain import write_sample_spool
from provisioning import write_broker_config
from tests.edge.dock.conftest import Fleet, dock_toml
from tests.edge.dock.helpers import PREFIX, PtyPair, journal_facts, pty_pair
from tests.faults.judge import MIB, check_exactly_once, outbox_state
from tests.faults.processes import FIELDPROOF, ROOT, CampaignError, Child, child_env, tap_argv, wait_until
from tests.faults.recorder import WatchedRecorder
from tests.provisioning.helpers import Broker, free_port

RECORDER = "REC-0001"
DOCK = "DOCK-01"
RETRY_MAX_S = 2.0  # the dock's --retry-max, as in the fault campaign
ACK_TIMEOUT_S = 1.0  # the dock's --ack-timeout
SCENARIO_DEADLINE_S = 120.0  # a bound, not an expectation (each scenario takes ~10 s here)
STALL_S = 30.0
# A generous bound on kill → first publish on the other broker: the dock must notice the dead connection
# at once (the socket closes), not after a keepalive (10 s) or a resend timer.
SWITCH_BOUND_S = 3.0
# Scenario d: the dock's watchdog and keepalive. keepalive 60 (the old default), so paho alone would take
# about 2 minutes to give up on a frozen broker; the watchdog must act after BROKER_STALL_S of silence.
BROKER_STALL_S = 5.0
FROZEN_KEEPALIVE_S = 60
# A generous bound on freeze → first publish on the other broker: the silence, then a local reconnect.
FROZEN_SWITCH_BOUND_S = BROKER_STALL_S + 15.0
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


@dataclass
class Relayed:
    """One message a tap saw its broker relay: wall-clock time, topic below ``P/dev/<dock>/``, length."""

    t: float
    what: str
    length: int
    props: dict[str, str]


def log_times(text: str, pattern: str) -> list[float]:
    """Wall-clock times of the log lines (``%(asctime)s`` first, local time) that contain ``pattern``."""
    times = []
    for line in text.splitlines():
        m = _LOG_TIME.match(line)
        if m and pattern in line:
            times.append(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return times


@dataclass
class Side:
    """One broker of the pair, its ingest worker and its taps (a new tap with each broker run)."""

    name: str
    port: int
    broker: Broker
    ingest: Child
    logs: Path
    ca: Path
    taps: list[Child] = field(default_factory=list)
    killed_at: list[float] = field(default_factory=list)
    frozen: bool = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def down(self) -> bool:
        return self.broker.proc is None or self.broker.proc.poll() is not None

    def start_broker(self) -> None:
        """Start Mosquitto (waits until it listens) and a tap on the dock's topics."""
        self.broker.start()
        topic = f"{PREFIX}/dev/{DOCK}/#"
        tap = Child(f"tap-{self.name}", lambda: tap_argv(self.ca, self.port, topic, "%U %t %l %P"), self.logs)
        tap.runs = len(self.taps)
        self.taps.append(tap)
        tap.start()
        wait_until(f"tap {self.name}'s subscription", lambda: "Subscribed (mid" in tap.text("out"), 10)

    def subscriptions(self) -> int:
        """How often the ingest worker has been subscribed on this broker (its log, this run)."""
        return sum(1 for line in self.ingest.text().splitlines() if line.endswith(": subscribed"))

    def wait_subscribed(self, times: int) -> None:
        def up() -> bool:
            if not self.ingest.alive():
                raise CampaignError(
                    f"ingest {self.name} exited with {self.ingest.reap()}:\n{self.ingest.tail()}"
                )
            return self.subscriptions() >= times

        wait_until(f"ingest {self.name} subscribed ({times})", up, 30)

    def kill9(self) -> float:
        """kill -9 the broker by PID; returns the wall-clock time of the kill."""
        assert self.broker.proc is not None
        t = time.time()
        os.kill(self.broker.proc.pid, signal.SIGKILL)
        if self.broker.proc.wait(timeout=10) != -signal.SIGKILL:
            raise CampaignError(f"broker {self.name} had already ended when the kill came")
        self.killed_at.append(t)
        self.taps[-1].stop()
        return t

    def freeze(self) -> float:
        """SIGSTOP the broker: its TCP connections stay open, nothing is answered; the wall-clock time."""
        assert self.broker.proc is not None
        t = time.time()
        os.kill(self.broker.proc.pid, signal.SIGSTOP)
        self.frozen = True
        return t

    def thaw(self) -> None:
        """SIGCONT a frozen broker."""
        if self.frozen and self.broker.proc is not None:
            os.kill(self.broker.proc.pid, signal.SIGCONT)
        self.frozen = False

    def relayed(self) -> list[Relayed]:
        """Every message the taps saw this broker relay on the dock's topics, in time order."""
        base = f"{PREFIX}/dev/{DOCK}/"
        seen = []
        for tap in self.taps:
            if tap.out is None or not tap.out.exists():
                continue
            for line in tap.out.read_text(errors="replace").splitlines():
                parts = line.split(" ")
                if len(parts) < 3 or not parts[1].startswith(base):
                    continue  # mosquitto_sub's debug lines
                props = dict(p.split(":", 1) for p in parts[3:] if ":" in p)
                seen.append(Relayed(float(parts[0]), parts[1][len(base) :], int(parts[2]), props))
        return sorted(seen, key=lambda r: r.t)


class FailoverRig:
    """Two brokers (A listed first), an ingest worker on each, one dock, one recorder; see the module doc."""

    def __init__(
        self, fleet: Fleet, work: Path, sizes: list[int], seed: int, *, keepalive_s: int = 10, sync: str = ""
    ) -> None:
        self.fleet = fleet
        self.keepalive_s = keepalive_s
        self.sync = sync  # the dock.toml's [sync] table (dock_toml)
        self.work = work
        self.sizes = sizes
        self.seed = seed
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.data = work / "server"
        self.db = self.data / "fieldproof.db"
        self.store = self.data / "store"
        self.spool = work / "recorder" / "spool"
        self.outbox = work / "dock" / "outbox.sqlite"
        self.sides: dict[str, Side] = {}
        self.dock: Child | None = None
        self.recorder: WatchedRecorder | None = None
        self.link: RecorderLink | None = None
        self.pty: PtyPair | None = None
        self.t0 = time.monotonic()
        self.deadline = self.t0 + SCENARIO_DEADLINE_S
        self.total = sum(sizes)
        self.events: list[dict[str, Any]] = []
        self._fingerprint: tuple[int, ...] = ()
        self._moved_at = time.monotonic()
        self.dock_started = 0.0

    def say(self, text: str) -> None:
        print(f"[failover {time.monotonic() - self.t0:6.2f}s] {text}", file=sys.stderr, flush=True)

    # -- set-up -----------------------------------------------------------------------------------------

    def setup(self) -> None:
        """Spool, database, brokers A and B with their taps and ingest workers, the recorder's link."""
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
        media = random.Random(self.seed)
        w = write_sample_spool(
            self.spool,
            signer=self.fleet.signer(RECORDER),
            device=RECORDER,
            segments=len(self.sizes),
            media=lambda i: media.randbytes(self.sizes[i]),
            ca_chain=(self.fleet.ca / "ca-chain.pem").read_bytes(),
            start=start,
            seconds=5,
        )
        w.close()
        self.say(f"spool: {len(self.sizes)} segments, {self.total / MIB:.0f} MiB ({self.total / 1e6:.0f} MB)")
        self.data.mkdir(parents=True)
        env = child_env(
            {
                "FIELDPROOF_DATA_DIR": str(self.data),
                "FIELDPROOF_DATABASE_URL": f"sqlite:///{self.db}",
                "FIELDPROOF_CA_DIR": str(self.fleet.ca),
                "FIELDPROOF_SHARE_GROUP": f"failover{uuid.uuid4().hex[:8]}",
            }
        )
        migrated = subprocess.run(
            [FIELDPROOF, "server", "migrate"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        if migrated.returncode != 0:
            raise CampaignError(f"fieldproof server migrate failed:\n{migrated.stderr}")
        for name in ("A", "B"):
            port = free_port()
            conf = write_broker_config(self.fleet.ca, out=self.work / f"broker-{name}", port=port, user=None)
            side = Side(
                name=name,
                port=port,
                broker=Broker(conf=conf, port=port, log=self.logs / f"mosquitto-{name}.log"),
                # Each worker reads its own broker's port; everything else is the same settings.
                ingest=Child(
                    f"ingest-{name}",
                    lambda: [FIELDPROOF, "server", "ingest"],
                    self.logs,
                    {**env, "FIELDPROOF_MQTT_PORT": str(port)},
                ),
                logs=self.logs,
                ca=self.fleet.ca,
            )
            self.sides[name] = side
            side.start_broker()
            side.ingest.start()
        for side in self.sides.values():
            side.wait_subscribed(1)
        dock_toml(
            self.fleet,
            self.work / "dock",
            brokers=[self.sides["A"].port, self.sides["B"].port],
            dock=DOCK,
            mount_dir=self.work / "media",
            chunk_bytes=MIB,
            keepalive_s=self.keepalive_s,
            sync=self.sync,
        )
        (self.work / "ports").mkdir()
        self.pty = pty_pair(self.work / "ports", "acm0")
        self.recorder = WatchedRecorder(
            self.spool, self.fleet.signer(RECORDER), RECORDER, server_db=self.db, store=self.store
        )
        self.link = RecorderLink(
            str(self.pty.a),
            identity=self.recorder.identity(),
            status=self.recorder.status,
            chain_clock=self.recorder.chain_clock,
            release=self.recorder.release,
            server_keys=self.fleet.server_keys(),  # type: ignore[arg-type]
        )
        self.link.start()
        pty = self.pty
        self.dock = Child(
            "dock",
            lambda: [
                FIELDPROOF,
                "dock",
                "sync-once",
                "--config",
                str(self.work / "dock" / "dock.toml"),
                "--spool",
                str(self.spool),
                "--link",
                str(pty.b),
                "--retry-max",
                f"{RETRY_MAX_S:g}",
                "--ack-timeout",
                f"{ACK_TIMEOUT_S:g}",
                "--timeout",
                f"{SCENARIO_DEADLINE_S:.0f}",
                "-v",
            ],
            self.logs,
            child_env({}),
        )

    def start_dock(self) -> None:
        assert self.dock is not None
        self._moved_at = self.dock_started = time.monotonic()
        self.dock.start()

    # -- watching ---------------------------------------------------------------------------------------

    def acked(self) -> int:
        """File bytes the server has acknowledged to the dock (the dock's outbox, read-only)."""
        state = outbox_state(self.outbox)
        return state[0] if state is not None else 0

    def look(self) -> bool:
        """Check that nothing died by itself nor stalled; True once the dock finished (exit 0)."""
        assert self.dock is not None
        now = time.monotonic()
        state = outbox_state(self.outbox)
        if state is not None and state[1] != self._fingerprint:
            self._fingerprint, self._moved_at = state[1], now
        for side in self.sides.values():
            meant_up = not side.killed_at or len(side.taps) > len(side.killed_at)
            if meant_up and side.down:
                raise CampaignError(
                    f"mosquitto {side.name} exited by itself:\n{side.broker.log_text()[-2000:]}"
                )
            if not side.ingest.alive():
                raise CampaignError(f"ingest {side.name} exited by itself:\n{side.ingest.tail()}")
        if not self.dock.alive():
            rc = self.dock.reap()
            if rc != 0:
                raise CampaignError(f"the dock's sync-once exited with {rc}:\n{self.dock.tail()}")
            return True
        if now - self._moved_at > STALL_S:
            raise CampaignError(f"stalled: the dock's outbox unchanged for {STALL_S:g}s:\n{self.dock.tail()}")
        if now > self.deadline:
            raise CampaignError(f"scenario deadline passed ({self.acked() / MIB:.1f} MiB acknowledged)")
        return False

    def wait(self, what: str, cond: Callable[[], bool], every: float = 0.02) -> None:
        """Wait until ``cond``; CampaignError if the dock finishes first (the fault came too late)."""
        while not cond():
            if self.look():
                raise CampaignError(f"the dock finished before {what}: make the spool larger")
            time.sleep(every)

    def finish(self) -> float:
        """Wait for the dock to finish; the time from its start."""
        assert self.dock is not None
        while not self.look():
            time.sleep(0.05)
        return time.monotonic() - self.dock_started

    def kill(self, name: str) -> float:
        side = self.sides[name]
        fraction = self.acked() / self.total
        t = side.kill9()
        self.events.append({"kill": name, "t": t, "acked": round(fraction, 3)})
        self.say(f"broker {name} killed -9 at {fraction:.1%} of the bytes acknowledged")
        self._moved_at = time.monotonic()
        return t

    def freeze(self, name: str) -> float:
        fraction = self.acked() / self.total
        t = self.sides[name].freeze()
        self.events.append({"freeze": name, "t": t, "acked": round(fraction, 3)})
        self.say(f"broker {name} frozen (SIGSTOP) at {fraction:.1%} of the bytes acknowledged")
        self._moved_at = time.monotonic()
        return t

    def thaw(self, name: str) -> None:
        self.sides[name].thaw()
        self.events.append({"thaw": name, "t": time.time()})
        self.say(f"broker {name} thawed (SIGCONT)")

    def restart(self, name: str) -> None:
        """Start a killed broker again on its port; wait until its ingest worker has subscribed again."""
        side = self.sides[name]
        before = side.subscriptions()
        t = time.time()
        side.start_broker()
        side.wait_subscribed(before + 1)
        self.events.append({"restart": name, "t": t, "ingest_back_s": round(time.time() - t, 3)})
        self.say(f"broker {name} back, its ingest subscribed again")

    def connected_to(self, name: str, after: float) -> bool:
        """Whether the dock's log says it connected to broker ``name`` after wall-clock ``after``."""
        assert self.dock is not None
        return any(
            t >= after - 0.01 for t in log_times(self.dock.text(), f"connected to {self.sides[name].address}")
        )

    # -- the end ----------------------------------------------------------------------------------------

    def switch_times(self, killed: str, to: str, t_kill: float) -> dict[str, float | None]:
        """Seconds from ``killed``'s kill to the dock's CONNACK on ``to``, its first publication there, the
        first ack ``to`` relays back, and (from the dock's log) the moment it noticed the loss."""
        assert self.dock is not None
        log = self.dock.text()
        relayed = self.sides[to].relayed()

        def first(times: list[float]) -> float | None:
            later = [t - t_kill for t in times if t >= t_kill - 0.01]
            return round(min(later), 3) if later else None

        return {
            "noticed_s": first(log_times(log, f"lost the broker {self.sides[killed].address}")),
            "connack_s": first(log_times(log, f"connected to {self.sides[to].address}")),
            "first_publish_s": first([r.t for r in relayed if r.what.startswith("up/")]),
            "first_record_s": first([r.t for r in relayed if r.what == "up/record"]),
            "first_ack_s": first([r.t for r in relayed if r.what == "down/ack"]),
        }

    def close(self) -> None:
        """Stop everything, by PID (the dock first, the brokers last)."""
        children = [self.dock, *(s.ingest for s in self.sides.values())]
        for child in children:
            if child is not None:
                with contextlib.suppress(Exception):
                    child.stop()
        if self.link is not None:
            self.link.stop()
        if self.pty is not None:
            self.pty.stop()
        if self.recorder is not None:
            self.recorder.writer.close()
        for side in self.sides.values():
            side.thaw()  # a stopped process would hold SIGTERM until its stop timeout
            for tap in side.taps:
                with contextlib.suppress(Exception):
                    tap.stop()
            side.broker.stop()

    def judge(self) -> dict[str, Any]:
        """Exactly once (judge.py), no early release, and the dock's last word: problems empty = sound."""
        assert self.dock is not None
        assert self.recorder is not None
        verdict = check_exactly_once(
            fleet=self.fleet,
            device=RECORDER,
            spool=self.spool,
            outbox=self.outbox,
            db=self.db,
            store=self.store,
            staging=self.data / "staging",
        )
        problems = list(verdict["problems"])
        problems += [f"erase-after-ack: {v}" for v in self.recorder.violations]
        try:
            final = json.loads(self.dock.text("out"))
        except ValueError:
            final = {}
            problems.append(f"the dock printed no summary:\n{self.dock.tail()}")
        if final and (final.get("finished") is not True or final.get("rejected") or final.get("forks")):
            problems.append(f"the dock did not finish cleanly: {final}")
        if self.dock.exits != [0]:
            problems.append(f"the dock's runs exited {self.dock.exits}; one run, exit 0, was expected")
        verdict["problems"] = problems
        verdict["dock_sync"] = final.get("sync", {}) if final else {}
        verdict["relayed_up"] = {
            name: dict(
                sorted(
                    {
                        what: sum(1 for r in side.relayed() if r.what == what)
                        for what in ("up/record", "up/chunk", "up/have")
                    }.items()
                )
            )
            for name, side in self.sides.items()
        }
        return verdict


def _run(rig: FailoverRig, scenario: Callable[[FailoverRig], None]) -> dict[str, Any]:
    """Set up, start the dock, run ``scenario`` (its faults), wait for the end, stop all, judge."""
    try:
        rig.setup()
        rig.start_dock()
        scenario(rig)
        sync_s = rig.finish()
        rig.say(f"the dock finished {sync_s:.1f}s after it started")
    finally:
        rig.close()
    verdict = rig.judge()
    verdict["sync_s"] = round(sync_s, 2)
    verdict["bytes"] = rig.total
    verdict["mb"] = round(rig.total / 1e6, 1)
    verdict["seed"] = rig.seed
    return verdict


def _sizes(rng: random.Random, total_mib: int, mean_mib: float = 4.0) -> list[int]:
    sizes: list[int] = []
    while sum(sizes) < total_mib * MIB:
        sizes.append(rng.randint(int(mean_mib * 0.6 * MIB), int(mean_mib * 1.4 * MIB)))
    return sizes


def _seed() -> int:
    raw = os.environ.get("FIELDPROOF_FAULTS_SEED", "").strip()
    seed = int(raw) if raw else random.SystemRandom().randrange(2**32)
    print(f"broker fail-over: seed {seed} (FIELDPROOF_FAULTS_SEED={seed} repeats the spool)", file=sys.stderr)
    return seed


def _report(name: str, verdict: dict[str, Any], switches: list[dict[str, Any]]) -> None:
    shown = {k: v for k, v in verdict.items() if k not in {"problems"}}
    print(
        json.dumps(
            {"scenario": name, **shown, "switches": switches, "problems": verdict["problems"]}, indent=1
        )
    )


# -- the scenarios ------------------------------------------------------------------------------------------


def test_a_broker_killed_mid_sync_the_dock_moves_to_the_other_and_finishes(
    fleet: Fleet, tmp_path: Path
) -> None:
    seed = _seed()
    rig = FailoverRig(fleet, tmp_path / "a", _sizes(random.Random(seed), 64), seed)
    kills: dict[str, float] = {}

    def scenario(r: FailoverRig) -> None:
        r.wait("35 % acknowledged via A", lambda: r.acked() >= 0.35 * r.total)
        kills["A"] = r.kill("A")
        r.wait("the dock on B", lambda: r.connected_to("B", kills["A"]))

    verdict = _run(rig, scenario)
    switch: dict[str, Any] = {"from": "A", "to": "B", **rig.switch_times("A", "B", kills["A"])}
    _report("a", verdict, [switch])

    assert verdict["problems"] == [], f"seed {seed}"
    assert verdict["bytes"] >= 50 * 1_000_000
    relayed = {name: side.relayed() for name, side in rig.sides.items()}
    # A carried the sync until the kill (listed first), B the rest; B relayed nothing from the dock before.
    # (The taps stamp what they read: the last messages A sent them arrive a moment after the kill.)
    assert [r for r in relayed["A"] if r.what.startswith("up/") and r.t > kills["A"] + 0.5] == []
    assert [r for r in relayed["B"] if r.what.startswith("up/") and r.t < kills["A"]] == []
    assert any(r.what == "up/chunk" for r in relayed["A"])
    assert any(r.what == "up/chunk" for r in relayed["B"])
    assert switch["first_publish_s"] is not None
    assert switch["first_publish_s"] < SWITCH_BOUND_S


def test_b_a_killed_then_b_killed_while_a_is_back_the_dock_returns_to_a(fleet: Fleet, tmp_path: Path) -> None:
    seed = _seed()
    rig = FailoverRig(fleet, tmp_path / "b", _sizes(random.Random(seed), 100), seed)
    kills: dict[str, float] = {}

    def scenario(r: FailoverRig) -> None:
        r.wait("10 % acknowledged via A", lambda: r.acked() >= 0.10 * r.total)
        kills["A"] = r.kill("A")
        r.wait("the dock on B", lambda: r.connected_to("B", kills["A"]))
        r.restart("A")
        at = r.acked()
        r.wait("progress through B", lambda: r.acked() >= at + 2 * MIB)
        kills["B"] = r.kill("B")
        r.wait("the dock back on A", lambda: r.connected_to("A", kills["B"]))

    verdict = _run(rig, scenario)
    switches: list[dict[str, Any]] = [
        {"from": "A", "to": "B", **rig.switch_times("A", "B", kills["A"])},
        {"from": "B", "to": "A", **rig.switch_times("B", "A", kills["B"])},
    ]
    _report("b", {**verdict, "events": rig.events}, switches)

    assert verdict["problems"] == [], f"seed {seed}"
    assert rig.dock is not None
    connects = [
        (t, name)
        for name, side in rig.sides.items()
        for t in log_times(rig.dock.text(), f"connected to {side.address}")
    ]
    assert [name for _t, name in sorted(connects)] == ["A", "B", "A"]
    up_a = [r.t for r in rig.sides["A"].relayed() if r.what.startswith("up/")]
    assert any(t > kills["B"] for t in up_a), "the restarted A carried none of the rest"
    # While B worked, the dock stayed on it although A was back (it starts each round at the last broker
    # that worked, docs/dock.md): nothing went through A between its restart and B's kill.
    restarted = next(e["t"] for e in rig.events if e.get("restart") == "A")
    assert [t for t in up_a if restarted <= t < kills["B"]] == []
    for s in switches:
        assert s["first_publish_s"] is not None
        assert s["first_publish_s"] < SWITCH_BOUND_S


def test_c_a_file_half_sent_via_a_and_finished_via_b_is_filed_once(fleet: Fleet, tmp_path: Path) -> None:
    seed = _seed()
    rng = random.Random(seed)
    big = 48 * MIB + rng.randrange(MIB)  # not a whole number of chunks: a short last one
    sizes = [*_sizes(rng, 8), big, *_sizes(rng, 8)]
    rig = FailoverRig(fleet, tmp_path / "c", sizes, seed)
    kills: dict[str, float] = {}
    at_kill: dict[str, int] = {}

    def big_row() -> tuple[str, int] | None:
        try:
            with contextlib.closing(
                sqlite3.connect(rig.outbox.as_uri() + "?mode=ro", uri=True, timeout=5)
            ) as db:
                row = db.execute("SELECT state, acked_offset FROM records WHERE size = ?", (big,)).fetchone()
        except sqlite3.Error:
            return None
        return (str(row[0]), int(row[1])) if row else None

    def half_way() -> bool:
        row = big_row()
        if row is not None and row[0] in {"stored", "duplicate"}:
            raise CampaignError("the big file was stored before the kill could strike")
        return row is not None and 0 < row[1] <= big // 2

    def scenario(r: FailoverRig) -> None:
        r.wait("the big file partly acknowledged via A", half_way, every=0.005)
        at_kill["acked"] = (big_row() or ("", 0))[1]
        kills["A"] = r.kill("A")
        r.wait("the dock on B", lambda: r.connected_to("B", kills["A"]))

    verdict = _run(rig, scenario)
    switch: dict[str, Any] = {"from": "A", "to": "B", **rig.switch_times("A", "B", kills["A"])}
    digest = next(f.digest for f in journal_facts(rig.spool) if f.size == big)

    def spans(name: str) -> list[tuple[int, int]]:
        return sorted(
            (int(r.props["offset"]), int(r.props["offset"]) + r.length)
            for r in rig.sides[name].relayed()
            if r.what == "up/chunk" and r.props.get("digest") == digest
        )

    via_a, via_b = spans("A"), spans("B")
    acked = at_kill["acked"]

    def reach(spans: list[tuple[int, int]], start: int) -> int:
        """How far the spans cover the file contiguously from ``start``."""
        covered = start
        for s, e in spans:
            if s > covered:
                break
            covered = max(covered, e)
        return covered

    first_b = via_b[0][0] if via_b else None
    relayed_b = rig.sides["B"].relayed()
    have_b = min((r.t for r in relayed_b if r.what == "up/have"), default=float("inf"))
    file_report = {
        "size": big,
        "acked_at_kill": acked,
        "seen_via_A": [0, reach(via_a, 0)] if via_a else None,
        "bytes_via_A": sum(e - s for s, e in via_a),
        "first_offset_via_B": first_b,
        "bytes_via_B": sum(e - s for s, e in via_b),
        # B relayed beyond the file's rest from its first offset: chunks sent twice through B.
        "resent_via_B": sum(e - s for s, e in via_b) - (big - first_b) if first_b is not None else None,
        # paho's replay: the publications A never acknowledged, sent to B at its CONNACK, before have?.
        "chunks_via_B_before_have": sum(1 for r in relayed_b if r.what == "up/chunk" and r.t < have_b),
    }
    _report("c", {**verdict, "big_file": file_report}, [switch])

    assert verdict["problems"] == [], f"seed {seed}"  # among them: the blob re-hashes to the signed digest
    assert via_a, "none of the file went through A"
    assert via_b, "none of the file went through B"
    assert via_a[0][0] == 0  # the file began through A …
    assert reach(via_b, via_b[0][0]) == big  # … and B relayed all the rest, to the last byte
    # B holds no session of A's: the dock resumed at what the server had acknowledged, not at 0. (Between
    # A's last relay its tap saw and B's first there may be chunks A passed to its worker but not to the
    # tap before it died: the server had them — the file is complete and re-hashes.)
    assert via_b[0][0] >= acked > 0
    assert switch["first_publish_s"] is not None
    assert switch["first_publish_s"] < SWITCH_BOUND_S


def test_d_a_broker_frozen_mid_sync_the_watchdog_moves_the_dock_to_the_other(
    fleet: Fleet, tmp_path: Path
) -> None:
    seed = _seed()
    rig = FailoverRig(
        fleet,
        tmp_path / "d",
        _sizes(random.Random(seed), 64),
        seed,
        keepalive_s=FROZEN_KEEPALIVE_S,
        sync=f"broker_stall_s = {BROKER_STALL_S}",
    )
    frozen: dict[str, float] = {}

    def scenario(r: FailoverRig) -> None:
        r.wait("35 % acknowledged via A", lambda: r.acked() >= 0.35 * r.total)
        frozen["A"] = r.freeze("A")
        r.wait("the dock on B", lambda: r.connected_to("B", frozen["A"]))
        at = r.acked()
        r.wait("progress through B", lambda: r.acked() >= at + 4 * MIB)
        # A wakes up: it relays to its worker what the dock had written into the socket before it froze.
        r.thaw("A")

    verdict = _run(rig, scenario)
    switch: dict[str, Any] = {"from": "A", "to": "B", **rig.switch_times("A", "B", frozen["A"])}
    _report("d", {**verdict, "events": rig.events}, [switch])

    assert verdict["problems"] == [], f"seed {seed}"  # every segment on the server exactly once
    assert verdict["bytes"] >= 50 * 1_000_000
    assert rig.dock is not None
    log = rig.dock.text()
    a = rig.sides["A"].address
    # The watchdog dropped A (keepalive would have taken ~2 minutes) and the next round began at B: the hung
    # A (which still accepts TCP: a 5 s connect timeout) was not tried again.
    lost = [line for line in log.splitlines() if f"lost the broker {a}" in line]
    assert len(lost) == 1, lost
    assert "no answer for" in lost[0], lost
    assert "awaiting their PUBACK" in lost[0], lost
    refused_a = [line for line in log.splitlines() if f" broker {a}: " in line and "lost the" not in line]
    assert refused_a == []
    connects = [
        (t, n) for n, side in rig.sides.items() for t in log_times(log, f"connected to {side.address}")
    ]
    assert [n for _t, n in sorted(connects)] == ["A", "B"]
    relayed = {name: side.relayed() for name, side in rig.sides.items()}
    assert [r for r in relayed["B"] if r.what.startswith("up/") and r.t < frozen["A"]] == []
    assert any(r.what == "up/chunk" for r in relayed["A"])
    assert any(r.what == "up/chunk" for r in relayed["B"])
    assert switch["noticed_s"] is not None
    assert switch["noticed_s"] >= BROKER_STALL_S - 1.0  # A had answered until the freeze
    assert switch["first_publish_s"] is not None
    assert switch["first_publish_s"] < FROZEN_SWITCH_BOUND_S
