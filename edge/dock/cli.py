"""``fieldproof dock …``: run the docking station, or sync one spool and exit (tests, demos, recovery).

Exit codes: 0 every record acknowledged as stored; 1 some record rejected (or not acknowledged before
``--timeout``); 2 cannot run (bad config, missing certificate, unreadable spool).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from edge.dock.errors import DockError

log = logging.getLogger("edge.dock")


def add_parser(subparsers: Any) -> None:
    """Add the ``dock`` subcommand and its own subcommands."""
    p = subparsers.add_parser("dock", help="the docking station: docked recorders → server")
    sub = p.add_subparsers(dest="dock_command", metavar="ACTION")
    sub.required = True

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--config", type=Path, required=True, help="the dock's dock.toml")
        q.add_argument(
            "--server-cert",
            type=Path,
            default=None,
            help="the server's signing certificate (default: [sync] server_cert, else server-signing.pem "
            "beside the config or TLS CA)",
        )
        q.add_argument(
            "--retry-max",
            type=float,
            default=None,
            metavar="S",
            help="longest back-off (s; [sync] retry_max_s)",
        )
        q.add_argument(
            "--ack-timeout",
            type=float,
            default=None,
            metavar="S",
            help="first resend after (s; [sync] ack_timeout_s)",
        )
        q.add_argument("-v", "--verbose", action="store_true", help="log what happens (stderr)")

    run = sub.add_parser("run", help="watch for docked recorders and sync them until stopped")
    common(run)
    run.add_argument(
        "--poll",
        type=float,
        default=None,
        metavar="S",
        help="how often to look for recorders ([sync] poll_s)",
    )
    run.set_defaults(func=_run)

    once = sub.add_parser("sync-once", help="sync one spool until every record is acknowledged, then exit")
    common(once)
    once.add_argument("--spool", type=Path, required=True, help="the recorder's spool folder")
    once.add_argument(
        "--link", default=None, metavar="PORT", help="the recorder's control link (serial port)"
    )
    once.add_argument("--timeout", type=float, default=600.0, metavar="S", help="give up after (s): exit 1")
    once.set_defaults(func=_sync_once)


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _agent(args: argparse.Namespace, **kw: Any) -> Any:
    from edge.config import load_dock_config
    from edge.dock.agent import DockAgent, dock_server_keys, server_cert_path

    config = load_dock_config(args.config)
    keys = dock_server_keys(config, server_cert_path(config, args.server_cert))
    # The flags override [sync]; DockAgent holds them to the same bounds (DockError, exit 2).
    return DockAgent(
        config, server_keys=keys, retry_max_s=args.retry_max, ack_timeout_s=args.ack_timeout, **kw
    )


def _run(args: argparse.Namespace) -> int:
    _logging(args.verbose)
    agent = _agent(args, poll_s=args.poll)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    agent.run(stop)
    return 0


def _sync_once(args: argparse.Namespace) -> int:
    from custody.errors import SpoolError
    from edge.recorder.link import DockLink, LinkError

    _logging(args.verbose)
    agent = _agent(args, poll_s=0.2, client_id=None)
    link = None
    try:
        try:
            session = agent.session(args.spool)
        except SpoolError as exc:
            raise DockError(str(exc)) from exc
        if args.link:
            try:
                link = DockLink(args.link, baud=agent.config.serial.baud)
                ident = link.identity()
            except LinkError as exc:
                raise DockError(str(exc)) from exc
            if ident.get("device") != session.device:
                raise DockError(
                    f"the recorder on {args.link} is {ident.get('device')}, but {args.spool} is the spool of "
                    f"{session.device}"
                )
            agent.add_link(session.device, link)
        agent.attach(session)
        agent.client.start()
        session.begin()
        deadline = time.monotonic() + args.timeout
        finished = False
        while time.monotonic() < deadline:
            changed = session.step()
            if not changed and not session.outstanding():
                finished = True
                break
            session.event.wait(0.2)
            session.event.clear()
        session.wait_verified(max(1.0, deadline - time.monotonic()))
        summary = session.summary()
        summary["finished"] = finished
        summary["sync"] = vars(agent.client.stats)
        print(json.dumps(summary, ensure_ascii=False, indent=1))
        if not finished:
            print(
                f"fieldproof dock sync-once: not every record was acknowledged within {args.timeout:g}s "
                f"({agent.client.stats.last_error or 'no error seen'}); run it again to resume",
                file=sys.stderr,
            )
            return 1
        return 1 if summary["rejected"] else 0
    finally:
        agent.close()
        if link is not None:
            link.close()
