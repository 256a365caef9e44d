"""Shared test material: the NMEA captures and gpsd's expected output, and real processes stopped by PID."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from functools import cache
from pathlib import Path

import pytest

from edge.location import Fix, NoFix, Report

# The project's own copy of the receiver captures from ../shared/data/nmea (gpsd's regression
# suite, with gpsd's expected output), so the suite does not depend on what sits beside the checkout.
NMEA_DIR = Path(__file__).resolve().parent / "data" / "nmea"
LOGS = (
    "beidou-bd",
    "beidou-gb",
    "garmin25lp",
    "haicom-305N",
    "mt3339",
    "mtk-3301",
    "quectelLC79D-1",
    "ublox-lea-5q",
)
WAIT_S = 5.0  # the bound on every wait for a process or a report
# gpsd before 3.23 dates logs from 2005-2015 exactly 1024 GPS weeks late (FACTS.md, the log README).
WEEK_ROLLOVER = timedelta(weeks=1024)

# Where we report 2D and gpsd 3D, on purpose: the receiver's GSA says 2 (with 3 or 4 satellites,
# too few or too badly placed to solve for height) and the altitude in its GGA is an assumed one
# (the Garmin holds 746.1 m throughout). gpsd upgrades to 3D because GGA carries an altitude.
MODE_2D_BY_RECEIVER: dict[str, frozenset[dtime]] = {
    "garmin25lp": frozenset(dtime(12, 3, s) for s in range(27, 36)),
    "haicom-305N": frozenset(
        {
            dtime(9, 53, 5, 802000),
            dtime(9, 53, 6, 802000),
            dtime(9, 53, 7, 801000),
            dtime(9, 53, 8, 801000),
            dtime(9, 53, 9, 801000),
        }
    ),
    "mtk-3301": frozenset({dtime(8, 14, 37), dtime(8, 14, 38), dtime(8, 14, 39)}),
}


_TIMED = {"RMC": 1, "GGA": 1, "GNS": 1, "GLL": 5, "ZDA": 1, "GST": 1}  # 1-based index of the time field


def tool(name: str) -> str:
    """A system program the set-up command installs (scripts/setup.sh); its absence is a failure."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        pytest.fail(
            f"{name} is not installed: run scripts/setup.sh (Debian packages gpsd gpsd-clients socat)"
        )
    return found


def log_path(name: str) -> Path:
    """The capture's path in the project's copy of the captures."""
    return NMEA_DIR / f"{name}.log"


def log_lines(name: str) -> list[bytes]:
    """The capture's lines, with their original endings."""
    return log_path(name).read_bytes().splitlines(keepends=True)


def checksum(body: str) -> str:
    """The NMEA checksum of the text between '$' and '*'."""
    value = 0
    for ch in body.encode("ascii"):
        value ^= ch
    return f"{value:02X}"


def sentence(body: str) -> str:
    """A complete sentence with its checksum, e.g. sentence("GPGGA,...") → "$GPGGA,...*hh\\r\\n"."""
    return f"${body}*{checksum(body)}\r\n"


def _tod(text: str) -> dtime | None:
    if len(text) < 6 or not text[:6].isdigit():
        return None
    frac = text[7:] if len(text) > 7 else ""
    return dtime(int(text[:2]), int(text[2:4]), int(text[4:6]), int(frac.ljust(6, "0")[:6]))


def sentence_time(line: str) -> dtime | None:
    """The time of day a timed sentence carries, or None."""
    text = line.strip()
    if not text.startswith("$") or text.startswith("$P"):
        return None
    fields = text.split("*")[0].split(",")
    index = _TIMED.get(fields[0][3:6])
    if index is None or len(fields) <= index:
        return None
    return _tod(fields[index])


# -- gpsd's expected output (.chk) ------------------------------------------------------------------


@dataclass(frozen=True)
class ChkEpoch:
    """One receiver epoch of a .chk file: the last TPV gpsd reported for it."""

    tod: dtime
    mode: int
    lat: Decimal | None
    lon: Decimal | None
    time: str | None  # the last "time" any TPV of the epoch carried
    tpvs: tuple[dict, ...]

    def lat_e7(self) -> int:
        """gpsd's latitude in 1e-7 degrees (gpsd prints 9 decimals)."""
        assert self.lat is not None
        return int((self.lat * 10**7).to_integral_value())

    def lon_e7(self) -> int:
        """gpsd's longitude in 1e-7 degrees."""
        assert self.lon is not None
        return int((self.lon * 10**7).to_integral_value())


