"""Champion monitoring in the worker: between candles, each market's champion is compared with the backtest that
promoted it (`cta.monitor.assess`) every `serving.monitor.every_bars` new bars; a breach demotes it.

The record is read from the trading database, not kept in memory, so it survives restarts: the decisions made
with the champion's version (their feature inputs and targets) and the market's equity after each of them (the
realised per-bar returns, fees included). A demotion moves the registry (`cta.registry.demote`: back to the
previous champion, or none), tags the version with the reasons, writes a `demotion` ledger entry, and has the model
manager follow at once; the next candle's decision then goes through decide and the risk checks like any other
(with no champion left, the market's target is flat). With `action: alert` the breach is logged, written to the
ledger and counted, and the champion keeps trading.

Realised returns come from the market's equity: exact for the paper broker (one account per market); with the
ccxt broker several markets share the quote balance, so a market's return is its contribution to that balance.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cta.metrics import bar_returns
from cta.monitor import Breach, MonitorSettings, Observed, assess
from cta.registry import demote
from serving import ledger
from serving.market_state import MarketState
from serving.models import Decision, EquitySnapshot
from serving.models_manager import LoadedModel, ModelManager

log = logging.getLogger(__name__)


def observed_record(
    sessions: sessionmaker[Session], state: MarketState, version: str, bars: int, columns: list[str]
) -> Observed:
    """The last `bars` decisions the market made with model `version` (oldest first), with the market's equity
    after each: returns[i] is earned from decision i - 1 to decision i (so the first decision gives none)."""
    key = str(state.market)
    with sessions() as session:
        newest = session.execute(
            select(Decision.candle_ts, Decision.target, Decision.inputs)
            .where(Decision.market == key, Decision.model_version == version)
            .order_by(Decision.candle_ts.desc())
            .limit(bars + 1)
        ).all()
        rows = list(reversed(newest))
        if not rows:
            return Observed(np.empty(0), np.empty(0), {})
        stamps = [int(r.candle_ts) + state.bar_ms for r in rows]
        equity_by_ts = dict(
            session.execute(
                select(EquitySnapshot.ts, EquitySnapshot.equity).where(
                    EquitySnapshot.market == key, EquitySnapshot.ts >= stamps[0], EquitySnapshot.ts <= stamps[-1]
                )
            ).all()
        )
    kept = [(r, equity_by_ts[ts]) for r, ts in zip(rows, stamps, strict=True) if ts in equity_by_ts]
    if len(kept) < 2:
        return Observed(np.empty(0), np.empty(0), {})
    returns = bar_returns(np.array([e for _, e in kept], dtype="float64"))
    targets = np.array([float(r.target) for r, _ in kept[1:]], dtype="float64")
    inputs = [json.loads(r.inputs or "{}") for r, _ in kept[1:]]
    features = {name: np.array([float(i.get(name, np.nan)) for i in inputs], dtype="float64") for name in columns}
    return Observed(np.nan_to_num(returns), targets, features)


class ChampionWatch:
    """Assesses each market's champion every `settings.every_bars` bars and demotes it on a breach."""

    def __init__(
        self,
        settings: MonitorSettings,
        sessions: sessionmaker[Session],
        models: ModelManager,
        lock_for: Callable[[str], AbstractContextManager[Any]],
        *,
        columns: list[str],
        metrics: Any | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.models = models
        self.lock_for = lock_for  # the registry lock of one registered model (cta.registry.promotion_lock)
        self.columns = columns
        self.metrics = metrics
        self.assessed_at: dict[str, int] = {}  # market -> decisions made when last assessed
        self.last: dict[str, list[Breach]] = {}  # market -> what the last assessment found (status, tests)

    def due(self, state: MarketState) -> bool:
        key = str(state.market)
        return self.settings.enabled and state.decisions - self.assessed_at.get(key, 0) >= self.settings.every_bars

    async def check(self, state: MarketState) -> list[Breach]:
        """Assess the market's champion if due; on a breach demote it (or alert). Returns the breaches found."""
        if not self.due(state):
            return []
        key = str(state.market)
        self.assessed_at[key] = state.decisions
        model = self.models.model(key)
        if model is None or model.expectations is None:
            return []
        expected = model.expectations
        bars = max(len(expected.bar_returns), self.settings.window_bars, self.settings.min_bars)
        observed = await asyncio.to_thread(observed_record, self.sessions, state, model.version, bars, self.columns)
        breaches = assess(expected, observed, self.settings)
        self.last[key] = breaches
        if breaches:
            await self._act(state, model, breaches, len(observed))
        return breaches

    async def _act(self, state: MarketState, model: LoadedModel, breaches: list[Breach], bars: int) -> None:
        key = str(state.market)
        reasons = "; ".join(str(b) for b in breaches)
        log.error("%s: champion v%s departs from its backtest after %d bars: %s", key, model.version, bars, reasons)
        if self.metrics:
            self.metrics.error("champion_breach")
        payload: dict[str, Any] = {
            "market": key,
            "model": model.name,
            "version": model.version,
            "bars": bars,
            "checks": [b.check for b in breaches],
            "reasons": reasons,
            "action": self.settings.action,
        }
        if self.settings.action == "demote":
            # A registry that is down is known from one quick probe: not minutes of MLflow's retries inside the loop
            down = await self.models.registry_down()
            if down is not None:
                log.error("%s: demotion of v%s waits for the model registry (%s)", key, model.version, down)
                self._again_next_bar(state)
                return
            try:
                move = await asyncio.to_thread(
                    demote, self.models.client, model.name, model.version, reasons, lock=self.lock_for(model.name)
                )
            except Exception as e:  # noqa: BLE001 (the registry failed or refused: tried again at the next bar)
                log.error("%s: demotion of v%s failed (%s: %s); tried again", key, model.version, type(e).__name__, e)
                self._again_next_bar(state)
                return
            payload["outcome"] = move.outcome
            payload["champion"] = move.version or None
        with self.sessions() as session:
            ledger.append(session, "demotion" if self.settings.action == "demote" else "breach", payload, _now_ms())
            session.commit()
        if self.settings.action == "demote":
            await self.models.refresh(key)

    def _again_next_bar(self, state: MarketState) -> None:
        """Assess the market again after its next decision (not every loop iteration, not `every_bars` later)."""
        self.assessed_at[str(state.market)] = state.decisions - self.settings.every_bars + 1


def _now_ms() -> int:
    return int(time.time() * 1000)
