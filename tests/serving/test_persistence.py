"""The serving database: migrations, engine set-up, the order repository and the persisted kill switch."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from cta.errors import ConfigError
from serving.client_ids import client_order_id
from serving.control import TradingState, get_control_state, set_control_state
from serving.db import current_revision, database_available, make_engine, session_factory, upgrade
from serving.models import Decision, Fill, Order
from serving.orders import IllegalTransition, OrderStatus
from serving.repository import (
    OrderConflict,
    apply_exchange_update,
    fills_for,
    get_order,
    get_position,
    open_orders,
    orders_by_prefix,
    record_fill,
    record_intent,
    upsert_position,
)
from tests.serving.conftest import Database

MARKET = "binance:BTC/USDT:1h"
CANDLE_TS = 1_700_000_000_000


def intent(
    session: Session, seq: int = 0, market: str = MARKET, amount: float = 0.5, client_id: str | None = None
) -> Order:
    """A market buy intent for `market` at CANDLE_TS, the `seq`-th of that candle."""
    return record_intent(
        session,
        client_order_id=client_id or client_order_id("cta", market, CANDLE_TS, seq),
        market=market,
        symbol=market.split(":")[1],
        side="buy",
        order_type="market",
        amount=amount,
        candle_ts=CANDLE_TS,
    )


def test_upgrade_is_idempotent_and_keeps_data(engine: Engine, sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        intent(session)
        session.commit()
    upgrade(engine)
    upgrade(engine)
    assert current_revision(engine) == "0004"
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Order)) == 1


def test_fresh_database_has_no_revision_until_upgraded(database: Database) -> None:
    engine = database.new_engine()
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == "0004"


def test_sqlite_runs_in_wal_mode_with_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "serving.db"
    engine = make_engine(f"sqlite:///{path}", busy_timeout_ms=1234)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234
        assert path.exists()
    finally:
        engine.dispose()


def test_sqlite_writers_queue_for_the_lock_instead_of_failing(tmp_path: Path) -> None:
    """Read-then-write transactions from two threads both succeed: the second waits at BEGIN."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    sessions = session_factory(engine)

    def write_once(seq: int) -> None:
        with sessions() as session:
            session.scalar(select(func.count()).select_from(Order))
            intent(session, seq=seq)
            session.commit()

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(write_once, range(40)))
        with sessions() as session:
            assert session.scalar(select(func.count()).select_from(Order)) == 40
    finally:
        engine.dispose()


def test_database_available(engine: Engine) -> None:
    assert database_available(engine)
    unreachable = make_engine("postgresql+psycopg2://nobody@127.0.0.1:1/none")
    try:
        assert not database_available(unreachable)
    finally:
        unreachable.dispose()


def test_make_engine_refuses_other_backends() -> None:
    with pytest.raises(ConfigError, match=r"database\.url"):
        make_engine("mysql://user:secret@localhost/db")


def test_committed_intent_is_visible_to_another_process_before_any_send(
    session: Session, reopen: Callable[..., sessionmaker[Session]]
) -> None:
    order = intent(session)
    session.commit()
    with reopen(read_only=True)() as other:
        seen = get_order(other, order.client_order_id)
        assert seen is not None
        assert seen.status == OrderStatus.PENDING_SUBMIT
        assert (seen.market, seen.side, seen.type, seen.amount, seen.filled) == (MARKET, "buy", "market", 0.5, 0.0)
        assert seen.created_at.tzinfo is not None
        assert seen.created_at.utcoffset() == UTC.utcoffset(None)


def test_uncommitted_intent_is_not_visible_elsewhere(
    session: Session, reopen: Callable[..., sessionmaker[Session]]
) -> None:
    order = intent(session)
    with reopen(read_only=True)() as other:
        assert get_order(other, order.client_order_id) is None
    session.rollback()


def test_recording_the_same_intent_twice_returns_the_stored_order(session: Session) -> None:
    first = intent(session)
    session.commit()
    assert intent(session).id == first.id
    with pytest.raises(OrderConflict):
        intent(session, amount=0.75)
    assert session.scalar(select(func.count()).select_from(Order)) == 1


