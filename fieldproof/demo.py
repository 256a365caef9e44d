"""``fieldproof demo``: the main job as far as it is built.

Today: provision a fleet, enrol a demo recorder, record a signed sample chain with real H.264 clips,
verify it, tamper with a copy and show the report finding it, and show a revoked device's records.
The recorder → dock → MQTT → server path replaces the sample chain as those issues land.
"""

from __future__ import annotations

import argparse
import io
import shutil
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

from custody.report import render_text
from custody.signing import Ed25519Signer
from custody.spool import JOURNAL, MEDIA, Spool
from custody.trust import TrustStore
from custody.verify import ChainReport, ChainVerifier
from fieldproof.sample_chain import write_sample_spool
from provisioning import enroll, init_ca, revoke


def add_parser(subparsers: Any) -> None:
    """Add the ``demo`` subcommand."""
    p = subparsers.add_parser("demo", help="run the end-to-end demonstration (what is built so far)")
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="folder for everything the demo makes")
    p.add_argument("--segments", type=int, default=3, help="segments in the sample recording")
    p.set_defaults(func=run)


def synthetic_clip(index: int, *, seconds: int = 2, fps: int = 15) -> bytes:
    """A real fragmented-MP4 H.264 clip from a synthetic pattern (there is no camera here)."""
    import av  # heavy import, only where media is made

    buf = io.BytesIO()
    with av.open(
        buf, "w", format="mp4", options={"movflags": "frag_keyframe+empty_moov+default_base_moof"}
    ) as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "g": str(fps)})
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        with av.open(f"testsrc2=size=640x360:rate={fps}", format="lavfi") as src:
            for n, frame in enumerate(src.decode(video=0)):
                if n >= seconds * fps:
                    break
                frame.pts, frame.time_base = n + index * seconds * fps, Fraction(1, fps)
                out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def _verify(ca: Path, spool: Path) -> ChainReport:
    trust = TrustStore.from_paths(ca=[ca / "root-ca.pem"], crl=[ca / "crl.pem"], certs=[ca / "ca-chain.pem"])
    return ChainVerifier(trust).verify_spool(Spool.open(spool))


def _step(n: int, text: str) -> None:
    print(f"\n== {n}. {text}")


def run(args: argparse.Namespace) -> int:
    """Run the demonstration; exit 0 when every step showed what it should."""
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)  # the demo's own folder: a fresh fleet every run
    ca = out / "ca"
    _step(1, f"Provision the fleet CA in {ca}")
    init_ca(ca)
    _step(2, "Enrol recorders REC-0001 and REC-0002 and dock DOCK-01")
    for device, role in (("REC-0001", "recorder"), ("REC-0002", "recorder"), ("DOCK-01", "dock")):
        print(f"   {device}: {enroll(ca, device=device, role=role)}")

    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    spool_dir = out / "spool-REC-0001"
    _step(
        3, f"REC-0001 records {args.segments} signed segments (synthetic camera, H.264 fMP4) into {spool_dir}"
    )
    bundle = ca / "devices" / "REC-0001"
    signer = Ed25519Signer.from_files(bundle / "signing.key", bundle / "signing.pem")
    write_sample_spool(
        spool_dir,
        signer=signer,
        device="REC-0001",
        segments=args.segments,
        media=synthetic_clip,
        ca_chain=(bundle / "ca-chain.pem").read_bytes(),
        start=start,
        seconds=2,
    ).close()
    print(f"   {len((spool_dir / JOURNAL).read_bytes().splitlines())} records in {spool_dir / JOURNAL}")

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
    lines = (tampered / JOURNAL).read_bytes().splitlines(keepends=True)
    del lines[2]
    (tampered / JOURNAL).write_bytes(b"".join(lines))
    bad = _verify(ca, tampered)
    print(render_text(bad))

    stolen = out / "spool-REC-0002"
    revoked_at = start + timedelta(seconds=4)
    _step(
        6,
        f"REC-0002 is reported lost; IT revokes it as of {revoked_at.isoformat()} — its later records are flagged",
    )
    b2 = ca / "devices" / "REC-0002"
    write_sample_spool(
        stolen,
        signer=Ed25519Signer.from_files(b2 / "signing.key", b2 / "signing.pem"),
        device="REC-0002",
        segments=args.segments,
        media=synthetic_clip,
        ca_chain=(b2 / "ca-chain.pem").read_bytes(),
        start=start,
        seconds=2,
    ).close()
    revoke(ca, device="REC-0002", at=revoked_at, reason="keyCompromise")
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
    print("   Not built yet: the live recorder, the dock, MQTT sync and the case-file server (see README).")
    return 0 if ok else 1
