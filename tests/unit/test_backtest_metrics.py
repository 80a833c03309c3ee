from __future__ import annotations

import math

import numpy as np
import pytest

from backtests.metrics import (
    bars_per_year,
    cagr,
    equity_metrics,
    max_drawdown,
    sharpe,
    sortino,
    trade_metrics,
)


def test_bars_per_year_follow_the_timeframe() -> None:
    assert bars_per_year("1h") == 8760 and bars_per_year("1m") == 525_600 and bars_per_year("1d") == 365


def test_max_drawdown_is_the_largest_peak_to_trough_fall() -> None:
    assert max_drawdown(np.array([100.0, 120.0, 90.0, 130.0, 117.0])) == pytest.approx(0.25)
    assert max_drawdown(np.array([1.0, 2.0, 3.0])) == 0.0


def test_sharpe_and_sortino_by_hand() -> None:
    returns = np.array([0.01, -0.02, 0.03, 0.0])
    mean, std = 0.005, np.std(returns, ddof=1)
    assert sharpe(returns, 365) == pytest.approx(mean / std * math.sqrt(365))
    downside = math.sqrt((0.02**2) / 4)
    assert sortino(returns, 365) == pytest.approx(mean / downside * math.sqrt(365))
    assert sharpe(np.zeros(5), 365) == 0.0 and sortino(np.full(5, 0.01), 365) == 0.0


def test_cagr_of_a_doubling_over_two_years() -> None:
    equity = np.linspace(1.0, 2.0, 2 * 365 + 1)  # daily bars over exactly two years
    assert cagr(equity, 365) == pytest.approx(math.sqrt(2) - 1)


def test_equity_metrics_and_calmar() -> None:
    equity = np.array([100.0, 110.0, 99.0, 121.0])
    metrics = equity_metrics(equity, "1d")
    assert metrics["total_return"] == pytest.approx(0.21)
    assert metrics["max_drawdown"] == pytest.approx(0.1)
    assert metrics["calmar"] == pytest.approx(metrics["cagr"] / 0.1)


def test_trade_metrics() -> None:
    positions = np.array([0.0, 1.0, 1.0, 0.0, -1.0, -1.0, 0.0])
    metrics = trade_metrics(positions, trade_pnls=np.array([0.02, -0.01]))
    assert metrics == {"trades": 4.0, "win_rate": 0.5, "exposure": pytest.approx(4 / 7), "turnover": 4.0}
