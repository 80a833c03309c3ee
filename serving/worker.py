"""The serving worker's loop: every configured market's newly closed candles, from the fetch to the broker.

For each configured market, on each newly CLOSED candle: fetch (ccxt) -> validate -> features (the one feature
function) -> push to the online store -> read back through Feast -> champion.predict -> decide() -> risk checks ->
broker.

Every decision is recorded (model version, feature hash, inputs) before any order (`serving.decisions`); the
broker records each order's intent before sending it; the target follows what the orders achieved
(`serving.target`). The clock is injected: the market clock of the venue, or the replay clock of the local
exchange in the demo and tests.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cta.config import Settings
from cta.decide import OrderIntent, decide
from cta.errors import CTAError
from cta.execution import Execution, warm_execution_rules
from cta.lake import CandleLake, Market
from cta.timeframes import timeframe_ms
from cta.validation import candle_problem
from features.compute import compute_features, compute_newest, history_needed
from features.registry import feature_names
from serving import ledger, parameters
from serving.control import acknowledge_cancel_open, trading_state
from serving.db import checkpoint
from serving.decisions import DecisionRecord, place_order, record_decision, snapshot_equity
from serving.market_state import MarketState
from serving.models import Decision
from serving.models_manager import ModelManager
from serving.target import ORDER_UNDER_WAY, follow_order, restore_interrupted_order, settle_in_flight, update_reason
from serving.types import Broker

if TYPE_CHECKING:
    from serving.champion_watch import ChampionWatch
    from serving.ledger_anchor import Sealer

log = logging.getLogger(__name__)

CANDLE_COLUMNS = ["ts", "open", "high", "low", "close", "volume"]

CONTEXT_ROWS = 256  # feature rows kept per market: the most any model may read (training windows are <= 256)
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
        sealer: Sealer | None = None,
        lake: CandleLake | None = None,
        watch: ChampionWatch | None = None,
    ) -> None:
        self.settings = settings  # the configuration with the live parameter changes applied (`refresh_parameters`)
        self.configured = settings  # the configuration as loaded
        self.parameters_version: int | None = None  # the version in force (None: not read yet)
        self.disabled: frozenset[str] = frozenset()  # markets an operator disabled: decisions, no orders
        # the candles the pipeline stored: the history the warm-up and the smoke rows fall back on when the exchange
        # cannot serve it (None: no fallback, e.g. a replay that must see only the candles it is given)
        self.lake = lake
        self.sessions = sessions
        self.broker = broker
        self.models = models
        self.store = store
        self.fetch_candles = fetch_candles
        self.now_ms = now_ms
        self.metrics = metrics
        self.watch = watch  # compares each champion with its backtest between candles, demotes it on a breach
        self.sealer = sealer  # signs and anchors the ledger's checkpoints between candles (None: no signing key)
        self.last_now: int | None = None  # market time of the last step
        self.execution = Execution.from_settings(settings.costs, settings.backtest)
        self.names = list(settings.features.names) if settings.features.names else None
        self.columns = self.names or feature_names()
        self.history = history_needed(self.names)
        self.states = {
            str(m): MarketState(
                m, timeframe_ms(m.timeframe), deque(maxlen=self.history + 8), deque(maxlen=CONTEXT_ROWS)
            )
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
        self.refresh_parameters()
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
            since = end - (self.history + CONTEXT_ROWS - 1) * state.bar_ms
            rows = await self._warm_candles(state, since, end)
            stored = 0
            if len(rows) < self.history + CONTEXT_ROWS:  # the exchange cannot serve it all (yet): the lake's candles
                rows, stored = self._with_stored_candles(state.market, rows, since, end)
            for row in rows:
                state.candles.append(list(row))
            if state.last_ts is None and rows:
                state.last_ts = int(rows[-1][0])
            self._warm_features(state, rows)
            log.info(
                "%s: warmed %d candles (%d from the lake) up to %s; target %.2f",
                key,
                len(rows),
                stored,
                state.last_ts,
                state.target,
            )
        # Everything loaded so far (libraries, models) is long-lived: out of the cyclic collector's scans, so that a
        # full collection during a decision walks only what the loop allocates (with TensorFlow loaded, one took
        # 60-240 ms inside a decision).
        gc.collect()
        gc.freeze()

    async def _warm_candles(self, state: MarketState, since: int, end: int) -> list[list[Any]]:
        """The closed candles from `since` to `end` the exchange serves, in pages of at most `exchange.page_limit`
        (a venue caps its pages: Coinbase at 300)."""
        rows: list[list[Any]] = []
        page_limit = self.settings.exchange.page_limit
        while since <= end:
            wanted = min(page_limit, (end - since) // state.bar_ms + 1)
            page = [r for r in await self.fetch_candles(state.market, since, wanted) if since <= r[0] <= end]
            if not page:
                break
            rows.extend(page)
            since = int(page[-1][0]) + state.bar_ms
        return rows

    def _warm_features(self, state: MarketState, candles: list[list[Any]]) -> None:
        """Feature rows for the model context from the warm-up candles: a full context (`CONTEXT_ROWS`, more than any
        model's history), so that a model reading a window decides on its first candle as the backtest does."""
        if len(candles) < self.history:
            return
        frame = compute_features(_frame(candles), self.names)
        for row in frame[self.columns].to_numpy(dtype="float64")[-(state.features.maxlen or CONTEXT_ROWS) :]:
            state.features.append(row)

    def feature_frame(self, market: str) -> pd.DataFrame:
        """The market's recent feature rows (model context; the model manager's smoke rows). With none in memory
        (the exchange could not serve the history, e.g. a replay clock behind the last decision), the features of
        the newest candles the lake holds up to the last candle processed: a champion is smoke-tested on real
        rows instead of being refused."""
        state = self.states[market]
        if state.features:
            return pd.DataFrame(np.stack(state.features), columns=self.columns)
        return self._stored_feature_frame(state)

    def _stored_candles(self, market: Market, since: int | None, end: int) -> pd.DataFrame:
        """The lake's candles of `market` with since <= ts <= end; empty when the lake has none or cannot be read."""
        if self.lake is None:
            return pd.DataFrame(columns=CANDLE_COLUMNS)
        try:
            return self.lake.read(market, since, end + 1)
        except (CTAError, OSError, ValueError) as e:
            log.warning("%s: the candle lake could not be read (%s: %s)", market, type(e).__name__, e)
            return pd.DataFrame(columns=CANDLE_COLUMNS)

    def _with_stored_candles(
        self, market: Market, rows: list[list[Any]], since: int, end: int
    ) -> tuple[list[list[Any]], int]:
        """`rows` (the exchange's) completed with the lake's candles of the same span; how many came from the lake."""
        stored = self._stored_candles(market, since, end)
        have = {int(r[0]) for r in rows}
        extra = [
            [int(r.ts), float(r.open), float(r.high), float(r.low), float(r.close), float(r.volume)]
            for r in stored.itertuples(index=False)
            if int(r.ts) not in have
        ]
        return sorted([*rows, *extra], key=lambda r: int(r[0])), len(extra)

    def _stored_feature_frame(self, state: MarketState) -> pd.DataFrame:
        keep = state.features.maxlen or 256
        end = state.last_ts if state.last_ts is not None else self._newest_stored(state.market)
        if end is None:
            return pd.DataFrame(columns=self.columns)
        candles = self._stored_candles(state.market, end - (self.history + keep) * state.bar_ms, end)
        if len(candles) < self.history:  # the lake stops earlier (e.g. before a restored last decision): its newest
            candles = self._stored_candles(state.market, None, end).tail(self.history + keep)
        if len(candles) < self.history:
            return pd.DataFrame(columns=self.columns)
        frame = compute_features(candles, self.names)[self.columns].astype("float64").tail(keep)
        log.info("%s: %d feature rows from the lake's candles (none in memory)", state.market, len(frame))
        return frame.reset_index(drop=True)

    def _newest_stored(self, market: Market) -> int | None:
        if self.lake is None:
            return None
        try:
            return self.lake.last_ts(market)
        except (CTAError, OSError, ValueError):
            return None

    # --- the loop ---------------------------------------------------------------------------------
    async def step(self) -> int:
        """Process every candle that closed since the last step, market by market, in time order. The due markets'
        candles are fetched concurrently (at most `serving.fetch_concurrency` requests at a time; the exchange
        client keeps them within the venue's rate budget), then decided one market after another. A failed fetch
        raises once the markets before it have been decided, as a sequential walk would."""
        now = await self.now_ms()
        self.last_now = now
        due: list[tuple[MarketState, int]] = []
        for state in self.states.values():
            if self.settings.serving.max_bars and state.bars >= self.settings.serving.max_bars:
                continue
            last_closed = _last_closed_open(now, state.bar_ms)
            if state.last_ts is not None and last_closed <= state.last_ts:
                continue
            due.append((state, last_closed))
        fetched = await self._fetch_due(due)
        processed = 0
        for (state, last_closed), rows in zip(due, fetched, strict=True):
            if isinstance(rows, BaseException):
                raise rows
            for row in rows:
                if int(row[0]) > last_closed:
                    break
                if self.settings.serving.max_bars and state.bars >= self.settings.serving.max_bars:
                    break
                await self.on_candle(state, row, now)
                processed += 1
        return processed

    async def _fetch_due(self, due: list[tuple[MarketState, int]]) -> list[list[list[Any]] | BaseException]:
        """Each due market's candles since its last one (or its last closed one at the start), concurrently."""
        limit = asyncio.Semaphore(self.settings.serving.fetch_concurrency)

        async def one(state: MarketState, last_closed: int) -> list[list[Any]]:
            async with limit:
                return await self.fetch_candles(state.market, *_window(state, last_closed))

        results = await asyncio.gather(*(one(s, c) for s, c in due), return_exceptions=True)
        return list(results)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Loop until `stop` is set or every market has processed `serving.max_bars` candles."""
        limit = self.settings.serving.max_bars
        reconciled = time.monotonic()
        while stop is None or not stop.is_set():
            await self.models.refresh_due()
            await self.obey_kill_switch()
            self.refresh_parameters()
            if time.monotonic() - reconciled >= self.settings.serving.reconcile_every_s:
                report = await self.broker.reconcile()
                reconciled = time.monotonic()
                if report.changed:
                    log.warning("periodic reconciliation changed the books: %s", report)
            await self.step()
            await self.watch_champions()
            self.seal_ledger()
            if limit and all(s.bars >= limit for s in self.states.values()):
                self.seal_ledger(force=True)
                return
            await asyncio.sleep(self.settings.serving.poll_interval_s)
        self.seal_ledger(force=True)

    async def watch_champions(self) -> None:
        """Champion monitoring, between candles (never inside a decision): each market whose assessment is due.
        A failure is logged, not fatal: trading goes on with the champion it has."""
        if self.watch is None:
            return
        for state in self.states.values():
            try:
                await self.watch.check(state)
            except Exception:
                log.exception("%s: champion monitoring failed (trading goes on)", state.market)
                if self.metrics:
                    self.metrics.error("champion_watch")

    def seal_ledger(self, *, force: bool = False) -> None:
        """A signed checkpoint of the ledger when one is due (`force`: whenever it grew), published to the anchors;
        between candles, never inside a decision. A failure is logged, not fatal: `cta ledger verify` reports
        what is not anchored."""
        if self.sealer is None or self.last_now is None:
            return
        try:
            size, anchored = self.sealer.seal(self.sessions, self.last_now, force=force)
        except Exception:
            log.exception("ledger checkpoint or anchor failed (trading goes on; `cta ledger verify` will say)")
            if self.metrics:
                self.metrics.error("ledger_checkpoint")
            return
        if size:
            log.info("ledger checkpoint %d signed%s", size, f", anchored {anchored}" if anchored else "")

    def refresh_parameters(self) -> None:
        """Trade with the parameters changed live (`serving.parameters`) from the next decision: read between
        candles, applied when their version moved (and once at start)."""
        current = parameters.load(self.sessions, self.configured)
        if current.version == self.parameters_version:
            return
        self.settings = parameters.apply(self.configured, current)
        self.disabled = frozenset(current.disabled_markets)
        self.parameters_version = current.version
        log.warning(
            "trading parameters version %d in force (limits %s; risk %s; disabled markets: %s)",
            current.version,
            current.values.limits.model_dump(),
            current.values.risk.model_dump(),
            ", ".join(current.disabled_markets) or "none",
        )

    async def obey_kill_switch(self) -> None:
        """Cancel open orders once when the kill switch asks for it (HALTED with cancel_open)."""
        control = trading_state(self.sessions)
        if self.metrics:
            self.metrics.state(control.state)
        if not control.cancel_open:
            return
        cancelled = await self.broker.cancel_open_orders()
        log.warning("kill switch %s: cancelled %d open order(s)", control.state, len(cancelled))
        acknowledge_cancel_open(self.sessions, control, "worker")

    async def on_candle(self, state: MarketState, row: list[Any], now: int) -> DecisionRecord | None:
        """One closed candle: validate, the broker's candle open (the paper venue fills there), features, decide, order.

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
        self.broker.on_candle_open(market, ts, open_price)
        seen = time.perf_counter()
        state.candles.append([ts, open_price, float(row[2]), float(row[3]), close, float(row[5])])
        state.last_ts = ts
        state.bars += 1
        inputs = self._features(state, ts)
        record = await self._decide(
            state, ts=ts, close=close, inputs=inputs, now=now, seen=seen, venue_s=seen - started
        )
        if inputs is not None:
            self._publish_features(state, ts, inputs)
        await snapshot_equity(
            self.broker, self.sessions, self.settings, state, ts=ts, close=close, metrics=self.metrics
        )
        checkpoint(self.sessions)  # the write-ahead log, after the decision (see serving.db)
        return record

    def _features(self, state: MarketState, ts: int) -> dict[str, float] | None:
        """The newest feature row (the numpy newest-row form of the one feature function, held equal to it by
        tests), which the decision uses as computed; None while the history is too short."""
        if len(state.candles) < self.history:
            return None
        values = compute_newest(list(state.candles)[-self.history :], self.names)
        state.features.append(np.fromiter((values[name] for name in self.columns), "float64", len(self.columns)))
        return values

    def _publish_features(self, state: MarketState, ts: int, values: dict[str, float]) -> None:
        """Write the row the decision used to Feast's online store, after the order is sent (off the decision's
        path: a store round trip, Redis in production, no longer delays the order). A failed write is logged and
        counted, never a lost decision: the store is the features' serving copy for everyone else (the
        dashboard's freshness, other readers), refreshed again at the next candle."""
        close_time = pd.Timestamp(ts + state.bar_ms, unit="ms", tz="UTC")
        try:
            self.store.write_online(str(state.market), close_time.to_pydatetime(), values)
        except Exception as e:  # noqa: BLE001 (the decision is made and recorded: report, go on)
            log.warning("%s: online feature store write failed: %s: %s", state.market, type(e).__name__, e)
            if self.metrics:
                self.metrics.error("online_store_write")

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
            if self.models.flat(key) is not None:  # demoted with none to fall back on: out, through decide and risk
                prediction = 0.0
        else:
            # exactly the rows one decision needs (the model's `history_rows`): the backtest gives it more context
            # (backtests.evaluate.model_positions), which a model's last row must not depend on (replay parity
            # tests hold each family to it); a keras window costs one window's forward pass, not 3 x history's
            rows = list(itertools.islice(reversed(state.features), model.history_rows))[::-1]
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
        if key in self.disabled and intent.is_order:  # an operator disabled the market: decided, not traded
            intent = OrderIntent(state.target, 0.0)
            reason = reason or "market disabled by an operator: no order"
        order_id: str | None = None
        answer_s = 0.0
        decision_id, control = record_decision(
            self.sessions,
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
            result = await place_order(
                self.broker,
                self.settings,
                self.execution,
                state,
                ts=ts,
                close=close,
                target=intent.target,
                decision_id=decision_id,
                model=model,
                now=now,
                control=control,
                metrics=self.metrics,
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


def _window(state: MarketState, last_closed: int) -> tuple[int, int]:
    """A market's next fetch: from after its last candle (or the last closed one, on its first step), as many
    candles as have closed since (at most 1,000). Asking for what is needed, not 1,000, keeps each request at the
    venue's lowest weight (Binance weighs klines by the limit asked: 1 up to 99 candles, 5 from 500)."""
    since = (state.last_ts + state.bar_ms) if state.last_ts is not None else last_closed
    return since, max(1, min(1000, (last_closed - since) // state.bar_ms + 1))


def _last_closed_open(now_ms: int, bar_ms: int) -> int:
    """Open time of the newest candle that has closed at `now_ms`."""
    return (now_ms // bar_ms) * bar_ms - bar_ms
