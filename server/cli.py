"""`fieldproof server migrate | ingest | api` (settings from FIELDPROOF_* environment variables)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from server.config import ServerSettings, load_settings


def add_parser(subparsers: Any) -> None:
    """Add the ``server`` subcommand to the ``fieldproof`` command."""
    p = subparsers.add_parser(
        "server",
        help="run the server: migrate the database, ingest from the broker, serve the API",
        description="Settings come from FIELDPROOF_* environment variables (docs/server-ingest.md); "
        "the options below override them.",
    )
    sub = p.add_subparsers(dest="server_command", metavar="ACTION")
    sub.required = True
    for name, func, text in (
        ("migrate", _migrate, "create or upgrade the database schema (alembic upgrade head)"),
        ("ingest", _ingest, "run an ingest worker until SIGTERM"),
        ("api", _api, "serve the JSON API (no authentication yet: keep it on loopback)"),
        (
            "log-sequence",
            _log_sequence,
            "add committed custody events to the Merkle log and sign a checkpoint (docs/custody-log.md)",
        ),
    ):
        q = sub.add_parser(name, help=text, description=text)
        q.add_argument("--data-dir", type=Path, help="FIELDPROOF_DATA_DIR")
        q.add_argument("--database-url", help="FIELDPROOF_DATABASE_URL")
        if name in ("ingest", "log-sequence"):
            q.add_argument("--ca-dir", type=Path, help="FIELDPROOF_CA_DIR")
        if name == "ingest":
            q.add_argument("--store", type=Path, help="FIELDPROOF_STORE")
        if name == "log-sequence":
            q.add_argument(
                "--every",
                type=float,
                metavar="SECONDS",
                help="keep running: sequence again every SECONDS until SIGTERM (default: once)",
            )
        if name == "api":
            q.add_argument("--host", help="FIELDPROOF_API_HOST")
            q.add_argument("--port", type=int, help="FIELDPROOF_API_PORT")
        q.add_argument("-v", "--verbose", action="store_true", help="log every message handled")
        q.set_defaults(func=func)


def _settings(args: argparse.Namespace) -> ServerSettings:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        logging.getLogger("alembic").setLevel(logging.WARNING)
    return load_settings(
        data_dir=args.data_dir,
        database_url=args.database_url,
        ca_dir=getattr(args, "ca_dir", None),
        store=getattr(args, "store", None),
        api_host=getattr(args, "host", None),
        api_port=getattr(args, "port", None),
    )


def _migrate(args: argparse.Namespace) -> int:
    from server.db import head_revision, migrate

    settings = _settings(args)
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    migrate(settings.db_url)
    print(f"database at migration {head_revision()}")
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from server.ingest.worker import IngestWorker

    settings = _settings(args)
    worker = IngestWorker(settings)
    stop = threading.Event()
    # SIGTERM (systemd stop) and SIGINT: finish the message in hand, then leave. What was not yet
    # acked is resent by the dock; nothing is acked that is not durable.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    logging.getLogger(__name__).info("ingest worker %s starting", worker.client_id)
    worker.run(stop)
    return 0


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    from server.api.app import create_app

    settings = _settings(args)
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_level="info")
    return 0


def _log_sequence(args: argparse.Namespace) -> int:
    from server.custody_log.sequencer import CheckpointSigner, sequence_pending
    from server.db import check_migrated, make_engine, session_factory
    from server.errors import SettingsError

    settings = _settings(args)
    if settings.ca_dir is None:
        raise SettingsError(
            "no CA directory: set FIELDPROOF_CA_DIR (checkpoints are signed with its server key)"
        )
    signer = CheckpointSigner.from_ca_dir(settings.ca_dir)
    engine = make_engine(settings.db_url)
    check_migrated(engine)
    factory = session_factory(engine)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while True:
        made = sequence_pending(factory=factory, signer=signer)
        if made is not None:
            print(
                f"custody log: checkpoint of {made.tree_size} events, root {made.root_hash.hex()}", flush=True
            )
        elif args.every is None:
            print("custody log: nothing new to sequence")
        if args.every is None or stop.wait(args.every):
            return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m server ACTION`` — the same as ``fieldproof server ACTION``."""
    from fieldproof.errors import FieldproofError

    parser = argparse.ArgumentParser(prog="python -m")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_parser(sub)
    args = parser.parse_args(["server", *(argv if argv is not None else sys.argv[1:])])
    try:
        code: int = args.func(args)
    except FieldproofError as exc:
        print(f"fieldproof server: {exc.diagnostics()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
