"""Reconciliation: the pure plan on plain values, then CcxtBroker.reconcile() against the local exchange over HTTP."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cta.exchange_server import LocalExchangeServer
from serving import ledger
from serving.ccxt_broker import CcxtBroker
from serving.client_ids import client_order_id, is_ours, parse_client_order_id
from serving.exchange_reports import ExchangeOrder, ExchangeTrade, order_from_ccxt
from serving.models import LedgerEntry, Order
from serving.orders import OrderStatus
from serving.positions import PositionState, apply_fill
from serving.reconcile import store_exchange_state, store_fill
from serving.reconcile_plan import NOT_FOUND_REASON, DbOrder, ReconcilePlan, orders_needing_trades, plan_reconciliation
from serving.repository import apply_exchange_update, fills_for, get_order, get_position, record_intent, upsert_position
from serving.types import ReconcileReport
from tests.exchange_fixtures import sync_client
from tests.serving.drill_driver import DRILL_MARKET, build_broker, compare_books

PREFIX = "rc"
MARKET = str(DRILL_MARKET)
NOW = 1_700_000_000_000
GRACE = 1_000
T0 = 1_654_041_600_000


def cid(seq: int, candle_ts: int = T0) -> str:
    return client_order_id(PREFIX, MARKET, candle_ts, seq)


def trade(trade_id: str, order_id: str, amount: float = 0.001, price: float = 30_000.0, ts: int = T0) -> ExchangeTrade:
    return ExchangeTrade(trade_id, order_id, price, amount, fee_cost=0.0, fee_currency="USDT", ts=ts)


def ex_order(
    seq: int, exchange_id: str, *, status: OrderStatus = OrderStatus.FILLED, filled: float = 0.001, side: str = "buy"
) -> ExchangeOrder:
    return ExchangeOrder(
        client_order_id=cid(seq),
        exchange_order_id=exchange_id,
        symbol="BTC/USDT",
        side=side,
        order_type="market",
        amount=0.001,
        filled=filled,
        average_price=30_000.0 if filled else None,
        limit_price=None,
        status=status,
        ts=T0,
    )


def db_order(
    seq: int,
    status: OrderStatus,
    *,
    fills_total: float = 0.0,
    exchange_id: str | None = None,
    created_ms: int = NOW - 10 * GRACE,
) -> DbOrder:
    filled = fills_total if status is not OrderStatus.PENDING_SUBMIT else 0.0
    return DbOrder(cid(seq), status, 0.001, filled, fills_total, exchange_id, created_ms)


def plan(**overrides: Any) -> ReconcilePlan:
    args: dict[str, Any] = {
        "market": MARKET,
        "prefix": PREFIX,
        "db_orders": [],
        "exchange_orders": [],
        "absent": set(),
        "trades": {},
        "known_trade_ids": set(),
        "position": PositionState(),
        "balance_units": None,
        "base": "BTC",
        "quote": "USDT",
        "now_ms": NOW,
        "grace_ms": GRACE,
    }
    return plan_reconciliation(**{**args, **overrides})


def stored(session: Session, client_id: str) -> Order:
    """The row of `client_id`, which the test knows exists."""
    order = get_order(session, client_id)
    assert order is not None, client_id
    return order


# ----- pure: ids, parsing, positions ------------------------------------------------------------------------------


def test_client_order_id_parts_round_trip() -> None:
    parts = parse_client_order_id(client_order_id("cta", MARKET, T0, 37))
    assert parts is not None and (parts.prefix, parts.candle_ts, parts.seq) == ("cta", T0, 37)
    assert parse_client_order_id("cta-manual-order") is None
    assert parse_client_order_id("x-TKT5PX2F1234") is None
    assert is_ours("cta-0123456789-1-0", "cta") and not is_ours("cta2-0123456789-1-0", "cta")


def test_order_from_a_ccxt_create_answer_keeps_its_trades() -> None:
    raw = {
        "id": "7",
        "clientOrderId": "rc-x",
        "timestamp": T0,
        "symbol": "BTC/USDT",
        "type": "market",
        "side": "buy",
        "price": 31801.05,
        "amount": 0.001,
        "filled": 0.001,
        "average": 31801.05,
        "status": "closed",
        "fee": {"currency": "BTC", "cost": 1e-06},
        "trades": [
            {
                "id": "3",
                "timestamp": None,
                "order": None,
                "price": 31801.05,
                "amount": 0.001,
                "fee": {"currency": "BTC", "cost": 1e-06},
            }
        ],
    }
    order = order_from_ccxt(raw)
    assert (order.status, order.exchange_order_id, order.limit_price) == (OrderStatus.FILLED, "7", None)
    assert order.trades == (ExchangeTrade("3", "7", 31801.05, 0.001, 1e-06, "BTC", T0),)


def test_apply_fill_buy_fee_in_base_then_sell_fee_in_quote() -> None:
    bought = apply_fill(
        PositionState(),
        side="buy",
        price=100.0,
        amount=1.0,
        fee_cost=0.001,
        fee_currency="BTC",
        base="BTC",
        quote="USDT",
    )
    assert bought.units == pytest.approx(0.999)
    assert bought.average_price == pytest.approx(100.0 / 0.999)
    sold = apply_fill(
        bought, side="sell", price=110.0, amount=0.999, fee_cost=0.10989, fee_currency="USDT", base="BTC", quote="USDT"
    )
    assert sold.units == pytest.approx(0.0, abs=1e-12) and sold.average_price is None
    assert sold.realized_pnl == pytest.approx(0.999 * 110.0 - 100.0 - 0.10989)


def test_apply_fill_costs_units_of_unknown_basis_at_the_fill_price() -> None:
    adopted = PositionState(units=1.0, average_price=None)
    bought = apply_fill(
        adopted, side="buy", price=50.0, amount=1.0, fee_cost=0.0, fee_currency=None, base="BTC", quote="USDT"
    )
    assert bought.average_price == pytest.approx(50.0)
    sold = apply_fill(
        adopted, side="sell", price=50.0, amount=0.5, fee_cost=0.0, fee_currency=None, base="BTC", quote="USDT"
    )
    assert (sold.units, sold.realized_pnl) == (0.5, 0.0)


# ----- pure: the plan ------------------------------------------------------------------------------------------------


def test_in_sync_books_give_an_empty_plan() -> None:
    result = plan(
        db_orders=[db_order(0, OrderStatus.FILLED, fills_total=0.001, exchange_id="1")],
        exchange_orders=[ex_order(0, "1")],
        known_trade_ids={"1"},
        position=PositionState(units=0.001),
        balance_units=0.001,
    )
    assert result.empty and result.unresolved == ()


def test_unknown_exchange_order_with_our_prefix_is_adopted_with_its_fills() -> None:
    foreign = ExchangeOrder(**{**ex_order(9, "5").__dict__, "client_order_id": "other-order"})
    result = plan(exchange_orders=[ex_order(0, "4"), foreign], trades={"4": [trade("8", "4")]}, balance_units=0.001)
    assert [o.client_order_id for o in result.adoptions] == [cid(0)]
    assert [f.trade.trade_id for f in result.new_fills] == ["8"]
    assert result.correction is None  # the adopted fill explains the balance


def test_order_whose_trades_are_needed_but_unread_is_left_unresolved() -> None:
    result = plan(exchange_orders=[ex_order(0, "4")], balance_units=0.001)
    assert result.adoptions == () and result.unresolved == (cid(0),)
    assert result.correction is None  # never correct a balance while an order's fills are unknown


def test_pending_row_the_exchange_does_not_know_is_rejected_only_after_the_grace_period() -> None:
    old = db_order(0, OrderStatus.PENDING_SUBMIT, created_ms=NOW - GRACE)
    young = db_order(1, OrderStatus.UNKNOWN, created_ms=NOW - GRACE + 1)
    unlooked = db_order(2, OrderStatus.UNKNOWN)
    result = plan(db_orders=[old, young, unlooked], absent={cid(0), cid(1)})
    assert [(r.client_order_id, r.reason) for r in result.rejections] == [(cid(0), NOT_FOUND_REASON)]
    assert result.unresolved == tuple(sorted([cid(1), cid(2)]))


def test_unknown_row_found_on_the_exchange_takes_its_status_and_fills() -> None:
    result = plan(
        db_orders=[db_order(0, OrderStatus.UNKNOWN)],
        exchange_orders=[ex_order(0, "4")],
        trades={"4": [trade("8", "4")]},
    )
    assert [(c.client_order_id, c.previous, c.order.status) for c in result.status_changes] == [
        (cid(0), OrderStatus.UNKNOWN, OrderStatus.FILLED)
    ]
    assert [f.trade.trade_id for f in result.new_fills] == ["8"]


def test_stored_trades_are_not_planned_again() -> None:
    result = plan(
        db_orders=[db_order(0, OrderStatus.ACKNOWLEDGED, fills_total=0.0005, exchange_id="4")],
        exchange_orders=[ex_order(0, "4")],
        trades={"4": [trade("8", "4", amount=0.0005), trade("9", "4", amount=0.0005)]},
        known_trade_ids={"8"},
    )
    assert [f.trade.trade_id for f in result.new_fills] == ["9"]
    assert [c.order.status for c in result.status_changes] == [OrderStatus.FILLED]


def test_terminal_row_the_exchange_contradicts_is_a_conflict_not_a_change() -> None:
    rejected = db_order(0, OrderStatus.REJECTED)
    acked = db_order(1, OrderStatus.ACKNOWLEDGED, exchange_id="6")
    result = plan(
        db_orders=[rejected, acked],
        exchange_orders=[ex_order(0, "4")],
        trades={"4": [trade("8", "4")]},
        absent={cid(1)},
        balance_units=5.0,
    )
    assert {c.client_order_id for c in result.conflicts} == {cid(0), cid(1)}
    assert result.status_changes == () and result.new_fills == () and result.rejections == ()
    assert result.correction is None


def test_position_is_corrected_to_the_balance_after_the_planned_fills() -> None:
    result = plan(
        db_orders=[db_order(0, OrderStatus.UNKNOWN)],
        exchange_orders=[ex_order(0, "4")],
        trades={"4": [trade("8", "4")]},
        position=PositionState(units=2.0),
        balance_units=1.001,
    )
    assert result.correction is not None
    assert (result.correction.units_before, result.correction.units_after) == (pytest.approx(2.001), 1.001)


def test_orders_needing_trades_are_those_with_fills_the_database_lacks() -> None:
    rows = {cid(0): db_order(0, OrderStatus.FILLED, fills_total=0.001, exchange_id="1")}
    orders = [ex_order(0, "1"), ex_order(1, "2"), ex_order(2, "3", status=OrderStatus.OPEN, filled=0.0)]
    assert orders_needing_trades(rows, orders) == ["2"]


# ----- against the exchange ------------------------------------------------------------------------------------------


def reconcile_twice(server: LocalExchangeServer, sessions: sessionmaker[Session]) -> tuple[ReconcileReport, ...]:
    async def run() -> tuple[ReconcileReport, ...]:
        broker: CcxtBroker = build_broker(server.url, sessions, PREFIX, unknown_grace_ms=2_000)
        try:
            return await broker.start(), await broker.reconcile()
        finally:
            await broker.close()

    return asyncio.run(run())


def books_match(server: LocalExchangeServer, sessions: sessionmaker[Session]) -> list[str]:
    client = sync_client(server.url)
    balance = client.fetch_balance()
    return compare_books(
        sessions,
        PREFIX,
        client.fetch_orders("BTC/USDT", None, 1000),
        client.fetch_my_trades("BTC/USDT", None, 1000),
        float((balance.get("BTC") or {}).get("total") or 0.0),
    ).problems


def intent(session: Session, seq: int, *, age: timedelta) -> str:
    order = record_intent(
        session,
        client_order_id=cid(seq),
        market=MARKET,
        symbol="BTC/USDT",
        side="buy",
        order_type="market",
        amount=0.001,
        candle_ts=T0,
    )
    order.created_at = datetime.now(UTC) - age
    return order.client_order_id


def place_directly(server: LocalExchangeServer, client_id: str, amount: float = 0.001) -> dict[str, Any]:
    order: dict[str, Any] = sync_client(server.url).create_order(
        "BTC/USDT", "market", "buy", amount, None, {"newClientOrderId": client_id}
    )
    return order


def reconcile_actions(sessions: sessionmaker[Session]) -> list[str]:
    """The actions of the "reconcile" ledger entries, oldest first."""
    with sessions() as session:
        rows = session.scalars(
            select(LedgerEntry.payload).where(LedgerEntry.kind == "reconcile").order_by(LedgerEntry.seq)
        )
        return [json.loads(row)["action"] for row in rows]


def test_adopts_an_order_placed_directly_on_the_exchange_with_our_prefix(
    exchange_server: LocalExchangeServer, worker_db: sessionmaker[Session]
) -> None:
    placed = place_directly(exchange_server, cid(0, T0 + 3_600_000))
    place_directly(exchange_server, "someone-else-1")

    first, second = reconcile_twice(exchange_server, worker_db)

    assert first.adopted_orders == [placed["clientOrderId"]] and first.new_fills == 1
    assert not second.changed
    with worker_db() as session:
        row = get_order(session, placed["clientOrderId"])
        assert row is not None
        assert (row.status, row.candle_ts, row.exchange_order_id) == ("FILLED", T0 + 3_600_000, placed["id"])
        assert len(fills_for(session, row)) == 1
    assert reconcile_actions(worker_db) == ["adopt", "position_correction"]  # the other order's BTC is ours too
    assert books_match(exchange_server, worker_db) == []


def test_resolves_pending_rows_never_sent_and_unknown_rows_that_were(
    exchange_server: LocalExchangeServer, worker_db: sessionmaker[Session]
) -> None:
    with worker_db.begin() as session:
        never_sent = intent(session, 0, age=timedelta(seconds=10))
        just_written = intent(session, 1, age=timedelta(0))
        was_sent = intent(session, 2, age=timedelta(seconds=10))
        apply_exchange_update(session, stored(session, was_sent), status=OrderStatus.UNKNOWN)
    place_directly(exchange_server, was_sent)

    first, _ = reconcile_twice(exchange_server, worker_db)

    assert sorted(first.resolved_orders) == sorted([never_sent, was_sent])
    assert first.unresolved_orders == [just_written]  # could still be in flight: left alone within the grace period
    with worker_db() as session:
        statuses = {c: stored(session, c).status for c in (never_sent, just_written, was_sent)}
        assert stored(session, never_sent).last_error == NOT_FOUND_REASON
    assert statuses == {never_sent: "REJECTED", just_written: "PENDING_SUBMIT", was_sent: "FILLED"}


def test_finishes_an_order_whose_fill_was_stored_but_not_its_status(
    exchange_server: LocalExchangeServer, worker_db: sessionmaker[Session]
) -> None:
    """The state a crash between the first fill and the final status leaves: ACKNOWLEDGED with its fill."""
    view = order_from_ccxt(place_directly(exchange_server, cid(0)))
    with worker_db.begin() as session:
        row = get_order(session, intent(session, 0, age=timedelta(seconds=10)))
        assert row is not None
        store_exchange_state(session, row, view, status=OrderStatus.ACKNOWLEDGED, ts_ms=NOW, source="test")
        for t in view.trades:
            store_fill(session, row, t, ts_ms=NOW, source="test")

    first, second = reconcile_twice(exchange_server, worker_db)

    assert first.resolved_orders == [cid(0)] and first.new_fills == 0 and not second.changed
    assert books_match(exchange_server, worker_db) == []


def test_corrects_a_wrong_position_row_to_the_exchange_balance(
    exchange_server: LocalExchangeServer, worker_db: sessionmaker[Session]
) -> None:
    with worker_db.begin() as session:
        upsert_position(session, MARKET, units=5.0, average_price=30_000.0, realized_pnl=12.5)

    first, second = reconcile_twice(exchange_server, worker_db)

    assert first.position_corrections == [f"{MARKET}: 5.0 -> 0.0"] and not second.changed
    with worker_db() as session:
        position = get_position(session, MARKET)
        assert position is not None
        assert (position.units, position.average_price, position.realized_pnl) == (0.0, None, 12.5)
        assert ledger.verify(session).ok
    assert reconcile_actions(worker_db) == ["position_correction"]


def test_a_rejected_row_the_exchange_filled_is_reported_as_a_conflict(
    exchange_server: LocalExchangeServer, worker_db: sessionmaker[Session]
) -> None:
    with worker_db.begin() as session:
        row = stored(session, intent(session, 0, age=timedelta(seconds=10)))
        apply_exchange_update(session, row, status=OrderStatus.REJECTED, error="test")
    place_directly(exchange_server, cid(0))

    first, _ = reconcile_twice(exchange_server, worker_db)

    assert len(first.conflicts) == 1 and first.conflicts[0].startswith(cid(0))
    assert first.position_corrections == []  # nothing is corrected while a conflict is open
    with worker_db() as session:
        assert stored(session, cid(0)).status == "REJECTED"
