"""The buttons and the thread: requests from other threads, real time, dropped frames, errors that surface."""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edge.capture.api import SegmentFile
from edge.capture.errors import CaptureError
from tests.edge.capture.helpers import (
    FFMPEG,
    TIANJIN,
    FakeSink,
    decode_errors,
    decoded_gray,
    ffprobe,
    video_packets,
)


def test_buttons_are_refused_when_they_make_no_sense(pipeline: Any) -> None:
    pipe, _ = pipeline()
    with pytest.raises(CaptureError, match="not running"):
        pipe.start_recording("early")
    pipe.start()
    with pytest.raises(CaptureError, match="started already"):
        pipe.start()
    with pytest.raises(CaptureError, match="not recording"):
        pipe.stop_recording()
    with pytest.raises(CaptureError, match="cannot name a file"):
        pipe.start_recording("../escape")
    pipe.start_recording("once")
    with pytest.raises(CaptureError, match="already recording"):
        pipe.start_recording("twice")
    pipe.stop_recording(after=1)


def test_a_reused_recording_id_never_overwrites_footage(pipeline: Any) -> None:
    pipe, _ = pipeline()
    pipe.start()
    pipe.start_recording("same")
    (seg,) = pipe.stop_recording(after=1)
    before = seg.path.read_bytes()
    with pytest.raises(CaptureError, match="used already"):
        pipe.start_recording("same")
    assert seg.path.read_bytes() == before
    # Refused before anything happened: the pipeline goes on capturing.
    pipe.start_recording("other")
    (other,) = pipe.stop_recording(after=1)
    assert other.path.name == "other-0000.mp4"


def test_back_to_back_recordings_are_both_complete(pipeline: Any) -> None:
    pipe, sink = pipeline(pre_event=2)
    pipe.start()
    pipe.wait_media(3)
    pipe.start_recording("first")
    first = pipe.stop_recording(after=2)
    pipe.start_recording("second")  # at once: the first one's audio tail may still be in flight
    second = pipe.stop_recording(after=2)
    assert [s.recording for s in sink.sealed] == ["first", "second"]
    assert first[0].end <= second[0].start
    assert first[0].pre_event_s >= 2
    for seg in (*first, *second):
        assert decode_errors(seg.path) == ""
        assert {s["codec_type"] for s in ffprobe(seg.path)["streams"]} == {"video", "audio"}


class _FailingSink(FakeSink):
    def segment_sealed(self, segment: SegmentFile) -> None:
        super().segment_sealed(segment)
        raise OSError(28, "No space left on device")


def test_an_error_in_the_capture_thread_surfaces_in_the_callers_thread(pipeline: Any) -> None:
    pipe, sink = pipeline(sink=_FailingSink())
    pipe.start()
    pipe.start_recording("doomed")
    with pytest.raises(CaptureError, match="No space left on device") as info:
        pipe.stop_recording(after=12)
    assert isinstance(info.value.__cause__, OSError)
    assert not pipe.recording
    with pytest.raises(CaptureError):
        pipe.start_recording("again")
    with pytest.raises(CaptureError):
        pipe.wait_media(1)
    # What was written is sealed and handed over even after the failure: footage is never dropped.
    assert [s.index for s in sink.sealed] == [0, 1]
    assert all(decode_errors(s.path) == "" for s in sink.sealed)


def test_a_source_that_cannot_be_opened_fails_at_start(pipeline: Any, tmp_path: Path) -> None:
    pipe, _ = pipeline(source={"type": "file", "path": str(tmp_path / "missing.mp4")})
    with pytest.raises(CaptureError, match=r"missing\.mp4"):
        pipe.start()
    cam, _ = pipeline(source={"type": "picamera2"})
    with pytest.raises(CaptureError, match="picamera2"):
        cam.start()
    v4l2, _ = pipeline(source={"type": "v4l2", "device": str(tmp_path / "video9")})
    with pytest.raises(CaptureError, match="video9"):
        v4l2.start()
    mic, _ = pipeline(audio={"type": "alsa", "device": "hw:9,9"})
    with pytest.raises(CaptureError, match="ALSA"):
        mic.start()
    # No Pi here, so no V4L2 M2M encoder: said at start, not at the first frame.
    hw, _ = pipeline(encoder="h264_v4l2m2m")
    with pytest.raises(CaptureError, match="h264_v4l2m2m"):
        hw.start()


def test_close_seals_a_recording_still_running(pipeline: Any) -> None:
    pipe, sink = pipeline()
    pipe.start()
    pipe.start_recording("cut-short")
    pipe.wait_media(2)
    pipe.close()
    assert not pipe.recording
    (seg,) = sink.sealed
    assert seg.frames >= 2 * 30 - 2  # everything captured up to the close
    assert decode_errors(seg.path) == ""