def test_illegal_transition_raises_and_leaves_the_order_unchanged(session: Session) -> None:
    order = intent(session)
    apply_exchange_update(session, order, status=OrderStatus.FILLED, filled=0.5, average_price=100.0)
    session.commit()
    with pytest.raises(IllegalTransition):
        apply_exchange_update(session, order, status=OrderStatus.OPEN, filled=0.0)
    session.commit()
    session.expire_all()
    stored = get_order(session, order.client_order_id)
    assert stored is not None
    assert (stored.status, stored.filled) == (OrderStatus.FILLED, 0.5)


def test_filled_and_fees_never_move_backwards(session: Session, reopen: Callable[..., sessionmaker[Session]]) -> None:
    order = intent(session, amount=1.0)
    apply_exchange_update(session, order, status="ACKNOWLEDGED", exchange_order_id="42")
    apply_exchange_update(session, order, status="PARTIALLY_FILLED", filled=0.6, fee_cost=0.06, fee_currency="USDT")
    apply_exchange_update(session, order, status="PARTIALLY_FILLED", filled=0.2, fee_cost=0.02)
    session.commit()
    with reopen()() as other:
        stored = get_order(other, order.client_order_id)
        assert stored is not None
        assert (stored.status, stored.filled, stored.fee_cost, stored.exchange_order_id) == (
            "PARTIALLY_FILLED",
            0.6,
            0.06,
            "42",
        )


def test_a_second_exchange_order_id_is_a_conflict(session: Session) -> None:
    order = intent(session)
    apply_exchange_update(session, order, status="OPEN", exchange_order_id="1")
    with pytest.raises(OrderConflict):
        apply_exchange_update(session, order, status="OPEN", exchange_order_id="2")
    assert order.exchange_order_id == "1"


def test_a_duplicate_fill_is_ignored(session: Session) -> None:
    order = intent(session)
    session.commit()

    def trade(trade_id: str) -> bool:
        return record_fill(
            session, order, exchange_trade_id=trade_id, price=100.0, amount=0.25, ts=CANDLE_TS + 1000, fee_cost=0.01
        )

    assert trade("t1") is True
    assert trade("t1") is False
    assert trade("t2") is True
    session.commit()
    assert [f.exchange_trade_id for f in fills_for(session, order)] == ["t1", "t2"]


def test_the_same_trade_id_in_another_market_is_a_different_fill(session: Session) -> None:
    btc, eth = intent(session), intent(session, market="binance:ETH/USDT:1h")
    assert record_fill(session, btc, exchange_trade_id="7", price=1.0, amount=0.1, ts=1)
    assert record_fill(session, eth, exchange_trade_id="7", price=1.0, amount=0.1, ts=1)
    session.commit()
    assert session.scalar(select(func.count()).select_from(Fill)) == 2


def test_a_fill_racing_another_transaction_returns_false_and_keeps_the_callers_work(
    session: Session, sessions: sessionmaker[Session]
) -> None:
    """Two workers see the same trade: the loser gets False and its transaction carries on."""
    order = intent(session)
    session.commit()
    assert record_fill(session, order, exchange_trade_id="t1", price=100.0, amount=0.1, ts=1)
    started = threading.Event()

    def second_worker() -> tuple[bool, bool]:
        started.set()
        with sessions() as other:
            theirs = other.get(Order, order.id)
            assert theirs is not None
            duplicate = record_fill(other, theirs, exchange_trade_id="t1", price=100.0, amount=0.1, ts=1)
            fresh = record_fill(other, theirs, exchange_trade_id="t2", price=101.0, amount=0.1, ts=2)
            other.commit()
            return duplicate, fresh

    with ThreadPoolExecutor(max_workers=1) as pool:
        result = pool.submit(second_worker)
        started.wait(5)
        time.sleep(0.2)
        assert not result.done()
        session.commit()
        assert result.result(timeout=30) == (False, True)
    assert sorted(f.exchange_trade_id for f in fills_for(session, order)) == ["t1", "t2"]


