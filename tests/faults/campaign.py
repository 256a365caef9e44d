"""The sync fault campaign: dock → Mosquitto → ingest, every piece a real process killed -9 at random moments.

What runs (each started here and stopped by PID):

- **Mosquitto** from ``provisioning.write_broker_config`` (mutual TLS, ACL, CRL) on 127.0.0.1, restarted
  on the same port after every kill;
- **the ingest**: ``fieldproof server ingest`` with ``FIELDPROOF_*`` settings, on an SQLite database made
  by ``fieldproof server migrate`` and a local evidence store;
- **the dock**: ``fieldproof dock sync-once --link PTY`` — after a kill it is simply started again and
  resumes from its outbox;
- **the recorder's side of the control link**, in this process: the real ``RecorderLink`` on a socat pty
  with ``tests.edge.dock.helpers.SpoolRecorder``, which frees a file only on a genuine signed ack. Each
  time it frees a file this driver looks in the server's database and store first: a file freed before
  the server holds it durably is a violation;
- **a tap**: ``mosquitto_sub`` (ingest identity) on the dock's ``up/`` topics, counting what the broker
  relayed, so resends can be counted (it dies with the broker and is restarted with it).

The schedule is drawn from a seeded ``random.Random`` (the seed is printed): the faults — kill -9 of the
broker, the ingest, the dock, and link cuts (the broker stopped for ``cut_factor`` times the dock's
longest back-off) — in random order, each striking when a random fraction of the file bytes has been
acknowledged to the dock (so every fault hits a sync in progress, and the sync moves on between two
faults), plus a random delay so the moment is not tied to an ack. When the dock finishes, everything is
stopped and judged from the server's database and store, the dock's outbox and the recorder's spool
(``check_exactly_once``).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from edge.recorder.link import RecorderLink
from fieldproof.sample_chain import write_sample_spool
from provisioning import enroll, init_ca, write_broker_config
from tests.edge.dock.conftest import Fleet, dock_toml
from tests.edge.dock.helpers import PREFIX, PtyPair, pty_pair
from tests.faults.judge import MIB, check_exactly_once, open_rows_text, outbox_state
from tests.faults.processes import (
    FIELDPROOF,
    ROOT,
    CampaignError,
    Child,
    child_env,
    tap_argv,
    tap_counts,
    wait_until,
)
from tests.faults.recorder import WatchedRecorder
from tests.provisioning.helpers import Broker, free_port

__all__ = ["MIB", "Campaign", "CampaignError", "CampaignSettings", "Fault", "plan", "provision"]


@dataclass
class CampaignSettings:
    """How big, how many faults of each kind, and the dock's timing."""

    size_mib: int = 300
    broker_kills: int = 5
    ingest_kills: int = 5
    dock_kills: int = 5
    link_cuts: int = 1
    segment_mib: float = 5.0  # mean segment size; each is drawn within ±40 %
    retry_max_s: float = 2.0  # the dock's longest back-off (--retry-max)
    ack_timeout_s: float = 1.0  # the dock's first resend (--ack-timeout)
    cut_factor: float = 3.0  # a link cut keeps the broker down this many retry windows
    chunk_bytes: int = MIB
    seed: int | None = None
    deadline_s: float = 900.0  # bound on the whole campaign: past it, CampaignError
    stall_s: float = 60.0  # everything up, and the dock's outbox unchanged this long: CampaignError
    recorder: str = "REC-0001"
    dock: str = "DOCK-01"


@dataclass(frozen=True)
class Fault:
    """One planned fault: its kind, the acknowledged fraction of the bytes that arms it, then a delay."""

    kind: str
    at: float
    delay_s: float


