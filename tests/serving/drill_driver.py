"""Crash-drill driver: one worker process placing N orders through CcxtBroker, resuming from the database.

    python -m tests.serving.drill_driver --db sqlite:///drill.db --url http://127.0.0.1:PORT --orders N \
        [--crash-at POINT [--crash-on K]]

`--crash-at <point>` installs the drill checkpoint (`tests.serving.drill_hook`) in the broker: the process SIGKILLs
itself at that crash point (see `serving.types.CrashPoint`), only for order K when `--crash-on K` is given.

Order k (0-based) is the k-th intended order: DRILL_MARKET at candle DRILL_T0 + k hours, a buy when k is even and a
sell when odd, of `--amount` base units; its client order id is deterministic in (candle, seq). On start the driver
reconciles until no row of its prefix is in flight, then walks k = 0..N-1: an order with a row that is not REJECTED
is done and is not sent again; one whose rows are all REJECTED (the crash came before sending, so the exchange never
saw it) is placed again under the next seq. After the last order it reconciles until every row is terminal and
prints a JSON summary on stdout. The tests import `build_broker` from here too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cta.clock import SystemClock
from cta.config import ExchangeSettings, Secrets
from cta.exchange import ExchangeAdapter, RetryPolicy
from cta.lake import Market
from serving import ledger
from serving.ccxt_broker import CcxtBroker
from serving.client_ids import is_ours, parse_client_order_id
from serving.db import make_engine, session_factory, upgrade
from serving.exchange_reports import from_ccxt_status
from serving.models import Order
from serving.orders import OrderStatus, is_terminal
from serving.positions import POSITION_TOLERANCE
from serving.repository import fills_for, get_position, open_orders, orders_by_prefix
from serving.types import CrashPoint, OrderCheckpoint, OrderRequest, ReconcileReport, no_checkpoint
from tests.serving.drill_hook import sigkill_at

DRILL_MARKET = Market("binance", "BTC/USDT", "1h")
DRILL_T0 = 1_654_041_600_000
HOUR_MS = 3_600_000
MAX_ATTEMPTS = 3
FAST_RETRY = RetryPolicy(max_retries=6, backoff_base_s=0.02, backoff_max_s=0.2)


def build_broker(
    url: str,
    sessions: sessionmaker[Session],
    prefix: str,
    *,
    markets: Sequence[Market] = (DRILL_MARKET,),
    api_key: str = "test-key",
    api_secret: str = "test-secret",
    timeout_ms: int = 2_000,
    recv_window_ms: int = 500,
    clock_margin_ms: int = 250,
    unknown_grace_ms: int | None = None,
    retry: RetryPolicy = FAST_RETRY,
    checkpoint: OrderCheckpoint = no_checkpoint,
) -> CcxtBroker:
    """A CcxtBroker on the exchange at `url` through the real adapter, with windows short enough for tests."""
    venue = ExchangeAdapter(
        ExchangeSettings(id="binance", api_url=url, rate_limit_share=100, timeout_ms=timeout_ms),
        Secrets.model_validate({"api_key": api_key, "api_secret": api_secret}),
        retry=retry,
    )
    return CcxtBroker(
        venue,
        sessions,
        prefix,
        SystemClock(),
        markets,
        recv_window_ms=recv_window_ms,
        clock_margin_ms=clock_margin_ms,
        unknown_grace_ms=unknown_grace_ms,
        checkpoint=checkpoint,
    )


def order_candle_ts(index: int) -> int:
    return DRILL_T0 + index * HOUR_MS


def order_request(index: int, seq: int, amount: float) -> OrderRequest:
    """The driver's order `index` (attempt `seq`)."""
    return OrderRequest(
        market=DRILL_MARKET,
        side="buy" if index % 2 == 0 else "sell",
        amount=amount,
        target=0.0,
        candle_ts=order_candle_ts(index),
        reference_price=30_000.0,
        seq=seq,
    )


