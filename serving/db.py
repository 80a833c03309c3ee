"""Engines, sessions, migrations and the portable upsert of the serving worker's database (SQLite or PostgreSQL).

SQLite is set up for one writing worker that must not lose a committed row: WAL (readers never block the
writer), `synchronous=NORMAL` (durable at each WAL checkpoint, safe against process crashes), foreign keys on,
and a busy timeout so a second writer waits instead of failing. SQLite transactions begin `IMMEDIATE` by
default: a deferred transaction that reads and then writes fails outright (the busy timeout cannot help) when
another writer committed in between, whereas an immediate one takes the write lock first and waits its turn.
Readers beside the worker take `session_factory(engine, read_only=True)`, which begins DEFERRED (the execution
option `sqlite_begin="DEFERRED"`) and so never holds the write lock.

WAL checkpoints are not left to SQLite's automatic one, which runs inside whichever commit crosses 1,000
pages and made one decision in ~80 take 15 ms longer (measured): connections set `wal_autocheckpoint=0`, and
the worker calls `checkpoint` after each candle, once its decision and order are done. (SQLite still
checkpoints when the last connection closes, so other writers need nothing.)
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import ClauseElement, Connection, Dialect, Engine, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DatabaseError, DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.compiler import SQLCompiler

from cta.errors import ConfigError, CTAError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BEGIN_OPTION = "sqlite_begin"
SQLITE_BEGIN_MODES = frozenset({"DEFERRED", "IMMEDIATE", "EXCLUSIVE"})
SQLITE_DAMAGED = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})  # primary result codes


class DatabaseCorrupt(CTAError):
    """The serving database's SQLite file is not a database or is damaged (truncated, overwritten): no retry can
    fix it, and nothing may be written to it. Names the file."""


def _where(engine: Engine) -> str:
    return str(engine.url.database) if engine.dialect.name == "sqlite" else engine.url.render_as_string(True)


def corruption(engine: Engine, error: BaseException) -> DatabaseCorrupt | None:
    """The DatabaseCorrupt that `error` (from `engine`) means, or None when it means something else (a lock, a
    network failure, a bad statement, PostgreSQL)."""
    if engine.dialect.name != "sqlite":
        return None
    orig = getattr(error, "orig", error)
    if not isinstance(orig, sqlite3.DatabaseError):
        return None
    if (getattr(orig, "sqlite_errorcode", 0) or 0) & 0xFF not in SQLITE_DAMAGED:
        return None
    return damaged(engine, str(orig))


def damaged(engine: Engine, detail: str) -> DatabaseCorrupt:
    return DatabaseCorrupt(
        f"the serving database {_where(engine)} is damaged ({' '.join(detail.split())[:200]}); nothing was "
        "written to it: restore it from a backup (it holds the orders and the ledger), or move it aside to start "
        "an empty one"
    )


def check_integrity(engine: Engine) -> None:
    """SQLite: `PRAGMA quick_check` (every page read once: a truncated or overwritten file fails here, before
    anything is written); DatabaseCorrupt naming the file when it fails. Nothing on PostgreSQL."""
    if engine.dialect.name != "sqlite":
        return
    try:
        with engine.connect() as connection:
            rows = [str(row[0]) for row in connection.exec_driver_sql("PRAGMA quick_check").fetchall()]
    except DatabaseError as error:
        found = corruption(engine, error)
        if found is None:
            raise
        raise found from error
    if rows != ["ok"]:
        raise damaged(engine, "; ".join(rows[:3]))


def make_engine(
    url: str,
    *,
    busy_timeout_ms: int = 30_000,
    sqlite_begin: str = "IMMEDIATE",
    connect_args: Mapping[str, Any] | None = None,
) -> Engine:
    """An engine for `url`: SQLite (file or memory) or PostgreSQL through psycopg2.

    For a SQLite file the parent directory is created. `connect_args` go to the DBAPI `connect()`
    (e.g. `{"options": "-csearch_path=..."}` for psycopg2).
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, busy_timeout_ms, sqlite_begin, dict(connect_args or {}))
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg2")
        return create_engine(parsed, pool_pre_ping=True, connect_args=dict(connect_args or {}))
    raise ConfigError("database.url", parsed.render_as_string(hide_password=True), "use sqlite or postgresql")


def _sqlite_engine(url: URL, busy_timeout_ms: int, sqlite_begin: str, connect_args: dict[str, Any]) -> Engine:
    if sqlite_begin not in SQLITE_BEGIN_MODES:
        raise ConfigError("sqlite_begin", sqlite_begin, f"one of {sorted(SQLITE_BEGIN_MODES)}")
    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, **connect_args})
    _install_sqlite_events(engine, busy_timeout_ms, sqlite_begin)
    return engine


