"""Case-file queries through the API against the same reads in hand-written SQL, in one run.

Seeds a fresh PostgreSQL 15 (bench/seed_cases.py: 1,000,000 segments, 100,000 cases, 20,000 subjects
at ``--scale 1``), starts the API (uvicorn, ``python -m server api``) on a free port, signs a custodian
in with an API token, then for N random case numbers and N random subjects times

- ``GET /api/v1/cases/by-number/{number}`` (footage by case number) and
- ``GET /api/v1/subjects/{id}/dossier`` (the subject's dossier)

over one keep-alive connection (httpx), each followed by psycopg running hand-written SQL that returns
the same data (case, subject, text records, footage with current case/subject/proof and first fix).
Prints p50/p99 of each and the ratio API/SQL. Goal: within 1.5× of the SQL. Also prints two floors:
an authenticated request that reads no evidence (``GET /api/v1/auth/me``: HTTP, the token, JSON) and
one that reads one case row and commits its ``viewed`` custody event (``GET /api/v1/cases/{id}``).

    .venv/bin/python bench/query_bench.py --scale 0.01 --requests 50     # a quick run
    .venv/bin/python bench/query_bench.py --requests 200                   # full scale

The API also writes and commits a custody event (``viewed``) per request; the SQL only reads.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
from argon2 import PasswordHasher

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from seed_cases import case_number, seed, start_postgres  # noqa: E402

from server.auth import service as auth  # noqa: E402
from server.auth.passwords import Passwords  # noqa: E402
from server.auth.principal import Role  # noqa: E402
from server.db import make_engine, migrate, session_factory, transaction  # noqa: E402

_LATEST = """LEFT JOIN LATERAL (SELECT a.id, a.{col} AS v FROM footage_annotation_targets t
  JOIN footage_annotations a ON a.id = t.annotation_id
  WHERE t.segment_id = s.id AND a.{col} IS NOT NULL ORDER BY a.id DESC LIMIT 1) {alias} ON true"""

FOOTAGE = f"""
SELECT s.id, s.device, s.seq, r.hash, s.kind, s.recording, s.index, s.file_name, s.start, s."end",
  s.officer, s.digest, f.size, f.status, COALESCE(lc.v, s.case_number) AS current_case, lc.id,
  s.case_set_by IS NOT NULL, COALESCE(ls.v, s.subject) AS current_subject, COALESCE(lp.v, sf.proof, ''),
  lp.id, COALESCE(sf.matter, ''), COALESCE(sf.scene, ''), COALESCE(sf.container, 'mp4-fragmented'),
  COALESCE(sf.duration_ms, 0), fx.lat_e7, fx.lon_e7
