"""``fieldproof recorder …``: run the agent, record non-interactively, press its buttons, recover a spool."""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from edge.config import load_recorder_config
from edge.recorder.context import FIELDS
from edge.recorder.control import ControlServer, request
from edge.recorder.errors import RecorderError


def add_parser(subparsers: Any) -> None:
    """Add the ``recorder`` subcommand and its own subcommands."""
    p = subparsers.add_parser("recorder", help="the body-worn recorder agent")
    sub = p.add_subparsers(dest="recorder_command", metavar="ACTION")
    sub.required = True

    run = sub.add_parser("run", help="run the agent until stopped; buttons arrive on the control socket")
    run.add_argument("--config", type=Path, required=True)
    run.add_argument("--fast", action="store_true", help="file/synthetic sources as fast as possible (tests)")
    run.set_defaults(func=_run)

    rec = sub.add_parser("record", help="record N seconds with the given metadata, then stop (tests, demos)")
    rec.add_argument("--config", type=Path, required=True)
    rec.add_argument("--seconds", type=float, required=True, help="seconds of footage after the trigger")
    rec.add_argument("--pre-roll", type=float, default=0.0, help="seconds of capture before the trigger")
    rec.add_argument("--fast", action="store_true", help="synthetic/file sources as fast as possible")
    rec.add_argument("--mark", action="append", default=[], metavar="LABEL", help="marker at the start")
    for field in FIELDS:
        rec.add_argument(f"--{field}", default=None)
    rec.set_defaults(func=_record)

    ctl = sub.add_parser("ctl", help="press a button on a running recorder")
    where = ctl.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path, help="the recorder's config (names its socket)")
    where.add_argument("--socket", type=Path)
    ctl.add_argument("action", choices=["start", "stop", "mark", "set", "status"])
    ctl.add_argument("args", nargs="*", help="mark: LABEL [NOTE]; set: key=value …")
    ctl.set_defaults(func=_ctl)

    rcv = sub.add_parser("recover", help="chain what a crash left in the spool, then exit")
    rcv.add_argument("--config", type=Path, required=True)
    rcv.set_defaults(func=_recover)


def _agent(config_path: Path, *, realtime: bool) -> Any:
    from edge.recorder.agent import RecorderAgent

    config = load_recorder_config(config_path)
    label = "sha256:" + hashlib.sha256(config_path.read_bytes()).hexdigest()[:32]
    return RecorderAgent(config=config, config_label=f"{config_path.name} {label}", realtime=realtime)


def _run(args: argparse.Namespace) -> int:
    agent = _agent(args.config, realtime=not args.fast)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    agent.open()
    server = ControlServer(agent, agent.config.control.socket)
    server.start()
    print(
        f"recorder {agent.config.device_id}: running; control socket {agent.config.control.socket}",
        flush=True,
    )
    try:
        stop.wait()
    finally:
        server.close()
        agent.close()
    print(f"recorder {agent.config.device_id}: stopped", flush=True)
    return 0


def _record(args: argparse.Namespace) -> int:
    if args.seconds <= 0 or args.pre_roll < 0:
        raise RecorderError("--seconds must be positive and --pre-roll not negative")
    agent = _agent(args.config, realtime=not args.fast)
    changes = {f: getattr(args, f) for f in FIELDS if getattr(args, f) is not None}
    if changes:
        agent.set_context(**changes)  # refused here, before the spool is touched, if anything is wrong
    agent.open()
    try:
        agent.wait_media(args.pre_roll)
        recording = agent.start_recording()
        for label in args.mark:
            agent.mark(label)
        # Exactly N seconds of footage; returns early if the recorder stops itself (low space).
        agent.stop_recording(after=args.seconds)
        status = agent.status()
    finally:
        agent.close()
    print(f"recorded {recording}: {status['segments_sealed']} segment(s) into {agent.root}")
    if agent.recovered:
        print(f"recovered after a crash: {', '.join(x.name for x in agent.recovered)}")
    if agent.stop_reason:  # read after close(): the space monitor has chained its gap record by then
        print(f"stopped early: {agent.stop_reason}")
    return 0


def _ctl(args: argparse.Namespace) -> int:
    path = args.socket or load_recorder_config(args.config).control.socket
    payload: dict[str, Any] = {"cmd": args.action}
    if args.action == "mark":
        if not args.args:
            raise RecorderError("mark needs a LABEL from the recording policy")
        payload.update(label=args.args[0], note=" ".join(args.args[1:]))
    elif args.action == "set":
        fields = {}
        for item in args.args:
            key, sep, value = item.partition("=")
            if not sep:
                raise RecorderError(f"set takes key=value pairs, not {item!r}")
            fields[key] = value
        payload["fields"] = fields
    answer = request(path, payload)
    json.dump(answer, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")
    if not answer.get("ok"):
        print(f"fieldproof recorder ctl: {answer.get('error')}", file=sys.stderr)
        return 2
    return 0


def _recover(args: argparse.Namespace) -> int:
    from edge.recorder.agent import RecorderAgent

    config = load_recorder_config(args.config)
    agent = RecorderAgent(config=config, config_label=args.config.name)
    found = agent.recover_only()
    for left in found:
        print(f"recovered {left.name}: {left.reason}")
    print(f"{len(found)} file(s) recovered; spool {agent.root}")
    return 0
