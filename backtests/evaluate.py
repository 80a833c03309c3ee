"""Evaluate a market's candidates: backtest each registered version on the reserved out-of-sample
window, backtest the current champion on the SAME bars, gate every candidate, log a backtest run
(metrics, equity plot, report, fills) per model in MLflow, and promote the best candidate that passed.

Domain logic lives in the engines and the gate; this module loads models, aligns data and records.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from backtests.engine import BacktestResult, Bars, buy_and_hold, run_fast
from backtests.gate import Evidence, Verdict, best_passing, gate, per_bar_sharpe
from backtests.market_report import CandidateLine, GateSummary, candidates_figure, market_markdown
from cta.config import Settings
from cta.errors import CTAError, DataValidationError
from cta.execution import Execution
from cta.lake import Market
from cta.metrics import bar_returns
from cta.monitor import Expectations, expectations
from cta.registry import (
    EXPECTATIONS_ARTIFACT,
    Move,
    champion,
    ensure_experiment,
    promote,
    promotion_lock,
    registered_model_name,
    tag_version,
)
from features.dataset import Dataset

log = logging.getLogger(__name__)

KEY_METRICS = ("sharpe", "max_drawdown", "total_return", "trades")


@dataclass(frozen=True)
class Window:
    """The out-of-sample bars of one market and the model inputs up to their end (earlier rows give
    models that read history their context)."""

    market: Market
    bars: Bars
    features: pd.DataFrame  # dataset rows 0 .. end of the window
    first_row: int  # row of `features` where the window starts

    @property
    def start_ms(self) -> int:
        return int(self.bars.ts[0])


@dataclass
class ModelBacktest:
    """One model's run on the window (or why it could not run)."""

    version: str
    family: str
    training_run_id: str
    result: BacktestResult | None = None
    error: str | None = None

    def evidence(self, initial_cash: float) -> Evidence:
        assert self.result is not None
        curve = np.concatenate([[initial_cash], self.result.equity])
        return Evidence(self.result.metrics, bar_returns(curve))


@dataclass
class MarketEvaluation:
    market: Market
    model_name: str
    window: Window
    benchmark: BacktestResult
    candidates: list[ModelBacktest]
    champion: ModelBacktest | None
    champion_version: str | None = None  # the champion when the backtests ran (what the gate compares with)
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def out_of_sample_window(dataset: Dataset, out_of_sample: np.ndarray, candles: pd.DataFrame) -> Window:
    """The window of the reserved rows, with the candles (open and close) of the same bars."""
    if len(out_of_sample) == 0:
        raise DataValidationError(f"{dataset.market}: no out-of-sample rows to backtest on")
    first, last = int(out_of_sample[0]), int(out_of_sample[-1])
    ts = dataset.ts[first : last + 1]
    by_ts = candles.set_index("ts")
    missing = np.setdiff1d(ts, by_ts.index.to_numpy())
    if len(missing):
        raise DataValidationError(f"{dataset.market}: {len(missing)} out-of-sample bars have no candle")
    rows = by_ts.loc[ts].reset_index()
    bars = Bars.from_candles(rows, dataset.market.timeframe)
    return Window(dataset.market, bars, dataset.X.iloc[: last + 1], first)


def model_positions(model: Any, window: Window) -> np.ndarray:
    """The model's position for each bar of the window; a model reading history gets the rows
    before the window as context."""
    history = int((model.metadata.metadata or {}).get("history_rows", 1))
    start = max(0, window.first_row - 4 * history)
    output = np.asarray(model.predict(window.features.iloc[start:]), dtype="float64").reshape(-1)
    expected = len(window.features) - start
    if len(output) != expected:
        raise DataValidationError(f"model returned {len(output)} predictions for {expected} rows")
    return output[window.first_row - start :]


def trained_before(client: MlflowClient, name: str, version: str, window: Window) -> tuple[bool, str]:
    """Was the version trained only on rows before the window? (From its training-window tag.)"""
    tags = client.get_model_version(name, version).tags
    span = tags.get("training_window_ms", "")
    if "-" not in span:
        return False, f"v{version} has no training_window_ms tag"
    end = int(span.split("-")[1])
    return end < window.start_ms, f"v{version} trained on rows up to {end}, window starts {window.start_ms}"


