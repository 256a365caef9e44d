"""10,000 random and malformed messages through the broker: the worker stays up and files nothing wrong."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from edge.sync.protocol import chunk_properties, have_question, record_message
from server.config import ServerSettings
from server.custody_log.service import events_for
from server.db import make_engine, session_factory
from server.evidence.backend import make_blob_store
from server.evidence.models import EvidenceFile
from server.ingest.models import Record
from tests.server.case_helpers import stored_digest
from tests.server.conftest import Fleet, RunningIngest
from tests.server.dock import TestDock, spool_records

MESSAGES = 10_000
SEED = 20261126


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        if op == 0 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif op == 1:
            b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
        elif op == 2 and b:
            del b[rng.randrange(len(b))]
        elif b:
            del b[rng.randrange(len(b)) :]
    return bytes(b)


def _member(rng: random.Random) -> str:
    return rng.choice(["v", "msg", "recorder", "line", "certs", "seq", "x"])


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    choices: list[Any] = [None, True, 1.5, -1, 2**70, "REC-0001", "sha256:" + "a" * 64, "\u0000", "案件"]
    if depth < 3:
        choices += [
            [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))],
            {_member(rng): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))},
        ]
    return rng.choice(choices)


def _fuzz_messages(rng: random.Random, lines: list[bytes], segment: dict[str, Any], data: bytes) -> list[Any]:
    """(what, payload, user properties, qos) tuples."""
    good_record = [record_message("REC-0001", line) for line in lines]
    out: list[Any] = []
    for i in range(MESSAGES):
        kind = i % 10
        what = rng.choice(["record", "chunk", "have"])
        props = None
        if kind == 0:  # random bytes anywhere
            payload = rng.randbytes(rng.randint(0, 600))
            what = rng.choice(["record", "chunk", "have", "state2", "x", "record/extra"])
        elif kind in (1, 2, 3):  # a valid record message, mutated
            payload, what = _mutate(rng, rng.choice(good_record)), "record"
        elif kind == 4:  # JSON of the wrong shape
            msg = {"v": 1, "msg": rng.choice(["record", "have?", "ack", "x"]), "recorder": "REC-0001"}
            msg[rng.choice(["line", "certs", "recorder", "v", "extra"])] = _random_json(rng)
            payload = json.dumps(msg).encode()
        elif kind == 5:  # a journal line mutated, inside a well-formed message
            line = _mutate(rng, rng.choice(lines).rstrip(b"\n")).decode("utf-8", "replace")
            certs = rng.choice([[], ["junk"]])
            payload = json.dumps(
                {"v": 1, "msg": "record", "recorder": "REC-0001", "line": line, "certs": certs}
            )
            payload = payload.encode()
            what = "record"
        elif kind in (6, 7):  # chunks with bad properties
            what = "chunk"
            base = chunk_properties(
                recorder="REC-0001",
                seq=segment["seq"],
                digest=segment["body"]["digest"],
                offset=0,
                size=len(data),
            )
            p = dict(base)
            key = rng.choice([*p.keys(), "extra"])
            p[key] = rng.choice(
                [
                    "",
                    "-1",
                    "1e3",
                    "٣",
                    str(2**64),
                    "sha256:" + "0" * 64,
                    "REC-0002",
                    "0x10",
                    " 5",
                    str(len(data) + 1),
                    "案件",
                ]
            )
            if rng.random() < 0.2:
                p.pop(rng.choice(list(p)))
            props = list(p.items())
            payload = rng.randbytes(rng.randint(0, 2000))
        elif kind == 8:  # chunks of files never announced, or past the announced size
            what = "chunk"
            off = rng.choice([0, len(data), len(data) - 1, 10**9])
            props = chunk_properties(
                recorder=rng.choice(["REC-0001", "REC-0002", "REC-9999"]),
                seq=rng.randint(0, 40),
                digest="sha256:" + rng.randbytes(32).hex(),
                offset=off,
                size=rng.choice([len(data), off + 1, 4 * 1024**3]),
            )
            payload = rng.randbytes(rng.randint(1, 64))
        else:  # have? and friends, mangled
            what = "have"
            payload = _mutate(rng, have_question(rng.choice(["REC-0001", "REC-0002"])))
        out.append((what, payload, props, 0 if rng.random() < 0.05 else 1))
    return out


def test_fuzz_leaves_the_worker_running_and_files_nothing_wrong(
    tmp_path: Path,
    fleet: Fleet,
    settings: ServerSettings,
    ingest: RunningIngest,
    dock: TestDock,
    make_dock: Any,
) -> None:
    rng = random.Random(SEED)
    spool = fleet.make_spool(tmp_path / "spool", segments=2, size=100_000)
    records = spool_records(spool)
    lines = [line for line, _ in records]
    seg = next(r for _, r in records if r["kind"] == "segment")
    data = (spool / "media" / seg["body"]["file"]).read_bytes()
    # The server knows the recorder and holds a pending file, so mutated chunks meet real state.
    dock.send_record("REC-0001", lines[0], [fleet.cert("REC-0001")])
    for line in lines[1 : seg["seq"] + 1]:
        dock.send_record("REC-0001", line)

    messages = _fuzz_messages(rng, lines, seg, data)
    started = time.monotonic()
    mids = [
        dock.mqtt.publish_with(dock.topics.up(what), payload, props, qos)
        for what, payload, props, qos in messages
    ]
    for mid, (_, _, _, qos) in zip(mids, messages, strict=True):
        if qos:
            assert not dock.mqtt.wait_puback(mid, timeout=60).is_failure
    # A have? from another dock, published after the broker took every fuzz message, is handled after them.
    sentinel = make_dock("DOCK-02")
    n = len(sentinel.haves)
    sentinel.publish("have", have_question("REC-0001"))
    with sentinel._cond:
        assert sentinel._cond.wait_for(lambda: len(sentinel.haves) > n, timeout=150)
    elapsed = time.monotonic() - started
    engine = settings.db_url.split(":")[0]
    print(f"{MESSAGES} fuzz messages handled in {elapsed:.1f}s ({MESSAGES / elapsed:.0f}/s) on {engine}")

    assert ingest.alive()
    assert ingest.worker.handled >= MESSAGES * 0.95  # QoS 0 ones may be dropped only under overload
    assert not dock.forged
    store = make_blob_store(settings)
    with session_factory(make_engine(settings.db_url))() as s:
        # No message made the handler fail: every one was answered or refused on purpose.
        errors = events_for(session=s, kind="error")
        assert errors == [], [json.loads(e.detail)["error"] for e in errors[:3]]
        # Only records byte-identical to the recorder's own lines are held; only true bytes are stored.
        assert all(r.line in lines for r in s.scalars(select(Record)))
        for f in s.scalars(select(EvidenceFile).where(EvidenceFile.status == "stored")):
            assert f.blob_key == store.key(f.digest)
            assert stored_digest(store, f.digest) == (f.digest, f.size)
        assert len(events_for(session=s, kind="rejected")) > MESSAGES * 0.5

    # And a valid upload still works (a fuzzed chunk may have spoilt the staged file: resend once).
    answers = dock.upload(spool, "REC-0001")
    if any(a["reason"].startswith("hash-mismatch") for a in answers):
        answers = dock.upload(spool, "REC-0001")
    assert all(a["status"] in ("stored", "duplicate") for a in answers), answers
    with session_factory(make_engine(settings.db_url))() as s:
        assert [r.line for r in s.scalars(select(Record).order_by(Record.seq))] == lines
