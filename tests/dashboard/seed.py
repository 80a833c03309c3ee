"""A trading history written straight into a migrated serving database: the dashboard's tests and its benchmark
(10,000 orders and 50,000 decisions) read it through the real API. Bulk inserts, so 50,000 rows take a second or
two; ledger entries go through `serving.ledger.append` (the real chain and Merkle tree), for the first
`ledger_entries` orders only."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from serving import ledger
from serving.models import Decision, EquitySnapshot, Fill, Order, Position

H = 3_600_000
T0 = 1_661_990_400_000  # 2022-09-01T00:00:00Z


@dataclass(frozen=True)
class Seeded:
    markets: tuple[str, ...]
    decisions: int
    orders: int
    fills: int
    last_ts: int


def seed_history(
    sessions: sessionmaker[Session],
    markets: tuple[str, ...] = ("binance:BTC/USDT:1h", "binance:ETH/USDT:1h"),
    *,
    decisions: int = 200,
    orders: int = 40,
    ledger_entries: int = 40,
    start_ts: int = T0,
    seed: int = 7,
) -> Seeded:
    """`decisions` decisions (one per candle, round-robin over `markets`), the first `orders` of the decisions that
    change the target with an order each, filled once; an equity snapshot after every decision."""
    rng = random.Random(seed)
    per_market = math.ceil(decisions / len(markets))
    decision_rows, equity_rows = [], []
    price = {m: 20_000.0 if "BTC" in m else 1_500.0 for m in markets}
    equity = dict.fromkeys(markets, 10_000.0)
    order_every = max(1, decisions // max(orders, 1))
    wanted_orders: list[tuple[int, str, int, float, float]] = []  # (decision index, market, ts, target, price)
    index = 0
    for bar in range(per_market):
        ts = start_ts + bar * H
        for market in markets:
            if index >= decisions:
                break
            price[market] *= 1 + rng.gauss(0, 0.004)
            prediction = rng.uniform(-1, 1)
            target = 1.0 if prediction > 0 else 0.0
            trade = index % order_every == 0 and len(wanted_orders) < orders
            equity[market] *= 1 + rng.gauss(0.0001, 0.003)
            decision_rows.append(
                {
                    "market": market,
                    "candle_ts": ts,
                    "model_name": "cta-" + market.split(":")[1].replace("/", "-").lower(),
                    "model_version": "3",
                    "feature_hash": f"{rng.getrandbits(64):016x}",
                    "inputs": "{}",
                    "prediction": prediction,
                    "target": target,
                    "delta": 1.0 if trade else 0.0,
                    "reason": "order sent" if trade else "hold",
                    "created_at": datetime.fromtimestamp((ts + H) / 1000, UTC),
                }
            )
            equity_rows.append(
                {
                    "ts": ts + H,
                    "market": market,
                    "cash": equity[market] / 2,
                    "position_value": equity[market] / 2,
                    "equity": equity[market],
                    "price": price[market],
                }
            )
            if trade:
                wanted_orders.append((index, market, ts, target, price[market]))
            index += 1
    with sessions.begin() as session:
        session.execute(insert(Decision), decision_rows)
        session.execute(insert(EquitySnapshot), equity_rows)
    with sessions.begin() as session:
        ids = [d.id for d in session.query(Decision.id).order_by(Decision.id)]
        order_rows, fill_rows = [], []
        for n, (i, market, ts, _target, fill_price) in enumerate(wanted_orders):
            side = "buy" if n % 2 == 0 else "sell"
            coid = f"cta-seed-{n:08d}"
            at = datetime.fromtimestamp((ts + H) / 1000, UTC)
            order_rows.append(
                {
                    "client_order_id": coid,
                    "market": market,
                    "symbol": market.split(":")[1],
                    "side": side,
                    "type": "market",
                    "amount": 0.1,
                    "limit_price": None,
                    "status": "FILLED",
                    "exchange_order_id": f"x{n}",
                    "filled": 0.1,
                    "average_price": fill_price,
                    "fee_cost": fill_price * 0.1 * 0.001,
                    "fee_currency": "USDT",
                    "decision_id": ids[i],
                    "candle_ts": ts,
                    "created_at": at,
                    "updated_at": at,
                    "last_error": None,
                }
            )
            fill_rows.append(
                {
                    "order_id": coid,
                    "client_order_id": coid,
                    "exchange_trade_id": f"t{n}",
                    "market": market,
                    "price": fill_price,
                    "amount": 0.1,
                    "fee_cost": fill_price * 0.1 * 0.001,
                    "fee_currency": "USDT",
                    "ts": ts + H,
                }
            )
        if order_rows:
            session.execute(insert(Order), order_rows)
            order_ids = dict(session.query(Order.client_order_id, Order.id))
            for fill in fill_rows:
                fill["order_id"] = order_ids[fill["order_id"]]
            session.execute(insert(Fill), fill_rows)
        for market in markets:
            session.add(Position(market=market, units=0.1, average_price=price[market], realized_pnl=12.5))
    for row in order_rows[:ledger_entries]:
        with sessions.begin() as session:
            ledger.append(
                session,
                "order",
                {"client_order_id": row["client_order_id"], "market": row["market"], "side": row["side"]},
                int(row["created_at"].timestamp() * 1000),
            )
    return Seeded(markets, len(decision_rows), len(order_rows), len(fill_rows), start_ts + (per_market - 1) * H)
