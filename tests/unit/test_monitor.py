"""Champion monitoring's pure checks (cta.monitor) on seeded synthetic records (benchmarks/bench_monitor.py has the
scenarios and measures the same over more seeds): a regime change is caught within a bounded number of bars, a
champion that behaves like its backtest is (almost) never flagged, and nothing is judged too early."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench_monitor import (
    CHANGE_AT,
    backtest,
    behaving,
    detection_delays,
    false_alarms,
)
from cta.monitor import (
    Expectations,
    MonitorSettings,
    Observed,
    assess,
    bin_edges,
    bin_fractions,
    drawdown_quantile,
    expectations,
    psi,
    returns_drawdown,
    shortfall_cusum,
)

SETTINGS = MonitorSettings()


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shifted_one() -> None:
    rng = np.random.default_rng(0)
    training = rng.normal(0, 1, 20_000)
    edges = bin_edges(training, 10)
    expected = bin_fractions(training, edges)
    assert expected == pytest.approx(np.full(10, 0.1), abs=1e-3)
    assert psi(expected, bin_fractions(rng.normal(0, 1, 20_000), edges)) < 0.01
    assert psi(expected, bin_fractions(rng.normal(1.5, 1, 20_000), edges)) > 1.0


def test_the_cusum_accumulates_a_steady_shortfall_and_forgets_noise() -> None:
    assert shortfall_cusum(np.zeros(100), 0.0, 1.0, 0.1) == (0.0, 99)
    statistic, start = shortfall_cusum(np.array([1.0, 1.0, -1.0, -1.0, -1.0]), 0.0, 1.0, 0.1)
    assert statistic == pytest.approx(2.7) and start == 2  # the run began at the first loss


def test_drawdowns() -> None:
    assert returns_drawdown(np.array([0.1, -0.5, 0.2])) == pytest.approx(0.5)
    returns = np.random.default_rng(1).normal(0, 0.01, 1000)
    assert drawdown_quantile(returns, 1000, 0.99) > drawdown_quantile(returns, 1000, 0.5) > 0


def test_expectations_survive_their_json() -> None:
    rng = np.random.default_rng(2)
    expected = expectations("7", rng.normal(0, 0.01, 50), np.ones(50), {"rsi_14": rng.uniform(0, 100, 500)})
    assert Expectations.from_json(expected.to_json()) == expected
    with pytest.raises(ValueError, match="not a"):
        Expectations.from_json('{"format": "something else"}')


def test_nothing_is_judged_before_min_bars() -> None:
    rng = np.random.default_rng(3)
    expected = backtest(rng)
    n = SETTINGS.min_bars - 1
    disaster = Observed(np.full(n, -0.05), np.ones(n), {"f0": np.full(n, 50.0)})
    assert assess(expected, disaster, SETTINGS) == []
    n = SETTINGS.window_bars
    assert {b.check for b in assess(expected, Observed(np.full(n, -0.05), np.ones(n), {}), SETTINGS)} >= {
        "returns",
        "drawdown",
    }


def test_a_champion_that_behaves_like_its_backtest_is_rarely_flagged() -> None:
    """Ten seeded replays of 3,000 bars, assessed every `every_bars` as the worker does: none flagged (the
    benchmark measures 1 of 40 replays of 6,000 bars, by the drawdown check)."""
    assert false_alarms(range(10), 3000, SETTINGS) == []


@pytest.mark.parametrize(
    ("kind", "within"),
    [("loss", 500), ("feature shift", 120), ("volatility x4", 250)],
)
def test_a_regime_change_is_caught_within_a_bounded_number_of_bars(kind: str, within: int) -> None:
    delays = detection_delays(kind, range(6), CHANGE_AT + 1000, SETTINGS)
    assert all(d is not None and 0 <= d <= within for d in delays), delays


def test_behaving_record_and_backtest_share_their_shape() -> None:
    record = behaving(np.random.default_rng(4), 100)
    assert len(record.returns) == len(record.positions) == 100 and record.returns[0] == 0.0


def test_a_feature_with_a_long_memory_is_judged_against_its_own_weekly_spread() -> None:
    """A slow feature (AR(1), 0.995) barely moves within a week, so a week's PSI against all the training rows is
    large with no drift at all: its limit is the 99th percentile of the training rows' own weeks (plus a margin)."""
    rng = np.random.default_rng(5)
    slow = np.zeros(12_000)
    for i in range(1, len(slow)):
        slow[i] = 0.995 * slow[i - 1] + rng.normal()
    expected = expectations("1", np.zeros(10), np.zeros(10), {"slow": slow[:10_000], "fast": rng.normal(0, 1, 10_000)})
    assert expected.feature_psi_p99["slow"] > SETTINGS.psi_max > expected.feature_psi_p99["fast"]
    week = slice(10_500, 10_500 + SETTINGS.window_bars)
    live = {"slow": slow[week], "fast": rng.normal(0, 1, SETTINGS.window_bars)}
    n = SETTINGS.window_bars
    assert assess(expected, Observed(np.zeros(n), np.zeros(n), live), SETTINGS) == []
    live["fast"] = live["fast"] + 1.5
    breaches = assess(expected, Observed(np.zeros(n), np.zeros(n), live), SETTINGS)
    assert [b.check for b in breaches] == ["feature_drift"] and "fast" in breaches[0].detail
