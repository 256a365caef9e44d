"""PostgreSQL 15 for runs outside pytest (the load bench): the server tests' recipe (FACTS.md), as a
context manager. ``tests/server/conftest.py``'s ``postgres`` fixture does the same inside pytest."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.provisioning.helpers import free_port
from tests.server.conftest import PG_BIN, Postgres, _pg


@contextmanager
def running_postgres(max_connections: int = 200) -> Iterator[tuple[Postgres, int]]:
    """Debian's PostgreSQL 15 in a temporary directory, run as ``postgres``; yields it and its postmaster's
    PID; stopped (``pg_ctl stop -m fast``) and removed afterwards. fsync stays on: the ingest's acks claim
    durability, so the bench pays for it as production would."""
    root = Path(tempfile.mkdtemp(prefix="fieldproof-pg-"))
    shutil.chown(root, "postgres", "postgres")
    port = free_port()
    try:
        _pg(str(PG_BIN / "initdb"), "-D", f"{root}/data", "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--locale=C.UTF-8", "-N")  # fmt: skip
        _pg(str(PG_BIN / "pg_ctl"), "-D", f"{root}/data", "-l", f"{root}/pg.log", "-w", "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections={max_connections}",
            "start")  # fmt: skip
        try:
            pid = int((root / "data" / "postmaster.pid").read_text().split()[0])
            yield Postgres(root, port), pid
        finally:
            _pg(str(PG_BIN / "pg_ctl"), "-D", f"{root}/data", "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