def backtest_version(
    settings: Settings, client: MlflowClient, name: str, version: str, window: Window
) -> ModelBacktest:
    """Load `models:/name/version` and backtest its positions on the window; failures are recorded."""
    details = client.get_model_version(name, version)
    run = ModelBacktest(version, details.tags.get("family", "?"), details.run_id or "")
    try:
        model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
        positions = model_positions(model, window)
        execution = Execution.from_settings(settings.costs, settings.backtest)
        if settings.backtest.engine == "backtrader":
            from backtests.bt_engine import run_backtrader

            run.result = run_backtrader(window.bars, positions, settings.limits, execution)
        else:
            run.result = run_fast(window.bars, positions, settings.limits, execution)
    except (CTAError, MlflowException, OSError, ValueError, KeyError, RuntimeError) as e:
        run.error = f"{type(e).__name__}: {e}"
        log.warning("%s v%s: backtest failed: %s", name, version, run.error)
    return run


def backtest_market(
    settings: Settings, client: MlflowClient, window: Window, candidate_versions: list[str]
) -> MarketEvaluation:
    """Backtest buy-and-hold, the candidates and the current champion on the same window."""
    name = registered_model_name(window.market)
    execution = Execution.from_settings(settings.costs, settings.backtest)
    benchmark = buy_and_hold(window.bars, execution)
    candidates = [backtest_version(settings, client, name, v, window) for v in candidate_versions]
    evaluation = MarketEvaluation(window.market, name, window, benchmark, candidates, None)
    for candidate in candidates:
        if candidate.result is None:
            continue
        clean, why = trained_before(client, name, candidate.version, window)
        if not clean:
            candidate.error = f"trained on the backtest window: {why}"
            candidate.result = None
    current = champion(client, name)
    evaluation.champion_version = _version(current)
    if current is not None and str(current.version) not in candidate_versions:
        evaluation.champion = backtest_version(settings, client, name, str(current.version), window)
        if evaluation.champion.result is None:
            evaluation.notes.append(
                f"champion v{current.version} could not be backtested ({evaluation.champion.error}); "
                "candidates are held to the absolute thresholds"
            )
        elif not trained_before(client, name, current.version, window)[0]:
            evaluation.notes.append(f"champion v{current.version} was trained on part of this window")
    return evaluation


def gate_market(settings: Settings, evaluation: MarketEvaluation) -> dict[str, Verdict]:
    """Gate every candidate; the luck guard counts every candidate that ran on this window."""
    cash = settings.backtest.initial_cash
    candidates, benchmark = evaluation.candidates, evaluation.benchmark
    ran = [c for c in candidates if c.result is not None]
    trials = [per_bar_sharpe(c.evidence(cash).returns) for c in ran]
    benchmark_evidence = Evidence(benchmark.metrics, bar_returns(np.concatenate([[cash], benchmark.equity])))
    champion_run = evaluation.champion if evaluation.champion and evaluation.champion.result else None
    for candidate in candidates:
        if candidate.result is None:
            failure = f"backtest failed: {candidate.error}"
            verdict = Verdict(False, (failure,), 0.0, evaluation.champion_version)
        else:
            verdict = gate(
                candidate.evidence(cash),
                benchmark_evidence,
                champion_run.evidence(cash) if champion_run else None,
                trials,
                settings.backtest.gate,
                champion_version=evaluation.champion_version,
            )
        evaluation.verdicts[candidate.version] = verdict
    return evaluation.verdicts


def _version(current: Any) -> str | None:
    return None if current is None else str(current.version)


