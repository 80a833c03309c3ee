"""Database fixtures: every serving test runs on SQLite in tmp_path and, marked `production`, on PostgreSQL.

Each PostgreSQL test gets its own freshly created schema (set as the connections' search_path) and drops it
at teardown, so parallel runs never see each other's rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from serving.db import database_available, make_engine, session_factory, upgrade

POSTGRES_URLS = (
    "postgresql+psycopg2://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg2://root@127.0.0.1:5432/test",
)


@dataclass
class Database:
    """One test database; `new_engine()` opens another engine on it, as a restarted process would."""

    backend: str
    url: str
    connect_args: dict[str, Any] = field(default_factory=dict)
    engines: list[Engine] = field(default_factory=list)

    def new_engine(self) -> Engine:
        engine = make_engine(self.url, connect_args=self.connect_args)
        self.engines.append(engine)
        return engine

    def dispose(self) -> None:
        for engine in self.engines:
            engine.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The first PostgreSQL URL that answers; skips the PostgreSQL tests when none does."""
    for url in POSTGRES_URLS:
        engine = make_engine(url)
        try:
            if database_available(engine):
                return url
        finally:
            engine.dispose()
    pytest.skip("no PostgreSQL on 127.0.0.1:5432 (database test)")


@pytest.fixture
def postgresql_database(postgres_url: str) -> Iterator[Database]:
    schema = f"cta_test_{uuid.uuid4().hex[:12]}"
    admin = make_engine(postgres_url)
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    database = Database("postgresql", postgres_url, {"options": f"-csearch_path={schema}"})
    try:
        yield database
    finally:
        database.dispose()
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def sqlite_database(tmp_path: Path) -> Iterator[Database]:
    database = Database("sqlite", f"sqlite:///{tmp_path / 'serving' / 'serving.db'}")
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.production)])
def database(request: pytest.FixtureRequest) -> Database:
    """The test database on each backend (not migrated)."""
    fixture: Database = request.getfixturevalue(f"{request.param}_database")
    return fixture


@pytest.fixture
def engine(database: Database) -> Engine:
    """An engine on the migrated test database."""
    engine = database.new_engine()
    upgrade(engine)
    return engine


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture
def session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions() as session:
        yield session


@pytest.fixture
def readers(engine: Engine) -> sessionmaker[Session]:
    """Read-only sessions, as a dashboard or an auditor beside the worker opens them."""
    return session_factory(engine, read_only=True)


@pytest.fixture
def reopen(database: Database) -> Callable[..., sessionmaker[Session]]:
    """Sessions from a brand-new engine on the same database: what a second process or a restart sees."""

    def open_sessions(*, read_only: bool = False) -> sessionmaker[Session]:
        return session_factory(database.new_engine(), read_only=read_only)

    return open_sessions


@pytest.fixture
def worker_db(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """A migrated SQLite worker database in tmp_path (the broker and reconciliation tests)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'worker.db'}")
    upgrade(engine)
    yield session_factory(engine)
    engine.dispose()
