"""A recorder config for a machine without camera, microphone or GPS: synthetic sources, local spool.

The demo and the tests start from the device bundle provisioning wrote (its ``recorder.toml``), keep
its identity and swap the hardware for synthetic sources — the one thing simulated (CONVENTIONS).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from fieldproof.durable import write_file
from provisioning.toml_writer import dumps


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and "type" not in value:
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def synthetic_recorder_config(
    bundle: Path,
    *,
    spool: Path,
    socket: Path,
    width: int = 640,
    height: int = 360,
    fps: int = 15,
    segment_seconds: int = 10,
    pre_event_seconds: int = 5,
    audio: bool = True,
    location: dict[str, Any] | None = None,
    spool_limits: dict[str, int] | None = None,
    name: str = "recorder-synthetic.toml",
    **changes: Any,
) -> Path:
    """Write ``bundle/name``: the bundle's recorder config with synthetic sources; returns its path."""
    data = tomllib.loads((bundle / "recorder.toml").read_text("utf-8"))
    data = _merge(
        data,
        {
            "segment_seconds": segment_seconds,
            "video": {
                "source": {"type": "synthetic", "pattern": "testsrc2"},
                "width": width,
                "height": height,
                "fps": fps,
                "encoder": "libx264",
                "keyframe_interval_s": 1,
                "bitrate_kbps": 1200,
            },
            "audio": {"source": {"type": "synthetic", "frequency_hz": 440} if audio else {"type": "none"}},
            "pre_event": {"seconds": pre_event_seconds, "include_audio": False},
            "location": {"source": location or {"type": "none"}},
            "spool": {"dir": str(spool.resolve()), **(spool_limits or {})},
            "control": {"socket": str(socket.resolve())},
        },
    )
    data = _merge(data, changes)
    path = bundle / name
    write_file(path, dumps(data).encode("utf-8"))
    return path