def _install_sqlite_events(engine: Engine, busy_timeout_ms: int, sqlite_begin: str) -> None:
    """Take transaction control from the sqlite3 module (SQLAlchemy's documented recipe) and set the pragmas.

    With the module's own implicit transactions off, SAVEPOINT works and BEGIN is emitted here, in the mode
    the connection's `sqlite_begin` execution option asks for.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA wal_autocheckpoint=0")  # see `checkpoint`
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = str(connection.get_execution_options().get(SQLITE_BEGIN_OPTION, sqlite_begin)).upper()
        if mode not in SQLITE_BEGIN_MODES:
            raise ConfigError(SQLITE_BEGIN_OPTION, mode, f"one of {sorted(SQLITE_BEGIN_MODES)}")
        connection.exec_driver_sql(f"BEGIN {mode}")


def session_factory(engine: Engine, *, read_only: bool = False) -> sessionmaker[Session]:
    """Sessions on `engine` whose objects stay readable after commit (the worker keeps using them).

    `read_only` sessions are for readers beside the worker (dashboards, `verify`, reports): on SQLite they
    begin DEFERRED, so they never hold the write lock; on PostgreSQL their transactions are READ ONLY.
    """
    if read_only:
        options: dict[str, Any] = {SQLITE_BEGIN_OPTION: "DEFERRED"}
        if engine.dialect.name == "postgresql":
            options = {"postgresql_readonly": True}
        return sessionmaker(engine.execution_options(**options), expire_on_commit=False)
    return sessionmaker(engine, expire_on_commit=False)


def database_available(engine: Engine) -> bool:
    """Whether the database answers a trivial query now (for health checks and start-up)."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        log.warning("database %s unavailable: %s", engine.url.render_as_string(hide_password=True), error)
        return False
    return True


def database_problem(engine: Engine) -> str | None:
    """Why the database cannot be used now (the error of a trivial query, one line), or None when it answers.
    A damaged SQLite file is not "unavailable" (waiting will not repair it): DatabaseCorrupt is raised."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        found = corruption(engine, error)
        if found is not None:
            raise found from error
        cause = str(getattr(error, "orig", None) or error).strip().splitlines()
        return f"{type(error).__name__}: {cause[0] if cause else ''}"
    return None


def alembic_config() -> Config:
    """Alembic's configuration built in code: the migrations folder, no alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database to `revision` (default the newest) in one transaction; a no-op when already there.
    A damaged SQLite file is refused first (`check_integrity`), with nothing written."""
    check_integrity(engine)
    config = alembic_config()
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except DatabaseError as error:
        found = corruption(engine, error)
        if found is None:
            raise
        raise found from error


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, None before the first migration."""
    from alembic.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def checkpoint(sessions: sessionmaker[Session]) -> None:
    """Copy the SQLite write-ahead log into the database file (PASSIVE: never waits for readers), off the
    decision path; nothing on PostgreSQL."""
    engine = sessions.kw.get("bind")
    if not isinstance(engine, Engine) or engine.dialect.name != "sqlite":
        return
    raw = engine.raw_connection()  # outside any transaction: the pragma cannot run inside one
    try:
        cursor = raw.cursor()
        cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
        cursor.close()
    finally:
        raw.close()


