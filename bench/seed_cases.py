"""Seed a migrated PostgreSQL with the case-file benchmark's data, by COPY: 1,000,000 segments (with
their records, files, facts and first fix), 100,000 cases and 20,000 subjects at ``--scale 1``.

    .venv/bin/python bench/seed_cases.py --scale 0.01          # starts its own PostgreSQL 15, seeds, stops
    .venv/bin/python bench/seed_cases.py --url postgresql+psycopg://…/db   # seed an existing database

Shape: recordings of 10 segments on 500 devices; 70 % of recordings were captured with a case number
(the case's subject as subject), the rest with none; 1 % of segments are linked to a case later by a
server annotation (so "current case" is not just the captured column). Rows are consistent (foreign
keys hold), but records' lines and annotations' signatures are placeholders: nothing here verifies.
``query_bench.py`` uses :func:`start_postgres` and :func:`seed` from here.
"""

from __future__ import annotations

import argparse
import io
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg

from custody.timefmt import utc_timestamp
from server.cases.uscc import check_character
from server.db import migrate

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SEGMENTS, CASES, SUBJECTS, DEVICES = 1_000_000, 100_000, 20_000, 500
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Postgres:
    """A PostgreSQL 15 cluster in a temporary directory (stopped by :func:`start_postgres`)."""

    root: Path
    port: int

    def url(self, db: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def dsn(self, db: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"


def _pg(*args: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=120)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def start_postgres() -> Iterator[Postgres]:
    """Debian's PostgreSQL 15 in a temp dir, as the postgres user (initdb refuses root), like the tests."""
    root = Path(tempfile.mkdtemp(prefix="fieldproof-bench-pg-"))
    shutil.chown(root, "postgres", "postgres")
    port = _free_port()
    _pg(str(PG_BIN / "initdb"), "-D", f"{root}/data", "-U", "postgres", "-A", "trust", "-E", "UTF8",
        "--locale=C.UTF-8", "-N")  # fmt: skip
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c shared_buffers=2GB -c work_mem=64MB"
    _pg(str(PG_BIN / "pg_ctl"), "-D", f"{root}/data", "-l", f"{root}/pg.log", "-w", "-o", opts, "start")
    try:
        yield Postgres(root, port)
    finally:
        _pg(str(PG_BIN / "pg_ctl"), "-D", f"{root}/data", "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def uscc(n: int) -> str:
    """The n-th valid unified social credit code of the seed."""
    first17 = f"91120116MA{n:07d}"
    return first17 + check_character(first17)


def case_number(n: int) -> str:
    """The n-th case number of the seed."""
    return f"津人社监察〔2026〕{n}号"


def _text(v: object) -> str:
    if v is None:
        return r"\N"
    if isinstance(v, bytes):
        return "\\\\x" + v.hex()
    return str(v).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def _copy(
    conn: psycopg.Connection, table: str, columns: list[str], rows: Iterator[tuple[object, ...]]
) -> int:
    n = 0
    cols = ", ".join(f'"{c}"' for c in columns)
    with conn.cursor().copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
        buf = io.StringIO()
        for row in rows:
            buf.write("\t".join(_text(v) for v in row) + "\n")
            n += 1
            if n % 20_000 == 0:
                copy.write(buf.getvalue())
                buf = io.StringIO()
        copy.write(buf.getvalue())
    return n


def seed(dsn: str, *, scale: float = 1.0, rng_seed: int = 7) -> dict[str, int]:
    """COPY the benchmark's rows into the migrated database at ``dsn``; returns the counts."""
    rng = random.Random(rng_seed)
    n_seg, n_case, n_subj = int(SEGMENTS * scale), max(10, int(CASES * scale)), max(2, int(SUBJECTS * scale))
    now = datetime.now(UTC)
    key = "sha256:" + "ab" * 32
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO users (id, username, display_name, password_hash, active, created_at) "
            "VALUES (1, 'seeder', 'seeder', '!', true, now())"
        )
        _copy(conn, "devices", ["id", "role", "first_seen", "last_seen"],
              ((f"REC-{d:04d}", "recorder", now, now) for d in range(DEVICES)))  # fmt: skip
        _copy(conn, "enforcement_subjects", ["id", "uscc", "name", "address", "contacts", "created_at", "created_by"],
              ((i, uscc(i), f"用人单位{i}", "天津市", "[]", now, 1) for i in range(1, n_subj + 1)))  # fmt: skip
        case_subject = {c: rng.randint(1, n_subj) for c in range(1, n_case + 1)}
        _copy(conn, "cases", ["id", "number", "subject_id", "matter_code", "title", "status", "opened_on",
                              "created_at", "created_by"],
              ((c, case_number(c), s, "CF-02", f"案件{c}", "open", date(2026, 1, 1), now, 1)
               for c, s in case_subject.items()))  # fmt: skip

        # Segments in recordings of 10: (device, seq) contiguous per device.
        plan: list[
            tuple[int, str, int, str, int, str, str]
        ] = []  # id, device, seq, recording, index, case, subj
        seqs = [0] * DEVICES
        sid = 0
        while sid < n_seg:
            d = rng.randrange(DEVICES)
            rec = f"{rng.getrandbits(64):016x}"
            has_case = rng.random() < 0.7
            c = rng.randint(1, n_case) if has_case else 0
            number, subj = (case_number(c), uscc(case_subject[c])) if has_case else ("", "")
            for i in range(min(10, n_seg - sid)):
                sid += 1
                seqs[d] += 1
                plan.append((sid, f"REC-{d:04d}", seqs[d], rec, i, number, subj))

        def when(s: int) -> datetime:
            return T0 + timedelta(seconds=11 * s)

        def digest(s: int) -> str:
            return f"sha256:{s:064x}"

        _copy(conn, "records", ["id", "device", "seq", "hash", "prev", "kind", "time", "key_id", "line", "dock",
                                "received_at", "status"],
              ((s, d, q, f"sha256:{s:064x}".replace("sha256:0", "sha256:f", 1), None, "segment",
                utc_timestamp(when(s) + timedelta(seconds=11)), key, b'{"seed":true}\n', "DOCK-01", now, "stored")
               for s, d, q, *_ in plan))  # fmt: skip
        _copy(conn, "files", ["digest", "size", "status", "announced_at", "stored_at", "blob_key"],
              ((digest(s), 4_000_000, "stored", now, now, None) for s, *_ in plan))  # fmt: skip
        _copy(conn, "segments", ["id", "record_id", "device", "seq", "digest", "kind", "recording", "index",
                                 "file_name", "start", "end", "officer", "case_number", "subject"],
              ((s, s, d, q, digest(s), "segment", r, i, f"{r}/{i:04d}.mp4", utc_timestamp(when(s)),
                utc_timestamp(when(s) + timedelta(seconds=10)), f"1201001{s % 100:04d}", c, u)
               for s, d, q, r, i, c, u in plan))  # fmt: skip
        _copy(conn, "segment_facts", ["segment_id", "container", "duration_ms", "matter", "scene", "proof", "fix"],
              ((s, "mp4-fragmented", 10_000, "CF-02", "onsite-inspection", "现场检查情况", True)
               for s, *_ in plan))  # fmt: skip
        _copy(conn, "segment_fixes", ["segment_id", "n", "t", "lat_e7", "lon_e7"],
              ((s, 0, utc_timestamp(when(s)), 391_244_000 + s % 1000, 1_171_907_000 + s % 997)
               for s, *_ in plan))  # fmt: skip

        # 1 % of segments linked later by a server annotation (one target each), to a random case.
        linked = rng.sample(range(1, n_seg + 1), n_seg // 100)
        ann = [(a, s, rng.randint(1, n_case)) for a, s in enumerate(linked, start=1)]
        _copy(conn, "footage_annotations", ["id", "time", "user_id", "actor", "case_id", "case_number", "subject_id",
                                            "subject_uscc", "proof", "reason", "key_id", "signed", "signature"],
              ((a, now, 1, "user:seeder", c, case_number(c), case_subject[c], uscc(case_subject[c]), None,
                "补充关联", key, b"{}", "x") for a, s, c in ann))  # fmt: skip
        _copy(
            conn, "footage_annotation_targets", ["annotation_id", "segment_id"], ((a, s) for a, s, _ in ann)
        )
        for table, column in (("enforcement_subjects", "id"), ("cases", "id"), ("records", "id"),
                              ("segments", "id"), ("footage_annotations", "id"), ("users", "id")):  # fmt: skip
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), (SELECT max({column}) FROM {table}))"  # noqa: S608 - fixed names
            )
        conn.commit()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return {"segments": n_seg, "cases": n_case, "subjects": n_subj, "annotations": len(ann)}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="1 = 1M segments, 100k cases, 20k subjects")
    parser.add_argument("--url", help="an existing empty database (postgresql+psycopg://…); migrated here")
    args = parser.parse_args()
    if args.url:
        migrate(args.url)
        t = time.perf_counter()
        print(seed(args.url.replace("+psycopg", ""), scale=args.scale), f"in {time.perf_counter() - t:.0f} s")
        return 0
    with start_postgres() as pg:
        with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        migrate(pg.url("bench"))
        t = time.perf_counter()
        print(seed(pg.dsn("bench"), scale=args.scale), f"in {time.perf_counter() - t:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
