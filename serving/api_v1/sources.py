"""What API v1 reads outside the trading database: the model registry (champion, previous, every gated version,
the promoting backtest) and the data's quality (validation results, quarantine, the lake, the online store).

Both are synchronous (the server runs them in a thread) and cached for a few seconds: a dashboard refreshing
every page does not turn into a registry or lake scan per request.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cta.config import Settings
from cta.lake import CandleLake, Market
from cta.timeframes import timeframe_ms
from serving.api_v1 import schemas as s
from serving.models import Decision, EquitySnapshot

log = logging.getLogger(__name__)

T = TypeVar("T")
CACHE_S = 5.0
MAX_VALIDATIONS = 20
MAX_QUARANTINED = 50


class _Cached:
    def __init__(self, ttl_s: float = CACHE_S) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._value: Any = None
        self._at = -1e18

    def get(self, build: Callable[[], T]) -> T:
        with self._lock:
            if time.monotonic() - self._at < self.ttl_s:
                return self._value  # type: ignore[no-any-return]
            self._value, self._at = build(), time.monotonic()
            return self._value  # type: ignore[no-any-return]

    def clear(self) -> None:
        with self._lock:
            self._at = -1e18


def _iso_ms(ms: int | float) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _iso_mlflow(ms: int | None) -> str | None:
    return None if ms is None else _iso_ms(ms)


def _num(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is None or np.isfinite(value) else None


# ----- the model registry -------------------------------------------------------------------------------------------


class RegistrySource:
    """Champion, previous and every gated version per market, with the promoting backtest beside live results."""

    def __init__(
        self,
        client: Callable[[], Any],  # makes the mlflow.MlflowClient, on first use (not while the server starts)
        names: dict[str, str],  # market -> registered model name
        markets: dict[str, Market],
        sessions: sessionmaker[Session],
        rollback: Callable[[str], str] | None = None,  # market -> what the move did (raises on refusal)
    ) -> None:
        self._make_client = client
        self._client: Any = None
        self.names = names
        self.markets = markets
        self.sessions = sessions
        self._rollback = rollback
        self._cache = _Cached()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def models(self) -> s.ModelsOut:
        return self._cache.get(lambda: s.ModelsOut(markets=[self._market(key) for key in self.names]))

    def rollback(self, market: str) -> str:
        if self._rollback is None:
            raise LookupError("rollback is not available in this process")
        try:
            return self._rollback(market)
        finally:
            self._cache.clear()

    def _version(self, name: str, version: str | None) -> s.VersionOut | None:
        if version is None:
            return None
        found = self.client.get_model_version(name, version)
        tags = {str(k): str(v)[:500] for k, v in (found.tags or {}).items()}
        return s.VersionOut(
            version=str(found.version),
            run_id=found.run_id,
            family=tags.get("family"),
            created_at=_iso_mlflow(found.creation_timestamp),
            tags=tags,
        )

    def _market(self, key: str) -> s.MarketModelsOut:
        from cta.registry import alias_state, load_expectations, version_rows

        name = self.names[key]
        empty = s.MarketModelsOut(
            market=key,
            registered_name=name,
            champion=None,
            previous=None,
            candidates=[],
            backtest_curve=[],
            live_curve=[],
            backtest_return=None,
            live_return=None,
            gap=None,
            problem=None,
        )
        try:
            state, _ = alias_state(self.client, name)
        except Exception as error:  # noqa: BLE001 (no model yet, or the registry is down: say so on the page)
            return empty.model_copy(update={"problem": f"{type(error).__name__}: {str(error)[:200]}"})
        champion = self._version(name, state.champion)
        candidates = [
            s.CandidateOut(
                run_id=None,
                started_at=None,
                family=row.family or None,
                version=row.version,
                verdict=row.verdict,
                reasons=[r.strip() for r in row.reasons.split(";") if r.strip()],
                sharpe=_num(row.oos_sharpe),
                max_drawdown=_num(row.oos_max_drawdown),
                trades=None,
            )
            for row in version_rows(self.client, name)
        ]
        out = empty.model_copy(
            update={"champion": champion, "previous": self._version(name, state.previous), "candidates": candidates}
        )
        if champion is None:
            return out
        expected = load_expectations(self.client, name, champion.version)
        backtest = [1.0]
        for r in expected.bar_returns if expected else ():
            backtest.append(backtest[-1] * (1 + float(r)))
        live_points = self._live(key, champion.version)
        bar_ms = timeframe_ms(self.markets[key].timeframe)
        start = live_points[0][0] if live_points else None
        backtest_curve = [
            s.CurvePointOut(time=_iso_ms((start or 0) + i * bar_ms), value=v) for i, v in enumerate(backtest)
        ]
        live_curve = [s.CurvePointOut(time=_iso_ms(ts), value=v) for ts, v in live_points]
        live_return = live_points[-1][1] - 1 if len(live_points) > 1 else None
        same = min(len(live_points), len(backtest)) - 1
        backtest_return = backtest[same] - 1 if expected and same > 0 else (backtest[-1] - 1 if expected else None)
        return out.model_copy(
            update={
                "backtest_curve": backtest_curve,
                "live_curve": live_curve,
                "backtest_return": backtest_return,
                "live_return": live_return,
                "gap": live_return - backtest_return
                if live_return is not None and backtest_return is not None
                else None,
            }
        )

    def _live(self, market: str, version: str) -> list[tuple[int, float]]:
        """Equity since the champion's first decision, as growth of 1."""
        with self.sessions() as session:
            first = session.scalar(
                select(Decision.candle_ts)
                .where(Decision.market == market, Decision.model_version == version)
                .order_by(Decision.id)
                .limit(1)
            )
            if first is None:
                return []
            rows = session.execute(
                select(EquitySnapshot.ts, EquitySnapshot.equity)
                .where(EquitySnapshot.market == market, EquitySnapshot.ts >= first)
                .order_by(EquitySnapshot.ts, EquitySnapshot.id)
            ).all()
        if not rows or not rows[0][1]:
            return []
        base = float(rows[0][1])
        return [(int(ts), float(equity) / base) for ts, equity in rows]