FROM ({{candidates}}) c
JOIN segments s ON s.id = c.id
JOIN records r ON r.id = s.record_id
JOIN files f ON f.digest = s.digest
LEFT JOIN segment_facts sf ON sf.segment_id = s.id
LEFT JOIN segment_fixes fx ON fx.segment_id = s.id AND fx.n = 0
{_LATEST.format(col="case_number", alias="lc")}
{_LATEST.format(col="subject_uscc", alias="ls")}
{_LATEST.format(col="proof", alias="lp")}
WHERE {{where}}
ORDER BY s.start, s.device, s.seq
"""  # noqa: S608 - fixed SQL text; values are bound parameters

BY_CASE = FOOTAGE.format(
    candidates="SELECT id FROM segments WHERE case_number = %(n)s UNION SELECT t.segment_id "
    "FROM footage_annotation_targets t JOIN footage_annotations a ON a.id = t.annotation_id "
    "WHERE a.case_number = %(n)s",
    where="COALESCE(lc.v, s.case_number) = %(n)s",
)
BY_SUBJECT = FOOTAGE.format(
    candidates="SELECT id FROM segments WHERE substr(subject, 1, 18) = %(u)s AND subject = %(u)s "
    "UNION SELECT id FROM segments WHERE case_number = ANY(%(ns)s) UNION SELECT t.segment_id "
    "FROM footage_annotation_targets t JOIN footage_annotations a ON a.id = t.annotation_id "
    "WHERE a.subject_uscc = %(u)s OR a.case_number = ANY(%(ns)s)",
    where="(COALESCE(ls.v, s.subject) = %(u)s OR COALESCE(lc.v, s.case_number) = ANY(%(ns)s))",
)
CASE = "SELECT * FROM cases WHERE number = %s"
SUBJECT = "SELECT * FROM enforcement_subjects WHERE id = %s"
CASES_OF = "SELECT * FROM cases WHERE subject_id = %s ORDER BY opened_on, id"
RECORDS_OF = "SELECT * FROM text_records WHERE case_id = ANY(%s) ORDER BY uploaded_at, id"


def sql_case_file(conn: psycopg.Connection, number: str) -> int:
    """The case file by number in hand-written SQL; returns the number of segments."""
    with conn.transaction():
        case = conn.execute(CASE, (number,)).fetchone()
        assert case is not None
        conn.execute(SUBJECT, (case[2],)).fetchone()
        conn.execute(RECORDS_OF, ([case[0]],)).fetchall()
        return len(conn.execute(BY_CASE, {"n": number}).fetchall())


def sql_dossier(conn: psycopg.Connection, subject_id: int) -> int:
    """The subject's dossier in hand-written SQL; returns the number of segments."""
    with conn.transaction():
        subject = conn.execute(SUBJECT, (subject_id,)).fetchone()
        assert subject is not None
        cases = conn.execute(CASES_OF, (subject_id,)).fetchall()
        conn.execute(RECORDS_OF, ([c[0] for c in cases],)).fetchall()
        return len(conn.execute(BY_SUBJECT, {"u": subject[1], "ns": [c[1] for c in cases]}).fetchall())


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def _report(name: str, api: list[float], sql: list[float]) -> str:
    a50, a99, s50, s99 = _pct(api, 50), _pct(api, 99), _pct(sql, 50), _pct(sql, 99)
    return (
        f"{name:<26} API p50 {a50 * 1000:8.1f} ms  p99 {a99 * 1000:8.1f} ms | SQL p50 {s50 * 1000:8.1f} ms  "
        f"p99 {s99 * 1000:8.1f} ms | ratio p50 {a50 / s50:6.2f}×  p99 {a99 / s99:6.2f}×  "
        f"(mean {statistics.mean(api) * 1000:.1f} / {statistics.mean(sql) * 1000:.1f} ms)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="1 = 1M segments, 100k cases, 20k subjects")
    parser.add_argument("--requests", type=int, default=200, help="requests per endpoint (N)")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with start_postgres() as pg, tempfile.TemporaryDirectory(prefix="fieldproof-bench-") as tmp:
        with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        migrate(pg.url("bench"))
        t = time.perf_counter()
        counts = seed(pg.dsn("bench"), scale=args.scale)
        print(f"seeded {counts} in {time.perf_counter() - t:.0f} s", flush=True)
        factory = session_factory(make_engine(pg.url("bench")))
        fast = Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        with transaction(factory) as s:
            user = auth.create_user(
                s,
                username="custodian1",
                password="bench password 123",  # noqa: S106 - a throwaway bench user
                roles=[Role.CUSTODIAN],
                passwords=fast,
            )
            s.flush()
            token = auth.issue_token(
                s, user_id=user.id, name="bench", expires_at=datetime.now(UTC) + timedelta(days=1)
            )
        port = _port()
        env = {**os.environ, "FIELDPROOF_AUTH_COOKIE_SECURE": "false"}
        api = subprocess.Popen(
            [sys.executable, "-m", "server", "api", "--database-url", pg.url("bench"), "--data-dir", tmp,
             "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            client = httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}, timeout=600
            )
            _wait(client)
            # Two floors: an authenticated request that reads no evidence, and one that reads a single
            # case row and commits its ``viewed`` custody event (the durable write every read of
            # evidence pays, and the SQL does not).
            for label, path, what in (
                ("floor: GET /auth/me", lambda _i: "/api/v1/auth/me", "HTTP, the token, JSON"),
                (
                    "floor: GET /cases/{id}",
                    lambda i: f"/api/v1/cases/{rng.randint(1, counts['cases'])}",
                    "… plus one case row and a committed custody event",
                ),
            ):
                floor = []
                for i in range(max(50, args.requests)):
                    t0 = time.perf_counter()
                    client.get(path(i)).raise_for_status()
                    floor.append(time.perf_counter() - t0)
                print(
                    f"{label:<26} API p50 {_pct(floor, 50) * 1000:8.1f} ms  "
                    f"p99 {_pct(floor, 99) * 1000:8.1f} ms   ({what})",
                    flush=True,
                )
            with psycopg.connect(pg.dsn("bench")) as conn:
                numbers = [case_number(rng.randint(1, counts["cases"])) for _ in range(args.requests)]
                subjects = [rng.randint(1, counts["subjects"]) for _ in range(args.requests)]
                for name, keys, call, sql in (
                    ("footage by case number", numbers, _case_file, sql_case_file),
                    ("subject dossier", subjects, _dossier, sql_dossier),
                ):
                    for k in keys[:3]:  # warm both paths
                        call(client, k)
                        sql(conn, k)  # type: ignore[arg-type]
                    api_t, sql_t, segs = [], [], 0
                    for k in keys:
                        t0 = time.perf_counter()
                        n_api = call(client, k)
                        t1 = time.perf_counter()
                        n_sql = sql(conn, k)  # type: ignore[arg-type]
                        t2 = time.perf_counter()
                        if n_api != n_sql:
                            raise SystemExit(f"{name} {k}: the API gave {n_api} segments, the SQL {n_sql}")
                        api_t.append(t1 - t0)
                        sql_t.append(t2 - t1)
                        segs += n_sql
                    print(
                        _report(name, api_t, sql_t), f"[{segs / len(keys):.1f} segments/answer]", flush=True
                    )
        finally:
            api.terminate()
            api.wait(30)
    return 0


def _case_file(client: httpx.Client, number: str) -> int:
    got = client.get(f"/api/v1/cases/by-number/{number}")
    got.raise_for_status()
    return sum(len(r["segments"]) for r in got.json()["recordings"])


def _dossier(client: httpx.Client, subject_id: int) -> int:
    got = client.get(f"/api/v1/subjects/{subject_id}/dossier")
    got.raise_for_status()
    body = got.json()
    return sum(len(i["recording"]["segments"]) for i in body["timeline"] if i["kind"] == "recording")


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(client: httpx.Client) -> None:
    for _ in range(300):
        try:
            if client.get("/api/v1/auth/me").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("the API did not start")


if __name__ == "__main__":
    raise SystemExit(main())
