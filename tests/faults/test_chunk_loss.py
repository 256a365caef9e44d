"""Found by the fault campaign: chunks of two files lost together (an ingest killed -9 with them in its queue)
must be sent again. Before the fix, the dock waited for ever: the earlier file's lost bytes were reclaimed
first, the byte budget was still spent, ``_pump_files`` returned — and the later file's stall was never
looked at, so its lost chunks were never resent and no ack ever came to free the budget.

A real broker and the dock's real ``SyncClient``; the server stand-in loses every chunk for half a second
from the first file's short last chunk on, then answers again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from custody.spool import Spool
from edge.dock.intake import journal_items
from edge.sync.client import SyncClient, TlsFiles
from edge.sync.outbox import Outbox
from edge.sync.protocol import parse_chunk
from tests.edge.dock.conftest import Fleet
from tests.edge.dock.helpers import Responder, journal_facts, wait_for
from tests.provisioning.helpers import Broker


@dataclass
class LosingResponder(Responder):
    """Loses every chunk for ``lose_s`` from the first file's last chunk on, as a killed ingest would."""

    lose_s: float = 0.5
    losing_since: float | None = None
    lost: list[tuple[int, int, int]] = field(default_factory=list)  # (seq, offset, length)

    def _chunk(self, dock: str, props: Any, payload: bytes) -> None:
        ch = parse_chunk(props, payload)
        now = time.monotonic()
        if self.losing_since is None and ch.offset + len(ch.data) == ch.size:
            self.losing_since = now
        if self.losing_since is not None and now - self.losing_since < self.lose_s:
            self.lost.append((ch.seq, ch.offset, len(ch.data)))
            return
        super()._chunk(dock, props, payload)


def test_chunks_of_two_files_lost_together_are_sent_again(
    fleet: Fleet, broker: Broker, tmp_path: Path
) -> None:
    spool = fleet.make_spool(
        tmp_path / "spool", "REC-0001", segments=3, size=300_000
    )  # 64 KiB chunks: short last
    responder = LosingResponder(broker.port, fleet.ca).start()
    outbox = Outbox(tmp_path / "outbox.sqlite")
    sp = Spool.open(spool)
    outbox.enqueue(journal_items(sp, sp.read_journal()).items)
    b = fleet.bundle("DOCK-01")
    client = SyncClient(
        dock_id="DOCK-01",
        brokers=[("127.0.0.1", broker.port)],
        outbox=outbox,
        server_keys=fleet.server_keys(),  # type: ignore[arg-type]
        files={"REC-0001": spool}.get,
        tls=TlsFiles(b / "ca-chain.pem", b / "tls.pem", b / "tls.key"),
        chunk_bytes=64 * 1024,
        retry_min_s=0.1,
        retry_max_s=1.0,
        ack_timeout_s=0.5,
    )
    client.start()
    try:
        client.wake("REC-0001", docked=True)
        wait_for("every record stored despite the lost chunks", lambda: not outbox.open_rows("REC-0001"), 30)
    finally:
        client.stop()
        responder.stop()
        outbox.close()
    # The loss hit what it was meant to: the first file's short last chunk and chunks of the next file.
    first = responder.lost[0]
    assert first[1] + first[2] in {f.size for f in journal_facts(spool) if f.seq == first[0]}
    assert len({seq for seq, _o, _n in responder.lost}) >= 2
    with responder.lock:
        assert all(f.digest in responder.complete for f in journal_facts(spool) if f.digest)
