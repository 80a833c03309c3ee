"""The serving worker: for each configured market, on each newly CLOSED candle:
fetch (ccxt) -> validate -> features (the one feature function) -> push to the online store -> read
back through Feast -> champion.predict -> decide() -> risk checks -> broker.

Every decision is recorded (model version, feature hash, inputs) before any order; the broker records
each order's intent before sending it. The clock is injected: the market clock of the venue, or the
replay clock of the local exchange in the demo and tests.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cta.config import Settings
from cta.decide import decide
from cta.errors import CTAError
from cta.execution import Execution, liquidation_equity, order_units, warm_execution_rules
from cta.lake import Market
from cta.timeframes import timeframe_ms
from cta.validation import candle_problem
from features.compute import compute_features, compute_newest, history_needed
from features.registry import feature_names
from serving import ledger
from serving.control import (
    ControlSnapshot,
    acknowledge_cancel_open,
    read_trading_state,
    set_trading_state,
    trading_state,
)
from serving.db import checkpoint
from serving.models import Decision, EquitySnapshot, Order
from serving.models_manager import ModelManager
from serving.orders import OrderStatus, TradingState, get_order, never_executed
from serving.paper import PaperBroker
from serving.reconcile import UNRESOLVABLE
from serving.risk import RiskState, check_order, should_halt
from serving.types import Broker, OrderRequest

log = logging.getLogger(__name__)

CANDLE_COLUMNS = ["ts", "open", "high", "low", "close", "volume"]


@dataclass
class MarketState:
    """What the worker keeps per market between candles."""

    market: Market
    bar_ms: int
    candles: deque[list[Any]]  # the last candles, enough for every feature
    features: deque[np.ndarray]  # the last feature rows (model context), in `Worker.columns` order
    target: float = 0.0  # the position decided last whose order executed or may still (fraction of equity)
    # an order whose fate the broker could not tell yet: (client order id, the target before it); if it turns out
    # never to have executed, `target` goes back
    in_flight: tuple[str, float] | None = None
    model_position: float | None = None  # the model's last prediction (a stateful model continues from it)
    last_ts: int | None = None  # open time of the newest candle processed
    bars: int = 0  # candles processed since start
    peak_equity: float = 0.0
    day_open_equity: float = 0.0
    day: int = -1
    decisions: int = 0  # decisions and orders made since start
    orders: int = 0
    skipped: list[str] = field(default_factory=list)


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


# A decision's reason until its order's outcome is written: still this after a restart means the worker stopped in
# the middle of the order (`Worker.start` then finds out what became of it).
ORDER_UNDER_WAY = "order"
# An order for less than this (quote currency) is not sent: the holdings already are the target.
DUST_NOTIONAL = 1e-6


@dataclass(frozen=True)
class OrderResult:
    """What `Worker._order` did: the order sent (or None: blocked, or nothing to trade), why, and its fate."""

    order_id: str | None
    reason: str
    sent_at: float | None = None  # when the request left for a networked venue
    status: OrderStatus | None = None
    filled: float = 0.0
    at_target: bool = False  # nothing to trade: the holdings already are the target


KEEP_DECISIONS = 10_000  # recent decisions kept in memory (tests, benchmarks); the database holds them all


class Worker:
    """One process, several markets. `step()` processes every newly closed candle once."""

    def __init__(
        self,
        settings: Settings,
        *,
        markets: list[Market],
        sessions: sessionmaker[Session],
        broker: Broker,
        models: ModelManager,
        store: Any,  # features.feast_store.FeatureStoreAdapter
        fetch_candles: Callable[[Market, int, int], Awaitable[list[list[Any]]]],
        now_ms: Callable[[], Awaitable[int]],
        metrics: Any | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.broker = broker
        self.models = models
        self.store = store
        self.fetch_candles = fetch_candles
        self.now_ms = now_ms
        self.metrics = metrics
        self.execution = Execution.from_settings(settings.costs, settings.backtest)
        self.names = list(settings.features.names) if settings.features.names else None
        self.columns = self.names or feature_names()
        self.history = history_needed(self.names)
        self.states = {
            str(m): MarketState(m, timeframe_ms(m.timeframe), deque(maxlen=self.history + 8), deque(maxlen=256))
            for m in markets
        }
        self.decisions: deque[DecisionRecord] = deque(maxlen=KEEP_DECISIONS)
        # the manager smoke-tests a new champion on this worker's recent rows; each swap is a ledger entry
        if models.smoke_rows is None:
            models.smoke_rows = self.feature_frame
        if models.on_swap is None:
            models.on_swap = self.record_model_swap

    # --- start-up ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Reconcile the broker before any order, restore each market's last decision, warm the
        candle history up to the last closed candle."""
        warm_execution_rules()  # the first order would load them otherwise
        report = await self.broker.start()
        if report.changed:
            log.warning("reconciliation at start: %s", report)
        now = await self.now_ms()
        for key, state in self.states.items():
            with self.sessions() as session:
                last = session.scalar(
                    select(Decision).where(Decision.market == key).order_by(Decision.candle_ts.desc()).limit(1)
                )
            if last is not None:
                state.target, state.last_ts, state.model_position = last.target, last.candle_ts, last.prediction
                if last.delta != 0 and last.reason == ORDER_UNDER_WAY:
                    restore_interrupted_order(self.sessions, state, last)
            end = state.last_ts if state.last_ts is not None else _last_closed_open(now, state.bar_ms)
            since = end - (self.history + 4) * state.bar_ms
            rows = [r for r in await self.fetch_candles(state.market, since, self.history + 8) if r[0] <= end]
            for row in rows:
                state.candles.append(list(row))
            if state.last_ts is None and rows:
                state.last_ts = int(rows[-1][0])
            self._warm_features(state)
            log.info("%s: warmed %d candles up to %s; target %.2f", key, len(rows), state.last_ts, state.target)
        # Everything loaded so far (libraries, models) is long-lived: out of the cyclic collector's scans, so that a
        # full collection during a decision walks only what the loop allocates (with TensorFlow loaded, one took
        # 60-240 ms inside a decision).
        gc.collect()
        gc.freeze()

    def _warm_features(self, state: MarketState) -> None:
        if len(state.candles) < self.history:
            return
        frame = compute_features(_frame(state.candles), self.names)
        for row in frame[self.columns].to_numpy(dtype="float64")[-(state.features.maxlen or 256) :]:
            state.features.append(row)

    def feature_frame(self, market: str) -> pd.DataFrame:
        """The market's recent feature rows (model context; the model manager's smoke rows)."""
        rows = self.states[market].features
        return pd.DataFrame(np.stack(rows) if rows else None, columns=self.columns)

    # --- the loop ---------------------------------------------------------------------------------
    async def step(self) -> int:
        """Process every candle that closed since the last step, market by market, in time order."""
        now = await self.now_ms()
        processed = 0
        for state in self.states.values():
            if self.settings.serving.max_bars and state.bars >= self.settings.serving.max_bars:
                continue
            last_closed = _last_closed_open(now, state.bar_ms)
            if state.last_ts is not None and last_closed <= state.last_ts:
                continue
            since = (state.last_ts + state.bar_ms) if state.last_ts is not None else last_closed
            rows = await self.fetch_candles(state.market, since, 1000)
            for row in rows:
                if int(row[0]) > last_closed:
                    break
                if self.settings.serving.max_bars and state.bars >= self.settings.serving.max_bars:
                    break
                await self.on_candle(state, row, now)
                processed += 1
        return processed

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Loop until `stop` is set or every market has processed `serving.max_bars` candles."""
        limit = self.settings.serving.max_bars
        reconciled = time.monotonic()
        while stop is None or not stop.is_set():
            await self.models.refresh_due()
            await self.obey_kill_switch()
            if time.monotonic() - reconciled >= self.settings.serving.reconcile_every_s:
                report = await self.broker.reconcile()
                reconciled = time.monotonic()
                if report.changed:
                    log.warning("periodic reconciliation changed the books: %s", report)
            await self.step()
            if limit and all(s.bars >= limit for s in self.states.values()):
                return
            await asyncio.sleep(self.settings.serving.poll_interval_s)

    async def obey_kill_switch(self) -> None:
        """Cancel open orders once when the kill switch asks for it (HALTED with cancel_open)."""
        control = trading_state(self.sessions)
        if self.metrics:
            self.metrics.state(control.state)
        if not control.cancel_open:
            return
        cancel = getattr(self.broker, "cancel_open_orders", None)
        cancelled = await cancel() if cancel is not None else []
        log.warning("kill switch %s: cancelled %d open order(s)", control.state, len(cancelled))
        acknowledge_cancel_open(self.sessions, control, "worker")

    async def on_candle(self, state: MarketState, row: list[Any], now: int) -> DecisionRecord | None:
        """One closed candle: validate, fill paper orders at its open, features, decide, order.

        Decision latency starts once the paper venue has filled the previous order at this candle's open:
        that is the simulated exchange's work (a real venue fills a market order when it arrives, a bar
        before this candle closes), timed apart as `venue_s`."""
        started = time.perf_counter()
        market, key = state.market, str(state.market)
        problem = candle_problem(row, market.timeframe, now, state.last_ts)
        if problem is not None:
            state.skipped.append(f"{row[0]}: {problem}")
            log.warning("%s: candle %s skipped: %s (no decision on it)", key, row[0], problem)
            if self.metrics:
                self.metrics.error("malformed_candle")
            if problem not in ("duplicate timestamp", "timestamp not increasing"):
                state.last_ts = max(state.last_ts or 0, int(row[0])) if isinstance(row[0], int) else state.last_ts
            return None
        ts, open_price, close = int(row[0]), float(row[1]), float(row[4])
        if isinstance(self.broker, PaperBroker):
            self.broker.fill_pending(market, ts, open_price)
        seen = time.perf_counter()
        state.candles.append([ts, open_price, float(row[2]), float(row[3]), close, float(row[5])])
        state.last_ts = ts
        state.bars += 1
        inputs = self._features(state, ts)
        record = await self._decide(
            state, ts=ts, close=close, inputs=inputs, now=now, seen=seen, venue_s=seen - started
        )
        await self._snapshot(state, ts, close)
        checkpoint(self.sessions)  # the write-ahead log, after the decision (see serving.db)
        return record

    def _features(self, state: MarketState, ts: int) -> dict[str, float] | None:
        """Compute the newest feature row (the numpy newest-row form of the one feature function, held
        equal to it by tests), push it to the online store and read it back through Feast (the serving
        path of the feature store). None while the history is too short."""
        if len(state.candles) < self.history:
            return None
        computed = compute_newest(list(state.candles)[-self.history :], self.names)
        close_time = pd.Timestamp(ts + state.bar_ms, unit="ms", tz="UTC")
        self.store.write_online(str(state.market), close_time.to_pydatetime(), computed)
        stamp, online = self.store.read_online(str(state.market))
        if stamp is None or stamp < close_time:
            raise CTAError(f"{state.market}: online features are stale ({stamp} < {close_time})")
        values = {name: online[name] for name in computed}
        state.features.append(np.fromiter((values[name] for name in self.columns), "float64", len(self.columns)))
        return values

    async def _decide(
        self,
        state: MarketState,
        *,
        ts: int,
        close: float,
        inputs: dict[str, float] | None,
        now: int,
        seen: float,
        venue_s: float = 0.0,
    ) -> DecisionRecord:
        key = str(state.market)
        model = self.models.model(key)
        prediction: float | None = None
        reason = ""
        if inputs is None:
            reason = "not enough history for features"
        elif model is None:
            reason = self.models.problem(key) or "no model"
        else:
            # the context a backtest gives the row: 4 x history rows before it (backtests.evaluate.model_positions)
            rows = list(state.features)[-(model.history_rows * 4 + 1) :]
            context = pd.DataFrame(np.stack(rows), columns=self.columns)
            try:
                prediction = model.predict_next(context, state.model_position)
                state.model_position = prediction
            except Exception as e:  # noqa: BLE001 (a failing model makes no order, never a crash)
                reason = f"model failed: {type(e).__name__}: {e}"
                if self.metrics:
                    self.metrics.error("model_predict")
        settle_in_flight(self.sessions, state)
        intent = decide(prediction if prediction is not None else float("nan"), state.target, self.settings.limits)
        order_id: str | None = None
        answer_s = 0.0
        decision_id, control = self._record_decision(
            state,
            ts=ts,
            model=model,
            inputs=inputs,
            prediction=prediction,
            target=intent.target,
            delta=intent.delta,
            reason=reason,
        )
        latency = time.perf_counter() - seen
        if intent.is_order:
            result = await self._order(
                state,
                ts=ts,
                close=close,
                target=intent.target,
                delta=intent.delta,
                decision_id=decision_id,
                model=model,
                now=now,
                control=control,
            )
            latency = time.perf_counter() - seen  # the order is sent (or blocked by risk)
            if result.sent_at is not None:  # a venue that answers over the network: sent when the request left
                answer_s, latency = seen + latency - result.sent_at, result.sent_at - seen
            order_id, reason = result.order_id, result.reason
            follow_order(state, intent.target, result)
            update_reason(self.sessions, decision_id, reason, state.target)
        if self.metrics:
            self.metrics.decision(key, latency)
        record = DecisionRecord(
            key, ts, prediction, state.target, intent.delta, order_id, reason, latency, venue_s, answer_s
        )
        self.decisions.append(record)
        state.decisions += 1
        state.orders += order_id is not None
        return record

    async def _order(
        self,
        state: MarketState,
        *,
        ts: int,
        close: float,
        target: float,
        delta: float,
        decision_id: int,
        model: Any,
        now: int,
        control: ControlSnapshot,
    ) -> OrderResult:
        """Risk-check and send the order. `control` is the kill switch as read in the decision's transaction,
        just before."""
        holdings = await self.broker.holdings(state.market)
        execution = self.execution
        equity = holdings.cash + holdings.units * close
        buffer = 0.0 if isinstance(self.broker, PaperBroker) else self.settings.serving.cash_buffer
        wanted = order_units(
            target * execution.position_fraction * (1.0 - buffer),
            liquidation_equity(holdings.cash, holdings.units, close, execution.slippage, execution.fee_rate),
            close,
            execution.slippage,
            execution.fee_rate,
        )
        amount = wanted - holdings.units
        if abs(amount) * close < DUST_NOTIONAL:  # e.g. a sell wanted after an entry that never executed
            return OrderResult(None, "nothing to trade: the holdings already are the target", at_target=True)
        request = OrderRequest(
            market=state.market,
            side="buy" if delta > 0 else "sell",
            amount=abs(amount),
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
            max_model_age_days=self.settings.serving.max_model_age_days,
        )
        verdict = check_order(request, risk_state, self.settings.serving.risk)
        if not verdict.allowed:
            log.warning("%s: order blocked by risk: %s", state.market, "; ".join(verdict.reasons))
            return OrderResult(None, "blocked: " + "; ".join(verdict.reasons))
        outcome = await self.broker.submit(request)
        if self.metrics:
            self.metrics.order(str(state.market), outcome.status.value)
        return OrderResult(
            outcome.client_order_id,
            f"order {outcome.client_order_id} {outcome.status.value}",
            outcome.sent_at,
            outcome.status,
            outcome.filled,
        )

    def _record_decision(
        self,
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
        with self.sessions() as session:
            decision = Decision(
                market=str(state.market),
                candle_ts=ts,
                model_name=model.name if model else "",
                model_version=model.version if model else "",
                feature_hash=hashlib.sha256(payload.encode()).hexdigest()[:16],
                inputs=payload,
                prediction=prediction if prediction is None or np.isfinite(prediction) else None,
                target=target,
                delta=delta,
                reason=reason or (ORDER_UNDER_WAY if delta else "hold"),
            )
            session.add(decision)
            session.flush()
            ledger.append(
                session,
                "decision",
                {
                    "decision_id": decision.id,
                    "market": decision.market,
                    "candle_ts": ts,
                    "model": f"{decision.model_name}@{decision.model_version}",
                    "feature_hash": decision.feature_hash,
                    "prediction": decision.prediction,
                    "target": target,
                    "delta": delta,
                },
                ts + state.bar_ms,
            )
            control = read_trading_state(session)
            session.commit()
            return int(decision.id), control

    async def _snapshot(self, state: MarketState, ts: int, close: float) -> None:
        holdings = await self.broker.holdings(state.market)
        equity = holdings.cash + holdings.units * close
        day = ts // 86_400_000
        if day != state.day:
            state.day, state.day_open_equity = day, equity
        state.peak_equity = max(state.peak_equity, equity)
        with self.sessions() as session:
            session.add(
                EquitySnapshot(
                    ts=ts + state.bar_ms,
                    market=str(state.market),
                    cash=holdings.cash,
                    position_value=holdings.units * close,
                    equity=equity,
                )
            )
            session.commit()
        if self.metrics:
            self.metrics.equity(str(state.market), equity)
        halt = should_halt(
            RiskState(
                trading_state=TradingState(trading_state(self.sessions).state),
                equity=equity,
                day_open_equity=state.day_open_equity,
                peak_equity=state.peak_equity,
                position_units=holdings.units,
                price=close,
                candle_age_ms=0,
                features_age_ms=0,
                bar_ms=state.bar_ms,
                model_age_days=0.0,
                max_model_age_days=self.settings.serving.max_model_age_days,
            ),
            self.settings.serving.risk,
        )
        if halt:
            set_trading_state(self.sessions, TradingState.HALTED, halt, "risk")
            log.error("%s: trading HALTED: %s", state.market, halt)

    def record_model_swap(self, market: str, previous: str | None, loaded: Any) -> None:
        """A ledger entry each time the worker starts trading with another champion version."""
        with self.sessions() as session:
            ledger.append(
                session,
                "promotion",
                {"market": market, "model": loaded.name, "version": loaded.version, "previous": previous},
                int(time.time() * 1000),
            )
            session.commit()
        if self.metrics:
            self.metrics.model(market, loaded.version)

    def decision_count(self) -> int:
        with self.sessions() as session:
            return int(session.scalar(select(func.count(Decision.id))) or 0)


def _frame(candles: deque[list[Any]] | list[list[Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(candles), columns=CANDLE_COLUMNS)
    frame["ts"] = frame["ts"].astype("int64")
    return frame


def _last_closed_open(now_ms: int, bar_ms: int) -> int:
    """Open time of the newest candle that has closed at `now_ms`."""
    return (now_ms // bar_ms) * bar_ms - bar_ms


# --- an order's fate and the target -------------------------------------------------------------------
def follow_order(state: MarketState, target: float, result: OrderResult) -> None:
    """The target moves with an order that executed or may still execute, and when there was nothing to trade;
    it stays where it was when the order was blocked or never executed (rejected, cancelled unfilled), so the
    next decision tries again if the model still wants it."""
    if result.at_target:
        state.target = target
    elif result.order_id is not None and result.status is not None:
        if never_executed(result.status, result.filled):
            return
        if result.status in UNRESOLVABLE:
            state.in_flight = (result.order_id, state.target)
        state.target = target


def restore_interrupted_order(sessions: sessionmaker[Session], state: MarketState, decision: Decision) -> None:
    """The last run stopped between `decision` and its order's outcome (a crash): the target is what the order
    achieved, found after the start-up reconciliation. No order row: it never got as far as its intent. A row
    the exchange never executed: the target before it. A row still in flight: followed until it is settled."""
    before = decision.target - decision.delta
    with sessions() as session:
        order = session.scalar(select(Order).where(Order.decision_id == decision.id).limit(1))
        fate = None if order is None else (order.client_order_id, OrderStatus(order.status), order.filled)
    if fate is None:
        state.target, reason = before, "order not sent: the worker stopped before its intent"
    elif never_executed(fate[1], fate[2]):
        state.target, reason = before, f"order {fate[0]} {fate[1].value} (found at restart)"
    else:
        reason = f"order {fate[0]} {fate[1].value} (found at restart)"
        if fate[1] in UNRESOLVABLE:
            state.in_flight = (fate[0], before)
    log.warning("%s: the last run stopped during an order: %s; target %.2f", state.market, reason, state.target)
    update_reason(sessions, decision.id, reason, state.target)


def settle_in_flight(sessions: sessionmaker[Session], state: MarketState) -> None:
    """Once the broker (or reconciliation) has settled an order that was in flight: if it never executed,
    the target goes back to what it was before it."""
    if state.in_flight is None:
        return
    cid, before = state.in_flight
    with sessions() as session:
        order = get_order(session, cid)
        fate = None if order is None else (OrderStatus(order.status), order.filled)
    if fate is not None and fate[0] in UNRESOLVABLE:
        return
    state.in_flight = None
    if fate is None or never_executed(*fate):
        log.warning("%s: order %s never executed: target back to %.2f", state.market, cid, before)
        state.target = before


def update_reason(sessions: sessionmaker[Session], decision_id: int, reason: str, target: float) -> None:
    """Write a decision's final reason and target (once its order's fate is known)."""
    with sessions() as session:
        decision = session.get(Decision, decision_id)
        if decision is not None:
            decision.reason, decision.target = reason, target
            session.commit()