def plan(rng: random.Random, s: CampaignSettings, first: float = 0.03, last: float = 0.85) -> list[Fault]:
    """The faults in random order, armed at random points spread over ``first``–``last`` of the bytes.

    One point per equal slot (drawn in the middle 80 % of its slot), so two faults never strike without
    the sync moving on between them; the last slot ends well before the end, so every fault strikes while
    bytes are still going.
    """
    kinds = (
        ["broker"] * s.broker_kills
        + ["ingest"] * s.ingest_kills
        + ["dock"] * s.dock_kills
        + ["link-cut"] * s.link_cuts
    )
    rng.shuffle(kinds)
    width = (last - first) / max(1, len(kinds))
    return [
        Fault(kind, first + width * (i + rng.uniform(0.1, 0.9)), rng.uniform(0.0, 0.25))
        for i, kind in enumerate(kinds)
    ]


def provision(ca: Path, *, recorder: str = "REC-0001", dock: str = "DOCK-01") -> Fleet:
    """A fresh CA with one recorder and one dock enrolled (for runs outside pytest)."""
    init_ca(ca)
    enroll(ca, device=recorder, role="recorder")
    enroll(ca, device=dock, role="dock")
    return Fleet(ca)


def segment_sizes(rng: random.Random, s: CampaignSettings) -> list[int]:
    """Segment sizes around ``segment_mib`` adding up to at least ``size_mib``."""
    total, sizes = s.size_mib * MIB, []
    mean = int(s.segment_mib * MIB)
    while sum(sizes) < total:
        sizes.append(rng.randint(int(mean * 0.6), int(mean * 1.4)))
    return sizes


