"""CPU seconds per process, read from ``/proc`` (Linux), for the load bench: who used the two cores.

``/proc/<pid>/stat`` gives a process's own user+system time (all its threads) and the time of the children
it has reaped (``cutime``/``cstime``): for PostgreSQL's postmaster the latter holds the backends that have
exited, so postmaster + reaped + live children is the whole cluster. ``/proc/stat`` gives the machine's
busy and idle time, so what other jobs on a shared machine used shows as busy time that none of ours took.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int, *, tree: bool = False) -> float | None:
    """User+system seconds of ``pid``; with ``tree``, plus its reaped and live children. None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the ")" of the command name: state is field 3 (index 0), utime 14 (11) … cstime 17 (14).
    own = (int(fields[11]) + int(fields[12])) / TICK
    if not tree:
        return own
    total = own + (int(fields[13]) + int(fields[14])) / TICK
    for child in children(pid):
        total += proc_cpu(child) or 0.0
    return total


def children(pid: int) -> list[int]:
    """Live children of ``pid`` (every thread's list)."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(p) for p in (task / "children").read_text().split()]
    return out


def proc_io(pid: int) -> dict[str, int]:
    """``/proc/<pid>/io`` (rchar, wchar, read_bytes, write_bytes …); empty if gone."""
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return {}
    return {k: int(v) for k, v in (line.split(": ") for line in text.splitlines())}


def machine_cpu() -> tuple[float, float]:
    """(busy, total) seconds of all cores since boot, from ``/proc/stat``."""
    vals = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    total = sum(vals[:8])  # guest time is already inside user
    return (total - idle) / TICK, total / TICK


@dataclass
class CpuMeter:
    """CPU seconds of named processes between ``start()`` and the last ``sample()`` (a gone process keeps
    its last reading, so sample often enough, or take a process's final reading just before killing it)."""

    watched: dict[str, tuple[int, bool]] = field(default_factory=dict)  # name -> (pid, tree)
    first: dict[str, float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)
    machine0: tuple[float, float] = (0.0, 0.0)
    machine1: tuple[float, float] = (0.0, 0.0)

    def watch(self, name: str, pid: int, *, tree: bool = False) -> None:
        self.watched[name] = (pid, tree)
        now = proc_cpu(pid, tree=tree)
        if now is not None:
            self.first.setdefault(name, now)
            self.last[name] = now

    def start(self) -> None:
        self.machine0 = machine_cpu()
        for name, (pid, tree) in self.watched.items():
            now = proc_cpu(pid, tree=tree)
            if now is not None:
                self.first[name] = self.last[name] = now

    def sample(self) -> None:
        self.machine1 = machine_cpu()
        for name, (pid, tree) in self.watched.items():
            now = proc_cpu(pid, tree=tree)
            if now is not None:
                self.last[name] = now

    def used(self) -> dict[str, float]:
        """Seconds per name since ``start()`` (or since it was first watched)."""
        return {n: self.last[n] - self.first.get(n, self.last[n]) for n in self.last}

    def machine(self) -> tuple[float, float]:
        """(busy, total) core-seconds of the whole machine between ``start()`` and the last sample."""
        return self.machine1[0] - self.machine0[0], self.machine1[1] - self.machine0[1]