def record_and_promote(settings: Settings, client: MlflowClient, evaluation: MarketEvaluation) -> list[dict[str, Any]]:
    """Log one backtest run per candidate, tag every version with its verdict, promote the best
    passing candidate. Returns the verdict rows (one per candidate)."""
    name = evaluation.model_name
    sharpes = {c.version: c.result.metrics["sharpe"] for c in evaluation.candidates if c.result is not None}
    best = best_passing(evaluation.verdicts, sharpes)
    rows: list[dict[str, Any]] = []
    lock = promotion_lock(settings, name)
    gate_id = uuid.uuid4().hex
    for candidate in evaluation.candidates:
        verdict = evaluation.verdicts[candidate.version]
        run_id = (
            log_backtest_run(settings, evaluation, candidate, verdict, gate_id) if candidate.result is not None else ""
        )
        metrics = candidate.result.metrics if candidate.result is not None else {}
        tags = {
            "verdict": verdict.label,
            "verdict_reasons": verdict.summary(),
            "backtest_run_id": run_id,
            "compared_with": f"v{verdict.champion_version}" if verdict.champion_version else "none",
            "deflated_sharpe": f"{verdict.deflated_sharpe:.4f}",
            **{f"oos_{k}": f"{metrics[k]:.6g}" for k in KEY_METRICS if k in metrics},
        }
        outcome = verdict.label
        reasons = verdict.summary()
        if verdict.passed and candidate.version != best:
            tags["verdict_reasons"] = reasons = f"passed, but v{best} scored a higher Sharpe"
        tag_version(client, name, candidate.version, tags)
        if verdict.passed and candidate.version == best:
            move: Move = promote(
                client,
                name,
                candidate.version,
                expected_champion=verdict.champion_version,
                reason=f"gate passed on {len(evaluation.window.bars)} out-of-sample bars",
                lock=lock,
            )
            outcome, reasons = move.outcome, move.detail
        rows.append(verdict_row(evaluation.market, candidate, outcome, reasons))
    log_gate_report(settings, evaluation, rows, gate_id)
    return rows


def gate_summary(evaluation: MarketEvaluation, rows: list[dict[str, Any]]) -> GateSummary:
    """The gate run as the market report shows it (`rows`: record_and_promote's verdict rows)."""
    from backtests.report import utc

    ts = evaluation.window.bars.ts
    deflated = {version: verdict.deflated_sharpe for version, verdict in evaluation.verdicts.items()}
    return GateSummary(
        market=str(evaluation.market),
        window=f"{utc(ts[0])} - {utc(ts[-1])}" if len(ts) else "n/a",
        bars=len(ts),
        trials=sum(1 for c in evaluation.candidates if c.result is not None),
        buy_and_hold={k: float(evaluation.benchmark.metrics[k]) for k in ("total_return", "sharpe", "max_drawdown")},
        candidates=[
            CandidateLine(
                family=row["family"],
                version=str(row["version"]),
                total_return=float(row["total_return"]),
                sharpe=float(row["sharpe"]),
                max_drawdown=float(row["max_drawdown"]),
                trades=int(row["trades"]),
                deflated_sharpe=float(deflated.get(str(row["version"]), float("nan"))),
                verdict=str(row["verdict"]),
                reasons=str(row["reasons"]),
            )
            for row in rows
        ],
        champion_before=f"v{evaluation.champion_version}" if evaluation.champion_version else None,
    )


def log_gate_report(settings: Settings, evaluation: MarketEvaluation, rows: list[dict[str, Any]], gate_id: str) -> str:
    """One MLflow run per gate (kind `gate`): the market report of every candidate it judged (Markdown, PNG, JSON)."""
    summary = gate_summary(evaluation, rows)
    with mlflow.start_run(
        experiment_id=ensure_experiment(settings, evaluation.market), run_name=f"gate-{evaluation.market}"
    ) as run:
        mlflow.set_tags({"kind": "gate", "gate_id": gate_id, "model_name": evaluation.model_name})
        mlflow.log_metrics({"trials": summary.trials, "bars": summary.bars})
        mlflow.log_dict(asdict(summary), "gate/summary.json")
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            candidates_figure(summary, folder / "candidates.png")
            text = market_markdown(summary, None, market=summary.market, image="candidates.png", with_live=False)
            (folder / "report.md").write_text(f"# Gate report\n\n{text}")
            mlflow.log_artifacts(str(folder), artifact_path="gate")
        return str(run.info.run_id)


