"""`fieldproof server migrate | ingest | api | log-sequence | user | export` (settings from FIELDPROOF_* variables)."""

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
        ("api", _api, "serve the API and web pages (sign-in required; put TLS in front: docs/access.md)"),
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
    _add_user_parser(sub)
    _add_export_parser(sub)
    _add_retention_parser(sub)


def _add_export_parser(sub: Any) -> None:
    """``server export CASE_NUMBER --as CUSTODIAN [--out DIR]``: a case's BagIt bag (docs/export.md)."""
    text = "export a case as a BagIt bag that `fieldproof verify BAG --ca root-ca.pem` checks offline"
    q = sub.add_parser("export", help=text, description=text)
    q.add_argument("case_number", metavar="CASE_NUMBER")
    q.add_argument("--as", dest="username", required=True, help="the custodian the export is logged for")
    q.add_argument("--out", type=Path, help="also copy the bag into this folder (as <DIR>/<export id>)")
    q.add_argument("--reason", help="why (kept in the custody event)")
    q.add_argument("--data-dir", type=Path, help="FIELDPROOF_DATA_DIR")
    q.add_argument("--database-url", help="FIELDPROOF_DATABASE_URL")
    q.add_argument("--ca-dir", type=Path, help="FIELDPROOF_CA_DIR")
    q.add_argument("--store", type=Path, help="FIELDPROOF_STORE")
    q.add_argument("-v", "--verbose", action="store_true", help="more logging")
    q.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    import shutil

    from sqlalchemy import select

    from server.auth.errors import NotFoundError
    from server.auth.models import User
    from server.auth.service import principal_of
    from server.db import check_migrated, make_engine, session_factory
    from server.evidence.backend import make_blob_store
    from server.export.service import export_case

    settings = _settings(args)
    engine = make_engine(settings.db_url)
    check_migrated(engine)
    factory = session_factory(engine)
    with factory() as session:
        user = session.scalar(select(User).where(User.username == args.username))
        if user is None or user.disabled_at is not None:
            raise NotFoundError(f"no active user {args.username!r}: the export is logged for a custodian")
        done = export_case(
            session,
            principal=principal_of(user, via="shell"),
            settings=settings,
            factory=factory,
            store=make_blob_store(settings),
            number=args.case_number,
            reason=args.reason,
        )
        session.commit()
    where = done.path
    if args.out is not None:
        where = args.out / done.export_id
        shutil.copytree(done.path, where)
    print(
        f"case {done.case_number}: {done.clips} clip(s) exported to {where}\n"
        f"manifest sha256 {done.manifest_sha256}; custody event {done.event_id}"
    )
    return 0


def _add_retention_parser(sub: Any) -> None:
    """``server retention sweep [--dry-run]``: purge non-case footage past retention (docs/retention.md)."""
    text = "retention of evidence: list what is past retention and purge it (docs/retention.md)"
    r = sub.add_parser("retention", help=text, description=text)
    actions = r.add_subparsers(dest="retention_command", metavar="ACTION")
    actions.required = True
    what = (
        "purge the blobs of non-case footage past retention that no legal hold covers "
        "(records and custody events stay; one custody event per purged segment)"
    )
    q = actions.add_parser("sweep", help=what, description=what)
    q.add_argument("--dry-run", action="store_true", help="list what is due; delete and write nothing")
    q.add_argument(
        "--non-case-months",
        type=int,
        default=6,
        metavar="MONTHS",
        help="keep non-case footage this many months from capture (at least 6, the default)",
    )
    q.add_argument("--data-dir", type=Path, help="FIELDPROOF_DATA_DIR")
    q.add_argument("--database-url", help="FIELDPROOF_DATABASE_URL")
    q.add_argument("--store", type=Path, help="FIELDPROOF_STORE")
    q.add_argument("-v", "--verbose", action="store_true", help="more logging")
    q.set_defaults(func=_retention_sweep)


