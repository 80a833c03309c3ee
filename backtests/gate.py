"""The promotion gate: a pure function of a candidate's out-of-sample backtest, the benchmarks and the
current champion's backtest on the SAME bars. It returns pass/fail and every reason it failed.

The luck guard is the deflated Sharpe ratio (Bailey & Lopez de Prado, 2014): the probability that the
candidate's true Sharpe is above the best Sharpe that luck alone would give among the candidates tried
on this window, allowing for the skew and fat tails of its returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from cta.config import GateSettings

EULER_GAMMA = 0.5772156649015329
_NORMAL = NormalDist()


@dataclass(frozen=True)
class Evidence:
    """One model's backtest on the out-of-sample window: its metrics and per-bar returns."""

    metrics: dict[str, float]
    returns: np.ndarray


@dataclass(frozen=True)
class Verdict:
    passed: bool
    failures: tuple[str, ...]  # empty when passed
    deflated_sharpe: float
    champion_version: str | None  # the champion the candidate was compared with (None: first promotion)
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def label(self) -> str:
        return "passed" if self.passed else "rejected"

    def summary(self) -> str:
        return "; ".join(self.failures) if self.failures else "passed every check"


def per_bar_sharpe(returns: np.ndarray) -> float:
    std = float(np.std(returns, ddof=1)) if len(returns) > 1 else 0.0
    return 0.0 if std == 0.0 else float(np.mean(returns)) / std


def expected_max_sharpe(trial_sharpes: list[float]) -> float:
    """The Sharpe (per bar) the best of N unskilled trials is expected to reach, given the spread of
    the trials' Sharpes. One trial: 0."""
    n = len(trial_sharpes)
    if n < 2:
        return 0.0
    spread = float(np.std(trial_sharpes, ddof=1))
    quantile = (1 - EULER_GAMMA) * _NORMAL.inv_cdf(1 - 1 / n) + EULER_GAMMA * _NORMAL.inv_cdf(1 - 1 / (n * math.e))
    return spread * quantile


def deflated_sharpe(returns: np.ndarray, trial_sharpes: list[float]) -> float:
    """P(true Sharpe > expected maximum of the trials' Sharpes), from the candidate's per-bar returns."""
    observations = len(returns)
    if observations < 3:
        return 0.0
    sharpe = per_bar_sharpe(returns)
    centred = returns - np.mean(returns)
    variance = float(np.mean(centred**2))
    if variance == 0.0:
        return 0.0
    skew = float(np.mean(centred**3)) / variance**1.5
    kurtosis = float(np.mean(centred**4)) / variance**2
    spread = 1 - skew * sharpe + (kurtosis - 1) / 4 * sharpe**2
    if spread <= 0:
        return 0.0
    z = (sharpe - expected_max_sharpe(trial_sharpes)) * math.sqrt(observations - 1) / math.sqrt(spread)
    return _NORMAL.cdf(z)


def gate(
    candidate: Evidence,
    buy_and_hold: Evidence,
    champion: Evidence | None,
    trial_sharpes: list[float],
    thresholds: GateSettings,
    *,
    champion_version: str | None = None,
) -> Verdict:
    """Check the candidate against the thresholds, the benchmarks, the champion and luck. Every failed
    check is listed (not only the first)."""
    metrics = candidate.metrics
    sharpe, drawdown, trades = metrics["sharpe"], metrics["max_drawdown"], int(metrics["trades"])
    failures: list[str] = []
    if sharpe < thresholds.min_sharpe:
        failures.append(f"Sharpe {sharpe:.2f} < minimum {thresholds.min_sharpe:.2f}")
    if drawdown > thresholds.max_drawdown:
        failures.append(f"max drawdown {drawdown:.1%} > limit {thresholds.max_drawdown:.1%}")
    if trades < thresholds.min_trades:
        failures.append(f"{trades} trades < minimum {thresholds.min_trades}")
    if "flat" in thresholds.must_beat and metrics["total_return"] <= 0.0:
        failures.append(f"total return {metrics['total_return']:.2%} after costs does not beat staying flat")
    if "buy_and_hold" in thresholds.must_beat and sharpe <= buy_and_hold.metrics["sharpe"]:
        failures.append(f"Sharpe {sharpe:.2f} does not beat buy-and-hold's {buy_and_hold.metrics['sharpe']:.2f}")
    notes: list[str] = []
    if champion is None:
        notes.append("no champion yet: first promotion")
    elif sharpe < champion.metrics["sharpe"] + thresholds.champion_margin:
        failures.append(
            f"Sharpe {sharpe:.2f} does not beat champion v{champion_version}'s {champion.metrics['sharpe']:.2f} "
            f"by the margin {thresholds.champion_margin:.2f}"
        )
    probability = deflated_sharpe(candidate.returns, trial_sharpes)
    if probability < thresholds.min_deflated_sharpe:
        failures.append(
            f"deflated Sharpe {probability:.2f} < {thresholds.min_deflated_sharpe:.2f} "
            f"({len(trial_sharpes)} candidates tried: could be luck)"
        )
    return Verdict(not failures, tuple(failures), probability, champion_version, tuple(notes))


def best_passing(verdicts: dict[str, Verdict], sharpes: dict[str, float]) -> str | None:
    """The key of the passing candidate with the highest Sharpe (ties: the first), or None."""
    passing = [key for key, verdict in verdicts.items() if verdict.passed]
    return max(passing, key=lambda key: sharpes[key]) if passing else None
