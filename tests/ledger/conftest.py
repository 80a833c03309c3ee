"""The serving database fixtures (SQLite in tmp_path; PostgreSQL, marked `production`, when it answers)."""

from tests.serving.conftest import (  # noqa: F401 (fixtures, registered by import)
    database,
    engine,
    postgres_url,
    postgresql_database,
    readers,
    reopen,
    session,
    sessions,
    sqlite_database,
)