def test_real_time_follows_the_wall_clock_and_buttons_work_from_other_threads(pipeline: Any) -> None:
    pipe, _ = pipeline(width=160, height=120, fps=15, realtime=True)
    pipe.start()
    started = time.monotonic()
    pipe.wait_media(0.5)
    assert time.monotonic() - started >= 0.45, "a live source is paced by the clock"
    done: list[list[SegmentFile]] = []
    threading.Thread(target=pipe.start_recording, args=("live",)).start()
    time.sleep(1.5)
    stopper = threading.Thread(target=lambda: done.append(pipe.stop_recording()))
    stopper.start()
    stopper.join(10)
    elapsed = time.monotonic() - started
    ((seg,),) = done
    assert 1.2 <= seg.media["duration_ms"] / 1000 <= 1.8
    assert abs(pipe.media_time - elapsed) < 0.5
    assert pipe.frames_dropped == 0
    assert decode_errors(seg.path) == ""


def test_a_pipeline_that_falls_behind_drops_frames_and_keeps_time(pipeline: Any) -> None:
    def slow_stamp() -> Any:
        time.sleep(0.6)  # asked once a second: 0.6 s of every second lost, as on an overloaded board
        return TIANJIN

    pipe, _ = pipeline(width=160, height=120, fps=15, realtime=True, stamp=slow_stamp)
    started = time.monotonic()
    pipe.start()
    pipe.start_recording("late")
    time.sleep(2.5)
    (seg,) = pipe.stop_recording()
    elapsed = time.monotonic() - started
    assert pipe.frames_dropped >= 5
    # The timeline stays on the wall clock (within one stall): dropped frames leave gaps in the
    # footage, they do not slow its time down.
    assert abs(pipe.media_time - elapsed) < 0.8, (pipe.media_time, elapsed)
    assert seg.frames <= seg.media["duration_ms"] / 1000 * 15 - 3
    packets = video_packets(ffprobe(seg.path))
    assert len(packets) == seg.frames
    gaps = [float(b["pts_time"]) - float(a["pts_time"]) for a, b in itertools.pairwise(packets)]
    assert max(gaps) > 1.5 / 15
    assert decode_errors(seg.path) == ""


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two seconds of 25 fps 352x288 H.264 by the ffmpeg CLI; picture N is a flat grey of luma 16 + 4N."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    subprocess.run(
        [
            *(
                str(FFMPEG),
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "color=c=black:size=352x288:rate=25",
                "-t",
                "2",
            ),
            *(
                "-vf",
                "format=yuv420p,geq=lum='16+4*N':cb=128:cr=128",
                "-c:v",
                "libx264",
                "-qp",
                "0",
                str(path),
            ),
        ],
        check=True,
        timeout=60,
    )
    return path


def test_a_file_is_replayed_at_its_own_speed_and_looped(pipeline: Any, clip: Path) -> None:
    pipe, _ = pipeline(
        source={"type": "file", "path": str(clip), "loop": True},
        overlay={"enabled": False},
        bitrate_kbps=2000,
    )
    pipe.start()
    pipe.start_recording("replay")
    (seg,) = pipe.stop_recording(after=5)
    assert seg.frames == 150
    (video,) = [s for s in ffprobe(seg.path)["streams"] if s["codec_type"] == "video"]
    assert (video["width"], video["height"]) == (320, 240)  # scaled to the configured size
    assert decode_errors(seg.path) == ""
    # Which picture of the file each frame shows: 25 fps played at 30 fps, pass after pass.
    # (ffmpeg's gray output is full range: video-range luma 16 + 4N becomes 4N × 255/219.)
    shown = [round(g.mean() / (4 * 255 / 219)) for g in decoded_gray(seg.path, 320, 240)]
    slot0 = round((seg.start - pipe.t0).total_seconds() * 30)
    expected = [int(((slot0 + k + 0.5) / 30 % 2.0) * 25) for k in range(150)]
    assert sum(a != b for a, b in zip(shown, expected, strict=True)) <= 3, (shown, expected)
    assert shown.count(0) >= 2  # looped back to the start at least twice


def test_a_file_without_loop_ends_and_says_so(pipeline: Any, clip: Path) -> None:
    pipe, sink = pipeline(source={"type": "file", "path": str(clip), "loop": False})
    pipe.start()
    pipe.start_recording("once")
    with pytest.raises(CaptureError, match="ended after"):
        pipe.wait_media(5)
    # The recording was sealed when the source ended: about the file's two seconds.
    (seg,) = sink.sealed
    assert abs(seg.frames - 60) <= 1
    assert not pipe.recording
