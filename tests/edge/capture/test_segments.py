"""Segments judged by Debian's ffprobe/ffmpeg: H.264 + AAC, 10 s each, keyframe first, each decodes alone."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.edge.capture.helpers import T0, decode_errors, decoded_audio, ffprobe, video_packets


def _duration(packets: list[dict[str, Any]], step: float = 1 / 30) -> float:
    """Seconds from the first packet's start to the last packet's end (packets of ``step`` seconds)."""
    times = [float(p["pts_time"]) for p in packets]
    return max(times) + step - min(times)


def test_sixty_seconds_make_six_valid_self_contained_segments(pipeline: Any) -> None:
    # 640x360 at 30 fps keeps the test quick; bench/recorder_bench.py runs 1280x720.
    pipe, sink = pipeline(width=640, height=360, fps=30)
    pipe.start()
    pipe.start_recording("rec60")
    returned = pipe.stop_recording(after=60)
    assert not pipe.recording
    assert returned == sink.sealed
    assert [s.index for s in sink.sealed] == [0, 1, 2, 3, 4, 5]
    frame = 1 / 30
    for i, seg in enumerate(sink.sealed):
        assert seg.path == pipe.work_dir / f"rec60-{i:04d}.mp4"
        assert seg.media == {
            "container": "mp4-fragmented",
            "duration_ms": 10_000,
            "video": {"codec": "h264", "width": 640, "height": 360, "fps": "30/1"},
            "audio": {"codec": "aac", "rate": 48000, "channels": 1},
        }
        assert seg.frames == 300
        assert seg.pre_event_s == 0
        assert seg.start == T0 + timedelta(seconds=10 * i) + (sink.sealed[0].start - T0)
        assert seg.end - seg.start == timedelta(seconds=10)
        info = ffprobe(seg.path)
        streams = {s["codec_type"]: s for s in info["streams"]}
        assert streams["video"]["codec_name"] == "h264"
        assert (streams["video"]["width"], streams["video"]["height"]) == (640, 360)
        assert streams["audio"]["codec_name"] == "aac"
        assert int(streams["audio"]["sample_rate"]) == 48000
        video = video_packets(info)
        assert len(video) == 300
        assert abs(_duration(video) - 10.0) <= frame + 1e-3, seg.path
        audio = [p for p in info["packets"] if p["codec_type"] == "audio"]
        assert abs(_duration(audio, 1024 / 48000) - 10.0) <= 1024 / 48000, (
            "audio kept with its video across the cut"
        )
        # A keyframe first, and then exactly one a second: a fixed GOP, no scene-cut keyframes.
        keys = [n for n, p in enumerate(video) if p["flags"].startswith("K")]
        assert keys == list(range(0, 300, 30)), keys
        # Each segment decodes alone, without a single complaint.
        assert decode_errors(seg.path) == "", seg.path
    # Consecutive segments meet exactly: no frame lost or doubled at a cut.
    for a, b in zip(sink.sealed, sink.sealed[1:], strict=False):
        assert a.end == b.start


def test_the_sink_hears_of_a_segment_before_it_is_written_and_when_sealed(pipeline: Any) -> None:
    pipe, sink = pipeline()
    pipe.start()
    pipe.start_recording("order")
    pipe.stop_recording(after=25)
    kinds = [(kind, e.index) for kind, e in sink.events]
    for i in range(3):
        assert kinds.index(("opened", i)) < kinds.index(("sealed", i))
    assert [i for k, i in kinds if k == "sealed"] == [0, 1, 2]
    # The previous segment stays open until the audio has passed the cut: the next one opens first.
    assert kinds.index(("opened", 1)) < kinds.index(("sealed", 0))
    assert [o.start for o in sink.opened] == [s.start for s in sink.sealed]


def test_a_stop_mid_segment_seals_a_shorter_last_segment(pipeline: Any) -> None:
    pipe, _ = pipeline()
    pipe.start()
    pipe.wait_media(0.5)
    pipe.start_recording("short")
    assert pipe.recording
    segments = pipe.stop_recording(after=13.5)
    assert not pipe.recording
    assert [s.frames for s in segments] == [300, 105]
    last = segments[-1]
    assert last.media["duration_ms"] == 3500
    info = ffprobe(last.path)
    assert abs(_duration(video_packets(info)) - 3.5) <= 1 / 30 + 1e-3
    assert decode_errors(last.path) == ""


def test_no_audio_gives_video_only_segments(pipeline: Any) -> None:
    pipe, _ = pipeline(audio={"type": "none"})
    pipe.start()
    pipe.start_recording("mute")
    (seg,) = pipe.stop_recording(after=3)
    assert seg.media["audio"] is None
    assert [s["codec_type"] for s in ffprobe(seg.path)["streams"]] == ["video"]
    assert decode_errors(seg.path) == ""


def test_synthetic_audio_is_the_configured_tone_in_the_configured_format(pipeline: Any) -> None:
    import numpy as np

    pipe, _ = pipeline(audio={"type": "synthetic", "frequency_hz": 1000}, rate=16000, channels=2)
    pipe.start()
    pipe.start_recording("tone")
    (seg,) = pipe.stop_recording(after=4)
    assert seg.media["audio"] == {"codec": "aac", "rate": 16000, "channels": 2}
    (audio,) = [s for s in ffprobe(seg.path)["streams"] if s["codec_type"] == "audio"]
    assert (int(audio["sample_rate"]), audio["channels"]) == (16000, 2)
    samples = decoded_audio(seg.path, 16000)
    assert abs(len(samples) / 16000 - 4.0) < 0.1
    spectrum = np.abs(np.fft.rfft(samples[1600:-1600]))
    peak = np.fft.rfftfreq(len(samples[1600:-1600]), 1 / 16000)[spectrum.argmax()]
    assert abs(peak - 1000) < 5