@cache
def chk_epochs(name: str) -> tuple[ChkEpoch, ...]:
    """The epochs of ``name.log.chk`` in order, each TPV attributed to the sentence before it."""
    order: list[dtime] = []
    tpvs: dict[dtime, list[dict]] = {}
    current: dtime | None = None
    for raw in (NMEA_DIR / f"{name}.log.chk").read_text().splitlines():
        line = raw.strip()
        if line.startswith("$"):
            tod = sentence_time(line)
            if tod is not None:
                current = tod
                if tod not in tpvs:
                    order.append(tod)
                    tpvs[tod] = []
        elif line.startswith("{"):
            obj = json.loads(line, parse_float=Decimal)
            if obj["class"] == "TPV" and current is not None:
                tpvs[current].append(obj)
    epochs = []
    for tod in order:
        group = tpvs[tod]
        last = group[-1] if group else {"mode": 1}
        times = [t["time"] for t in group if "time" in t]
        epochs.append(
            ChkEpoch(
                tod=tod,
                mode=last["mode"],
                lat=last.get("lat"),
                lon=last.get("lon"),
                time=times[-1] if times else None,
                tpvs=tuple(group),
            )
        )
    return tuple(epochs)


def one_per_epoch(reports: list[Report]) -> list[Report]:
    """Collapse repeats of an epoch (a serial reader may conclude one twice when the line pauses)."""
    out: list[Report] = []
    for r in reports:
        if out and r.time is not None and out[-1].time == r.time:
            out[-1] = r
        else:
            out.append(r)
    return out


def compare_with_chk(name: str, reports: list[Report], mode_exceptions: frozenset[dtime]) -> list[str]:
    """Differences between per-epoch reports and gpsd's .chk epochs (empty when they agree)."""
    epochs = chk_epochs(name)
    problems: list[str] = []
    if len(reports) != len(epochs):
        return [f"{len(reports)} epochs reported, .chk has {len(epochs)}"]
    for ep, r in zip(epochs, reports, strict=True):
        where = f"{name} {ep.tod}"
        if r.time is not None and r.time.time() != ep.tod:
            problems.append(f"{where}: reported for {r.time.time()}")
        if ep.time is not None and r.time is not None and ep.time != _z(r.time):
            problems.append(f"{where}: time {_z(r.time)} != {ep.time}")
        if ep.mode < 2:
            if not isinstance(r, NoFix):
                problems.append(f"{where}: gpsd says no fix, we report {r}")
            continue
        if not isinstance(r, Fix):
            problems.append(f"{where}: gpsd says mode {ep.mode}, we report {r}")
            continue
        if abs(r.lat_e7 - ep.lat_e7()) > 1 or abs(r.lon_e7 - ep.lon_e7()) > 1:
            problems.append(f"{where}: position {r.lat_e7},{r.lon_e7} != {ep.lat_e7()},{ep.lon_e7()}")
        if r.mode != ep.mode and ep.tod not in mode_exceptions:
            problems.append(f"{where}: mode {r.mode} != {ep.mode}")
        if ep.tod in mode_exceptions and not (r.mode == 2 and ep.mode == 3):
            problems.append(f"{where}: expected the documented 2D (ours) vs 3D (gpsd) difference")
    return problems


def _z(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


# -- replaying a capture as if it were live -------------------------------------------------------


def bursts(name: str) -> list[list[str]]:
    """The capture cut into per-epoch bursts (a new burst at each new time of day)."""
    out: list[list[str]] = []
    last: dtime | None = None
    for raw in log_path(name).read_text().splitlines():
        line = raw.strip()
        if not line.startswith("$"):
            continue
        tod = sentence_time(line)
        if tod is not None and tod != last:
            last = tod
            out.append([])
        if out:
            out[-1].append(line)
    return out


def retime(line: str, when: datetime) -> str:
    """A sentence with its time (and date, in RMC/ZDA) set to ``when``, checksum recomputed."""
    body = line.strip()[1:].split("*")[0]
    fields = body.split(",")
    kind = fields[0][2:5]
    index = _TIMED.get(kind)
    if index is None:
        return sentence(body)
    when = when.astimezone(UTC)
    fields[index] = when.strftime("%H%M%S.") + f"{when.microsecond // 1000:03d}"
    if kind == "RMC":
        fields[9] = when.strftime("%d%m%y")
    if kind == "ZDA":
        fields[2:5] = [when.strftime("%d"), when.strftime("%m"), when.strftime("%Y")]
    return sentence(",".join(fields))


# -- processes -------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], object], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll until predicate() is true; fail the test after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")


def _descendants(pid: int) -> list[int]:
    """PIDs of a process's children, grandchildren… (read from /proc)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False  # a zombie waiting for its (new) parent to reap it
    return True


class Proc:
    """A process a test started; stopped by its PID, and any children it made by theirs."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log = log
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.popen.pid

    def alive(self) -> bool:
        """Whether it is still running."""
        return self.popen.poll() is None

    def stop(self, grace_s: float = 2.0) -> None:
        """SIGTERM, then SIGKILL after grace_s, to it and to each descendant, by PID."""
        family = _descendants(self.pid)
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(grace_s)
        for pid in family:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + grace_s
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.02)
                if _alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

    def output(self) -> str:
        """What it printed, for failure messages."""
        return self.log.read_text(errors="replace")[-4000:]


