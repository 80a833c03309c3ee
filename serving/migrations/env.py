"""Alembic environment for the serving database.

`serving.db.upgrade` passes an open connection in `config.attributes["connection"]`; the alembic command line
(`alembic -c <ini with script_location = serving/migrations> -x url=... upgrade head`) passes a URL instead.
Migrations always run online, on a connection, inside one transaction.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from serving.db import make_engine
from serving.models import Base


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no database: pass -x url=... or set sqlalchemy.url")
    engine = make_engine(url)
    try:
        with engine.begin() as own_connection:
            run_on(own_connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run against a database")
main()
