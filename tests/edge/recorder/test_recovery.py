"""Recovery's building blocks on real files: fMP4 trimming, torn journal lines, unchained media."""

from __future__ import annotations

import io
import json
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

from custody.spool import JOURNAL, MEDIA, TMP
from edge.journal.recovery import recover_tmp_segments, repair_journal, scan_fmp4, unrecorded_media


def synthetic_clip(index: int, *, seconds: int = 2, fps: int = 15) -> bytes:
    """A real fragmented-MP4 H.264 clip from a synthetic pattern (there is no camera here)."""
    import av  # heavy import, only where media is made

    buf = io.BytesIO()
    with av.open(
        buf, "w", format="mp4", options={"movflags": "frag_keyframe+empty_moov+default_base_moof"}
    ) as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        stream.codec_context.gop_size = fps  # a keyframe, hence a fragment, every second
        with av.open(f"testsrc2=size=640x360:rate={fps}", format="lavfi") as src:
            for n, frame in enumerate(src.decode(video=0)):
                if n >= seconds * fps:
                    break
                frame.pts, frame.time_base = n + index * seconds * fps, Fraction(1, fps)
                # Decoded lavfi frames come marked as I-frames, which would force a keyframe on every frame.
                frame.pict_type = av.video.frame.PictureType.NONE
                out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


@pytest.fixture(scope="module")
def clip() -> bytes:
    return synthetic_clip(0, seconds=3, fps=15)  # three 1-second fragments


def ffprobe_duration(path: Path) -> float:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "packet=pts_time,duration_time",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    packets = json.loads(out.stdout)["packets"]
    return max(float(p["pts_time"]) + float(p.get("duration_time", 0)) for p in packets)


def test_a_complete_fmp4_scans_whole(tmp_path: Path, clip: bytes) -> None:
    f = tmp_path / "a.mp4"
    f.write_bytes(clip)
    scan = scan_fmp4(f)
    assert scan.has_init
    assert scan.fragments == 3
    assert scan.whole == scan.size == len(clip)
    assert scan.playable <= scan.whole  # an index (mfra) may follow the last fragment


@pytest.mark.parametrize("cut", [1, 100, 1000, 5000])
def test_a_torn_fmp4_is_cut_back_to_its_last_whole_fragment(tmp_path: Path, clip: bytes, cut: int) -> None:
    root = tmp_path / "spool"
    (root / TMP).mkdir(parents=True)
    seg = root / TMP / "abc123-0007.mp4"
    seg.write_bytes(clip[:-cut])
    (root / TMP / "abc123-0007.json").write_text(
        json.dumps({"start": "2026-11-26T08:00:00.000Z", "context": {"case": "C-1"}})
    )
    [left] = recover_tmp_segments(root)
    kept = root / MEDIA / "abc123" / "0007.mp4"
    assert left.name == "abc123/0007.mp4"
    assert left.recording == "abc123"
    assert left.index == 7
    assert left.context["context"]["case"] == "C-1"
    assert left.trimmed
    assert left.original_size == len(clip) - cut
    assert scan_fmp4(kept).playable == kept.stat().st_size  # nothing torn remains
    # Nothing is thrown away: the cut bytes are kept aside.
    tail = (root / TMP / "trimmed" / "abc123-0007.mp4.tail").read_bytes()
    assert kept.read_bytes() + tail == clip[:-cut]
    # ffprobe reads the kept part: all but the torn last fragment (≤ 1 s here).
    assert ffprobe_duration(kept) >= 3.0 - 1.0 - 1e-6
    assert not list((root / TMP).glob("*.mp4"))
    assert not (root / TMP / "abc123-0007.json").exists()


def test_a_file_without_a_whole_fragment_is_kept_as_found(tmp_path: Path, clip: bytes) -> None:
    root = tmp_path / "spool"
    (root / TMP).mkdir(parents=True)
    (root / TMP / "r-0000.mp4").write_bytes(clip[:300])
    [left] = recover_tmp_segments(root)
    assert not left.trimmed
    assert "kept as found" in left.reason
    assert (root / MEDIA / "r" / "0000.mp4").read_bytes() == clip[:300]


def test_a_torn_journal_line_is_set_aside(tmp_path: Path) -> None:
    (tmp_path / JOURNAL).write_bytes(b'{"record":1}\n{"record":2}\n{"reco')
    assert repair_journal(tmp_path) == len(b'{"reco')
    assert (tmp_path / JOURNAL).read_bytes() == b'{"record":1}\n{"record":2}\n'
    [kept] = list((tmp_path / TMP).glob("journal-torn-*.bin"))
    assert kept.read_bytes() == b'{"reco'
    assert repair_journal(tmp_path) == 0  # idempotent


def test_media_without_a_record_is_found(tmp_path: Path) -> None:
    (tmp_path / MEDIA / "r1").mkdir(parents=True)
    (tmp_path / MEDIA / "r1" / "0000.mp4").write_bytes(b"a")
    (tmp_path / MEDIA / "r1" / "0001.mp4").write_bytes(b"b")
    found = unrecorded_media(tmp_path, {"r1/0000.mp4"})
    assert [x.name for x in found] == ["r1/0001.mp4"]
    assert "before chaining" in found[0].reason
