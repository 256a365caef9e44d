"""``fieldproof demo``: the main job as far as it is built.

Today: provision a fleet, enrol recorders, record with the recorder agent (synthetic camera and
microphone: there are none here), verify the spool, tamper with a copy and show the report finding it,
and show a revoked device's later records flagged. The dock → MQTT → server path joins as it lands.
"""

from __future__ import annotations

import argparse
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from custody.report import render_text
from custody.spool import JOURNAL, MEDIA, Spool
from custody.trust import TrustStore
from custody.verify import ChainReport, ChainVerifier
from provisioning import enroll, init_ca, revoke


def add_parser(subparsers: Any) -> None:
    """Add the ``demo`` subcommand."""
    p = subparsers.add_parser("demo", help="run the end-to-end demonstration (what is built so far)")
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="folder for everything the demo makes")
    p.add_argument("--seconds", type=float, default=12, help="seconds REC-0001 records after the trigger")
    p.set_defaults(func=run)


def _verify(ca: Path, spool: Path) -> ChainReport:
    trust = TrustStore.from_paths(ca=[ca / "root-ca.pem"], crl=[ca / "crl.pem"], certs=[ca / "ca-chain.pem"])
    return ChainVerifier(trust).verify_spool(Spool.open(spool))


def _step(n: int, text: str) -> None:
    print(f"\n== {n}. {text}")


def _record(
    bundle: Path, out: Path, *, seconds: float, pre_roll: float, marks: tuple[str, ...] = (), **context: str
) -> Path:
    """Record with the real recorder agent (synthetic camera and microphone, as fast as it can go)."""
    from edge.config import load_recorder_config
    from edge.recorder.agent import RecorderAgent
    from edge.recorder.synthetic import synthetic_recorder_config

    spool = out / f"spool-{bundle.name}"
    cfg = synthetic_recorder_config(
        bundle, spool=spool, socket=out / f"{bundle.name}.sock", segment_seconds=4, pre_event_seconds=3
    )
    agent = RecorderAgent(config=load_recorder_config(cfg), config_label=cfg.name, realtime=False)
    agent.open()
    try:
        agent.set_context(**context)
        agent.wait_media(pre_roll)
        agent.start_recording()
        for label in marks:
            agent.mark(label)
        agent.stop_recording(after=seconds)
    finally:
        agent.close()
    return spool


def run(args: argparse.Namespace) -> int:
    """Run the demonstration; exit 0 when every step showed what it should."""
    out: Path = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)  # the demo's own folder: a fresh fleet every run
    ca = out / "ca"
    _step(1, f"Provision the fleet CA in {ca}")
    init_ca(ca)
    _step(2, "Enrol recorders REC-0001 and REC-0002 and dock DOCK-01")
    for device, role in (("REC-0001", "recorder"), ("REC-0002", "recorder"), ("DOCK-01", "dock")):
        print(f"   {device}: {enroll(ca, device=device, role=role)}")

    _step(
        3,
        f"REC-0001 records {args.seconds:g} s with 3 s of pre-event footage (synthetic camera and "
        "microphone; H.264/AAC fMP4 segments of 4 s, stamped, hashed, signed, chained)",
    )
    spool_dir = _record(
        ca / "devices" / "REC-0001",
        out,
        seconds=args.seconds,
        pre_roll=4,
        marks=("show-credentials", "inform-rights"),
        officer="12010019001",
        case="津人社监察〔2026〕17号",
        subject="91120116MA05JQ2X4U",
        matter="CF-02",
        scene="onsite-inspection",
        proof="用人单位违反劳务派遣规定的现场情况",
    )
    lines = (spool_dir / JOURNAL).read_bytes().splitlines()
    print(f"   {len(lines)} records in {spool_dir / JOURNAL}; segments in {spool_dir / MEDIA}")

    _step(4, "Verify the spool against the fleet root")
    report = _verify(ca, spool_dir)
    print(render_text(report))

    tampered = out / "spool-REC-0001-tampered"
    _step(5, f"Tamper with a copy ({tampered}): change one byte of a clip, delete one record")
    shutil.copytree(spool_dir, tampered)
    clip = sorted((tampered / MEDIA).rglob("*.mp4"))[0]
    data = bytearray(clip.read_bytes())
    data[len(data) // 2] ^= 0x20
    clip.write_bytes(bytes(data))
    journal = (tampered / JOURNAL).read_bytes().splitlines(keepends=True)
    del journal[2]
    (tampered / JOURNAL).write_bytes(b"".join(journal))
    bad = _verify(ca, tampered)
    print(render_text(bad))

    _step(6, "REC-0002 records twice; it is then reported lost between the two, and IT revokes it as of then")
    b2 = ca / "devices" / "REC-0002"
    stolen = _record(b2, out, seconds=4, pre_roll=0, officer="12010019002")
    time.sleep(1.2)  # CRL times have whole seconds
    revoked_at = datetime.now(UTC).replace(microsecond=0)
    time.sleep(1.2)
    _record(b2, out, seconds=4, pre_roll=0, officer="12010019002")
    revoke(ca, device="REC-0002", at=revoked_at, reason="keyCompromise")
    print(f"   revoked as of {revoked_at.isoformat()}")
    rev = _verify(ca, stolen)
    print(render_text(rev))

    ok = report.all_sound and not bad.all_sound and not rev.all_sound
    _step(7, "Summary")
    print(
        f"   sound spool: {'ALL SOUND' if report.all_sound else 'FINDINGS'}; tampered copy: "
        f"{', '.join(sorted(bad.codes()))}; revoked device: {', '.join(sorted(rev.codes()))}"
    )
    print(
        f"   Check it yourself: fieldproof verify {spool_dir} --ca {ca / 'root-ca.pem'} "
        f"--certs {ca / 'ca-chain.pem'} --crl {ca / 'crl.pem'}"
    )
    print("   Not built yet: the dock (so this demo does not yet sync to the server's ingest over MQTT)")
    print("   and the case file (see README).")
    return 0 if ok else 1
