"""Recovery after a crash or power cut: whatever the last run left behind is chained, never dropped.

What a crash can leave, and what happens to it:

- a torn last journal line (power cut mid-append): the record was never acknowledged; its bytes are
  moved aside (``tmp/journal-torn-*.bin``) and the journal is cut back to its last whole line, so the
  next record does not merge with the fragment;
- a segment being written in ``tmp/``: cut back to its last whole fMP4 fragment (the cut bytes are kept
  in ``tmp/trimmed/``), moved into ``media/`` and chained as ``recovered``, with the context the
  recorder wrote beside it when the segment opened;
- a sealed segment in ``media/`` without a record (a crash between rename and append): chained as
  ``recovered`` as it is.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from custody.spool import JOURNAL, MEDIA, TMP
from fieldproof.durable import fsync_dir, make_dir, write_file

#: Top-level boxes that end a complete fragment or may follow the last one.
_FRAGMENT_END = b"mdat"


@dataclass(frozen=True, slots=True)
class Mp4Scan:
    """What the top-level boxes of a (possibly truncated) fragmented MP4 say."""

    size: int  # bytes in the file
    whole: int  # bytes up to the end of the last complete box
    playable: int  # bytes up to the end of the last complete fragment (moof followed by mdat), or 0
    fragments: int  # complete fragments
    has_init: bool  # ftyp and moov complete


def scan_fmp4(path: Path) -> Mp4Scan:
    """Walk the top-level boxes of ``path`` without trusting any length past the end of the file."""
    size = path.stat().st_size
    pos = whole = playable = fragments = 0
    seen: set[bytes] = set()
    moof_open = False
    with open(path, "rb") as f:
        while pos + 8 <= size:
            f.seek(pos)
            header = f.read(16)
            box_size, box_type = struct.unpack(">I4s", header[:8])
            if box_size == 1 and len(header) >= 16:
                box_size = struct.unpack(">Q", header[8:16])[0]
            elif box_size == 0:
                box_size = size - pos  # "to the end of the file": only complete if nothing is torn
            if box_size < 8 or pos + box_size > size:
                break  # torn (or garbage): everything from here is incomplete
            pos += box_size
            whole = pos
            seen.add(box_type)
            if box_type == b"moof":
                moof_open = True
            elif box_type == _FRAGMENT_END and moof_open:
                moof_open = False
                fragments += 1
                playable = pos
    return Mp4Scan(
        size=size,
        whole=whole,
        playable=playable,
        fragments=fragments,
        has_init=b"ftyp" in seen and b"moov" in seen,
    )


@dataclass(frozen=True, slots=True)
class Leftover:
    """A file the previous run did not chain, with what recovery did to it."""

    source: Path  # where it was found
    name: str  # its path under media/
    recording: str
    index: int
    context: dict[str, Any]  # the sidecar written when the segment opened (may be empty)
    original_size: int
    trimmed: bool
    reason: str


def sidecar_path(segment: Path) -> Path:
    """Where the context of a segment in tmp/ is kept while it is being written."""
    return segment.with_suffix(".json")


def repair_journal(root: Path) -> int:
    """Cut a torn last line off the journal, keeping its bytes aside; returns the bytes moved."""
    path = root / JOURNAL
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    end = data.rfind(b"\n") + 1
    if end == len(data):
        return 0
    make_dir(root / TMP, mode=0o755)
    # Kept, not deleted: the fragment of an unacknowledged record may still interest a custodian.
    write_file(root / TMP / f"journal-torn-{os.getpid()}-{len(data)}.bin", data[end:])
    with open(path, "r+b") as f:
        f.truncate(end)
        os.fsync(f.fileno())
    return len(data) - end


def _parse_name(stem: str) -> tuple[str, int] | None:
    recording, _, index = stem.rpartition("-")
    if not recording or not index.isdigit():
        return None
    return recording, int(index)


def recover_tmp_segments(root: Path) -> list[Leftover]:
    """Trim and move every segment left in tmp/ into media/; returns what was found."""
    tmp = root / TMP
    out: list[Leftover] = []
    if not tmp.is_dir():
        return out
    for seg in sorted(tmp.glob("*.mp4")):
        parsed = _parse_name(seg.stem)
        if parsed is None:
            continue
        recording, index = parsed
        side = sidecar_path(seg)
        try:
            context = json.loads(side.read_text("utf-8")) if side.exists() else {}
        except (OSError, ValueError):
            context = {}  # a torn sidecar: the record says less, the footage is still kept
        scan = scan_fmp4(seg)
        keep = scan.playable if scan.playable else scan.size
        trimmed = keep < scan.size
        if trimmed:
            make_dir(tmp / "trimmed", mode=0o755)
            with open(seg, "rb") as f:
                f.seek(keep)
                write_file(tmp / "trimmed" / f"{seg.name}.tail", f.read())
            with open(seg, "r+b") as f:
                f.truncate(keep)
        if scan.fragments:
            reason = (
                f"the recorder stopped while writing this segment; {scan.fragments} whole fragment(s) kept"
                + (
                    f", {scan.size - keep} trailing bytes of an incomplete fragment set aside"
                    if trimmed
                    else ""
                )
            )
        else:
            reason = "the recorder stopped before the first fragment was complete; the file is kept as found"
        name = f"{recording}/{index:04d}.mp4"
        dest = root / MEDIA / name
        make_dir(dest.parent, mode=0o755)
        fd = os.open(seg, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(seg, dest)
        fsync_dir(dest.parent)
        fsync_dir(tmp)
        out.append(
            Leftover(
                source=seg,
                name=name,
                recording=recording,
                index=index,
                context=context,
                original_size=scan.size,
                trimmed=trimmed,
                reason=reason,
            )
        )
        side.unlink(missing_ok=True)
    return out


def unrecorded_media(root: Path, recorded: set[str]) -> list[Leftover]:
    """Files in media/ that no record names (sealed, then the crash came before the append)."""
    media = root / MEDIA
    out: list[Leftover] = []
    if not media.is_dir():
        return out
    for f in sorted(media.rglob("*.mp4")):
        name = f.relative_to(media).as_posix()
        if name in recorded:
            continue
        recording = f.parent.name
        index = int(f.stem) if f.stem.isdigit() else 0
        side = root / TMP / f"{recording}-{index:04d}.json"
        try:
            context = json.loads(side.read_text("utf-8")) if side.exists() else {}
        except (OSError, ValueError):
            context = {}
        out.append(
            Leftover(
                source=f,
                name=name,
                recording=recording,
                index=index,
                context=context,
                original_size=f.stat().st_size,
                trimmed=False,
                reason="the segment was sealed but the recorder stopped before chaining it",
            )
        )
    return out