def test_foreign_keys_are_enforced(session: Session) -> None:
    session.add(
        Fill(order_id=999, client_order_id="x", exchange_trade_id="t", market=MARKET, price=1.0, amount=1.0, ts=1)
    )
    with pytest.raises(IntegrityError):
        session.flush()


def test_one_decision_per_market_and_candle(session: Session) -> None:
    def decision() -> Decision:
        return Decision(
            market=MARKET,
            candle_ts=CANDLE_TS,
            model_name="m",
            model_version="1",
            feature_hash="f" * 64,
            inputs="{}",
            prediction=0.6,
            target=0.5,
            delta=0.5,
            reason="long",
        )

    session.add(decision())
    session.commit()
    session.add(decision())
    with pytest.raises(IntegrityError):
        session.flush()


def test_open_orders_are_the_ones_that_may_still_fill(session: Session) -> None:
    eth = "binance:ETH/USDT:1h"
    statuses = ["PENDING_SUBMIT", "UNKNOWN", "OPEN", "FILLED", "CANCELLED", "REJECTED"]
    orders = [intent(session, seq=i) for i in range(len(statuses))]
    for order, status in zip(orders[1:], statuses[1:], strict=True):
        apply_exchange_update(session, order, status=status)
    eth_order = intent(session, market=eth)
    session.commit()
    assert [o.status for o in open_orders(session, MARKET)] == ["PENDING_SUBMIT", "UNKNOWN", "OPEN"]
    assert [o.id for o in open_orders(session)] == [orders[0].id, orders[1].id, orders[2].id, eth_order.id]


def test_orders_by_prefix_takes_the_prefix_literally(session: Session) -> None:
    ours = intent(session, client_id="cta-abc-1")
    intent(session, seq=1, client_id="ctb-abc-1")
    intent(session, seq=2, client_id="ct_x-abc-1")
    session.commit()
    assert [o.id for o in orders_by_prefix(session, "cta-")] == [ours.id]
    assert [o.client_order_id for o in orders_by_prefix(session, "ct_")] == ["ct_x-abc-1"]
    assert orders_by_prefix(session, "cta-", market="binance:ETH/USDT:1h") == []


def test_positions_are_upserted(session: Session, reopen: Callable[..., sessionmaker[Session]]) -> None:
    assert get_position(session, MARKET) is None
    upsert_position(session, MARKET, units=0.5, average_price=100.0, realized_pnl=0.0)
    session.commit()
    position = upsert_position(session, MARKET, units=0.2, average_price=100.0, realized_pnl=3.0)
    assert (position.units, position.realized_pnl) == (0.2, 3.0)
    session.commit()
    with reopen()() as other:
        stored = get_position(other, MARKET)
        assert stored is not None
        assert (stored.units, stored.average_price, stored.realized_pnl) == (0.2, 100.0, 3.0)


def test_the_kill_switch_defaults_to_running_and_survives_a_restart(
    session: Session, reopen: Callable[..., sessionmaker[Session]]
) -> None:
    assert get_control_state(session).state is TradingState.RUNNING
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    set_control_state(session, TradingState.HALTED, reason="drawdown limit", updated_by="risk", now=when)
    session.commit()
    with reopen()() as restarted:
        control = get_control_state(restarted)
        assert (control.state, control.reason, control.updated_by, control.updated_at) == (
            TradingState.HALTED,
            "drawdown limit",
            "risk",
            when,
        )
        set_control_state(restarted, "REDUCING", reason="operator", updated_by="cli")
        restarted.commit()
    assert get_control_state(session).state is TradingState.REDUCING
    assert get_control_state(session, "other-switch").state is TradingState.RUNNING


def test_naive_datetimes_are_refused(session: Session) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        set_control_state(session, "HALTED", reason="x", updated_by="y", now=datetime(2024, 1, 1))


TABLES = ("orders", "fills", "positions", "decisions", "equity_snapshots", "control_state", "ledger_entries")


def test_raw_sql_sees_the_same_schema_names(engine: Engine) -> None:
    """Other tools (dashboards, psql) query these table names."""
    with engine.connect() as connection:
        for table in TABLES:
            assert connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar() == 0