class Campaign:
    """One campaign in ``work``, for ``fleet``'s recorder and dock. ``run()`` returns the summary."""

    def __init__(self, fleet: Fleet, work: Path, settings: CampaignSettings | None = None) -> None:
        self.fleet = fleet
        self.work = work
        self.s = settings or CampaignSettings()
        self.seed = self.s.seed if self.s.seed is not None else random.SystemRandom().randrange(2**32)
        self.rng = random.Random(self.seed)
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.data = work / "server"
        self.db = self.data / "fieldproof.db"
        self.store = self.data / "store"
        self.spool = work / "recorder" / "spool"
        self.outbox = work / "dock" / "outbox.sqlite"
        self.port = free_port()
        self.broker: Broker | None = None
        self.ingest: Child | None = None
        self.dock: Child | None = None
        self.taps: list[Child] = []
        self.recorder: WatchedRecorder | None = None
        self.link: RecorderLink | None = None
        self.pty: PtyPair | None = None
        self.kills: Counter[str] = Counter()
        self.events: list[dict[str, Any]] = []
        self.unexpected: list[str] = []
        self.t0 = 0.0
        self.deadline = 0.0
        self.progress = 0
        self.total = 0
        self._fingerprint: tuple[int, ...] = ()
        self._moved_at = 0.0

    def say(self, text: str) -> None:
        """A line of the campaign's log, on stderr (pytest -s shows it)."""
        print(f"[faults {time.monotonic() - self.t0:7.2f}s] {text}", file=sys.stderr, flush=True)

    # -- set-up -------------------------------------------------------------------------------------

    def make_spool(self) -> list[int]:
        """A signed spool of ≥ size_mib of segments, dated inside the recorder's certificate."""
        media = random.Random(f"{self.seed}-media")
        sizes = segment_sizes(media, self.s)
        seconds = max(1, min(10, (25 * 60) // len(sizes)))  # all of it inside the last half hour
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
        w = write_sample_spool(
            self.spool,
            signer=self.fleet.signer(self.s.recorder),
            device=self.s.recorder,
            segments=len(sizes),
            media=lambda i: media.randbytes(sizes[i]),
            ca_chain=(self.fleet.ca / "ca-chain.pem").read_bytes(),
            start=start,
            seconds=seconds,
        )
        w.close()
        return sizes

    def _server_env(self) -> dict[str, str]:
        return child_env(
            {
                "FIELDPROOF_DATA_DIR": str(self.data),
                "FIELDPROOF_DATABASE_URL": f"sqlite:///{self.db}",
                "FIELDPROOF_CA_DIR": str(self.fleet.ca),
                "FIELDPROOF_MQTT_PORT": str(self.port),
                "FIELDPROOF_SHARE_GROUP": f"faults{uuid.uuid4().hex[:8]}",
            }
        )

    def _dock_argv(self) -> list[str]:
        assert self.pty is not None
        left = max(30.0, self.deadline - time.monotonic())
        return [
            FIELDPROOF,
            "dock",
            "sync-once",
            "--config",
            str(self.work / "dock" / "dock.toml"),
            "--spool",
            str(self.spool),
            "--link",
            str(self.pty.b),
            "--retry-max",
            f"{self.s.retry_max_s:g}",
            "--ack-timeout",
            f"{self.s.ack_timeout_s:g}",
            "--timeout",
            f"{left:.0f}",
            "-v",
        ]

    def _start_broker(self) -> None:
        assert self.broker is not None
        self.broker.start()  # waits until it listens
        tap = Child(
            "tap", lambda: tap_argv(self.fleet.ca, self.port, f"{PREFIX}/dev/{self.s.dock}/up/#"), self.logs
        )
        tap.runs = len(self.taps)
        self.taps.append(tap)
        tap.start()
        wait_until("the tap's subscription", lambda: "Subscribed (mid" in tap.text("out"), 10)

    def _start_ingest(self) -> None:
        assert self.ingest is not None
        self.ingest.start()
        ingest = self.ingest

        def up() -> bool:
            if not ingest.alive():
                raise CampaignError(f"the ingest exited with {ingest.reap()}:\n{ingest.tail()}")
            return "subscribing to" in ingest.text()

        wait_until("the ingest to subscribe", up, 60)

    def setup(self) -> None:
        """Spool, database, broker, tap, ingest, the recorder's link; not yet the dock."""
        sizes = self.make_spool()
        self.total = sum(sizes)
        self.say(f"spool: {len(sizes)} segments, {self.total / MIB:.0f} MiB ({self.total / 1e6:.0f} MB)")
        self.data.mkdir(parents=True)
        env = self._server_env()
        migrated = subprocess.run(
            [FIELDPROOF, "server", "migrate"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        if migrated.returncode != 0:
            raise CampaignError(f"fieldproof server migrate failed:\n{migrated.stderr}")
        conf = write_broker_config(self.fleet.ca, out=self.work / "broker", port=self.port, user=None)
        self.broker = Broker(conf=conf, port=self.port, log=self.logs / "mosquitto.log")
        self._start_broker()
        self.ingest = Child("ingest", lambda: [FIELDPROOF, "server", "ingest"], self.logs, env)
        self._start_ingest()
        dock_toml(
            self.fleet,
            self.work / "dock",
            brokers=[self.port],
            dock=self.s.dock,
            mount_dir=self.work / "media",
            chunk_bytes=self.s.chunk_bytes,
        )
        (self.work / "ports").mkdir()
        self.pty = pty_pair(self.work / "ports", "acm0")
        self.recorder = WatchedRecorder(
            self.spool,
            self.fleet.signer(self.s.recorder),
            self.s.recorder,
            server_db=self.db,
            store=self.store,
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
        self.dock = Child("dock", self._dock_argv, self.logs, child_env({}))

    # -- the run ------------------------------------------------------------------------------------

    def _look(self) -> bool:
        """Update progress, check that nothing died by itself nor stalled; True once the dock finished."""
        state = outbox_state(self.outbox)
        now = time.monotonic()
        if state is not None:
            self.progress = max(self.progress, state[0])
            if state[1] != self._fingerprint:
                self._fingerprint, self._moved_at = state[1], now
        assert self.broker is not None
        assert self.broker.proc is not None
        assert self.ingest is not None
        assert self.dock is not None
        if self.broker.proc.poll() is not None:
            raise CampaignError(f"mosquitto exited by itself ({self.broker.proc.returncode})")
        if not self.ingest.alive():
            raise CampaignError(f"the ingest exited by itself ({self.ingest.reap()}):\n{self.ingest.tail()}")
        if not self.dock.alive():
            rc = self.dock.reap()
            if rc != 0:
                raise CampaignError(f"the dock's sync-once exited with {rc}:\n{self.dock.tail()}")
            return True
        if now - self._moved_at > self.s.stall_s:
            raise CampaignError(self._stall_report(now))
        return False

    def _stall_report(self, now: float) -> str:
        relayed = [ln for ln in self.taps[-1].text("out").splitlines() if ln.startswith(PREFIX)]
        return (
            f"stalled: broker, ingest and dock all running, and the dock's outbox unchanged for "
            f"{now - self._moved_at:.0f}s (seed {self.seed}; {self.progress / MIB:.1f} of "
            f"{self.total / MIB:.1f} MiB acknowledged; faults so far {dict(self.kills)}, the last "
            f"{self.events[-1] if self.events else None}).\nOpen outbox rows:\n{open_rows_text(self.outbox)}\n"
            f"The last messages the broker relayed from the dock (tap):\n" + "\n".join(relayed[-8:])
        )

    def _fault(self, kind: str) -> None:
        assert self.broker is not None
        assert self.broker.proc is not None
        assert self.ingest is not None
        assert self.dock is not None
        self.events.append(
            {
                "t": round(time.monotonic() - self.t0, 2),
                "kind": kind,
                "acked": round(self.progress / self.total, 3),
            }
        )
        self.say(f"{kind} at {self.progress / self.total:.1%} of the bytes acknowledged")
        struck = True
        if kind == "broker":
            os.kill(self.broker.proc.pid, signal.SIGKILL)
            struck = self.broker.proc.wait(timeout=10) == -signal.SIGKILL
            self.taps[-1].stop()
            self._start_broker()
        elif kind == "ingest":
            struck = self.ingest.kill9()
            self._start_ingest()
        elif kind == "dock":
            # Had it just finished by itself, the new run finds everything final and exits 0 again.
            struck = self.dock.kill9()
            self.dock.start()
        elif kind == "link-cut":
            self.broker.stop()  # the link is gone: nothing answers on the broker's port
            self.taps[-1].stop()
            down = self.s.cut_factor * self.s.retry_max_s
            # The outage itself (not an assertion): longer than the dock's longest back-off.
            until = time.monotonic() + down
            while time.monotonic() < until:
                time.sleep(0.1)
                if not self.dock.alive():
                    raise CampaignError(f"the dock exited during the cut:\n{self.dock.tail()}")
            self._start_broker()
        else:
            raise ValueError(kind)
        self._moved_at = time.monotonic()  # a fault may pause the outbox; the stall clock starts again
        if struck:
            self.kills[kind] += 1
        else:
            self.unexpected.append(f"the {kind} had already ended when the kill came")

    def run(self) -> dict[str, Any]:
        """Set up, sync under faults, stop everything, judge; returns the summary (``problems`` empty: sound)."""
        self.t0 = time.monotonic()
        self.deadline = self.t0 + self.s.deadline_s
        print(
            f"sync fault campaign: seed {self.seed} (FIELDPROOF_FAULTS_SEED={self.seed} repeats it)",
            file=sys.stderr,
            flush=True,
        )
        try:
            self.setup()
            schedule = plan(self.rng, self.s)
            assert self.dock is not None
            t_sync = self._moved_at = time.monotonic()
            self.dock.start()
            for fault in schedule:
                armed = fault.at * self.total
                done = self._wait(
                    f"{fault.at:.1%} of the bytes acknowledged", lambda a=armed: self.progress >= a
                )
                if not done:
                    time.sleep(fault.delay_s)  # so that the moment is not tied to an ack
                    done = self._look()
                if done:
                    self.unexpected.append(f"the dock finished before the {fault.kind} fault could strike")
                    break
                self._fault(fault.kind)
            self._wait("the dock to finish", lambda: False)
            sync_s = time.monotonic() - t_sync
            self.say(f"the dock finished: {sync_s:.1f}s after it was first started")
        finally:
            self.close()
        return self.summary(sync_s)

    def _wait(self, what: str, cond: Callable[[], bool]) -> bool:
        """Wait (bounded by the campaign's deadline) until ``cond``; True if the dock finished meanwhile."""
        while True:
            if self._look():
                return True
            if cond():
                return False
            if time.monotonic() > self.deadline:
                raise CampaignError(
                    f"campaign deadline ({self.s.deadline_s:g}s) passed waiting for {what}; acknowledged "
                    f"{self.progress / MIB:.1f} of {self.total / MIB:.1f} MiB; kills {dict(self.kills)}"
                )
            time.sleep(0.1)

    def close(self) -> None:
        """Stop everything this campaign started, by PID (the dock first, the broker last)."""
        for child in (self.dock, self.ingest):
            if child is not None:
                with contextlib.suppress(Exception):
                    child.stop()
        if self.link is not None:
            self.link.stop()
        if self.pty is not None:
            self.pty.stop()
        if self.recorder is not None:
            self.recorder.writer.close()
        for tap in self.taps:
            with contextlib.suppress(Exception):
                tap.stop()
        if self.broker is not None:
            self.broker.stop()

    # -- judging -------------------------------------------------------------------------------------

    def summary(self, sync_s: float) -> dict[str, Any]:
        """Counts, figures and the exactly-once verdict."""
        assert self.dock is not None
        assert self.recorder is not None
        verdict = check_exactly_once(
            fleet=self.fleet,
            device=self.s.recorder,
            spool=self.spool,
            outbox=self.outbox,
            db=self.db,
            store=self.store,
            staging=self.data / "staging",
        )
        problems = list(verdict.pop("problems"))
        problems += [f"erase-after-ack: {v}" for v in self.recorder.violations]
        try:
            final = json.loads(self.dock.text("out"))
        except ValueError:
            final = {}
            problems.append(f"the last dock run printed no summary:\n{self.dock.tail()}")
        if final:
            if final.get("finished") is not True or final.get("rejected") or final.get("forks"):
                problems.append(f"the last dock run did not finish cleanly: {final}")
            if final.get("release_refused"):
                problems.append(f"the recorder refused acks: {final['release_refused']}")
        backoffs = [
            float(m)
            for run in range(1, self.dock.runs + 1)
            for m in re.findall(r"next round in ([0-9.]+)s", _read(self.logs / f"dock-{run}.log"))
        ]
        kills = {k: self.kills.get(k, 0) for k in ("broker", "ingest", "dock")}
        return {
            "seed": self.seed,
            "settings": asdict(self.s),
            "bytes": self.total,
            "mib": round(self.total / MIB, 1),
            "mb": round(self.total / 1e6, 1),
            "kills": kills,
            "link_cuts": self.kills.get("link-cut", 0),
            "link_cut_down_s": self.s.cut_factor * self.s.retry_max_s,
            "longest_dock_backoff_seen_s": max(backoffs, default=0.0),
            "dock_runs": self.dock.runs,
            "dock_exits": self.dock.exits,
            "ingest_runs": self.ingest.runs if self.ingest else 0,
            "broker_runs": len(self.taps),
            "sync_s": round(sync_s, 1),
            "sync_mb_per_s": round(self.total / 1e6 / sync_s, 1),
            "total_s": round(time.monotonic() - self.t0, 1),
            "faults": self.events,
            "resends": {
                **verdict.pop("resends"),
                "tap": tap_counts([t.out for t in self.taps if t.out], PREFIX, self.s.dock),
                "last_dock_run": final.get("sync", {}),
            },
            **verdict,
            "unexpected": self.unexpected,
            "problems": problems,
            "exactly_once": not problems,
        }


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""
