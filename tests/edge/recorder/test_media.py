"""The footage itself, judged by Debian's ffprobe/ffmpeg: segments valid alone, pre-event bit-identical."""

from __future__ import annotations

import hashlib
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from edge.capture.api import SegmentFile, SegmentOpened, Stamp
from edge.capture.pipeline import CapturePipeline
from edge.config import load_recorder_config
from tests.edge.capture.helpers import ffprobe
from tests.edge.recorder.conftest import fieldproof, records, verify


def test_a_60_second_recording_is_valid_segment_by_segment(make_recorder: Any, recorder_ca: Path) -> None:
    # 640x360 at 30 fps keeps the test quick; the benchmark runs 1280x720.
    cfg, spool = make_recorder(segment_seconds=10, pre_event_seconds=0, width=640, height=360, fps=30)
    fieldproof("recorder", "record", "--config", str(cfg), "--fast", "--seconds", "60")
    assert verify(spool, recorder_ca)["exit"] == 0
    segs = [r["body"] for r in records(spool) if r["kind"] == "segment"]
    assert len(segs) == 6
    frame = 1 / 30
    for body in segs:
        path = spool / "media" / body["file"]
        info = ffprobe(path)
        codecs = sorted(s["codec_name"] for s in info["streams"])
        assert codecs == ["aac", "h264"], path
        video = [p for p in info["packets"] if p["codec_type"] == "video"]
        assert video[0]["flags"].startswith("K"), "a segment must start with a keyframe"
        assert abs(float(info["format"]["duration"]) - 10.0) <= frame + 0.03, (
            path,
            info["format"]["duration"],
        )
        assert abs(body["media"]["duration_ms"] - 10_000) <= 34
        # Each segment decodes alone, without a single error.
        dec = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert dec.returncode == 0
        assert dec.stderr == ""


def annexb_to_avcc(data: bytes) -> bytes:
    """What the MP4 muxer stores for an Annex-B packet: each NAL with a 4-byte length."""
    nals, i = [], 0
    starts = []
    while True:
        j = data.find(b"\x00\x00\x01", i)
        if j < 0:
            break
        starts.append(j + 3)
        i = j + 3
    for k, s in enumerate(starts):
        end = len(data) if k + 1 == len(starts) else starts[k + 1] - 3
        nal = data[s:end]
        if k + 1 < len(starts) and nal.endswith(b"\x00"):
            nal = nal[:-1]  # the zero of a following 4-byte start code
        nals.append(len(nal).to_bytes(4, "big") + nal)
    return b"".join(nals)


class Sink:
    def __init__(self) -> None:
        self.opened: list[SegmentOpened] = []
        self.sealed: list[SegmentFile] = []

    def segment_opened(self, event: SegmentOpened) -> None:
        self.opened.append(event)

    def segment_sealed(self, segment: SegmentFile) -> None:
        self.sealed.append(segment)


@pytest.mark.parametrize("pre_event", [3, 8])
def test_pre_event_footage_is_the_encoders_own_packets(
    make_recorder: Any, tmp_path: Path, pre_event: int
) -> None:
    cfg_path, _ = make_recorder(
        segment_seconds=10, pre_event_seconds=pre_event, width=320, height=240, fps=15
    )
    cfg = load_recorder_config(cfg_path)
    sink = Sink()
    tapped: list[tuple[int, str]] = []
    lock = threading.Lock()
    pipe = CapturePipeline(
        video=cfg.video,
        audio=cfg.audio,
        pre_event=cfg.pre_event,
        overlay=cfg.overlay,
        segment_seconds=cfg.segment_seconds,
        work_dir=tmp_path / "work",
        stamp=lambda: Stamp("REC-1", "1", None, None, False),
        sink=sink,
        realtime=False,
    )

    def tap(kind: str, packet: Any) -> None:
        if kind == "v":
            with lock:
                tapped.append((packet.pts, hashlib.md5(annexb_to_avcc(bytes(packet))).hexdigest()))  # noqa: S324

    pipe.packet_tap = tap
    pipe.start()
    pipe.wait_media(pre_event + 4)
    with lock:
        before_trigger = len(tapped)
    pipe.start_recording("r1")
    pipe.wait_media(3)
    pipe.stop_recording()
    pipe.close()
    seg0 = sink.sealed[0]
    assert sink.opened[0].path == seg0.path
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(seg0.path), "-map", "0:v", "-c", "copy", "-f", "framemd5", "-"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    in_file = [
        line.split(",")[-1].strip() for line in out.stdout.splitlines() if line and not line.startswith("#")
    ]
    md5s = [m for _, m in tapped]
    start = md5s.index(in_file[0])
    assert md5s[start : start + len(in_file)] == in_file  # every packet, in order, bit for bit
    pre_packets = before_trigger - start
    assert pre_packets >= pre_event * 15  # at least the configured seconds, whole GOPs
    assert seg0.pre_event_s >= pre_event
