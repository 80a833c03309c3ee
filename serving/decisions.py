"""What the worker writes and sends for one decision: its record, its sized and risk-checked order, the equity after.

Every decision is committed (model version, feature hash, inputs) with its ledger entry before any order; the
order is sized from the broker's holdings by the backtest's rules (`cta.execution`), checked against the risk
limits, then handed to the broker. After the decision, the equity snapshot may halt trading (drawdown, daily loss).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from cta.config import Settings
from cta.execution import Execution, liquidation_equity, order_units
from serving import ledger
from serving.control import ControlSnapshot, TradingState, read_trading_state, set_trading_state
from serving.db import Prepared
from serving.market_state import MarketState
from serving.models import Decision, EquitySnapshot, table_of, utc_now
from serving.risk import RiskState, check_order, should_halt
from serving.target import ORDER_UNDER_WAY, OrderResult
from serving.types import Broker, OrderRequest

log = logging.getLogger(__name__)

# An order for less than this (quote currency) is not sent: the holdings already are the target.
DUST_NOTIONAL = 1e-6


@dataclass(frozen=True)
class DecisionRecord:
    market: str
    candle_ts: int
    prediction: float | None
    target: float
    delta: float
    order: str | None  # client order id of the order sent, if any
    reason: str
    latency_s: float  # closed candle in hand -> order sent (or decision recorded when there is no order)
    venue_s: float = 0.0  # before that: the paper venue filling the previous order at this candle's open
    answer_s: float = 0.0  # after it: order sent -> the venue's answer recorded (0 when the broker records as it sends)


def record_decision(
    sessions: sessionmaker[Session],
    state: MarketState,
    *,
    ts: int,
    model: Any,
    inputs: dict[str, float] | None,
    prediction: float | None,
    target: float,
    delta: float,
    reason: str,
) -> tuple[int, ControlSnapshot]:
    """Commit the decision and its ledger entry (before any order); returns its id and the kill switch,
    read in the same transaction."""
    payload = json.dumps(inputs or {}, sort_keys=True)
    row = {
        "market": str(state.market),
        "candle_ts": ts,
        "model_name": model.name if model else "",
        "model_version": model.version if model else "",
        "feature_hash": hashlib.sha256(payload.encode()).hexdigest()[:16],
        "inputs": payload,
        "prediction": prediction if prediction is None or np.isfinite(prediction) else None,
        "target": target,
        "delta": delta,
        "reason": reason or (ORDER_UNDER_WAY if delta else "hold"),
        "created_at": utc_now(),
    }
    with sessions() as session:
        # a prepared INSERT on the transaction's cursor: no ORM object to build, flush and track on this path
        decision_id = int(_INSERT_DECISION.execute(session.connection(), row, insert=True).fetchone()[0])
        ledger.append(
            session,
            "decision",
            {
                "decision_id": decision_id,
                "market": row["market"],
                "candle_ts": ts,
                "model": f"{row['model_name']}@{row['model_version']}",
                "feature_hash": row["feature_hash"],
                "prediction": row["prediction"],
                "target": target,
                "delta": delta,
            },
            ts + state.bar_ms,
        )
        control = read_trading_state(session)
        session.commit()
        return decision_id, control


_DECISIONS = table_of(Decision)
_INSERT_DECISION = Prepared(_DECISIONS.insert().returning(_DECISIONS.c.id))  # compiled once
_INSERT_SNAPSHOT = table_of(EquitySnapshot).insert()


async def place_order(
    broker: Broker,
    settings: Settings,
    execution: Execution,
    state: MarketState,
    *,
    ts: int,
    close: float,
    target: float,
    decision_id: int,
    model: Any,
    now: int,
    control: ControlSnapshot,
    metrics: Any | None = None,
) -> OrderResult:
    """Size, risk-check and send the order. `control` is the kill switch as read in the decision's transaction,
    just before."""
    holdings = await broker.holdings(state.market)
    equity = holdings.cash + holdings.units * close
    buffer = 0.0 if broker.sizes_at_fill else settings.serving.cash_buffer
    wanted = order_units(
        target * execution.position_fraction * (1.0 - buffer),
        liquidation_equity(holdings.cash, holdings.units, close, execution.slippage, execution.fee_rate),
        close,
        execution.slippage,
        execution.fee_rate,
    )
    amount = wanted - holdings.units  # the holdings are the truth: the order's side is where they must move
    sendable = broker.venue_amount(state.market, abs(amount), close) if abs(amount) * close >= DUST_NOTIONAL else 0.0
    if sendable <= 0.0:  # e.g. a sell wanted after an entry that never executed, or a step below the venue's minimum
        return OrderResult(None, "nothing to trade: the holdings already are the target", at_target=True)
    request = OrderRequest(
        market=state.market,
        side="buy" if amount > 0 else "sell",
        amount=sendable,
        target=target,
        candle_ts=ts,
        reference_price=close,
        decision_id=decision_id,
    )
    risk_state = RiskState(
        trading_state=TradingState(control.state),
        equity=equity,
        day_open_equity=state.day_open_equity or equity,
        peak_equity=max(state.peak_equity, equity),
        position_units=holdings.units,
        price=close,
        candle_age_ms=max(0, now - (ts + state.bar_ms)),
        features_age_ms=max(0, now - (ts + state.bar_ms)),
        bar_ms=state.bar_ms,
        model_age_days=model.age_days(time.time() * 1000) if model is not None else None,
        max_model_age_days=settings.serving.max_model_age_days,
    )
    verdict = check_order(request, risk_state, settings.serving.risk)
    if not verdict.allowed:
        log.warning("%s: order blocked by risk: %s", state.market, "; ".join(verdict.reasons))
        return OrderResult(None, "blocked: " + "; ".join(verdict.reasons))
    outcome = await broker.submit(request)
    if metrics:
        metrics.order(str(state.market), outcome.status.value)
    return OrderResult(
        outcome.client_order_id,
        f"order {outcome.client_order_id} {outcome.status.value}",
        outcome.sent_at,
        outcome.status,
        outcome.filled,
    )


async def snapshot_equity(
    broker: Broker,
    sessions: sessionmaker[Session],
    settings: Settings,
    state: MarketState,
    *,
    ts: int,
    close: float,
    metrics: Any | None = None,
) -> None:
    """Record the market's equity after the candle's decision and halt trading when a risk limit says so."""
    holdings = await broker.holdings(state.market)
    equity = holdings.cash + holdings.units * close
    day = ts // 86_400_000
    if day != state.day:
        state.day, state.day_open_equity = day, equity
    state.peak_equity = max(state.peak_equity, equity)
    with sessions() as session:  # one prepared INSERT and the kill switch's read, in one transaction
        session.connection().execute(
            _INSERT_SNAPSHOT,
            {
                "ts": ts + state.bar_ms,
                "market": str(state.market),
                "cash": holdings.cash,
                "position_value": holdings.units * close,
                "equity": equity,
                "price": close,
            },
        )
        control = read_trading_state(session)
        session.commit()
    if metrics:
        metrics.equity(str(state.market), equity)
    halt = should_halt(
        RiskState(
            trading_state=TradingState(control.state),
            equity=equity,
            day_open_equity=state.day_open_equity,
            peak_equity=state.peak_equity,
            position_units=holdings.units,
            price=close,
            candle_age_ms=0,
            features_age_ms=0,
            bar_ms=state.bar_ms,
            model_age_days=0.0,
            max_model_age_days=settings.serving.max_model_age_days,
        ),
        settings.serving.risk,
    )
    if halt:
        set_trading_state(sessions, TradingState.HALTED, halt, "risk")
        log.error("%s: trading HALTED: %s", state.market, halt)