def live_rows(sessions: sessionmaker[Session], prefix: str) -> list[str]:
    with sessions() as session:
        return [o.client_order_id for o in open_orders(session) if is_ours(o.client_order_id, prefix)]


async def settle(broker: CcxtBroker, sessions: sessionmaker[Session], timeout_s: float = 30.0) -> ReconcileReport:
    """Reconcile until no row of the broker's prefix is in flight (rows within the grace period need time)."""
    deadline = time.monotonic() + timeout_s
    while True:
        report = await broker.reconcile()
        live = live_rows(sessions, broker.prefix)
        if not live:
            return report
        if time.monotonic() > deadline:
            raise RuntimeError(f"orders still in flight after {timeout_s}s: {live}")
        await asyncio.sleep(0.1)


def statuses_of(session: Session, prefix: str, index: int) -> list[OrderStatus]:
    rows = session.scalars(
        select(Order).where(Order.market == str(DRILL_MARKET), Order.candle_ts == order_candle_ts(index))
    )
    return [OrderStatus(o.status) for o in rows if is_ours(o.client_order_id, prefix)]


@dataclass
class BookCheck:
    """How the database's books compare with the exchange's, for one prefix; `problems` empty when they agree."""

    exchange_orders: int = 0
    db_rows: int = 0
    duplicates: int = 0  # extra exchange orders for one intended order
    lost: int = 0  # intended orders with no exchange order, plus exchange orders with no row
    problems: list[str] = field(default_factory=list)


def compare_books(
    sessions: sessionmaker[Session],
    prefix: str,
    exchange_orders: Sequence[Mapping[str, Any]],
    exchange_trades: Sequence[Mapping[str, Any]],
    balance_units: float | None,
    *,
    market: Market = DRILL_MARKET,
    intended: Sequence[int] | None = None,
) -> BookCheck:
    """Check every invariant a drill promises, from ccxt's view of the exchange (orders, trades, base balance).

    Each exchange order with our prefix has exactly one row, with its status, fill amounts and trade ids; every row is
    terminal; a row that is not REJECTED is on the exchange; the position equals the balance; the ledger verifies.
    With `intended` (candle times), each intended order is on the exchange exactly once and nothing else is.
    """
    ours = [o for o in exchange_orders if is_ours(str(o.get("clientOrderId") or ""), prefix)]
    trades_by_order: dict[str, set[str]] = {}
    for trade in exchange_trades:
        trades_by_order.setdefault(str(trade["order"]), set()).add(str(trade["id"]))
    check = BookCheck(exchange_orders=len(ours))
    with sessions() as session:
        rows = {row.client_order_id: row for row in orders_by_prefix(session, prefix + "-", str(market))}
        check.db_rows = len(rows)
        for raw in ours:
            cid = str(raw["clientOrderId"])
            row = rows.get(cid)
            if row is None:
                check.lost += 1
                check.problems.append(f"exchange order {cid} has no row")
                continue
            status = from_ccxt_status(raw["status"], float(raw["filled"]), float(raw["amount"]))
            if row.status != status:
                check.problems.append(f"{cid}: row {row.status}, exchange {status}")
            fills = fills_for(session, row)
            if abs(sum(f.amount for f in fills) - float(raw["filled"])) > POSITION_TOLERANCE:
                check.problems.append(f"{cid}: fills {sum(f.amount for f in fills)}, exchange filled {raw['filled']}")
            if {f.exchange_trade_id for f in fills} != trades_by_order.get(str(raw["id"]), set()):
                check.problems.append(f"{cid}: trade ids differ from the exchange's")
        on_exchange = {str(o["clientOrderId"]) for o in ours}
        for cid, row in rows.items():
            if not is_terminal(row.status):
                check.problems.append(f"{cid}: still {row.status}")
            if row.status != OrderStatus.REJECTED and cid not in on_exchange:
                check.problems.append(f"{cid}: {row.status} here but unknown to the exchange")
        position = get_position(session, str(market))
        units = 0.0 if position is None else position.units
        if balance_units is not None and abs(units - balance_units) > POSITION_TOLERANCE:
            check.problems.append(f"position {units!r} != exchange balance {balance_units!r}")
        verified = ledger.verify(session)
        if not verified.ok:
            check.problems.append(f"ledger: {verified.problem}")
    if intended is not None:
        _check_intended(check, on_exchange, intended)
    return check


