"""Recorder capture pipeline vs the ffmpeg CLI: same input, same codec settings, same run.

1280×720 at 30 fps, 60 s of synthetic input (lavfi testsrc2 + a 440 Hz tone). The recorder's whole
path for every segment — stamp, H.264 + AAC encode, fMP4 segments of 10 s, fsync, move into the spool
(hash), segment record (sign, journal, fsync) — as fast as it can go (``realtime=False``), against
Debian's ``ffmpeg`` encoding and segmenting the same input with the same settings (libx264
ultrafast/zerolatency, a keyframe every second and no scene-cut keyframes, 2500 kb/s, AAC 64 kb/s mono,
fMP4 segments of 10 s). Runs are interleaved so that noise on a shared machine hits both alike; the
medians are printed. Goal: ≥ 0.9× the CLI's frames per second. Also: CPU seconds (user + system) per
second of real-time 720p30 recording, the same pipeline without the stamp, and (``--overlay-costs``)
what each way of drawing the stamp costs per frame.

    .venv/bin/python bench/recorder_bench.py [--seconds 60] [--repeat 3] [--overlay-costs]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from custody.signing import Ed25519Signer
from edge.capture.api import SegmentFile, SegmentOpened, Stamp
from edge.capture.pipeline import CapturePipeline
from edge.config import AudioConfig, OverlayConfig, PreEventConfig, VideoConfig
from edge.journal import SpoolWriter
from fieldproof.sample_chain import segment_body

W, H, FPS, KBPS, SEGMENT_S = 1280, 720, 30, 2500, 10
DEVICE = "REC-BENCH"
STAMP = Stamp(
    device=DEVICE, officer="12010019001", lat_e7=391_244_000, lon_e7=1_171_907_000, clock_trusted=True
)


def throwaway_signer() -> Ed25519Signer:
    """An Ed25519 key and a self-signed certificate, for this run only."""
    key = Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DEVICE)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, None)
    )
    return Ed25519Signer(private_key=key, certificate=cert)


class SpoolSink:
    """What the recorder agent does with a sealed segment: into media/ (hashed), then a signed record."""

    def __init__(self, spool: SpoolWriter) -> None:
        self.spool = spool
        self.segments = 0

    def segment_opened(self, event: SegmentOpened) -> None:
        """Nothing to keep for a benchmark (the agent writes a sidecar here)."""

    def segment_sealed(self, segment: SegmentFile) -> None:
        """Store the file and chain its record."""
        name = f"{segment.recording}/{segment.index:04d}.mp4"
        digest, size = self.spool.store_media(segment.path, name)
        body = segment_body(
            recording=segment.recording,
            index=segment.index,
            file=name,
            digest=digest,
            size=size,
            start=segment.start,
            seconds=round((segment.end - segment.start).total_seconds()),
            pre_event_s=segment.pre_event_s,
            media=segment.media,
        )
        self.spool.append("segment", body)
        self.segments += 1


def pipeline_run(seconds: int, work: Path, *, overlay: bool) -> tuple[float, float, int, int]:
    """(wall s, CPU s, frames, segments) for the capture pipeline feeding a real spool."""
    spool = SpoolWriter.create(work / "spool", signer=throwaway_signer(), device=DEVICE)
    sink = SpoolSink(spool)
    pipe = CapturePipeline(
        video=VideoConfig(
            source={"type": "synthetic", "pattern": "testsrc2"},
            width=W,
            height=H,
            fps=FPS,
            bitrate_kbps=KBPS,
            keyframe_interval_s=1,
        ),
        audio=AudioConfig(source={"type": "synthetic", "frequency_hz": 440}, rate=48000, channels=1),
        pre_event=PreEventConfig(seconds=0),
        overlay=OverlayConfig(enabled=overlay),
        segment_seconds=SEGMENT_S,
        work_dir=work / "spool" / "tmp",  # as the agent does: sealed files are renamed, not copied
        stamp=lambda: STAMP,
        sink=sink,
        realtime=False,
    )
    try:
        c0, t0 = os.times(), time.perf_counter()
        pipe.start()
        pipe.start_recording("bench")
        pipe.stop_recording(after=seconds)
        wall, c1 = time.perf_counter() - t0, os.times()
        frames = pipe.frames_captured
    finally:
        pipe.close()
        spool.close()
    return wall, (c1.user - c0.user) + (c1.system - c0.system), frames, sink.segments


def ffmpeg_run(seconds: int, out: Path) -> tuple[float, float, int, int]:
    """(wall s, CPU s, frames, segments) for the ffmpeg CLI doing the same encode and segmenting."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = ["ffmpeg", "-v", "error", "-y"]
    cmd += ["-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:rate={FPS}"]
    cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds)]
    cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency"]
    cmd += ["-x264-params", f"keyint={FPS}:min-keyint={FPS}:scenecut=0", "-b:v", f"{KBPS}k"]
    cmd += ["-c:a", "aac", "-b:a", "64k", "-ac", "1"]
    cmd += ["-f", "segment", "-segment_time", str(SEGMENT_S), "-segment_format", "mp4"]
    cmd += ["-segment_format_options", "movflags=frag_keyframe+empty_moov+default_base_moof"]
    cmd += [str(out / "seg%03d.mp4")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, seconds * FPS, len(list(out.glob("seg*.mp4")))


def overlay_costs(frames: int = 300) -> None:
    """Per-frame cost at 720p of the ways to burn the stamp into a yuv420p frame the encoder takes."""
    import av
    import cv2

    from edge.capture.overlay import Overlay, luma_plane, stamp_lines

    src = av.open(f"testsrc2=size={W}x{H}:rate={FPS}", format="lavfi")
    pictures = [f for _, f in zip(range(frames), src.decode(video=0), strict=False)]
    src.close()
    lines = stamp_lines(Stamp(DEVICE, "12010019001", None, None, False), datetime.now(UTC))
    overlay = Overlay(width=W, height=H, font_scale=0.6, thickness=1, position="bottom-left")
    scale = 0.6 * 1.6

    def luma_blend(f: Any) -> Any:
        overlay.apply(luma_plane(f, W, H), lines)
        return f

    def puttext_on_luma(f: Any) -> Any:
        y = luma_plane(f, W, H)
        for i, t in enumerate(lines):
            cv2.putText(y, t, (4, H - 100 + 26 * i), cv2.FONT_HERSHEY_SIMPLEX, scale, 235, 1, cv2.LINE_AA)
        return f

    def bgr_cv2(f: Any) -> Any:
        img = f.to_ndarray(format="bgr24")
        for i, t in enumerate(lines):
            cv2.putText(
                img, t, (4, H - 100 + 26 * i), cv2.FONT_HERSHEY_SIMPLEX, scale, (255,) * 3, 1, cv2.LINE_AA
            )
        return av.VideoFrame.from_ndarray(cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420), format="yuv420p")

    def bgr_pyav(f: Any) -> Any:
        img = f.to_ndarray(format="bgr24")
        for i, t in enumerate(lines):
            cv2.putText(
                img, t, (4, H - 100 + 26 * i), cv2.FONT_HERSHEY_SIMPLEX, scale, (255,) * 3, 1, cv2.LINE_AA
            )
        return av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format="yuv420p")

    print(f"stamp cost per {W}x{H} frame ({frames} frames of testsrc2):")
    for label, draw in [
        ("mask blended into the Y plane (ours)", luma_blend),
        ("cv2.putText on the Y plane, every frame", puttext_on_luma),
        ("yuv→BGR, putText, cv2 BGR→I420", bgr_cv2),
        ("yuv→BGR, putText, PyAV reformat→yuv420p", bgr_pyav),
    ]:
        t = time.perf_counter()
        for f in pictures:
            draw(f)
        print(f"  {label:44s} {(time.perf_counter() - t) / frames * 1000:6.3f} ms")