def _retention_sweep(args: argparse.Namespace) -> int:
    from server.db import check_migrated, make_engine, session_factory
    from server.evidence.backend import make_blob_store
    from server.retention.sweep import sweep

    settings = _settings(args)
    engine = make_engine(settings.db_url)
    check_migrated(engine)
    done = sweep(
        factory=session_factory(engine),
        store=make_blob_store(settings),
        months=args.non_case_months,
        dry_run=args.dry_run,
    )
    plan = done.plan
    for blob in plan.due:
        refs = ", ".join(f"{s.device}:{s.seq}" for s in blob.segments)
        print(f"due {blob.digest} (since {blob.due_at:%Y-%m-%d}): {refs}")
    for digest, holds in plan.held.items():
        print(f"held {digest}: legal hold(s) {', '.join(map(str, holds))}")
    for digest, why in done.locked.items():
        print(f"locked {digest}: the store refuses it for now ({why}); a later sweep purges it")
    verb = "would purge" if done.dry_run else "purged"
    count = len(plan.due) if done.dry_run else len(done.purged)
    print(
        f"retention sweep: {verb} {count} blob(s); {len(plan.held)} held, {len(plan.shared)} shared with "
        f"kept evidence, {len(done.skipped)} linked or held meanwhile, {len(done.finished)} finished, "
        f"{len(done.locked)} locked in the store"
    )
    return 0


def _add_user_parser(sub: Any) -> None:
    """``server user add | set-password``: how a bureau creates its first IT admin (docs/access.md)."""
    from server.auth.principal import Role

    text = "manage users from the server's shell (the first IT admin; a forgotten admin password)"
    u = sub.add_parser("user", help=text, description=text)
    actions = u.add_subparsers(dest="user_command", metavar="ACTION")
    actions.required = True
    for name, func, what in (
        ("add", _user_add, "create a user with one or more roles"),
        ("set-password", _user_set_password, "set a user's password (ends their browser sessions)"),
    ):
        q = actions.add_parser(name, help=what, description=what)
        q.add_argument("username", metavar="USERNAME")
        if name == "add":
            q.add_argument(
                "--role",
                dest="roles",
                action="append",
                required=True,
                choices=[r.value for r in Role],
                metavar="ROLE",
                help=f"a role to give (repeat for several): {', '.join(r.value for r in Role)}",
            )
            q.add_argument("--display-name", help="the name shown to others (default: the username)")
            q.add_argument("--officer-id", type=int, help="the officer record of this user, if any")
        q.add_argument(
            "--password-file",
            type=Path,
            metavar="FILE",
            help="read the password from the first line of FILE (default: ask twice on the terminal)",
        )
        q.add_argument("--data-dir", type=Path, help="FIELDPROOF_DATA_DIR")
        q.add_argument("--database-url", help="FIELDPROOF_DATABASE_URL")
        q.add_argument("-v", "--verbose", action="store_true", help="more logging")
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


def _read_password(args: argparse.Namespace) -> str:
    """The new password: the first line of --password-file, else typed twice (never echoed, never an argument)."""
    import getpass

    from server.auth.errors import InvalidInputError

    if args.password_file is not None:
        try:
            lines = args.password_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(
                f"cannot read the password file {args.password_file}: {exc}", field="password"
            ) from None
        if not lines:
            raise InvalidInputError(f"the password file {args.password_file} is empty", field="password")
        return lines[0]
    first = getpass.getpass(f"password for {args.username}: ")
    if getpass.getpass("the same again: ") != first:
        raise InvalidInputError("the two passwords differ; nothing was changed", field="password")
    return first


def _user_session(args: argparse.Namespace) -> Any:
    from server.db import check_migrated, make_engine, session_factory

    settings = _settings(args)
    engine = make_engine(settings.db_url)
    check_migrated(engine)
    return session_factory(engine)


def _user_add(args: argparse.Namespace) -> int:
    from server.auth.principal import Role
    from server.auth.service import count_users, create_user
    from server.db import transaction

    factory = _user_session(args)
    password = _read_password(args)
    with transaction(factory) as session:
        first = count_users(session) == 0
        user = create_user(
            session,
            username=args.username,
            password=password,
            roles=args.roles,
            display_name=args.display_name,
            officer_id=args.officer_id,
        )
        session.flush()
        roles = ", ".join(sorted(r.value for r in user.roles))
        user_id = user.id
    print(f"user {args.username} created (id {user_id}) with the role(s) {roles}")
    if first and Role.IT_ADMIN.value not in args.roles:
        print(
            "note: this is the first user and not an IT admin; nobody can manage users over the API "
            "until one exists (`fieldproof server user add NAME --role it-admin`)",
            file=sys.stderr,
        )
    return 0


def _user_set_password(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from server.auth.errors import NotFoundError
    from server.auth.models import User
    from server.auth.service import set_password
    from server.db import transaction

    factory = _user_session(args)
    password = _read_password(args)
    with transaction(factory) as session:
        user_id = session.scalar(select(User.id).where(User.username == args.username))
        if user_id is None:
            raise NotFoundError(f"no user {args.username!r}: see `fieldproof server user add`")
        set_password(session, user_id=user_id, password=password)
    print(f"password of {args.username} set; their browser sessions have ended")
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