def upsert(session: Session, model: type[Any], key: dict[str, Any], values: dict[str, Any]) -> None:
    """INSERT ... ON CONFLICT (key) DO UPDATE, atomic on both backends (no select-then-insert race)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        pg_statement = postgresql.insert(model).values(**key, **values)
        session.execute(pg_statement.on_conflict_do_update(index_elements=list(key), set_=values))
    elif dialect == "sqlite":
        lite_statement = sqlite.insert(model).values(**key, **values)
        session.execute(lite_statement.on_conflict_do_update(index_elements=list(key), set_=values))
    else:
        raise NotImplementedError(f"upsert on {dialect}")


# ----- prepared statements on the decision path -------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    sql: str
    names: tuple[str, ...]  # the bind parameters, in the order a positional DBAPI takes them
    positional: bool
    defaults: dict[str, Any]  # values bound in the statement itself (a LIMIT)
    processors: Mapping[str, Callable[[Any], Any]]  # the columns' bind conversions (a UTC datetime to SQLite's text)


class Prepared:
    """A Core statement compiled once per dialect (and set of inserted columns) and run on the DBAPI cursor of the
    caller's transaction.

    Why: on the decision path SQLAlchemy's own work per execute (compiled-cache lookup, execution context, events,
    result wrapping) costs 40-70 us a statement, more than SQLite's work, and a decision runs five of them. This
    keeps the statement, its dialect's SQL and its columns' type conversions (what SQLAlchemy would bind), and
    drops the rest. Rows come back as the DBAPI's tuples: use it for plain columns (integers, text), not for
    values a result type must convert. A DBAPI error is raised as SQLAlchemy's `DBAPIError` (as `execute` raises
    it), the connection invalidated when the error says the database went away, so callers handle both paths the
    same way."""

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._plans: dict[tuple[str, tuple[str, ...] | None], _Plan] = {}
        self._results: dict[str, list[Callable[[Any], Any] | None]] = {}

    def _plan(self, dialect: Dialect, columns: tuple[str, ...] | None) -> _Plan:
        key = (dialect.name, columns)
        plan = self._plans.get(key)
        if plan is None:
            compiled = self.statement.compile(dialect=dialect, column_keys=list(columns) if columns else None)
            assert isinstance(compiled, SQLCompiler)  # a Core SELECT/INSERT compiles to one
            positional = bool(compiled.positional)
            names = tuple(compiled.positiontup or ()) if positional else tuple(compiled.params)
            processors = {
                name: processor
                for bind, name in compiled.bind_names.items()
                if (processor := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
            }
            plan = self._plans[key] = _Plan(str(compiled), names, positional, dict(compiled.params), processors)
        return plan

    def _bind(self, plan: _Plan, params: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        values = {}
        for name in plan.names:
            value = params[name] if name in params else plan.defaults[name]
            processor = plan.processors.get(name)
            values[name] = processor(value) if processor is not None else value
        return tuple(values[name] for name in plan.names) if plan.positional else values

    def execute(self, connection: Connection, params: Mapping[str, Any] | None = None, *, insert: bool = False) -> Any:
        """Run with `params` (for an INSERT, `insert=True`: the statement's columns are the keys of `params`); the
        DBAPI cursor, to fetch from."""
        params = params or {}
        plan = self._plan(connection.dialect, tuple(params) if insert else None)
        bound = self._bind(plan, params)
        return self._run(connection, plan, bound, False, lambda cursor: cursor.execute(plan.sql, bound))

    def first(self, connection: Connection, params: Mapping[str, Any] | None = None) -> tuple[Any, ...] | None:
        """A SELECT's first row with its columns' result conversions applied (a stored UTC datetime, a boolean on
        SQLite), as SQLAlchemy would return it; None when there is none."""
        cursor = self.execute(connection, params)
        try:
            row = cursor.fetchone()
        finally:
            cursor.close()
        if row is None:
            return None
        processors = self._results.get(connection.dialect.name)
        if processors is None:
            columns = self.statement.selected_columns  # type: ignore[attr-defined]
            processors = self._results[connection.dialect.name] = [
                column.type.dialect_impl(connection.dialect).result_processor(connection.dialect, None)
                for column in columns
            ]
        return tuple(
            value if f is None or value is None else f(value) for f, value in zip(processors, row, strict=True)
        )

    def executemany(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """An INSERT of `rows` (each with the same keys, the statement's columns)."""
        plan = self._plan(connection.dialect, tuple(rows[0]))
        batch = [self._bind(plan, row) for row in rows]
        self._run(connection, plan, batch, True, lambda cursor: cursor.executemany(plan.sql, batch)).close()

    def _run(self, connection: Connection, plan: _Plan, bound: Any, many: bool, call: Callable[[Any], Any]) -> Any:
        dbapi_connection = connection.connection.dbapi_connection
        cursor = dbapi_connection.cursor()  # type: ignore[union-attr]
        dispatch = connection.dispatch  # the engine's cursor events still see every statement (tracing, tests)
        if dispatch.before_cursor_execute:
            dispatch.before_cursor_execute(connection, cursor, plan.sql, bound, None, many)
        try:
            call(cursor)
        except connection.dialect.loaded_dbapi.Error as error:
            lost = connection.dialect.is_disconnect(error, dbapi_connection, cursor)  # type: ignore[arg-type]
            if lost:
                connection.invalidate(error)
            raise DBAPIError.instance(
                plan.sql,
                None,
                error,
                connection.dialect.loaded_dbapi.Error,
                connection_invalidated=lost,
                dialect=connection.dialect,
            ) from error
        if dispatch.after_cursor_execute:
            dispatch.after_cursor_execute(connection, cursor, plan.sql, bound, None, many)
        return cursor