def main() -> None:
    """Run the comparison and print the medians."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--overlay-costs", action="store_true", help="also time the ways of drawing the stamp")
    args = ap.parse_args()
    if shutil.which("ffmpeg") is None:
        raise SystemExit("the baseline needs Debian's ffmpeg (apt-get install ffmpeg)")
    if args.overlay_costs:
        overlay_costs()
    runs: dict[str, list[tuple[float, float, int, int]]] = {"cli": [], "ours": [], "plain": []}
    with tempfile.TemporaryDirectory(prefix="fp-rec-bench-") as d:
        root = Path(d)
        for i in range(args.repeat):  # interleaved: noise on a shared machine hits all alike
            for kind in runs:
                work = root / f"{kind}{i}"
                if kind == "cli":
                    runs[kind].append(ffmpeg_run(args.seconds, work))
                else:
                    runs[kind].append(pipeline_run(args.seconds, work, overlay=kind == "ours"))
                shutil.rmtree(work)

    def fps(kind: str) -> float:
        return statistics.median(frames / wall for wall, _, frames, _ in runs[kind])

    def cpu(kind: str) -> float:
        return statistics.median(c / (frames / FPS) for _, c, frames, _ in runs[kind])

    print(f"{W}x{H}@{FPS}, {args.seconds} s, {args.repeat} interleaved runs (medians)")
    print(f"  ffmpeg CLI                    {fps('cli'):7.1f} fps   CPU {cpu('cli'):.3f} s per s of 720p30")
    print(
        f"  recorder pipeline             {fps('ours'):7.1f} fps   CPU {cpu('ours'):.3f} s per s of 720p30"
        f"   ({runs['ours'][0][3]} segments stamped, hashed, signed, journaled)"
    )
    print(
        f"  recorder pipeline, no stamp   {fps('plain'):7.1f} fps   CPU {cpu('plain'):.3f} s per s of 720p30"
    )
    print(f"  ratio recorder / CLI, frames per second: {fps('ours') / fps('cli'):.2f}×   (goal ≥ 0.90×)")
    print(f"  ratio recorder / CLI, CPU per second of footage: {cpu('ours') / cpu('cli'):.2f}×")


if __name__ == "__main__":
    main()
