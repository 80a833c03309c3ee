"""`serving.db.Prepared`, the decision path's statements run on the transaction's DBAPI cursor: they store and read
exactly what SQLAlchemy's own execution stores and reads, raise SQLAlchemy's errors, roll back with the session, and
stay visible to the engine's cursor events. On SQLite and (marked production) PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from serving.control import get_control_state, set_trading_state
from serving.db import Prepared
from serving.models import Decision, LedgerEntry, table_of

DECISIONS = table_of(Decision)
ROW = {
    "market": "binance:BTC/USDT:1h",
    "candle_ts": 1,
    "model_name": "m",
    "model_version": "3",
    "feature_hash": "abc",
    "inputs": "{}",
    "prediction": None,
    "target": 0.5,
    "delta": 0.5,
    "reason": "hold",
    "created_at": datetime(2026, 12, 8, 1, 2, 3, 456789, tzinfo=UTC),
}


def test_an_insert_stores_what_sqlalchemy_stores(engine: Engine, sessions: sessionmaker[Session]) -> None:
    insert = Prepared(DECISIONS.insert().returning(DECISIONS.c.id))
    with sessions() as session:
        prepared_id = insert.execute(session.connection(), ROW, insert=True).fetchone()[0]
        core = session.connection().execute(DECISIONS.insert().returning(DECISIONS.c.id), {**ROW, "candle_ts": 2})
        core_id = core.scalar_one()
        session.commit()
    assert (prepared_id, core_id) == (1, 2)
    with engine.connect() as connection:  # the driver's own values: the datetime's stored form included
        raw = connection.exec_driver_sql("SELECT created_at, target, prediction FROM decisions ORDER BY id").all()
    assert raw[0] == raw[1]
    with sessions() as session:
        stored = session.scalars(select(Decision).order_by(Decision.id)).all()
        assert [d.created_at for d in stored] == [ROW["created_at"]] * 2


def test_a_select_with_a_bound_limit_and_result_conversions(sessions: sessionmaker[Session]) -> None:
    """The control row's datetime and boolean come back converted, as `session.execute` returns them."""
    set_trading_state(sessions, "HALTED", "drill", "tester", cancel_open=True)
    with sessions() as session:
        snapshot = get_control_state(session)
    assert snapshot.state.value == "HALTED" and snapshot.cancel_open is True
    assert isinstance(snapshot.updated_at, datetime) and snapshot.updated_at.tzinfo is not None
    entries = table_of(LedgerEntry)
    newest = Prepared(select(entries.c.seq, entries.c.kind).order_by(entries.c.seq.desc()).limit(1))
    with sessions() as session:
        assert newest.first(session.connection()) == (1, "control")


def test_errors_are_sqlalchemys_and_the_session_rolls_back(sessions: sessionmaker[Session]) -> None:
    insert = Prepared(DECISIONS.insert().returning(DECISIONS.c.id))
    by_ts = Prepared(select(DECISIONS.c.id).where(DECISIONS.c.candle_ts == bindparam("ts")))
    with sessions() as session:
        insert.execute(session.connection(), ROW, insert=True).close()
        session.rollback()  # nothing committed
        assert by_ts.first(session.connection(), {"ts": 1}) is None
        insert.execute(session.connection(), ROW, insert=True).close()
        session.commit()
    with sessions() as session, pytest.raises(IntegrityError):  # (market, candle_ts) is unique
        insert.execute(session.connection(), ROW, insert=True)


def test_the_engines_cursor_events_see_each_statement(engine: Engine, sessions: sessionmaker[Session]) -> None:
    seen: list[tuple[str, bool]] = []

    def record(_conn: object, _cursor: object, statement: str, _params: object, _ctx: object, many: bool) -> None:
        seen.append((statement.split(maxsplit=1)[0].upper(), many))

    insert = Prepared(DECISIONS.insert())
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        with sessions() as session:
            insert.executemany(session.connection(), [ROW, {**ROW, "candle_ts": 2}])
            session.commit()
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert ("INSERT", True) in seen