class PtyPair:
    """Two linked pseudo-terminals from socat: a reader opens ``device``, the test writes into ``feed``."""

    def __init__(self, folder: Path, name: str = "gps") -> None:
        self.device = folder / f"tty-{name}"
        self.feed = folder / f"feed-{name}"
        self.log = folder / f"socat-{name}.log"
        self.proc: Proc | None = None
        self._fd: int | None = None

    def start(self) -> None:
        """Start socat and wait until both ends exist."""
        self.proc = Proc(
            [tool("socat"), f"pty,raw,echo=0,link={self.device}", f"pty,raw,echo=0,link={self.feed}"],
            self.log,
        )
        wait_for(lambda: self.device.exists() and self.feed.exists(), f"socat's ptys {self.device}")

    def write(self, data: bytes | str) -> None:
        """Write into the feed end (opened once, kept open)."""
        if self._fd is None:
            self._fd = os.open(self.feed, os.O_WRONLY | os.O_NOCTTY)
        payload = data.encode("ascii") if isinstance(data, str) else data
        while payload:
            payload = payload[os.write(self._fd, payload) :]

    def stop(self) -> None:
        """Close the feed and stop socat by PID (its links disappear with it)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


IDLE_SENTENCE = sentence("GPGSV,1,1,00")  # "no satellites in view": lets gpsd identify the device


class GpsdOnPty:
    """A real gpsd reading one end of a socat pty pair, as FACTS.md recommends (steadier than gpsfake)."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port
        self.pty = PtyPair(folder)
        self.proc: Proc | None = None

    def start(self) -> None:
        """Start socat (once) and gpsd, and wait until gpsd has identified the NMEA device."""
        if self.pty.proc is None:
            self.pty.start()
        # -b: read-only, so gpsd's probes never come back out of our feed end; -N foreground; -n open now.
        self.proc = Proc(
            [
                tool("gpsd"),
                "-b",
                "-N",
                "-n",
                "-S",
                str(self.port),
                "-F",
                str(self.folder / "gpsd.sock"),
                str(self.pty.device),
            ],
            self.folder / "gpsd.log",
        )
        self.prime()

    def prime(self) -> None:
        """Feed harmless sentences until gpsd reports the device as NMEA (it hunts speeds first)."""
        deadline = time.monotonic() + WAIT_S
        sock = None
        while sock is None:
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=0.1)
            except OSError:
                if time.monotonic() > deadline or (self.proc and not self.proc.alive()):
                    pytest.fail(f"gpsd did not listen on {self.port}:\n{self.proc and self.proc.output()}")
                time.sleep(0.05)
        with sock:
            sock.sendall(b'?WATCH={"enable":true,"json":true};\n')
            seen = b""
            while b'"driver":"NMEA0183"' not in seen:
                if time.monotonic() > deadline:
                    pytest.fail(f"gpsd did not identify the pty:\n{self.proc and self.proc.output()}")
                self.pty.write(IDLE_SENTENCE)
                with contextlib.suppress(TimeoutError):
                    seen += sock.recv(65536)

    def stop_gpsd(self) -> None:
        """Stop gpsd by PID; the pty pair stays."""
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def stop(self) -> None:
        """Stop gpsd and socat."""
        self.stop_gpsd()
        self.pty.stop()


class Collector:
    """A thread-safe sink that keeps every report."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._reports: list[Report] = []

    def __call__(self, report: Report) -> None:
        with self._lock:
            self._reports.append(report)

    @property
    def reports(self) -> list[Report]:
        """A copy of what arrived so far."""
        with self._lock:
            return list(self._reports)

    def fixes(self) -> list[Fix]:
        """The fixes so far."""
        return [r for r in self.reports if isinstance(r, Fix)]

    def reasons(self) -> list[str]:
        """The no-fix reasons so far."""
        return [r.reason for r in self.reports if isinstance(r, NoFix)]


@contextlib.contextmanager
def started(provider: object, sink: Callable[[Report], None]) -> Iterator[None]:
    """Run a provider for the duration of a with-block."""
    provider.start(sink)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        provider.stop()  # type: ignore[attr-defined]
