"""The handler without the broker: several workers share nothing but the database and the store, and a
worker that died between committing a blob and filing it leaves nothing a later message cannot finish."""

from __future__ import annotations

import json
from pathlib import Path

from edge.sync.protocol import chunk_properties, have_question, parse_ack, record_message
from server.config import ServerSettings
from server.custody_log.service import events_for
from server.db import make_engine, session_factory
from server.devices.registry import DeviceRegistry
from server.evidence.backend import make_blob_store
from server.ingest.acks import AckSigner
from server.ingest.handler import IngestHandler, Outgoing
from tests.server.conftest import Fleet
from tests.server.dock import spool_records


def _handler(settings: ServerSettings, fleet: Fleet, name: str) -> IngestHandler:
    settings.check_data_dir()
    return IngestHandler(
        prefix=settings.topic_prefix,
        factory=session_factory(make_engine(settings.db_url, immediate=True)),
        store=make_blob_store(settings),
        registry=DeviceRegistry(fleet.ca),
        signer=AckSigner.from_ca_dir(fleet.ca),
        actor=name,
    )


def _acks(out: list[Outgoing], keys: dict[str, object]) -> list[dict[str, object]]:
    return [parse_ack(o.payload, keys) for o in out if o.topic.endswith("/down/ack")]  # type: ignore[arg-type]


UP = "fieldproof/v1/dev/DOCK-01/up/"


def test_three_workers_one_file(tmp_path: Path, fleet: Fleet, settings: ServerSettings) -> None:
    keys = dict(AckSigner.from_ca_dir(fleet.ca).public_keys)
    a, b, c = (_handler(settings, fleet, f"ingest:{n}") for n in "abc")
    spool = fleet.make_spool(tmp_path / "spool", segments=1, size=300_000)
    (l0, _), (l1, seg) = spool_records(spool)[:2]
    data = (spool / "media" / seg["body"]["file"]).read_bytes()
    assert (
        _acks(a.handle(UP + "record", record_message("REC-0001", l0, [fleet.cert("REC-0001")])), keys)[0][
            "status"
        ]
        == "stored"
    )
    # b has never seen the certificate: a learnt it into the database, so the record needs none.
    assert _acks(b.handle(UP + "record", record_message("REC-0001", l1)), keys)[0]["status"] == "pending"

    def chunk(h: IngestHandler, off: int, n: int) -> dict[str, object]:
        props = chunk_properties(
            recorder="REC-0001", seq=seg["seq"], digest=seg["body"]["digest"], offset=off, size=len(data)
        )
        return _acks(h.handle(UP + "chunk", data[off : off + n], props), keys)[-1]

    # Chunks dealt to different workers, out of order, one twice.
    assert chunk(c, 200_000, 100_000)["received"] == 0
    assert chunk(a, 0, 100_000)["received"] == 100_000
    assert chunk(b, 0, 100_000)["received"] == 100_000
    last = chunk(b, 100_000, 100_000)
    assert (last["status"], last["received"]) == ("stored", len(data))
    with session_factory(make_engine(settings.db_url))() as s:
        assert len(events_for(session=s, kind="filed", device="REC-0001")) == 2


def test_have_finishes_a_file_committed_before_a_crash(
    tmp_path: Path, fleet: Fleet, settings: ServerSettings
) -> None:
    keys = dict(AckSigner.from_ca_dir(fleet.ca).public_keys)
    h = _handler(settings, fleet, "ingest:1")
    spool = fleet.make_spool(tmp_path / "spool", segments=1, size=100_000)
    (l0, _), (l1, seg) = spool_records(spool)[:2]
    h.handle(UP + "record", record_message("REC-0001", l0, [fleet.cert("REC-0001")]))
    assert _acks(h.handle(UP + "record", record_message("REC-0001", l1)), keys)[0]["status"] == "pending"
    # The worker wrote every chunk and committed the blob, then died before filing it.
    data = (spool / "media" / seg["body"]["file"]).read_bytes()
    h.store.begin(seg["body"]["digest"], len(data))
    h.store.write_at(seg["body"]["digest"], 0, data)
    h.store.commit(seg["body"]["digest"])

    out = _handler(settings, fleet, "ingest:2").handle(UP + "have", have_question("REC-0001"))
    acks = _acks(out, keys)
    assert [(x["seq"], x["status"]) for x in acks] == [(seg["seq"], "stored")]
    have = json.loads(out[-1].payload)
    assert (have["next_seq"], have["pending"]) == (2, {})
