"""The pre-event ring: the encoder's own packets, bit for bit, at the start of segment 0."""

from __future__ import annotations

import hashlib
import subprocess
import threading
from typing import Any

import pytest

from edge.capture.encoder import EncodedPacket
from edge.capture.ring import MAX_PRE_EVENT_S, PreEventRing
from tests.edge.capture.helpers import FFMPEG, decode_errors, decoded_audio, ffprobe, video_packets


def annexb_to_avcc(data: bytes) -> bytes:
    """What the MP4 muxer stores for an Annex-B packet: each NAL unit behind a 4-byte length."""
    starts, i = [], 0
    while (j := data.find(b"\x00\x00\x01", i)) >= 0:
        starts.append(j + 3)
        i = j + 3
    out = []
    for k, s in enumerate(starts):
        end = len(data) if k + 1 == len(starts) else starts[k + 1] - 3
        nal = data[s:end]
        if k + 1 < len(starts) and nal.endswith(b"\x00"):
            nal = nal[:-1]  # the leading zero of the next 4-byte start code
        out.append(len(nal).to_bytes(4, "big") + nal)
    return b"".join(out)


def framemd5(path: Any) -> list[str]:
    """md5 of each video packet as stored in the file (``-c copy``: no decoding, no re-encoding)."""
    out = subprocess.run(
        [str(FFMPEG), "-v", "error", "-i", str(path), "-map", "0:v", "-c", "copy", "-f", "framemd5", "-"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [line.rsplit(",", 1)[1].strip() for line in out.stdout.splitlines() if line and line[0] != "#"]


@pytest.mark.parametrize("pre_event", [3, 8])
def test_pre_event_packets_are_the_encoders_own_bit_for_bit(pipeline: Any, pre_event: int) -> None:
    pipe, _ = pipeline(pre_event=pre_event, fps=15, segment_seconds=20)
    tapped: dict[int, str] = {}  # video pts → md5 of the packet the encoder emitted
    lock = threading.Lock()

    def tap(kind: str, packet: Any) -> None:
        if kind == "v":
            digest = hashlib.md5(annexb_to_avcc(bytes(packet))).hexdigest()  # noqa: S324 - a fingerprint
            with lock:
                tapped[packet.pts] = digest

    pipe.packet_tap = tap
    pipe.start()
    pipe.wait_media(pre_event + 2.5)
    pipe.start_recording("pre")
    seg0, *_ = pipe.stop_recording(after=3)
    assert pipe.t0 is not None
    assert pipe.last_trigger is not None
    trigger_slot = round((pipe.last_trigger - pipe.t0).total_seconds() * 15)
    first_slot = round((seg0.start - pipe.t0).total_seconds() * 15)
    # Whole GOPs covering at least the configured seconds: at most one keyframe interval more.
    held = (trigger_slot - first_slot) / 15
    assert pre_event <= held < pre_event + 1
    assert abs(seg0.pre_event_s - pre_event) <= 1
    in_file = framemd5(seg0.path)
    assert len(in_file) == seg0.frames == trigger_slot - first_slot + 3 * 15
    with lock:
        expected = [tapped[slot] for slot in range(first_slot, first_slot + len(in_file))]
    # Every packet, pre-event and after, in order and unchanged: nothing was re-encoded.
    assert in_file == expected
    assert video_packets(ffprobe(seg0.path))[0]["flags"].startswith("K")
    assert decode_errors(seg0.path) == ""


@pytest.mark.parametrize("include_audio", [False, True])
def test_pre_event_audio_only_when_asked_and_in_sync(pipeline: Any, include_audio: bool) -> None:
    import numpy as np

    pipe, _ = pipeline(pre_event=3, include_audio=include_audio)
    pipe.start()
    pipe.wait_media(4)
    pipe.start_recording("sync")
    seg0, *_ = pipe.stop_recording(after=2)
    assert pipe.last_trigger is not None
    trigger_at = (pipe.last_trigger - seg0.start).total_seconds()
    samples = decoded_audio(seg0.path, 48000)
    # The audio track spans the whole segment either way (silence stands in for withheld audio).
    assert abs(len(samples) / 48000 - seg0.media["duration_ms"] / 1000) < 0.05
    sound = np.flatnonzero(np.abs(samples) > 0.01)
    if include_audio:
        assert sound[0] / 48000 < 0.03
    else:
        # Silent until the trigger, the tone from the trigger on: audio and video still line up.
        assert abs(sound[0] / 48000 - trigger_at) < 0.03, (sound[0] / 48000, trigger_at)
    assert decode_errors(seg0.path) == ""


def test_without_pre_event_the_recording_starts_with_a_keyframe_at_the_trigger(pipeline: Any) -> None:
    pipe, _ = pipeline(pre_event=0)
    pipe.start()
    pipe.wait_media(1.3)  # mid-GOP: the keyframe is forced, not waited for
    pipe.start_recording("now")
    (seg,) = pipe.stop_recording(after=2)
    assert seg.start == pipe.last_trigger
    assert seg.pre_event_s == 0
    assert seg.frames == 60
    assert video_packets(ffprobe(seg.path))[0]["flags"].startswith("K")


def _packets(spec: str) -> list[EncodedPacket]:
    # "K" a keyframe, "v" another frame (one a second), "a" an audio packet of the frame before.
    out, t = [], -1.0
    for c in spec:
        if c != "a":
            t += 1
        out.append(EncodedPacket(packet=None, kind="a" if c == "a" else "v", t=t, key=c == "K"))
    return out


def test_the_ring_starts_at_a_keyframe_and_keeps_whole_gops() -> None:
    ring = PreEventRing(seconds=3, include_audio=False)
    for p in _packets("vvKvaKvaKvaKva"):
        ring.add(p)
        ring.trim(p.t + 1)
    held = ring.drain()
    assert held[0].key
    assert held[0].kind == "v"
    assert all(p.kind == "v" for p in held)  # video only unless include_audio
    # Now is 10 s; whole GOPs of 2 s covering at least 3 s: from the keyframe at 6 s.
    assert [p.t for p in held] == [6.0, 7.0, 8.0, 9.0]
    assert len(ring) == 0


def test_the_ring_keeps_audio_when_asked_and_never_more_than_120_s() -> None:
    ring = PreEventRing(seconds=120, include_audio=True)
    for p in _packets("Ka" * 200):
        ring.add(p)
        ring.trim(p.t + 1)
    held = ring.drain()
    assert any(p.kind == "a" for p in held)
    assert 200 - held[0].t <= MAX_PRE_EVENT_S
    assert 200 - held[0].t >= MAX_PRE_EVENT_S - 1
    empty = PreEventRing(seconds=0, include_audio=True)
    for p in _packets("KaKa"):
        empty.add(p)
    assert len(empty) == 0
