"""The campaign's processes: children started, killed -9 and stopped by PID, each run's output kept; the tap.

The tap is ``mosquitto_sub`` (the ingest identity may read every device's topics) on the dock's ``up/``
topics, printing topic, payload length and user properties of each message it is relayed: an outside
count of what the dock sent through the broker, resends included. It exits when the broker goes away,
so the campaign starts a new one with each broker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FIELDPROOF = str(Path(sys.executable).with_name("fieldproof"))
MOSQUITTO_SUB = "/usr/bin/mosquitto_sub"
STDBUF = "/usr/bin/stdbuf"  # mosquitto_sub's stdout to a file is block-buffered; -oL makes it line by line


class CampaignError(Exception):
    """The campaign could not run to the end (a process died by itself, a bounded wait ran out)."""


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """Our environment minus FIELDPROOF_* (none of ours leaks into a child's settings), plus ``extra``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FIELDPROOF_")}
    return {**base, **extra}


@dataclass
class Child:
    """A child process, restarted as often as asked, each run's output in its own files; stopped by PID."""

    name: str
    argv: Callable[[], list[str]]
    logs: Path
    env: dict[str, str] | None = None
    runs: int = 0
    proc: subprocess.Popen[bytes] | None = None
    out: Path | None = None
    err: Path | None = None
    exits: list[int] = field(default_factory=list)

    def start(self) -> None:
        """Start a new run."""
        self.runs += 1
        self.out = self.logs / f"{self.name}-{self.runs}.out"
        self.err = self.logs / f"{self.name}-{self.runs}.log"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(self.argv(), stdout=out, stderr=err, env=self.env, cwd=ROOT)

    def alive(self) -> bool:
        """True while the current run is running."""
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> bool:
        """SIGKILL the current run, by PID, and reap it; False if it had already ended by itself."""
        assert self.proc is not None, f"{self.name} was never started"
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        rc = self.proc.wait(timeout=10)
        self.exits.append(rc)
        return rc == -signal.SIGKILL

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not go; returns the exit code (None: never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            self.exits.append(self.proc.returncode)
        return self.proc.returncode

    def reap(self) -> int:
        """The exit code of a run that ended by itself (noted once)."""
        assert self.proc is not None
        rc = self.proc.wait(timeout=10)
        if len(self.exits) < self.runs:
            self.exits.append(rc)
        return rc

    def text(self, which: str = "err") -> str:
        """What the current run wrote to stderr (``err``) or stdout (``out``)."""
        path = self.err if which == "err" else self.out
        return path.read_text(errors="replace") if path is not None and path.exists() else ""

    def tail(self, n: int = 30) -> str:
        """The last lines of the current run's output, for error messages."""
        lines = (self.text("out") + self.text("err")).splitlines()
        return "\n".join(lines[-n:])


def wait_until(what: str, cond: Callable[[], bool], timeout: float, every: float = 0.05) -> None:
    """Poll ``cond``; CampaignError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise CampaignError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def tap_argv(ca: Path, port: int, topic: str, fmt: str = "%t %l %P") -> list[str]:
    """``mosquitto_sub`` as ``fieldproof-ingest`` (mTLS), MQTT v5, QoS 1: topic, length, user properties.

    ``fmt`` is mosquitto_sub's ``-F`` (e.g. ``%U %t %l %P`` to put the receive time first).
    """
    tls = [
        "--cafile",
        str(ca / "ca-chain.pem"),
        "--cert",
        str(ca / "ingest.pem"),
        "--key",
        str(ca / "ingest.key"),
    ]
    return [STDBUF, "-oL", MOSQUITTO_SUB, "-d", "-h", "127.0.0.1", "-p", str(port), *tls,
            "-V", "5", "-q", "1", "-t", topic, "-F", fmt]  # fmt: skip


def tap_counts(outputs: list[Path], prefix: str, dock: str) -> dict[str, Any]:
    """What the taps saw the broker relay on the dock's up/ topics (a lower bound: taps restart too)."""
    up = f"{prefix}/dev/{dock}/up/"
    msgs: Counter[str] = Counter()
    chunk_bytes = 0
    chunks: Counter[tuple[str, str]] = Counter()
    for path in outputs:
        for line in path.read_text(errors="replace").splitlines():
            if not line.startswith(up):
                continue  # mosquitto_sub's debug lines
            parts = line.split(" ")
            what = parts[0][len(up) :]
            msgs[what] += 1
            if what == "chunk" and len(parts) > 1:
                chunk_bytes += int(parts[1])
                props = dict(p.split(":", 1) for p in parts[2:] if ":" in p)
                chunks[(props.get("digest", ""), props.get("offset", ""))] += 1
    return {
        "record_msgs": msgs["record"],
        "have_msgs": msgs["have"],
        "chunk_msgs": msgs["chunk"],
        "chunk_bytes": chunk_bytes,
        "chunks_seen_more_than_once": sum(1 for n in chunks.values() if n > 1),
        "chunk_resends": sum(n - 1 for n in chunks.values()),
    }
