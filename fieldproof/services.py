"""Run the server side on one machine: Mosquitto, the ingest worker, the API — each a child process
started from the project's own commands, with its log in a file, stopped by its PID.

Used by ``fieldproof demo`` (the embedded defaults: SQLite, the local store, a local Mosquitto). A
bureau runs the same commands under systemd (docs/server-ingest.md).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from fieldproof.errors import FieldproofError


class ServiceError(FieldproofError):
    """A service did not start, or stopped when it should have been running."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at this moment (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def fieldproof_command() -> list[str]:
    """The ``fieldproof`` command of this interpreter's environment."""
    exe = Path(sys.executable).with_name("fieldproof")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "fieldproof"]


@dataclass
class Service:
    """One child process with its log file; ``port`` is where it listens, when it does."""

    name: str
    argv: list[str]
    log: Path
    port: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self, *, ready: str | None = None, timeout: float = 30.0) -> Service:
        """Start it; wait until ``port`` accepts connections, or ``ready`` appears in its log."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=log, env={**os.environ, **self.env}, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(
                    f"{self.name} exited with {self.proc.returncode} at start; its log ({self.log}) ends:\n"
                    + self.tail()
                )
            if self.port is not None:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
                ):
                    if ready is None:
                        return self
            if ready is not None and ready in self.log.read_text(errors="replace"):
                return self
            time.sleep(0.05)
        self.stop()
        raise ServiceError(
            f"{self.name} was not ready within {timeout:g} s; its log ({self.log}) ends:\n" + self.tail()
        )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it has not gone within ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=timeout)

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def mosquitto(conf: Path, *, port: int, log: Path) -> Service:
    """Debian's Mosquitto on the configuration ``fieldproof provision broker-config`` wrote."""
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        raise ServiceError("mosquitto is not installed: run scripts/setup.sh (Debian package mosquitto)")
    return Service("mosquitto", [exe, "-c", str(conf)], log, port=port)


def server_env(
    *, data_dir: Path, ca_dir: Path, mqtt_port: int, api_port: int | None = None
) -> dict[str, str]:
    """The FIELDPROOF_* settings for the server's commands on the embedded defaults."""
    env = {
        "FIELDPROOF_DATA_DIR": str(data_dir),
        "FIELDPROOF_CA_DIR": str(ca_dir),
        "FIELDPROOF_MQTT_HOST": "127.0.0.1",
        "FIELDPROOF_MQTT_PORT": str(mqtt_port),
    }
    if api_port is not None:
        env["FIELDPROOF_API_HOST"] = "127.0.0.1"
        env["FIELDPROOF_API_PORT"] = str(api_port)
    return env


class Services:
    """Services started together and stopped together, last started first stopped."""

    def __init__(self) -> None:
        self.started: list[Service] = []

    def start(self, service: Service, **kw: object) -> Service:
        service.start(**kw)  # type: ignore[arg-type]
        self.started.append(service)
        return service

    def stop(self) -> None:
        for s in reversed(self.started):
            s.stop()
        self.started.clear()

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
