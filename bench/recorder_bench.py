"""Recorder pipeline vs the ffmpeg CLI, same input, same codec settings, same run.

1280×720 at 30 fps, 60 s of synthetic input (lavfi testsrc2 + a 440 Hz tone): the recorder agent's
whole pipeline (stamp, H.264 + AAC encode, fMP4 segments of 10 s, hash, sign, journal) as fast as it
can go, against `ffmpeg` encoding and segmenting the same input (libx264 ultrafast/zerolatency, a
keyframe every second, 2500 kb/s, AAC 64 kb/s, fMP4 segments of 10 s). Goal ≥ 0.9× the CLI's
frames per second. Also prints CPU seconds per second of real-time 720p30 recording.

    .venv/bin/python bench/recorder_bench.py [--seconds 60] [--repeat 3]
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
from pathlib import Path

from edge.config import load_recorder_config
from edge.recorder.agent import RecorderAgent
from edge.recorder.synthetic import synthetic_recorder_config
from provisioning import enroll, init_ca

W, H, FPS = 1280, 720, 30


def ffmpeg_run(seconds: int, out: Path) -> tuple[float, float]:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        "ffmpeg",
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={W}x{H}:rate={FPS}",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        str(seconds),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-x264-params",
        f"keyint={FPS}:min-keyint={FPS}:scenecut=0",
        "-b:v",
        "2500k",
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        "-ac",
        "1",
        "-f",
        "segment",
        "-segment_time",
        "10",
        "-segment_format",
        "mp4",
        "-segment_format_options",
        "movflags=frag_keyframe+empty_moov+default_base_moof",
        str(out / "seg%03d.mp4"),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def recorder_run(bundle: Path, seconds: int, work: Path) -> tuple[float, float, int]:
    spool = work / "spool"
    cfg = synthetic_recorder_config(
        bundle,
        spool=spool,
        socket=work / "ctl.sock",
        width=W,
        height=H,
        fps=FPS,
        segment_seconds=10,
        pre_event_seconds=0,
        name="bench.toml",
        video={"bitrate_kbps": 2500},
    )
    agent = RecorderAgent(config=load_recorder_config(cfg), config_label="bench", realtime=False)
    agent.open()
    try:
        t0 = os.times()
        t = time.perf_counter()
        agent.start_recording()
        agent.stop_recording(after=seconds)
        wall = time.perf_counter() - t
        t1 = os.times()
        segments = agent.segments_sealed
    finally:
        agent.close()
    return wall, (t1.user - t0.user) + (t1.system - t0.system), segments


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fp-rec-bench-") as d:
        root = Path(d)
        init_ca(root / "ca")
        bundle = enroll(root / "ca", device="REC-BENCH", role="recorder")
        ours, cli = [], []
        for i in range(args.repeat):  # interleaved, so noise on this shared machine hits both alike
            cli.append(ffmpeg_run(args.seconds, root / f"cli{i}"))
            ours.append(recorder_run(bundle, args.seconds, root / f"rec{i}"))
            shutil.rmtree(root / f"cli{i}")
            shutil.rmtree(root / f"rec{i}")
        frames = args.seconds * FPS
        cw, cc = statistics.median(w for w, _ in cli), statistics.median(c for _, c in cli)
        ow, oc = statistics.median(w for w, _, _ in ours), statistics.median(c for _, c, _ in ours)
        print(f"{W}x{H}@{FPS}, {args.seconds} s, {args.repeat} interleaved runs (median)")
        print(f"  ffmpeg CLI         {frames / cw:7.1f} fps   CPU {cc / args.seconds:.3f} s per s of 720p30")
        print(
            f"  recorder pipeline  {frames / ow:7.1f} fps   CPU {oc / args.seconds:.3f} s per s of 720p30"
            f"   ({ours[0][2]} segments, hashed, signed, chained)"
        )
        print(f"  ratio (recorder / CLI frames per second): {cw / ow:.2f}×   goal ≥ 0.90×")


if __name__ == "__main__":
    main()
