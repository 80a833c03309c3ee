"""Report builders on real backtests: the equity PNG, the Markdown report and the fills table."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from backtests.engine import BacktestResult, Bars, buy_and_hold, run_fast
from backtests.report import equity_figure, fills_frame, markdown_report, marker_indices
from cta.config import GateSettings
from cta.decide import Limits
from cta.execution import Execution
from tests.factories import real_candles

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LIMITS = Limits(allow_short=True)
EXECUTION = Execution(fee_rate=0.001, slippage=0.0002, position_fraction=1.0, initial_cash=10_000.0)
MODEL = {"name": "cta-btcusdt-1h", "version": "7", "family": "gbm", "run_id": "abc123"}
FAILURES = ["Sharpe 0.40 < minimum 0.50", "max drawdown 30.0% > limit 25.0%"]
METRIC_ROWS = (
    "total_return",
    "cagr",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "trades",
    "win_rate",
    "exposure",
    "turnover",
    "final_equity",
)


def momentum(bars: Bars, lookback: int) -> np.ndarray:
    signal = np.full(len(bars), np.nan)
    signal[lookback:] = np.sign(bars.close[lookback:] / bars.close[:-lookback] - 1.0)
    return signal


@pytest.fixture(scope="module")
def runs() -> dict[str, BacktestResult]:
    bars = Bars.from_candles(real_candles("BTCUSDT", "1h", 500), "1h")
    return {
        "candidate": run_fast(bars, momentum(bars, 12), LIMITS, EXECUTION),
        "champion": run_fast(bars, momentum(bars, 48), LIMITS, EXECUTION),
        "benchmark": buy_and_hold(bars, EXECUTION),
    }


def report(runs: dict[str, BacktestResult], *, champion: bool, failures: list[str]) -> str:
    return markdown_report(
        title="BTC/USDT 1h out-of-sample backtest",
        model=MODEL,
        result=runs["candidate"],
        benchmark=runs["benchmark"],
        champion=runs["champion"] if champion else None,
        verdict_label="rejected" if failures else "passed",
        failures=failures,
        notes=["no champion yet: first promotion"] if not champion else [],
        thresholds=GateSettings().model_dump(),
    )


def test_equity_figure_writes_a_png_and_closes_it(runs: dict[str, BacktestResult], tmp_path: Path) -> None:
    path = equity_figure(runs["candidate"], runs["benchmark"], tmp_path / "out" / "equity.png", "BTC/USDT 1h")
    assert path == tmp_path / "out" / "equity.png"
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 10_000
    assert plt.get_fignums() == []


def test_markers_are_subsampled_evenly_to_the_limit() -> None:
    assert list(marker_indices(3, limit=5)) == [0, 1, 2]
    many = marker_indices(10_000, limit=500)
    assert len(many) == 500 and many[0] == 0 and many[-1] == 9_999
    assert np.all(np.diff(many) > 0)


def test_rejected_report_lists_every_failure_and_the_champion(runs: dict[str, BacktestResult]) -> None:
    text = report(runs, champion=True, failures=FAILURES)
    assert "**Verdict: REJECTED**" in text
    for reason in FAILURES:
        assert f"- {reason}" in text
    assert "| metric | candidate | buy-and-hold | champion |" in text
    for metric in METRIC_ROWS:
        assert f"| {metric} | " in text
    candidate = runs["candidate"].metrics
    assert f"| total_return | {candidate['total_return']:.2%} |" in text
    assert f"| trades | {candidate['trades']:,.0f} |" in text
    assert "![equity](equity.png)" in text


def test_passed_report_without_champion_has_no_champion_column(runs: dict[str, BacktestResult]) -> None:
    text = report(runs, champion=False, failures=[])
    assert "**Verdict: PASSED**" in text
    assert "Failed checks" not in text
    assert "| metric | candidate | buy-and-hold |" in text and "champion |" not in text
    assert "- no champion yet: first promotion" in text


def test_report_shows_the_window_model_and_thresholds(runs: dict[str, BacktestResult]) -> None:
    text = report(runs, champion=False, failures=[])
    assert "| first bar | 2021-01-01 00:00 UTC |" in text
    assert "| bars | 500 |" in text and "| timeframe | 1h |" in text
    for field, value in MODEL.items():
        assert f"| {field} | {value} |" in text
    assert "| min_sharpe | 0.5 |" in text and "| must_beat | flat, buy_and_hold |" in text


def test_fills_frame_adds_the_notional(runs: dict[str, BacktestResult]) -> None:
    result = runs["candidate"]
    frame = fills_frame(result)
    assert list(frame.columns) == ["time", "side", "units", "price", "fee", "notional"]
    assert len(frame) == len(result.fills) > 10
    np.testing.assert_allclose(frame["notional"], np.abs(result.fills.units) * result.fills.price)
    assert str(frame["time"].dt.tz) == "UTC"
    assert set(frame["side"]) == {"buy", "sell"}
