"""One reconciliation pass of a market on a ccxt venue: what to fetch, then the plan, written to the database."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from cta.lake import Market
from serving.ccxt_orders import VenueOrders
from serving.client_ids import is_ours
from serving.exchange_reports import (
    ExchangeOrder,
    ExchangeTrade,
    balance_amount,
    parse_orders,
    split_symbol,
    trades_complete,
)
from serving.orders import is_live
from serving.reconcile import apply_plan, load_snapshot
from serving.reconcile_plan import DbOrder, orders_needing_trades, plan_reconciliation
from serving.types import ReconcileReport

log = logging.getLogger(__name__)


async def reconcile_market(
    orders: VenueOrders, market: Market, balance: Mapping[str, Any], *, prefix: str, grace_ms: int
) -> ReconcileReport:
    """Bring `market`'s rows with `prefix` to what the exchange says (its recent and open orders, a lookup for every
    live row it did not list, the trades the database lacks, the base balance of `balance`)."""
    symbol, key = market.symbol, str(market)
    base, quote = split_symbol(symbol)
    venue, client = orders.venue, orders.client
    listed = [
        *await venue.read(
            f"fetch_orders {symbol}", lambda: client.fetch_orders(symbol, None, orders.recent_orders_limit)
        ),
        *await venue.read(f"fetch_open_orders {symbol}", lambda: client.fetch_open_orders(symbol)),
    ]
    ours = {view.client_order_id: view for view in parse_orders(listed) if is_ours(view.client_order_id, prefix)}
    with orders.sessions() as session:
        snapshot = load_snapshot(session, key, prefix, ours.keys())
    absent: set[str] = set()
    for row in snapshot.orders:
        if not is_live(row.status) or row.client_order_id in ours:
            continue
        try:
            found = await orders.fetch_by_client_id(symbol, row.client_order_id)
        except Exception as error:  # noqa: BLE001 - the row stays unresolved until a later pass
            log.warning("reconcile: lookup of %s failed (%s)", row.client_order_id, error)
            continue
        if found is None:
            absent.add(row.client_order_id)
        else:
            ours[found.client_order_id] = found
    trades = await _trades_for(orders, snapshot.orders, ours)
    plan = plan_reconciliation(
        market=key,
        prefix=prefix,
        db_orders=snapshot.orders,
        exchange_orders=list(ours.values()),
        absent=absent,
        trades=trades,
        known_trade_ids=snapshot.known_trade_ids,
        position=snapshot.position,
        balance_units=balance_amount(balance, base, "total"),
        base=base,
        quote=quote,
        now_ms=orders.clock.now_ms(),
        grace_ms=grace_ms,
    )
    if plan.empty:
        return ReconcileReport(unresolved_orders=list(plan.unresolved))
    with orders.sessions.begin() as session:
        return apply_plan(session, plan, ts_ms=orders.clock.now_ms())


async def _trades_for(
    orders: VenueOrders, rows: Sequence[DbOrder], ours: Mapping[str, ExchangeOrder]
) -> dict[str, list[ExchangeTrade]]:
    """The trades of every order whose fills the database lacks; an order whose trades cannot be read is left
    out (the plan then leaves it unresolved)."""
    by_exchange_id = {view.exchange_order_id: view for view in ours.values()}
    trades: dict[str, list[ExchangeTrade]] = {}
    for exchange_id in orders_needing_trades({row.client_order_id: row for row in rows}, ours.values()):
        view = by_exchange_id[exchange_id]
        if trades_complete(view, view.trades):
            trades[exchange_id] = list(view.trades)
            continue
        try:
            trades[exchange_id] = await orders.order_trades(view)
        except Exception as error:  # noqa: BLE001 - left for a later pass
            log.warning("reconcile: trades of %s unreadable (%s)", view.client_order_id, error)
    return trades


def orders_moved(report: ReconcileReport) -> bool:
    """Whether a reconciliation found orders of ours that moved (fills, adoptions, resolutions) or may still move."""
    return bool(
        report.new_fills
        or report.adopted_orders
        or report.resolved_orders
        or report.unresolved_orders
        or report.conflicts
    )
