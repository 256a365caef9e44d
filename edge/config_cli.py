"""`fieldproof config check FILE`: validate a recorder, dock or recording-policy file before it ships."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Final

from edge.config import (
    ConfigError,
    DockConfig,
    RecorderConfig,
    RecordingPolicy,
    load_dock_config,
    load_policy,
    load_recorder_config,
)

KINDS: Final = ("recorder", "dock", "policy")


def add_parser(subparsers: Any) -> None:
    """Add the ``config`` subcommand (``config check``) to the ``fieldproof`` command."""
    p = subparsers.add_parser("config", help="check device configuration and recording-policy files")
    sub = p.add_subparsers(dest="config_command", metavar="ACTION")
    sub.required = True
    check = sub.add_parser(
        "check",
        help="validate a recorder, dock or policy file (exit 0 if usable, 2 with every problem if not)",
    )
    check.add_argument("file", type=Path, metavar="FILE", help="the TOML file to check")
    check.add_argument(
        "--kind",
        choices=KINDS,
        help="what the file is; guessed from its name (recorder…, dock…, …policy…) when omitted",
    )
    check.set_defaults(func=run_check)


def guess_kind(path: Path) -> str | None:
    """The kind of config a file name suggests, or None when it suggests none or several."""
    name = path.name.lower()
    found = [kind for kind in KINDS if kind in name]
    return found[0] if len(found) == 1 else None


def run_check(args: argparse.Namespace) -> int:
    """Validate one file; print ``OK: <summary>`` and return 0, or the problems on stderr and 2."""
    path: Path = args.file
    kind = args.kind or guess_kind(path)
    if kind is None:
        print(
            f"fieldproof config check: {path}: cannot tell from the name whether this is a recorder, dock "
            "or policy file; pass --kind recorder|dock|policy",
            file=sys.stderr,
        )
        return 2
    try:
        summary = _check(kind, path)
    except ConfigError as exc:
        print(f"fieldproof config check: {exc.diagnostics()}", file=sys.stderr)
        return 2
    print(f"OK: {summary}")
    return 0


def _check(kind: str, path: Path) -> str:
    if kind == "recorder":
        recorder = load_recorder_config(path)
        # The policy a recorder points at is part of what ships with it: check it too.
        policy = load_policy(recorder.policy_path())
        return f"{_recorder_summary(recorder)}; {_policy_summary(policy)} ({recorder.policy_path()})"
    if kind == "dock":
        return _dock_summary(load_dock_config(path))
    return _policy_summary(load_policy(path))


def _recorder_summary(c: RecorderConfig) -> str:
    v = c.video
    pre = f"{c.pre_event.seconds} s pre-event ({'with' if c.pre_event.include_audio else 'no'} audio)"
    return (
        f"recorder {c.device_id}: video {v.source.type} {v.width}x{v.height}@{v.fps} {v.encoder}, "
        f"audio {c.audio.source.type}, {c.segment_seconds} s segments, {pre}, "
        f"location {c.location.source.type}, spool {c.spool.dir}"
    )


def _dock_summary(c: DockConfig) -> str:
    tls = "mutual TLS" if c.mqtt.tls is not None else "no TLS (loopback only)"
    return (
        f"dock {c.device_id}: {len(c.mqtt.brokers)} broker(s) ({tls}), topics {c.mqtt.topic_prefix}/…, "
        f"{c.chunk_bytes} byte chunks, clock from {c.clock.reference}, spools under {c.mount_dir}"
    )


def _policy_summary(p: RecordingPolicy) -> str:
    counts = {level: sum(s.recording == level for s in p.scenes) for level in ("full", "stages", "optional")}
    return (
        f"recording policy: {len(p.scenes)} scenes ({counts['full']} full, {counts['stages']} stages, "
        f"{counts['optional']} optional), {len(p.markers)} markers"
    )
