"""A child process for the power-cut test: writes to an outbox for ever, reporting each commit on stdout.

Every line it prints is printed *after* the transaction it names returned (committed, fsynced), so the
parent may kill it at any moment and demand that everything reported is still there.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from edge.sync.outbox import Outbox, OutboxItem

REC = "REC-0001"


def record_hash(seq: int) -> str:
    return "sha256:" + hashlib.sha256(f"record {seq}".encode()).hexdigest()


def line(seq: int) -> bytes:
    return json.dumps({"record": {"seq": seq, "pad": "x" * (seq % 97)}}).encode() + b"\n"


def status_of(seq: int) -> str:
    return ("stored", "duplicate", "rejected", "pending")[seq % 4]


def main(path: str) -> None:
    ob = Outbox(Path(path))
    seq = max(ob.held_seqs(REC), default=-1) + 1
    while True:
        batch = range(seq, seq + 7)
        ob.enqueue(
            OutboxItem(
                recorder=REC,
                seq=s,
                hash=record_hash(s),
                kind="segment",
                line=line(s),
                file=f"r/{s:06d}.mp4",
                size=1000 + s,
                digest=record_hash(s + 10**6),
            )
            for s in batch
        )
        print(f"E {batch[0]} {batch[-1]}", flush=True)
        ob.mark_sent(REC, batch)
        for row in ob.open_rows(REC, limit=20):
            st = "stored" if row.state == "pending" else status_of(row.seq)
            ack = {
                "recorder": REC,
                "seq": row.seq,
                "hash": row.hash,
                "status": st,
                "received": 500,
                "reason": "",
            }
            if ob.apply_ack(ack) is not None:
                print(f"A {row.seq} {st}", flush=True)
        seq = batch[-1] + 1


if __name__ == "__main__":
    main(sys.argv[1])
