"""Shared test material: a sink that records what it hears, pipeline configs, and the ffmpeg judges."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.capture.api import SegmentFile, SegmentOpened, Stamp
from edge.capture.pipeline import CapturePipeline
from edge.config import AudioConfig, OverlayConfig, PreEventConfig, VideoConfig

FFPROBE = shutil.which("ffprobe")
FFMPEG = shutil.which("ffmpeg")
# Debian's ffmpeg/ffprobe are the judges; the set-up command installs them (apt-get install ffmpeg).
assert FFPROBE, "ffprobe (Debian package ffmpeg) is needed to judge the segments"
assert FFMPEG, "ffmpeg (Debian package ffmpeg) is needed to judge the segments"

T0 = datetime(2026, 11, 26, 8, 0, 0, tzinfo=UTC)
TIANJIN = Stamp(
    device="REC-00001", officer="12010019001", lat_e7=391_244_000, lon_e7=1_171_907_000, clock_trusted=True
)


class FakeSink:
    """Keeps every event, in order, from the pipeline thread."""

    def __init__(self) -> None:
        self.events: list[tuple[str, SegmentOpened | SegmentFile]] = []
        self.lock = threading.Lock()

    def segment_opened(self, event: SegmentOpened) -> None:
        assert event.path.exists() is False, "opened must be heard before the first byte is written"
        with self.lock:
            self.events.append(("opened", event))

    def segment_sealed(self, segment: SegmentFile) -> None:
        assert segment.path.stat().st_size > 0
        with self.lock:
            self.events.append(("sealed", segment))

    @property
    def opened(self) -> list[SegmentOpened]:
        return [e for k, e in self.events if k == "opened"]

    @property
    def sealed(self) -> list[SegmentFile]:
        return [e for k, e in self.events if k == "sealed"]


def make_pipeline(
    work: Path,
    *,
    width: int = 320,
    height: int = 240,
    fps: int = 30,
    audio: dict[str, Any] | None = None,
    rate: int = 48000,
    channels: int = 1,
    pre_event: int = 0,
    include_audio: bool = False,
    overlay: dict[str, Any] | None = None,
    segment_seconds: int = 10,
    source: dict[str, Any] | None = None,
    stamp: Any = None,
    sink: Any = None,
    realtime: bool = False,
    clock: Any = None,
    bitrate_kbps: int = 800,
    encoder: str = "libx264",
) -> tuple[CapturePipeline, FakeSink]:
    """A real pipeline on a synthetic camera and tone (fast mode unless ``realtime``)."""
    sink = sink or FakeSink()
    pipe = CapturePipeline(
        video=VideoConfig(
            source=source or {"type": "synthetic", "pattern": "testsrc2"},
            width=width,
            height=height,
            fps=fps,
            bitrate_kbps=bitrate_kbps,
            keyframe_interval_s=1,
            encoder=encoder,
        ),
        audio=AudioConfig(
            source=audio or {"type": "synthetic", "frequency_hz": 440}, rate=rate, channels=channels
        ),
        pre_event=PreEventConfig(seconds=pre_event, include_audio=include_audio),
        overlay=OverlayConfig(**(overlay or {})),
        segment_seconds=segment_seconds,
        work_dir=work,
        stamp=stamp or (lambda: TIANJIN),
        sink=sink,
        realtime=realtime,
        clock=clock or (lambda: T0),
    )
    return pipe, sink


def ffprobe(path: Path) -> dict[str, Any]:
    """Streams, packets and format of a file, as ffprobe reads it."""
    out = subprocess.run(
        [
            str(FFPROBE),
            "-v",
            "error",
            "-show_streams",
            "-show_packets",
            "-show_format",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)


def decode_errors(path: Path) -> str:
    """What ffmpeg complains about when decoding the whole file (empty: a clean decode)."""
    r = subprocess.run(
        [str(FFMPEG), "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return r.stderr + ("" if r.returncode == 0 else f"exit {r.returncode}")


def decoded_gray(path: Path, width: int, height: int) -> Any:
    """Every picture of the file as an 8-bit luma array (frames × height × width)."""
    import numpy as np

    r = subprocess.run(
        [str(FFMPEG), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return np.frombuffer(r.stdout, np.uint8).reshape(-1, height, width)


def decoded_audio(path: Path, rate: int) -> Any:
    """The file's audio as mono float samples at ``rate``."""
    import numpy as np

    r = subprocess.run(
        [
            str(FFMPEG),
            "-v",
            "error",
            "-i",
            str(path),
            "-vn",
            "-f",
            "f32le",
            "-ac",
            "1",
            "-ar",
            str(rate),
            "-",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return np.frombuffer(r.stdout, np.float32)


def video_packets(info: dict[str, Any]) -> list[dict[str, Any]]:
    """The video packets of an ffprobe report."""
    return [p for p in info["packets"] if p["codec_type"] == "video"]
