"""The serving database's migrations: the models match the migrated schema, and 0002 moves the kill switch's
cancel request out of the reason into `control_state.cancel_open`, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from serving.db import alembic_config, current_revision, upgrade
from serving.models import Base
from tests.serving.conftest import Database

MARKER = "[cancel-open] "  # how revision 0001 stored a cancel request
UTC_STAMP = "2024-03-01 12:00:00+00:00"
ROWS_AT_0001 = [
    {"key": "trading", "state": "HALTED", "reason": MARKER + "exchange incident", "by": "api"},
    {"key": "other", "state": "REDUCING", "reason": "manual", "by": "cli"},
    {"key": "empty", "state": "HALTED", "reason": MARKER, "by": "ops"},
]


# ----- the models and the migrated schema ------------------------------------------------------------------------


def _describe(diff: Any) -> str:
    """One autogenerate difference as "<what>: <table>[.<column>] ..." (what a migration would have to do)."""
    if isinstance(diff, list):  # column modifications come as a list of tuples
        return "; ".join(_describe(item) for item in diff)
    kind = diff[0]
    if kind in {"add_table", "remove_table"}:
        return f"{kind}: {diff[1].name}"
    if kind in {"add_column", "remove_column"}:
        return f"{kind}: {diff[2]}.{diff[3].name}"
    if kind.startswith("modify_"):
        _, _schema, table, column, _existing, old, new = diff
        return f"{kind}: {table}.{column} ({old!r} in the database, {new!r} in the models)"
    element = diff[1]
    table = getattr(getattr(element, "table", None), "name", "?")
    columns = ", ".join(column.name for column in getattr(element, "columns", ()))
    return f"{kind}: {table} {getattr(element, 'name', None) or ''}({columns})"


def schema_differences(engine: Engine, metadata: sa.MetaData) -> list[str]:
    """What differs between `metadata` and the database's schema, one line per table/column (empty when equal)."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return [_describe(diff) for diff in compare_metadata(context, metadata)]


def test_the_models_match_the_migrated_schema(engine: Engine) -> None:
    differences = schema_differences(engine, Base.metadata)
    assert differences == [], "the models differ from the migrations (add a migration):\n" + "\n".join(differences)


def test_a_model_change_without_a_migration_is_named(engine: Engine) -> None:
    """The check above names what differs: a column the models have and no migration created, and a table."""
    changed = sa.MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        copied = table.to_metadata(changed)
        if table.name == "control_state":
            copied.append_column(sa.Column("operator_note", sa.Text(), nullable=True))
    sa.Table("kill_switch_audit", changed, sa.Column("id", sa.Integer(), primary_key=True))
    differences = schema_differences(engine, changed)
    assert "add_column: control_state.operator_note" in differences
    assert "add_table: kill_switch_audit" in differences


def test_head_is_the_newest_migration(engine: Engine) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert current_revision(engine) == head == "0004"


# ----- 0002: control_state.cancel_open ---------------------------------------------------------------------------


def _insert_at_0001(engine: Engine) -> None:
    with engine.begin() as connection:
        for row in ROWS_AT_0001:
            connection.execute(
                sa.text(
                    "INSERT INTO control_state (key, state, reason, updated_at, updated_by) "
                    "VALUES (:key, :state, :reason, :stamp, :by)"
                ),
                {**row, "stamp": UTC_STAMP},
            )


def _control_rows(engine: Engine, *columns: str) -> dict[str, tuple[Any, ...]]:
    with engine.connect() as connection:
        result = connection.execute(sa.text(f"SELECT key, {', '.join(columns)} FROM control_state"))
        return {row[0]: tuple(row[1:]) for row in result}


def test_0002_moves_the_cancel_marker_into_its_column(database: Database) -> None:
    engine = database.new_engine()
    upgrade(engine, "0001")
    _insert_at_0001(engine)

    upgrade(engine)

    assert current_revision(engine) == "0004"
    rows = _control_rows(engine, "state", "reason", "cancel_open", "updated_by")
    assert {key: (state, reason, bool(cancel), by) for key, (state, reason, cancel, by) in rows.items()} == {
        "trading": ("HALTED", "exchange incident", True, "api"),
        "other": ("REDUCING", "manual", False, "cli"),
        "empty": ("HALTED", "", True, "ops"),
    }


def test_0002_gives_new_rows_no_cancel_request_by_default(database: Database) -> None:
    engine = database.new_engine()
    upgrade(engine)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO control_state (key, state, reason, updated_at, updated_by) "
                "VALUES ('trading', 'RUNNING', 'x', :stamp, 'ops')"
            ),
            {"stamp": UTC_STAMP},
        )
    assert bool(_control_rows(engine, "cancel_open")["trading"][0]) is False


def test_0002_downgrades_back_to_the_marker(database: Database) -> None:
    engine = database.new_engine()
    upgrade(engine, "0001")
    _insert_at_0001(engine)
    upgrade(engine)
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0001")
    assert current_revision(engine) == "0001"
    assert _control_rows(engine, "reason") == {row["key"]: (row["reason"],) for row in ROWS_AT_0001}


@pytest.mark.parametrize("revision", ["0001", "0002", "0003", "0004"])
def test_upgrading_an_already_migrated_database_changes_nothing(database: Database, revision: str) -> None:
    engine = database.new_engine()
    upgrade(engine, revision)
    upgrade(engine, revision)
    assert current_revision(engine) == revision