def _check_intended(check: BookCheck, on_exchange: set[str], intended: Sequence[int]) -> None:
    per_candle: dict[int, int] = dict.fromkeys(intended, 0)
    for cid in on_exchange:
        parts = parse_client_order_id(cid)
        if parts is None or parts.candle_ts not in per_candle:
            check.problems.append(f"exchange order {cid} was never intended")
            continue
        per_candle[parts.candle_ts] += 1
    for candle_ts, count in per_candle.items():
        if count == 0:
            check.lost += 1
            check.problems.append(f"intended order at {candle_ts} is not on the exchange")
        elif count > 1:
            check.duplicates += count - 1
            check.problems.append(f"intended order at {candle_ts} is on the exchange {count} times")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    engine = make_engine(args.db)
    upgrade(engine)
    sessions = session_factory(engine)
    crash_on: int = args.crash_on
    checkpoint: OrderCheckpoint = no_checkpoint
    if args.crash_at is not None:
        checkpoint = sigkill_at(
            CrashPoint(args.crash_at),
            lambda request: crash_on < 0 or request.candle_ts == order_candle_ts(crash_on),
        )
    broker = build_broker(
        args.url,
        sessions,
        args.prefix,
        recv_window_ms=args.recv_window_ms,
        clock_margin_ms=args.clock_margin_ms,
        checkpoint=checkpoint,
    )
    sent = 0
    try:
        await broker.start()
        await settle(broker, sessions)
        for index in range(args.orders):
            for _ in range(MAX_ATTEMPTS):
                with sessions() as session:
                    statuses = statuses_of(session, args.prefix, index)
                if any(status is not OrderStatus.REJECTED for status in statuses):
                    break
                outcome = await broker.submit(order_request(index, len(statuses), args.amount))
                sent += 1
                if outcome.status not in {OrderStatus.FILLED, OrderStatus.REJECTED}:
                    await settle(broker, sessions)
            else:
                raise RuntimeError(f"order {index} was rejected {MAX_ATTEMPTS} times")
        report = await settle(broker, sessions)
    finally:
        await broker.close()
        engine.dispose()
    return {"orders": args.orders, "sent_by_this_run": sent, "last_reconcile_changed": report.changed}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--db", required=True, help="SQLAlchemy URL of the worker database")
    parser.add_argument("--url", required=True, help="base URL of the local exchange")
    parser.add_argument("--orders", type=int, required=True, help="how many orders the sequence has")
    parser.add_argument("--prefix", default="drill")
    parser.add_argument("--amount", type=float, default=0.001)
    parser.add_argument("--recv-window-ms", type=int, default=500)
    parser.add_argument("--clock-margin-ms", type=int, default=250)
    parser.add_argument("--crash-at", choices=[p.value for p in CrashPoint], help="SIGKILL at this crash point")
    parser.add_argument("--crash-on", type=int, default=-1, help="only for this order index (default: every order)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    summary = asyncio.run(run(parse_args(argv)))
    print(json.dumps(summary))
    return 0


def main_in_child(argv: Sequence[str], output_path: str) -> None:
    """`main` in a process forked from a server that has already imported this module (multiprocessing's
    forkserver): the same fresh process per run as `python -m tests.serving.drill_driver`, without paying the
    imports each time. stdout and stderr go to `output_path`."""
    descriptor = os.open(output_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    raise SystemExit(main(list(argv)))


if __name__ == "__main__":
    sys.exit(main())
