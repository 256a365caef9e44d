"""A signed sample chain as a recorder would write it: boot, segments with markers, an annotation, a clock
correction. Used by the demo, the tests and the benchmarks; the media bytes come from a factory (random
bytes in tests, real H.264 clips in the demo).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from custody.signing import Ed25519Signer
from custody.timefmt import utc_timestamp
from edge.journal import SpoolWriter

# Tianjin, near the bureau: 39.1244° N, 117.1907° E, in units of 1e-7 degree.
_LAT_E7, _LON_E7 = 391_244_000, 1_171_907_000


def segment_body(
    *,
    recording: str,
    index: int,
    file: str,
    digest: str,
    size: int,
    start: datetime,
    seconds: int = 10,
    case: str = "",
    subject: str = "",
    matter: str = "",
    scene: str = "onsite-inspection",
    proof: str = "",
    officer: str = "12010019001",
    pre_event_s: int = 0,
    fix: bool = True,
    media: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The body of a segment record with plausible media, clock and location facts."""
    end = start + timedelta(seconds=seconds)
    location: dict[str, Any] = (
        {
            "fix": True,
            "fixes": [
                {
                    "t": utc_timestamp(start + timedelta(seconds=s)),
                    "lat_e7": _LAT_E7 + 37 * index + s,
                    "lon_e7": _LON_E7 + 53 * index + s,
                    "alt_mm": 4_000,
                    "hacc_mm": 3_500,
                    "mode": "3d",
                    "sats": 11,
                    "source": "gpsd",
                }
                for s in (0, seconds)
            ],
        }
        if fix
        else {"fix": False, "reason": "no fix: receiver reports mode 1"}
    )
    return {
        "recording": recording,
        "index": index,
        "file": file,
        "digest": digest,
        "size": size,
        "media": media
        or {
            "container": "mp4-fragmented",
            "duration_ms": seconds * 1000,
            "video": {"codec": "h264", "width": 1280, "height": 720, "fps": "30/1"},
            "audio": {"codec": "aac", "rate": 48_000, "channels": 1},
        },
        "start": utc_timestamp(start),
        "end": utc_timestamp(end),
        "clock": {"source": "gps", "offset_ms": 12, "uncertainty_ms": 50},
        "location": location,
        "pre_event_s": pre_event_s,
        "officer": officer,
        "case": case,
        "subject": subject,
        "matter": matter,
        "scene": scene,
        "proof": proof,
    }


def write_sample_spool(
    root: Path,
    *,
    signer: Ed25519Signer,
    device: str,
    segments: int,
    media: Callable[[int], bytes],
    ca_chain: bytes = b"",
    start: datetime | None = None,
    seconds: int = 10,
    case: str = "津人社监察〔2026〕17号",
    subject: str = "91120116MA05JQ2X4C",
) -> SpoolWriter:
    """Write a spool: boot, a recording of ``segments`` segments with a marker, an annotation, a clock record."""
    spool = SpoolWriter.create(root, signer=signer, device=device, ca_chain=ca_chain)
    t = start or datetime(2026, 11, 20, 1, 30, tzinfo=UTC)
    spool.append(
        "boot",
        {
            "boot": 1,
            "firmware": "fieldproof-0.1.0",
            "config": "recorder.example",
            "reason": "power-on",
            "clock": {"source": "gps", "offset_ms": 12, "uncertainty_ms": 50},
        },
        time=utc_timestamp(t),
    )
    recording = uuid.uuid4().hex
    first = None
    for i in range(segments):
        seg_start = t + timedelta(seconds=1 + i * seconds)
        tmp = root / "tmp" / f"{recording}-{i:04d}.mp4"
        tmp.write_bytes(media(i))
        name = f"{recording}/{i:04d}.mp4"
        digest, size = spool.store_media(tmp, name)
        rec = spool.append(
            "segment",
            segment_body(
                recording=recording,
                index=i,
                file=name,
                digest=digest,
                size=size,
                start=seg_start,
                seconds=seconds,
                case="" if i == 0 else case,
                subject=subject,
                matter="CF-02",
                scene="onsite-inspection",
                proof="用人单位违反劳务派遣规定的现场情况",
                pre_event_s=30 if i == 0 else 0,
            ),
            time=utc_timestamp(seg_start + timedelta(seconds=seconds, milliseconds=40)),
        )
        first = first or rec
        if i == 0:
            spool.append(
                "marker",
                {
                    "recording": recording,
                    "at": utc_timestamp(seg_start + timedelta(seconds=2)),
                    "label": "show-credentials",
                    "note": "出示执法证件",
                    "officer": "12010019001",
                    "location": {"fix": False, "reason": "no fix yet"},
                },
                time=utc_timestamp(seg_start + timedelta(seconds=seconds, milliseconds=50)),
            )
    t_end = t + timedelta(seconds=1 + segments * seconds + 5)
    if first is not None:
        spool.append(
            "annotation",
            {
                "targets": [{"device": device, "seq": first.record["seq"], "hash": first.hash}],
                "set": {"case": case},
                "by": "12010019001",
                "reason": "案件编号在首段录制后确定",
            },
            time=utc_timestamp(t_end),
        )
    spool.append(
        "clock",
        {
            "reference": "dock:DOCK-01/ntp",
            "device_time": utc_timestamp(t_end + timedelta(seconds=60)),
            "reference_time": utc_timestamp(t_end + timedelta(seconds=60, milliseconds=-12)),
            "offset_ms": -12,
            "applied": True,
        },
        time=utc_timestamp(t_end + timedelta(seconds=60)),
    )
    return spool
