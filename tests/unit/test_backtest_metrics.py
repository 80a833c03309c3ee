from __future__ import annotations

import math

import numpy as np
import pytest

from backtests.metrics import (
    bars_per_year,
    cagr,
    equity_metrics,
    max_drawdown,
    round_trip_pnls,
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
    units = np.array([0.0, 1.0, 1.0, 0.0, -1.0, -1.0, 0.0])
    equity = np.full(7, 100.0)
    metrics = trade_metrics(units, fills=4, traded_notional=400.0, equity=equity, trade_pnls=np.array([2.0, -1.0]))
    assert metrics == {"trades": 4.0, "win_rate": 0.5, "exposure": pytest.approx(4 / 7), "turnover": 4.0}


def test_round_trips_net_of_fees_with_a_scale_in_and_a_reversal() -> None:
    # buy 1 @ 100 (fee 1), buy 1 @ 110 (fee 1), sell 3 @ 120 (fee 3: closes 2, opens 1 short), buy 1 @ 90 (fee 1)
    pnls = round_trip_pnls(
        np.array([1.0, 1.0, -3.0, 1.0]), np.array([100.0, 110.0, 120.0, 90.0]), np.array([1.0, 1.0, 3.0, 1.0])
    )
    np.testing.assert_allclose(pnls, [2 * (120 - 105) - 2 - 2, (120 - 90) - 1 - 1])
    assert len(round_trip_pnls(np.array([1.0, -0.5]), np.array([100.0, 90.0]), np.zeros(2))) == 0
