"""The serving database fixtures (SQLite and PostgreSQL, migrated), shared with tests/serving."""

from tests.serving.conftest import (  # noqa: F401 (fixtures)
    database,
    engine,
    postgres_url,
    postgresql_database,
    readers,
    sessions,
    sqlite_database,
)
