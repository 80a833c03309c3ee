"""Cancelling our open orders on a ccxt venue (the kill switch's cancel_open), recording each cancellation."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import ccxt

from serving.ccxt_orders import VenueOrders
from serving.client_ids import is_ours
from serving.exchange_reports import ExchangeOrder, order_from_ccxt, parse_orders
from serving.orders import OrderStatus, is_live
from serving.repository import get_order

log = logging.getLogger(__name__)


async def cancel_market(orders: VenueOrders, symbol: str, prefix: str) -> list[str]:
    """Cancel our open orders on `symbol` and record each; the client order ids cancelled."""
    try:
        listed = await orders.venue.read(f"fetch_open_orders {symbol}", lambda: orders.client.fetch_open_orders(symbol))
    except Exception as error:  # noqa: BLE001 - the kill switch never crashes; the next call tries again
        log.warning("cancel: open orders of %s unreadable (%s: %s)", symbol, type(error).__name__, error)
        return []
    cancelled: list[str] = []
    for view in parse_orders(listed):
        cid = view.client_order_id
        if not is_ours(cid, prefix) or not is_live(view.status):
            continue  # never touch an order that is not ours
        try:
            answer = await _cancel_order(orders, view)
            if answer is None:  # unknown to the exchange as an open order: it filled or was cancelled meanwhile
                answer = await orders.fetch_by_client_id(symbol, cid)
        except Exception as error:  # noqa: BLE001 - left open; the next call or reconciliation deals with it
            log.warning("cancel: order %s not cancelled (%s: %s)", cid, type(error).__name__, error)
            continue
        if answer is None:
            log.warning("cancel: order %s vanished from the exchange; left for reconciliation", cid)
            continue
        if answer.status is OrderStatus.CANCELLED:
            cancelled.append(cid)
        await _record_cancel(orders, cid, answer)
    return cancelled


async def _cancel_order(orders: VenueOrders, view: ExchangeOrder) -> ExchangeOrder | None:
    """Cancel one order by exchange id: its state after the cancel, None when the exchange says it is not open.

    The answer names the order by the cancel request's client id (Binance), so ours is put back."""

    async def cancel() -> dict[str, Any] | None:
        try:
            answer: dict[str, Any] = await orders.client.cancel_order(view.exchange_order_id, view.symbol)
        except ccxt.OrderNotFound:
            return None
        return answer

    raw = await orders.venue.read(f"cancel_order {view.client_order_id}", cancel)
    return None if raw is None else dataclasses.replace(order_from_ccxt(raw), client_order_id=view.client_order_id)


async def _record_cancel(orders: VenueOrders, cid: str, view: ExchangeOrder) -> None:
    """Record the exchange's state of an order after a cancel (fills first); a row that does not exist yet is
    adopted by the next reconciliation."""
    with orders.sessions() as session:
        known = get_order(session, cid) is not None
    if not known:
        log.warning("cancel: order %s has no row here; reconciliation will adopt it", cid)
        return
    try:
        await orders.record(None, cid, view, source="kill_switch")
    except Exception as error:  # noqa: BLE001 - the exchange state stands; reconciliation records it
        log.warning("cancel: recording %s failed (%s: %s); left for reconciliation", cid, type(error).__name__, error)
