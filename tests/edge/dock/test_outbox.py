"""The dock's outbox: idempotent, fork-refusing, forward-only, and intact after kill -9 at any moment."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from edge.sync.outbox import Outbox, OutboxItem, as_sent
from tests.edge.dock.outbox_writer import REC, line, record_hash

ROOT = Path(__file__).resolve().parents[3]


def item(seq: int, *, h: str | None = None, file: bool = True) -> OutboxItem:
    return OutboxItem(
        recorder=REC,
        seq=seq,
        hash=h or record_hash(seq),
        kind="segment" if file else "marker",
        line=line(seq),
        file=f"r/{seq}.mp4" if file else None,
        size=1000 if file else None,
        digest=record_hash(seq + 10**6) if file else None,
    )


def ack(seq: int, status: str, *, h: str | None = None, received: int = 0) -> dict[str, object]:
    return {
        "recorder": REC,
        "seq": seq,
        "hash": h if h is not None else record_hash(seq),
        "status": status,
        "received": received,
        "reason": "fork: x" if status == "rejected" else "",
    }


def test_wal_and_full_sync(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite") as ob:
        assert ob._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert ob._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_enqueue_is_idempotent_and_refuses_forks(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite") as ob:
        r = ob.enqueue([item(0), item(1), item(2)])
        assert (r.added, r.present, r.forks) == (3, 0, [])
        r = ob.enqueue([item(1), item(2), item(3)])
        assert (r.added, r.present) == (1, 2)
        forged = "sha256:" + "0" * 64
        r = ob.enqueue([item(2, h=forged)])
        assert r.added == 0
        assert [(f.seq, f.held_hash, f.offered_hash) for f in r.forks] == [(2, record_hash(2), forged)]
        assert ob.get(REC, 2).hash == record_hash(2)  # the held record is untouched
        assert [f.seq for f in ob.forks(REC)] == [2]  # and the fork is kept for the report
        assert [row.seq for row in ob.open_rows(REC)] == [0, 1, 2, 3]


def test_as_sent_is_what_mark_sent_leaves(tmp_path: Path) -> None:
    """The sync client keeps its loaded rows up to date with ``as_sent`` instead of reading them back:
    it must agree with the database after ``mark_sent``, for a first and for a later send."""
    with Outbox(tmp_path / "o.sqlite") as ob:
        ob.enqueue([item(0), item(1)])
        ob.apply_ack(ack(1, "pending", received=10))
        before = {r.seq: r for r in ob.open_rows(REC)}
        ob.mark_sent(REC, [0, 1])
        ob.mark_sent(REC, [0])
        after = {r.seq: r for r in ob.open_rows(REC)}
        assert as_sent(as_sent(before[0])) == after[0]
        assert after[0].state == "sent"
        assert as_sent(before[1]) == after[1]
        assert after[1].state == "pending"  # only queued becomes sent


def test_acks_only_move_forward(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite") as ob:
        ob.enqueue([item(0), item(1), item(2, file=False)])
        ob.mark_sent(REC, [0, 1, 2])
        assert ob.get(REC, 0).state == "sent"
        assert ob.get(REC, 0).attempts == 1
        assert ob.apply_ack(ack(0, "pending", received=300)).acked_offset == 300
        assert ob.apply_ack(ack(0, "pending", received=100)) is None  # a stale pending ack
        assert ob.get(REC, 0).acked_offset == 300
        assert ob.apply_ack(ack(0, "stored", received=1000)).state == "stored"
        assert ob.apply_ack(ack(0, "pending", received=10)) is None  # final is final
        assert ob.apply_ack(ack(0, "rejected")) is None
        assert ob.apply_ack(ack(1, "stored", h="sha256:" + "1" * 64)) is None  # another record's ack
        assert ob.apply_ack(ack(1, "rejected", h="")).state == "rejected"  # the server could not hash it
        assert ob.get(REC, 1).last_error == "fork: x"
        row = ob.apply_ack(ack(2, "duplicate"))
        assert row.state == "duplicate"
        assert row.released
        assert ob.apply_ack(ack(9, "stored")) is None  # not held: ignored (§6)
        assert [r.seq for r in ob.unreleased(REC)] == [0]
        assert ob.get(REC, 0).ack_json()["status"] == "stored"
        ob.mark_released(REC, [0])
        assert ob.unreleased(REC) == []
        assert ob.summary(REC) == {"stored": 1, "rejected": 1, "duplicate": 1}
    with Outbox(tmp_path / "o.sqlite") as ob:  # and all of it after reopening
        assert ob.summary(REC) == {"stored": 1, "rejected": 1, "duplicate": 1}
        assert ob.integrity_check() == "ok"


def test_an_ack_that_changes_nothing_opens_no_write_transaction(tmp_path: Path) -> None:
    """The chunks of one file are answered alike, and a final ack may come again: such acks are seen to
    change nothing by a plain read, without a write transaction; the acks that do change a row still
    take one (durable for a final ack)."""
    with Outbox(tmp_path / "o.sqlite") as ob:
        ob.enqueue([item(0)])
        statements: list[str] = []
        ob._db.set_trace_callback(statements.append)
        assert ob.apply_ack(ack(0, "pending", received=300)) is not None
        assert "BEGIN IMMEDIATE" in statements
        statements.clear()
        for again in (ack(0, "pending", received=300), ack(0, "pending", received=100)):
            assert ob.apply_ack(again) is None
        assert ob.apply_ack(ack(0, "stored", received=1000)).state == "stored"
        assert statements.count("BEGIN IMMEDIATE") == 1  # only the stored ack's
        assert "PRAGMA synchronous=NORMAL" not in statements[statements.index("BEGIN IMMEDIATE") - 1 :]
        statements.clear()
        assert ob.apply_ack(ack(0, "stored", received=1000)) is None  # again: final is final
        assert ob.apply_ack(ack(0, "pending", received=2000)) is None
        assert not [t for t in statements if t.startswith(("BEGIN", "UPDATE", "PRAGMA"))], statements


def _read(proc: subprocess.Popen[str], out: list[str]) -> None:
    assert proc.stdout is not None
    for text in proc.stdout:
        if text.endswith("\n"):
            out.append(text)


def test_kill_9_at_random_moments_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """Power-cut style: a writer killed -9 thirty times; every commit it reported is there, the file sound."""
    db = tmp_path / "outbox.sqlite"
    rng = random.Random(20261126)
    enqueued: dict[int, str] = {}
    final: dict[int, str] = {}
    kills = 0
    for _ in range(30):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.edge.dock.outbox_writer", str(db)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        out: list[str] = []
        reader = threading.Thread(target=_read, args=(proc, out), daemon=True)
        reader.start()
        deadline = time.monotonic() + 10
        while not out and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
        assert out, f"the writer reported nothing (exit {proc.poll()})"
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        reader.join(timeout=10)
        kills += 1
        for text in out:
            kind, a, b = text.split()
            if kind == "E":
                for s in range(int(a), int(b) + 1):
                    enqueued[s] = record_hash(s)
            elif b != "pending":
                final[int(a)] = b
        # What a power cut leaves must open, be sound, and hold every reported commit.
        with Outbox(db) as ob:
            assert ob.integrity_check() == "ok"
            held = {r.seq: r for r in ob.rows(REC)}
            for s, h in enqueued.items():
                assert s in held, f"seq {s} lost"
                assert (held[s].hash, held[s].line) == (h, line(s))
            for s, st in final.items():
                assert held[s].state == st, f"seq {s}: ack {st} lost (now {held[s].state})"
                assert held[s].ack_json()["status"] == st
            # Nothing claims more than was acknowledged: a final state always carries its ack.
            assert all((r.ack is not None) == r.final for r in held.values())
    assert kills == 30
    assert len(final) > 100
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