# ----- the data's quality -------------------------------------------------------------------------------------------


def _validation_runs(results_dir: Path) -> list[s.ValidationRunOut]:
    files = sorted(results_dir.glob("*/*.json"), key=lambda p: p.stat().st_mtime, reverse=True)[:MAX_VALIDATIONS]
    out = []
    for path in files:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        failed = [
            str(r.get("expectation_config", {}).get("type") or r.get("expectation_config", {}).get("expectation_type"))
            for r in data.get("results", [])
            if not r.get("success", True)
        ]
        run_time = (data.get("meta", {}).get("run_id") or {}).get("run_time")
        out.append(
            s.ValidationRunOut(
                suite=path.parent.name,
                time=str(run_time) if run_time else _iso_ms(path.stat().st_mtime * 1000),
                success=data.get("success"),
                failed=failed[:20],
                file=path.name,
            )
        )
    return out


class QualitySource:
    """Validation results per run, quarantined rows with their reasons, gaps and freshness of lake and online store."""

    def __init__(
        self,
        settings: Settings,
        markets: list[Market],
        lake: CandleLake | None,
        online_newest: Callable[[str], datetime | None] | None,
        now_ms: Callable[[], int],
    ) -> None:
        self.settings = settings
        self.markets = markets
        self.lake = lake
        self.online_newest = online_newest
        self.now_ms = now_ms
        self._cache = _Cached(10.0)

    def quality(self) -> s.QualityOut:
        return self._cache.get(self._build)

    def _quarantine(self) -> list[s.QuarantinedRowOut]:
        from cta.components import storage_for
        from cta.quarantine import Quarantine

        frame = Quarantine(storage_for(self.settings, self.settings.validation.quarantine_uri)).read()
        if frame.empty:
            return []
        frame = frame.sort_values("detected_at_ms", ascending=False).head(MAX_QUARANTINED)
        rows = []
        for record in frame.to_dict("records"):
            ts = record.get("ts")
            rows.append(
                s.QuarantinedRowOut(
                    market=str(record.get("market") or record.get("symbol") or ""),
                    candle_time=_iso_ms(int(ts)) if isinstance(ts, int | float) and np.isfinite(ts) else None,
                    reason=str(record.get("reason", ""))[:500],
                    run_id=str(record.get("run_id", "")),
                    detected_at=_iso_ms(int(record["detected_at_ms"])) if record.get("detected_at_ms") else None,
                )
            )
        return rows

    def _market(self, market: Market, now: int, quarantined: int) -> s.MarketQualityOut:
        key = str(market)
        rows = gaps = missing = 0
        newest: int | None = None
        suite = "no candles stored"
        if self.lake is not None:
            try:
                frame = self.lake.read(market)
                rows = len(frame)
                if rows:
                    ts = frame["ts"].to_numpy(dtype="int64")
                    step = timeframe_ms(market.timeframe)
                    jumps = np.diff(ts) // step - 1
                    gaps, missing = int((jumps > 0).sum()), int(jumps[jumps > 0].sum())
                    newest = int(ts[-1])
                    suite = "passed"  # every partition read back and matching its manifest's content hash
            except Exception as error:  # noqa: BLE001 (a corrupt partition is this page's news, not a 500)
                suite = f"{type(error).__name__}: {str(error)[:200]}"
        online: datetime | None = None
        if self.online_newest is not None:
            try:
                online = self.online_newest(key)
            except Exception:
                log.debug("online store read failed for %s", key, exc_info=True)
        step = timeframe_ms(market.timeframe)
        return s.MarketQualityOut(
            market=key,
            lake_rows=rows,
            lake_newest=_iso_ms(newest) if newest is not None else None,
            lake_age_s=max(0.0, (now - newest - step) / 1000) if newest is not None else None,
            gaps=gaps,
            missing_candles=missing,
            suite=suite,
            online_newest=online.astimezone(UTC).isoformat() if online else None,
            online_age_s=max(0.0, now / 1000 - online.timestamp()) if online else None,
            quarantined=quarantined,
        )

    def _build(self) -> s.QualityOut:
        now = self.now_ms()
        problem = None
        try:
            quarantine = self._quarantine()
        except Exception as error:  # noqa: BLE001
            quarantine, problem = [], f"quarantine unreadable: {type(error).__name__}: {str(error)[:200]}"
        counts: dict[str, int] = {}
        for row in quarantine:
            counts[row.market] = counts.get(row.market, 0) + 1
        return s.QualityOut(
            markets=[self._market(m, now, counts.get(str(m), counts.get(m.symbol, 0))) for m in self.markets],
            validations=_validation_runs(self.settings.validation.results_dir),
            quarantine=quarantine,
            problem=problem,
        )
