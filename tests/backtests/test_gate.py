"""The promotion gate: each check, the champion comparison, and the luck guard against random models."""

from __future__ import annotations

import numpy as np
import pytest

from backtests.engine import Bars, buy_and_hold, run_fast
from backtests.gate import Evidence, Verdict, best_passing, deflated_sharpe, expected_max_sharpe, gate, per_bar_sharpe
from cta.config import GateSettings
from cta.decide import Limits
from cta.execution import Execution
from cta.metrics import bar_returns
from tests.factories import real_candles

THRESHOLDS = GateSettings(min_sharpe=0.5, max_drawdown=0.25, min_trades=10, champion_margin=0.1)
GOOD = {"sharpe": 2.0, "max_drawdown": 0.1, "trades": 40.0, "total_return": 0.2}


def steady_returns(mean: float = 0.002, noise: float = 0.01, bars: int = 2000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, noise, bars)


def evidence(returns: np.ndarray | None = None, **metrics: float) -> Evidence:
    return Evidence(GOOD | metrics, steady_returns() if returns is None else returns)


BUY_AND_HOLD = evidence(sharpe=0.3, total_return=0.05)


def test_a_good_candidate_passes_with_no_failures() -> None:
    verdict = gate(evidence(), BUY_AND_HOLD, None, [0.2], THRESHOLDS)
    assert verdict == Verdict(True, (), verdict.deflated_sharpe, None, ("no champion yet: first promotion",))
    assert verdict.deflated_sharpe > 0.99 and verdict.summary() == "passed every check"


@pytest.mark.parametrize(
    ("metrics", "failure"),
    [
        ({"sharpe": 0.4}, "Sharpe 0.40 < minimum 0.50"),
        ({"max_drawdown": 0.3}, "max drawdown 30.0% > limit 25.0%"),
        ({"trades": 3.0}, "3 trades < minimum 10"),
        ({"total_return": -0.01}, "total return -1.00% after costs does not beat staying flat"),
        ({"sharpe": 0.25}, "Sharpe 0.25 does not beat buy-and-hold's 0.30"),
    ],
)
def test_each_threshold_fails_with_its_reason(metrics: dict[str, float], failure: str) -> None:
    verdict = gate(evidence(**metrics), BUY_AND_HOLD, None, [0.2], THRESHOLDS)
    assert not verdict.passed and failure in verdict.failures


def test_every_failure_is_listed() -> None:
    verdict = gate(
        evidence(steady_returns(mean=0.0), sharpe=0.1, max_drawdown=0.5, trades=2.0, total_return=-0.3),
        BUY_AND_HOLD,
        None,
        [0.0],
        THRESHOLDS,
    )
    assert len(verdict.failures) == 6 and verdict.label == "rejected"


def test_benchmarks_to_beat_are_configurable() -> None:
    lagging = evidence(sharpe=0.25)
    assert not gate(lagging, BUY_AND_HOLD, None, [0.0], THRESHOLDS).passed
    flat_only = THRESHOLDS.model_copy(update={"must_beat": ("flat",), "min_sharpe": 0.2})
    assert gate(lagging, BUY_AND_HOLD, None, [0.0], flat_only).passed


def test_champion_must_be_beaten_by_the_margin() -> None:
    champion = evidence(sharpe=1.95)
    verdict = gate(evidence(sharpe=2.0), BUY_AND_HOLD, champion, [0.2], THRESHOLDS, champion_version="3")
    assert verdict.failures == ("Sharpe 2.00 does not beat champion v3's 1.95 by the margin 0.10",)
    assert verdict.champion_version == "3"
    assert gate(evidence(sharpe=2.06), BUY_AND_HOLD, champion, [0.2], THRESHOLDS, champion_version="3").passed


def test_deflated_sharpe_falls_with_the_number_of_trials() -> None:
    returns = steady_returns(mean=0.0006)
    trials = list(np.random.default_rng(1).normal(0.0, 0.03, 50))
    one, five, fifty = (deflated_sharpe(returns, trials[:n]) for n in (1, 5, 50))
    assert one > five > fifty
    assert expected_max_sharpe([0.1]) == 0.0 and expected_max_sharpe(trials) > 0.0
    assert deflated_sharpe(np.zeros(100), [0.0]) == 0.0
    zero_mean = steady_returns(mean=0.0, seed=3)
    assert deflated_sharpe(zero_mean - zero_mean.mean(), [0.0]) == pytest.approx(0.5, abs=1e-6)


def test_best_passing_picks_the_highest_sharpe() -> None:
    passed, failed = Verdict(True, (), 0.99, None), Verdict(False, ("x",), 0.1, None)
    assert best_passing({"a": passed, "b": passed, "c": failed}, {"a": 1.0, "b": 1.5, "c": 3.0}) == "b"
    assert best_passing({"c": failed}, {"c": 3.0}) is None


def random_regime_signal(length: int, seed: int) -> np.ndarray:
    """A random model that holds a random position (-1, 0, 1) for random stretches (~50 bars)."""
    rng = np.random.default_rng(seed)
    regime = np.cumsum(rng.random(length) < 0.02)
    return rng.choice([-1.0, 0.0, 1.0], size=regime[-1] + 1)[regime]


@pytest.mark.parametrize("allow_short", [False, True])
def test_random_signal_models_are_rejected_for_every_seed(allow_short: bool) -> None:
    """25 random models on the last 2,000 real BTC/USDT hours, each gated as one of the 25 tried."""
    bars = Bars.from_candles(real_candles("BTCUSDT", "1h").tail(2000).reset_index(drop=True), "1h")
    execution = Execution(0.001, 0.0002, 1.0, 10_000.0)
    benchmark = buy_and_hold(bars, execution)
    benchmark_evidence = Evidence(benchmark.metrics, bar_returns(np.concatenate([[10_000.0], benchmark.equity])))
    results = [
        run_fast(bars, random_regime_signal(len(bars), seed), Limits(allow_short=allow_short), execution)
        for seed in range(25)
    ]
    evidences = [Evidence(r.metrics, bar_returns(np.concatenate([[10_000.0], r.equity]))) for r in results]
    trials = [per_bar_sharpe(e.returns) for e in evidences]
    verdicts = [gate(e, benchmark_evidence, None, trials, GateSettings()) for e in evidences]
    assert not any(v.passed for v in verdicts), [v.failures for v in verdicts if v.passed]
    assert max(r.metrics["sharpe"] for r in results) > 0.5  # some looked good: the luck guard caught them
