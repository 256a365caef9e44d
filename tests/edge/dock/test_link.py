"""The serial control link over a socat pty pair: identity, status, clock, records, erase-after-ack."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from custody.spool import Spool
from custody.timefmt import now_timestamp
from custody.trust import TrustStore
from custody.verify import ChainVerifier
from edge.recorder.link import DockLink, LinkError, RecorderLink, load_server_keys
from edge.sync.protocol import signed_ack
from tests.edge.dock.conftest import Fleet
from tests.edge.dock.helpers import PtyPair, SpoolRecorder, journal_facts

SKEW = timedelta(milliseconds=3500)  # the recorder's clock runs this far ahead of the dock's


@pytest.fixture
def recorder_spool(fleet: Fleet, tmp_path: Path) -> Path:
    return fleet.make_spool(tmp_path / "spool", "REC-0001", segments=3, size=20_000)


@pytest.fixture
def linked(
    fleet: Fleet, recorder_spool: Path, make_pty: Callable[[str], PtyPair]
) -> Iterator[tuple[SpoolRecorder, DockLink, list[int]]]:
    pair = make_pty("ctl")
    rec = SpoolRecorder(recorder_spool, fleet.signer("REC-0001"), "REC-0001")
    stepped: list[int] = []
    link = RecorderLink(
        str(pair.a),
        identity=rec.identity(),
        status=rec.status,
        chain_clock=rec.chain_clock,
        release=rec.release,
        server_keys=load_server_keys(fleet.ca / "server-signing.pem", ca_chain=fleet.ca / "ca-chain.pem"),
        set_time=lambda off: stepped.append(off) or True,
        clock=lambda: datetime.now(UTC) + SKEW,
    )
    link.start()
    dock = DockLink(str(pair.b), timeout=5)
    yield rec, dock, stepped
    dock.close()
    link.stop()
    rec.writer.close()


def _verify(fleet: Fleet, spool: Path) -> Any:
    trust = TrustStore.from_paths(ca=[fleet.ca / "root-ca.pem"], certs=[fleet.ca / "ca-chain.pem"])
    return ChainVerifier(trust, workers=1).verify_spool(Spool.open(spool))


def test_identity_and_status(linked: tuple[SpoolRecorder, DockLink, list[int]], recorder_spool: Path) -> None:
    _rec, dock, _ = linked
    ident = dock.identity()
    assert ident["device"] == "REC-0001"
    assert ident["role"] == "recorder"
    assert ident["spool"] == str(recorder_spool)
    assert ident["link"] == 1
    st = dock.status()
    assert st["battery"] is None or "capacity_pct" in st["battery"]
    on_disk = sum(p.stat().st_size for p in recorder_spool.rglob("*") if p.is_file())
    assert st["spool"]["used_bytes"] == on_disk
    assert st["spool"]["free_bytes"] > 0
    assert st["recording"] is None


def test_set_clock_measures_the_offset_and_the_recorder_signs_it(
    fleet: Fleet, linked: tuple[SpoolRecorder, DockLink, list[int]], recorder_spool: Path
) -> None:
    rec, dock, stepped = linked
    before = len(journal_facts(recorder_spool))
    out = dock.set_clock(reference="dock:DOCK-01/rtc", apply=True)
    # The recorder is 3.5 s ahead: reference − device ≈ −3500 ms, to within the link's round trip.
    assert abs(out["offset_ms"] + 3500) <= max(20, out["rtt_ms"]), out
    assert out["applied"] is True
    assert stepped == [out["offset_ms"]]
    [call] = rec.clock_calls
    assert call["offset_ms"] == out["offset_ms"]
    assert call["reference"] == "dock:DOCK-01/rtc"
    assert call["device_time"] - call["reference_time"] == timedelta(milliseconds=-out["offset_ms"])
    facts = journal_facts(recorder_spool)
    assert len(facts) == before + 1
    last = facts[-1]
    assert last.kind == "clock"
    assert last.clock_applied is True
    assert out["record"] == {"seq": last.seq, "hash": last.hash}
    report = _verify(fleet, recorder_spool)
    assert report.all_sound, [f.message for f in report.findings]


def test_set_clock_without_a_clock_setter_chains_applied_false(
    fleet: Fleet, recorder_spool: Path, make_pty: Callable[[str], PtyPair]
) -> None:
    pair = make_pty("noset")
    rec = SpoolRecorder(recorder_spool, fleet.signer("REC-0001"), "REC-0001")
    link = RecorderLink(
        str(pair.a),
        identity=rec.identity(),
        status=rec.status,
        chain_clock=rec.chain_clock,
        release=rec.release,
        server_keys=fleet.server_keys(),
    )
    link.start()
    try:
        with DockLink(str(pair.b)) as dock:
            out = dock.set_clock(reference="dock:DOCK-01/ntp", apply=True)
        assert out["applied"] is False
        assert abs(out["offset_ms"]) <= max(20, out["rtt_ms"])
        assert rec.clock_calls[0]["applied"] is False
    finally:
        link.stop()
        rec.writer.close()


def _ack(key: Ed25519PrivateKey, kid: str, **fields: Any) -> dict[str, Any]:
    import json

    base = {"reason": "", "received": 0, "server_time": now_timestamp()}
    return json.loads(signed_ack(key, kid, **{**base, **fields}))


def test_release_frees_only_files_of_genuine_durable_acks(
    fleet: Fleet, linked: tuple[SpoolRecorder, DockLink, list[int]], recorder_spool: Path
) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from custody.signing import key_id

    _rec, dock, _ = linked
    key = serialization.load_pem_private_key((fleet.ca / "server-signing.key").read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    kid = key_id(x509.load_pem_x509_certificate((fleet.ca / "server-signing.pem").read_bytes()))
    segs = [f for f in journal_facts(recorder_spool) if f.kind == "segment"]
    assert len(segs) == 3
    s0, s1, s2 = segs

    good = _ack(key, kid, recorder="REC-0001", seq=s0.seq, hash=s0.hash, status="stored", received=s0.size)
    forged = _ack(
        Ed25519PrivateKey.generate(), kid, recorder="REC-0001", seq=s1.seq, hash=s1.hash, status="stored"
    )
    unsigned = dict(_ack(key, kid, recorder="REC-0001", seq=s1.seq, hash=s1.hash, status="stored"))
    del unsigned["sig"]
    tampered = _ack(key, kid, recorder="REC-0001", seq=s2.seq, hash=s2.hash, status="pending")
    tampered["status"] = "stored"  # changed after the server signed it
    pending = _ack(key, kid, recorder="REC-0001", seq=s2.seq, hash=s2.hash, status="pending")
    other = _ack(key, kid, recorder="REC-0002", seq=s2.seq, hash=s2.hash, status="stored")
    wrong_hash = _ack(key, kid, recorder="REC-0001", seq=s1.seq, hash=s2.hash, status="duplicate")

    ans = dock.release([good, forged, unsigned, tampered, pending, other, wrong_hash])
    assert ans["released"] == [s0.file]
    assert sorted(ans["accepted"]) == sorted([s0.seq, s1.seq])  # wrong_hash verifies, but frees nothing
    reasons = {(r["seq"], r["reason"].split(":")[0]) for r in ans["refused"]}
    assert reasons == {
        (s1.seq, "bad-signature"),  # forged, and unsigned
        (s2.seq, "bad-signature"),  # tampered
        (s2.seq, "status pending"),
        (s2.seq, "the ack is for REC-0002"),
    }
    assert not (recorder_spool / "media" / s0.file).exists()
    assert (recorder_spool / "media" / s1.file).exists()
    assert (recorder_spool / "media" / s2.file).exists()
    last = journal_facts(recorder_spool)[-1]
    assert last.kind == "release"
    assert last.released == ((s0.seq, s0.hash),)
    # The freed file is covered by the release record: the chain is still entirely sound.
    report = _verify(fleet, recorder_spool)
    assert report.all_sound, [f.message for f in report.findings]
    # Asking again frees nothing more (the file is gone), and nothing breaks.
    again = dock.release([good])
    assert again["released"] == []
    assert again["accepted"] == [s0.seq]


def test_records_from_a_seq_and_noise_on_the_line(
    linked: tuple[SpoolRecorder, DockLink, list[int]], recorder_spool: Path
) -> None:
    _rec, dock, _ = linked
    lines = (recorder_spool / "chain.jsonl").read_bytes().splitlines(True)
    assert dock.records(0) == lines
    assert dock.records(3) == lines[3:]
    assert dock.records(len(lines)) == []
    dock._port.write(b"\x00\xffgarbage that is no request\n{}\n")  # noise is not answered
    with pytest.raises(LinkError, match="unknown op"):
        dock.request("format-disk")
    assert dock.identity()["device"] == "REC-0001"


def test_no_recorder_answering_is_a_bounded_error(make_pty: Callable[[str], PtyPair]) -> None:
    pair = make_pty("silent")
    with DockLink(str(pair.b), timeout=0.5) as dock:
        t0 = time.monotonic()
        with pytest.raises(LinkError, match="no answer"):
            dock.identity()
        assert time.monotonic() - t0 < 2


def test_server_key_must_come_from_the_fleet(fleet: Fleet, tmp_path: Path) -> None:
    from provisioning import init_ca

    other = tmp_path / "other-ca"
    init_ca(other)
    with pytest.raises(LinkError, match="not the fleet's server-signing certificate"):
        load_server_keys(other / "server-signing.pem", ca_chain=fleet.ca / "ca-chain.pem")
    with pytest.raises(LinkError, match="not the fleet's server-signing certificate"):
        # a device's own signing certificate is from the fleet, but is not the server's
        load_server_keys(fleet.bundle("REC-0001") / "signing.pem", ca_chain=fleet.ca / "ca-chain.pem")
    with pytest.raises(LinkError, match="missing"):
        load_server_keys(tmp_path / "nope.pem")
    assert len(load_server_keys(fleet.ca / "server-signing.pem", ca_chain=fleet.ca / "ca-chain.pem")) == 1