def verdict_row(market: Market, candidate: ModelBacktest, outcome: str, reasons: str) -> dict[str, Any]:
    metrics = candidate.result.metrics if candidate.result is not None else {}
    return {
        "market": str(market),
        "family": candidate.family,
        "version": candidate.version,
        "sharpe": metrics.get("sharpe", float("nan")),
        "max_drawdown": metrics.get("max_drawdown", float("nan")),
        "total_return": metrics.get("total_return", float("nan")),
        "trades": int(metrics.get("trades", 0)),
        "verdict": outcome,
        "reasons": reasons,
    }


def monitor_expectations(settings: Settings, evaluation: MarketEvaluation, candidate: ModelBacktest) -> Expectations:
    """The backtest summarised for champion monitoring: its per-bar returns and positions on the window, and the
    distribution of every feature over the rows before the window (what the model was fitted on)."""
    assert candidate.result is not None
    window = evaluation.window
    training = window.features.iloc[: window.first_row]
    return expectations(
        candidate.version,
        candidate.evidence(settings.backtest.initial_cash).returns,
        candidate.result.targets,
        {str(name): training[name].to_numpy(dtype="float64") for name in training.columns},
        bins=settings.serving.monitor.psi_bins,
        psi_window=settings.serving.monitor.window_bars,
    )


def log_backtest_run(
    settings: Settings, evaluation: MarketEvaluation, candidate: ModelBacktest, verdict: Verdict, gate_id: str = ""
) -> str:
    """One MLflow run per backtest: metrics of the candidate, buy-and-hold and the champion on the
    same bars, the verdict, an equity/drawdown PNG, a Markdown report and the fills."""
    from backtests.report import equity_figure, fills_frame, markdown_report

    assert candidate.result is not None
    result, window = candidate.result, evaluation.window
    experiment_id = ensure_experiment(settings, evaluation.market)
    run_name = f"backtest-{candidate.family}-v{candidate.version}"
    champion_result = evaluation.champion.result if evaluation.champion else None
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.set_tags(
            {
                "kind": "backtest",
                "model_name": evaluation.model_name,
                "model_version": candidate.version,
                "family": candidate.family,
                "training_run_id": candidate.training_run_id,
                "engine": result.engine,
                "window_ms": f"{int(window.bars.ts[0])}-{int(window.bars.ts[-1])}",
                "verdict": verdict.label,
                "compared_with": f"v{verdict.champion_version}" if verdict.champion_version else "none",
                "gate_id": gate_id,
            }
        )
        mlflow.log_metrics(result.metrics)
        mlflow.log_metrics({f"buy_and_hold_{k}": v for k, v in evaluation.benchmark.metrics.items()})
        if champion_result is not None:
            mlflow.log_metrics({f"champion_{k}": v for k, v in champion_result.metrics.items()})
        mlflow.log_metric("deflated_sharpe", verdict.deflated_sharpe)
        # what the worker's champion monitoring compares this version's live record with (cta.monitor)
        mlflow.log_text(monitor_expectations(settings, evaluation, candidate).to_json(), EXPECTATIONS_ARTIFACT)
        mlflow.log_dict(
            {
                "verdict": verdict.label,
                "failures": list(verdict.failures),
                "notes": [*verdict.notes, *evaluation.notes],
                "deflated_sharpe": verdict.deflated_sharpe,
                "champion_version": verdict.champion_version,
                "thresholds": settings.backtest.gate.model_dump(mode="json"),
            },
            "verdict.json",
        )
        if settings.backtest.reports:
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                title = f"{evaluation.market} {candidate.family} v{candidate.version}"
                equity_figure(result, evaluation.benchmark, folder / "equity.png", title)
                report = markdown_report(
                    title=title,
                    model={
                        "name": evaluation.model_name,
                        "version": candidate.version,
                        "family": candidate.family,
                        "training run": candidate.training_run_id,
                    },
                    result=result,
                    benchmark=evaluation.benchmark,
                    champion=champion_result,
                    verdict_label=verdict.label.upper(),
                    failures=list(verdict.failures),
                    notes=[*verdict.notes, *evaluation.notes],
                    thresholds=settings.backtest.gate.model_dump(mode="json"),
                )
                (folder / "report.md").write_text(report)
                fills_frame(result).to_csv(folder / "fills.csv", index=False)
                mlflow.log_artifacts(str(folder), artifact_path="backtest")
        return str(run.info.run_id)
