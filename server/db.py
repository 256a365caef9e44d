"""The database: declarative base, engines for SQLite (embedded) and PostgreSQL (scale-out), migrations.

Durability matters here: an ack tells a recorder it may erase footage, so a commit must survive a power
cut before the ack goes out. PostgreSQL does that by default (fsync, synchronous_commit). SQLite runs
in WAL mode with ``synchronous=FULL`` (WAL with NORMAL may lose the last commits on power loss).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from sqlalchemy import BigInteger, DateTime, Engine, Integer, MetaData, create_engine, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from server.errors import SettingsError

# Stable constraint names, so that Alembic migrations can name what they alter on both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Autoincrementing 64-bit ids; SQLite needs INTEGER PRIMARY KEY to alias its rowid.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base of every server table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on both databases (SQLite keeps naive text; we store UTC there)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("server times must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_now() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


def make_engine(url: str, *, immediate: bool = False) -> Engine:
    """An engine for ``url``; for SQLite with WAL, foreign keys, full sync and a busy timeout.

    ``immediate``: SQLite write transactions start with ``BEGIN IMMEDIATE``, so two ingest processes
    never deadlock upgrading a read lock (SQLite would fail one at once instead of waiting).
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            parent = Path(path).parent
            if not parent.is_dir():
                raise SettingsError(f"the database directory {parent} does not exist; create it first")
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (see "begin").
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    if url.startswith("postgresql+psycopg://"):
        return create_engine(url, pool_pre_ping=True)
    raise SettingsError(f"unsupported database URL {url.split(':', 1)[0]!r}")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded values after commit (handlers read them to build acks)."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on any exception."""
    with factory() as session, session.begin():
        yield session


def insert_ignore(session: Session, model: type[Base], values: dict[str, Any], *keys: str) -> bool:
    """INSERT … ON CONFLICT (keys) DO NOTHING; True when a row was inserted."""
    table = model.__table__
    ins = pg_insert(table) if session.get_bind().dialect.name == "postgresql" else sqlite_insert(table)
    # The values as parameters, not baked into the statement: one cached statement for every call.
    result = session.execute(ins.on_conflict_do_nothing(index_elements=list(keys)), values)
    return bool(result.rowcount)  # type: ignore[attr-defined]


def alembic_config(url: str) -> Any:
    """An Alembic configuration for ``url`` with the migrations in ``server/migrations``."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


#: The PostgreSQL advisory lock key ``migrate`` holds for its transaction ("fpmigrat" as a big-endian integer).
MIGRATE_LOCK: Final = int.from_bytes(b"fpmigrat", "big") - 2**63


def migrate(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (``alembic upgrade head``)."""
    from alembic import command

    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Several hosts may run ``server migrate`` at once (an upgrade, docs/deployment.md): the
                # first migrates, the others wait for its commit and then find the database at head.
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATE_LOCK})")
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


def current_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at (None when never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    """The newest migration's revision."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def check_migrated(engine: Engine) -> None:
    """Refuse to run against a database that is not at the newest migration."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SettingsError(
            f"the database is at migration {current or '(none)'}, the server needs {head}: "
            "run `fieldproof server migrate` first"
        )


def one_of(column: str, values: tuple[str, ...]) -> str:
    """SQL text of a CHECK that ``column`` holds one of ``values`` (fixed identifiers, never user input)."""
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"
