from __future__ import annotations

import math

import numpy as np
import pytest

from backtests.metrics import (
    _round_trips,
    bars_per_year,
    cagr,
    equity_metrics,
    round_trip_pnls,
    sharpe,
    sortino,
    trade_metrics,
)
from cta.metrics import bar_returns, max_drawdown


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


def reference_equity_metrics(curve: np.ndarray, timeframe: str) -> dict[str, float]:
    """The numpy definitions, one by one (what the compiled `equity_metrics` must reproduce)."""
    periods = bars_per_year(timeframe)
    returns = bar_returns(curve)
    drawdown = max_drawdown(curve)
    return {
        "total_return": curve[-1] / curve[0] - 1.0,
        "cagr": cagr(curve, periods),
        "sharpe": sharpe(returns, periods),
        "sortino": sortino(returns, periods),
        "max_drawdown": drawdown,
        "calmar": 0.0 if drawdown == 0.0 else cagr(curve, periods) / drawdown,
    }


def random_curve(rng: np.random.Generator, n: int) -> np.ndarray:
    """A positive equity curve: drifting log-normal bar returns, with flat stretches (no position)."""
    drift, volatility = rng.uniform(-2e-4, 4e-4), rng.uniform(1e-4, 2e-2)
    steps = rng.normal(drift, volatility, n) * (rng.random(n) < rng.uniform(0.3, 1.0))
    return rng.uniform(100.0, 1e6) * np.exp(np.cumsum(steps))


@pytest.mark.parametrize("seed", range(20))
def test_compiled_equity_metrics_equal_the_numpy_definitions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    curve = random_curve(rng, int(rng.choice([2, 3, 50, 1_000, 100_000])))
    timeframe = str(rng.choice(["1m", "1h", "1d"]))
    expected = reference_equity_metrics(curve, timeframe)
    for start in (None, float(curve[0])):  # the first value in the curve, or passed apart
        values = curve if start is None else curve[1:]
        metrics = equity_metrics(values, timeframe, start=start)
        assert metrics.keys() == expected.keys()
        for key, value in expected.items():
            assert metrics[key] == pytest.approx(value, rel=1e-12, abs=1e-300), key


def test_compiled_equity_metrics_edge_cases() -> None:
    flat = equity_metrics(np.full(10, 100.0), "1h")  # no returns at all: every ratio 0
    assert flat == {"total_return": 0.0, "cagr": 0.0, "sharpe": 0.0, "sortino": 0.0, "max_drawdown": 0.0, "calmar": 0.0}
    alone = equity_metrics(np.array([], dtype="float64"), "1h", start=1000.0)  # a run of zero bars
    assert alone == flat
    rising = np.array([1.0, 1.1, 1.2, 1.25])  # never below a peak, no negative return
    assert equity_metrics(rising, "1d")["max_drawdown"] == 0.0 and equity_metrics(rising, "1d")["sortino"] == 0.0
    with_nan = equity_metrics(np.array([1.0, 1.1, np.nan, 1.2]), "1d")
    assert math.isnan(with_nan["sharpe"]) and math.isnan(with_nan["max_drawdown"])
    assert math.isnan(max_drawdown(np.array([1.0, 1.1, np.nan, 1.2])))
    with pytest.raises(IndexError):
        equity_metrics(np.array([], dtype="float64"), "1h")


def test_trade_metrics_with_the_start_apart_equal_the_prepended_curve() -> None:
    units = np.array([0.0, 1.0, 1.0, 0.0])
    equity = np.array([99.0, 101.0, 104.0, 102.0])
    apart = trade_metrics(units, 2, 200.0, equity, np.array([2.0]), start=100.0)
    assert apart == trade_metrics(units, 2, 200.0, np.concatenate([[100.0], equity]), np.array([2.0]))


def test_compiled_round_trips_equal_the_python_rule() -> None:
    rng = np.random.default_rng(5)
    held = rng.choice([-1.0, -0.3, 0.0, 0.0, 0.1, 0.3, 1.0], 6000) * rng.choice([1.0, 1.0, 0.7, 1.3], 6000)
    sizes = np.diff(held, prepend=0.0)  # fills between random positions: scale-ins, partial exits, reversals
    sizes = sizes[sizes != 0.0]
    prices = rng.uniform(90.0, 110.0, len(sizes))
    fees = np.abs(sizes) * prices * 0.001
    expected = _round_trips.py_func(sizes, prices, fees)  # the same rule run by CPython, not compiled
    assert len(expected) > 500
    np.testing.assert_array_equal(round_trip_pnls(sizes, prices, fees), expected)
    assert round_trip_pnls(np.array([]), np.array([]), np.array([])).shape == (0,)
    with pytest.raises(ValueError, match="sizes"):
        round_trip_pnls(np.ones(2), np.ones(3), np.ones(2))
