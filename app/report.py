"""`cta report`: per market, the newest gate's candidates (from its MLflow `gate` run) and the champion's live record
against its backtest (the trading database and the expectations logged with that backtest), as one Markdown file
with a PNG per market. Read-only: it changes nothing in the registry or the trading database."""

from __future__ import annotations

import json
import math
import tempfile
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from backtests.market_report import CandidateLine, GateSummary, LiveRecord, candidates_figure, market_markdown
from cta.config import Settings
from cta.lake import Market
from cta.monitor import Expectations, assess, feature_psi, hit_rate, returns_drawdown, turnover
from cta.timeframes import timeframe_ms


def latest_gate(client: Any, settings: Settings, market: Market) -> GateSummary | None:
    """The newest gate run's summary for `market` (None: no gate has run)."""
    import mlflow

    from cta.registry import experiment_name

    experiment = client.get_experiment_by_name(experiment_name(market))
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id], "tags.kind = 'gate'", order_by=["attributes.start_time DESC"], max_results=1
    )
    if not runs:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(
            run_id=runs[0].info.run_id, artifact_path="gate/summary.json", dst_path=tmp
        )
        data = json.loads(Path(path).read_text())
    data["candidates"] = [CandidateLine(**c) for c in data["candidates"]]
    return GateSummary(**data)


def live_record(settings: Settings, sessions: Any, market: Market, version: str, expected: Expectations) -> LiveRecord:
    """The champion's record in the trading database beside its backtest, in monitoring's terms."""
    from features.registry import feature_names
    from serving.champion_watch import observed_record
    from serving.market_state import MarketState

    monitor = settings.serving.monitor
    columns = list(settings.features.names) if settings.features.names else feature_names()
    state = MarketState(market, timeframe_ms(market.timeframe), deque(), deque())
    bars = max(len(expected.bar_returns), monitor.window_bars, monitor.min_bars)
    observed = observed_record(sessions, state, version, bars, columns)
    if len(observed) == 0:
        return LiveRecord(version, 0, note="It has not traded a bar yet (no decisions of this version).")
    live, back = np.asarray(observed.returns), np.asarray(expected.bar_returns)
    hits, _ = hit_rate(live, observed.positions)
    psis = feature_psi(expected, {k: v[-monitor.window_bars :] for k, v in observed.features.items()})
    worst = max(psis.items(), key=lambda item: item[1]) if psis else None
    rows = [
        ("mean return per bar", f"{np.mean(live):+.5f}", f"{np.mean(back):+.5f}"),
        ("volatility per bar", f"{np.std(live, ddof=1):.5f}" if len(live) > 1 else "n/a", f"{expected.return_std:.5f}"),
        (
            "compounded return",
            f"{np.prod(1 + live) - 1:+.2%} over {len(live):,} bars",
            f"{np.prod(1 + back) - 1:+.2%} over {len(back):,} bars",
        ),
        (
            "worst drawdown",
            f"{returns_drawdown(live):.2%}",
            f"{expected.max_drawdown:.2%} (99th pct. resampled {expected.drawdown_p99:.2%})",
        ),
        (
            "position change per bar",
            f"{turnover(observed.positions[1:], initial=observed.positions[0]):.3f}" if len(live) > 1 else "n/a",
            f"{expected.turnover:.3f}",
        ),
        ("bars in the market that gained", "n/a" if math.isnan(hits) else f"{hits:.0%}", f"{expected.hit_rate:.0%}"),
        ("largest feature drift (PSI)", f"{worst[0]} {worst[1]:.2f}" if worst else "n/a", "0 (its training rows)"),
    ]
    breaches = [str(b) for b in assess(expected, observed, monitor)]
    note = "" if len(observed) >= monitor.min_bars else f"Monitoring judges from {monitor.min_bars} bars on."
    return LiveRecord(version, len(observed), rows, breaches, note)


def trading_database(url: str) -> Any:
    """An engine on the trading database, or None when it is a SQLite file that does not exist (the report never
    creates one)."""
    from sqlalchemy.engine import make_url

    from serving.db import make_engine

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not (parsed.database and Path(parsed.database).exists()):
        return None
    return make_engine(url)


def build_report(settings: Settings, markets: list[Market], out_dir: Path) -> Path:
    """Write `out_dir/report.md` (and one PNG per market with a gate run); returns the Markdown's path."""
    from mlflow import MlflowClient
    from sqlalchemy.exc import SQLAlchemyError

    from cta.registry import champion, configure_mlflow, load_expectations, registered_model_name
    from serving.db import database_problem, session_factory

    configure_mlflow(settings)
    client = MlflowClient()
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = trading_database(settings.serving.database_url)
    sessions = session_factory(engine) if engine is not None and database_problem(engine) is None else None
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"# CTA report, {stamp}",
        "",
        "Returns are after the configured costs (fees, spread, slippage) on each gate's out-of-sample window.",
        "",
    ]
    try:
        for market in markets:
            summary = latest_gate(client, settings, market)
            image = None
            if summary is not None:
                image = f"candidates-{str(market).replace(':', '_').replace('/', '_')}.png"
                candidates_figure(summary, out_dir / image)
            live = None
            current = champion(client, registered_model_name(market))
            if current is not None:
                version = str(current.version)
                expected = load_expectations(client, registered_model_name(market), version)
                if expected is None:
                    live = LiveRecord(version, 0, note="No expectations were logged with its gate (not monitored).")
                elif sessions is None:
                    live = LiveRecord(version, 0, note="No trading database answers (it has not traded here).")
                else:
                    try:
                        live = live_record(settings, sessions, market, version, expected)
                    except SQLAlchemyError as e:
                        live = LiveRecord(version, 0, note=f"The trading database cannot be read ({type(e).__name__}).")
            parts.append(market_markdown(summary, live, market=str(market), image=image))
    finally:
        if engine is not None:
            engine.dispose()
    path = out_dir / "report.md"
    path.write_text("\n".join(parts))
    return path
