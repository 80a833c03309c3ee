"""Champion monitoring: is the champion still the model its backtest described?

Pure functions. At promotion time the gate's backtest is summarised as `Expectations` (its per-bar returns after
costs, worst drawdown, turnover, hit rate, and the training rows' distribution of every feature); while it trades,
the worker's record since the champion started (`Observed`: realised per-bar returns of the market's equity, the
positions held, the feature rows it decided on) is compared with them by `assess`, which lists every breach:

- returns: a one-sided CUSUM of the shortfall of the realised returns of the bars in the market (per unit of
  position) from the backtest's (in its standard deviations, less an allowance `cusum_k` per bar) passes
  `cusum_h`: it accumulates a small, steady shortfall that a window's mean would need many bars to show, and it
  forgets noise; doing better than the backtest is not a reason to stop;
- volatility: the volatility of the last `window_bars` returns exceeds `vol_ratio_max` times the backtest's;
- drawdown: the drawdown over the most recent stretch as long as the backtest exceeds the backtest's worst by
  `drawdown_margin` (same horizon on both sides: a longer stretch would breach by its length alone); "worst" is
  the larger of the backtest's own and the 99th percentile over resamplings of its returns, since one window's
  worst is a single, noisy draw;
- turnover: the mean position change per bar exceeds `turnover_factor` times the backtest's (with a floor);
- hit rate: the share of bars in the market that gained, over as many bars as the backtest, is below the
  backtest's by more than `hit_rate_drop`;
- feature drift: the population stability index (PSI) of a feature's last `window_bars` values against its
  training distribution (decile bins) exceeds `psi_max` (0.1 is usually read as "some shift", 0.25 "major"; a
  week of rows has sampling noise of its own, hence 0.5), or, for a feature with a long memory, the 99th
  percentile of the PSI of the training rows' own stretches of that length by `psi_margin`; judged once
  `window_bars` rows are in.

Nothing is judged before `min_bars` observations: a new champion gets time before any verdict.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cta.metrics import max_drawdown

FORMAT = "cta.monitor.expectations/v1"


class MonitorSettings(BaseModel):
    """Thresholds of champion monitoring (`serving.monitor`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    action: Literal["demote", "alert"] = "demote"  # alert: a ledger entry, a log line and a metric; no demotion
    every_bars: int = Field(default=6, ge=1)  # assess each market after this many new bars
    window_bars: int = Field(default=168, ge=8)  # the recent bars the return and drift checks look at
    min_bars: int = Field(default=72, ge=8)  # no verdict on fewer bars of the champion
    # The CUSUM of the shortfall: `cusum_k` is the shortfall per bar in the market (in backtest standard deviations)
    # it lets pass, `cusum_h` its alarm level. The backtest's mean is itself an estimate (a few hundred bars), so
    # k is well above the 0.1 that known parameters would allow: measured in benchmarks/bench_monitor.py.
    cusum_k: float = Field(default=0.15, ge=0)
    cusum_h: float = Field(default=30.0, gt=0)
    vol_ratio_max: float = Field(default=3.0, gt=1)
    drawdown_margin: float = Field(default=0.5, ge=0)
    turnover_factor: float = Field(default=3.0, gt=1)
    turnover_floor: float = Field(default=0.05, ge=0)  # per bar; below this turnover never breaches
    hit_rate_drop: float = Field(default=0.2, gt=0, lt=1)
    min_in_market_bars: int = Field(default=48, ge=1)  # bars holding a position before the hit rate is judged
    psi_max: float = Field(default=0.5, gt=0)
    psi_margin: float = Field(default=0.5, ge=0)  # over the 99th percentile of the training rows' own stretches
    psi_bins: int = Field(default=10, ge=2, le=50)


@dataclass(frozen=True)
class Expectations:
    """What the backtest that promoted a version predicts for it (logged with that backtest, read by the worker)."""

    version: str
    bar_returns: tuple[float, ...]  # per-bar strategy returns after costs on the out-of-sample window
    max_drawdown: float  # the worst peak-to-trough of that backtest (fraction)
    # the 99th percentile of the worst drawdown over as many bars, over resamplings of its returns: the one
    # window's worst is a single draw, and breaching it is common for a model that behaves (measured: 13 % of checks)
    drawdown_p99: float
    turnover: float  # mean |position change| per bar
    # per-bar return per unit of position, over the bars held in the market: what the CUSUM compares with
    held_mean: float
    held_std: float
    hit_rate: float  # share of bars holding a position that gained (nan: never in the market)
    feature_edges: dict[str, tuple[float, ...]] = field(default_factory=dict)  # inner bin edges, training rows
    feature_fractions: dict[str, tuple[float, ...]] = field(default_factory=dict)  # share of training rows per bin
    # the 99th percentile of the PSI of `psi_window`-row stretches of the training rows themselves: a feature with a
    # long memory (a 168-bar ratio) moves little within a week, so a week's PSI is large even with no drift at all
    feature_psi_p99: dict[str, float] = field(default_factory=dict)

    @property
    def return_std(self) -> float:
        return float(np.std(self.bar_returns, ddof=1)) if len(self.bar_returns) > 1 else 0.0

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> Expectations:
        data: dict[str, Any] = json.loads(text)
        if data.pop("format", None) != FORMAT:
            raise ValueError(f"not a {FORMAT} document")
        return cls(
            version=str(data["version"]),
            bar_returns=tuple(float(r) for r in data["bar_returns"]),
            max_drawdown=float(data["max_drawdown"]),
            drawdown_p99=float(data["drawdown_p99"]),
            turnover=float(data["turnover"]),
            held_mean=float(data["held_mean"]),
            held_std=float(data["held_std"]),
            hit_rate=float(data["hit_rate"]),
            feature_edges={k: tuple(float(e) for e in v) for k, v in data.get("feature_edges", {}).items()},
            feature_fractions={k: tuple(float(f) for f in v) for k, v in data.get("feature_fractions", {}).items()},
            feature_psi_p99={k: float(v) for k, v in data.get("feature_psi_p99", {}).items()},
        )


@dataclass(frozen=True)
class Observed:
    """The champion's record while it trades, oldest first: bar i's realised return is earned holding
    `positions[i - 1]` (the position decided at the previous bar); `features` are the rows it decided on."""

    returns: np.ndarray
    positions: np.ndarray
    features: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.returns)


@dataclass(frozen=True)
class Breach:
    check: str  # returns | volatility | drawdown | turnover | hit_rate | feature_drift
    detail: str

    def __str__(self) -> str:
        return f"{self.check}: {self.detail}"


# ----- the summaries -------------------------------------------------------------------------------------------


def returns_drawdown(returns: np.ndarray) -> float:
    """The maximum drawdown of the equity the returns compound to from 1 (cta.metrics.max_drawdown)."""
    return max_drawdown(np.cumprod(np.concatenate([[1.0], np.asarray(returns, dtype="float64") + 1.0])))


def drawdown_quantile(returns: np.ndarray, horizon: int, q: float, draws: int = 400, seed: int = 0) -> float:
    """The q-quantile of the worst drawdown over `horizon` bars of returns resampled (with replacement) from
    `returns`: how deep a drawdown the backtest's own return distribution makes plausible. Deterministic."""
    returns = np.asarray(returns, dtype="float64")
    if len(returns) == 0 or horizon <= 0:
        return 0.0
    samples = np.random.default_rng(seed).choice(returns, size=(draws, horizon), replace=True)
    return float(np.quantile([returns_drawdown(sample) for sample in samples], q))


def turnover(positions: np.ndarray, initial: float = 0.0) -> float:
    """Mean |position change| per bar."""
    if len(positions) == 0:
        return 0.0
    return float(np.mean(np.abs(np.diff(np.concatenate([[initial], positions])))))


def held_returns(returns: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The returns of the bars held in the market per unit of the position held (bar i is held with
    positions[i - 1]): a flat bar says nothing about the model, and a half position earns half."""
    held = np.abs(np.asarray(positions[:-1], dtype="float64"))
    gains = np.asarray(returns[1:], dtype="float64")
    mask = held > 1e-9
    out: np.ndarray = gains[mask] / held[mask]
    return out


def hit_rate(returns: np.ndarray, positions: np.ndarray) -> tuple[float, int]:
    """(share of the bars held in the market that gained, how many such bars); bar i is held with positions[i-1]."""
    gains = held_returns(returns, positions)
    return (float(np.mean(gains > 0)) if len(gains) else math.nan), len(gains)


def bin_edges(values: np.ndarray, bins: int) -> tuple[float, ...]:
    """Inner edges of equal-population bins of `values` (finite ones), duplicates removed."""
    finite = np.asarray(values, dtype="float64")
    finite = finite[np.isfinite(finite)]
    if len(finite) == 0:
        return ()
    inner = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])
    return tuple(float(e) for e in np.unique(inner))


def bin_fractions(values: np.ndarray, edges: Sequence[float], prior: float = 0.0) -> np.ndarray:
    """The share of the finite `values` in each bin the inner `edges` define (len(edges) + 1 bins), with `prior`
    added to every bin's count (0.5: a few live rows leave no bin at a share of zero, whose log would dominate)."""
    finite = np.asarray(values, dtype="float64")
    finite = finite[np.isfinite(finite)]
    counts = np.bincount(np.searchsorted(np.asarray(edges), finite, side="right"), minlength=len(edges) + 1) + prior
    return counts / max(float(counts.sum()), 1.0)


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray, floor: float = 1e-4) -> float:
    """Population stability index: sum over bins of (a - e) * ln(a / e), empty bins floored at `floor`."""
    e = np.maximum(np.asarray(expected, dtype="float64"), floor)
    a = np.maximum(np.asarray(actual, dtype="float64"), floor)
    return float(np.sum((a - e) * np.log(a / e)))


def expectations(
    version: str,
    returns: np.ndarray,
    positions: np.ndarray,
    training_features: Mapping[str, np.ndarray],
    *,
    bins: int = 10,
    psi_window: int = 168,
    stretches: int = 200,
) -> Expectations:
    """Summarise a backtest (per-bar returns after costs, the position held after each bar) and the training rows
    (with the spread of the PSI of `stretches` random `psi_window`-row stretches of them, per feature)."""
    returns = np.asarray(returns, dtype="float64")
    positions = np.asarray(positions, dtype="float64")
    held = held_returns(returns, positions)
    edges = {name: bin_edges(values, bins) for name, values in training_features.items()}
    fractions = {
        name: tuple(float(f) for f in bin_fractions(values, edges[name])) for name, values in training_features.items()
    }
    rng = np.random.default_rng(0)
    psi_p99: dict[str, float] = {}
    for name, values in training_features.items():
        column = np.asarray(values, dtype="float64")
        if len(column) <= psi_window * 2 or not edges[name]:
            continue
        starts = rng.integers(0, len(column) - psi_window, size=stretches)
        spread = [psi(fractions[name], bin_fractions(column[s : s + psi_window], edges[name], 0.5)) for s in starts]
        psi_p99[name] = float(np.quantile(spread, 0.99))
    return Expectations(
        version=version,
        bar_returns=tuple(float(r) for r in returns),
        max_drawdown=returns_drawdown(returns),
        drawdown_p99=drawdown_quantile(returns, len(returns), 0.99),
        turnover=turnover(positions),
        held_mean=float(np.mean(held)) if len(held) else 0.0,
        held_std=float(np.std(held, ddof=1)) if len(held) > 1 else 0.0,
        hit_rate=hit_rate(returns, positions)[0],
        feature_edges=edges,
        feature_fractions=fractions,
        feature_psi_p99=psi_p99,
    )


# ----- the verdict ---------------------------------------------------------------------------------------------


def psi_limit(expected: Expectations, name: str, settings: MonitorSettings) -> float:
    """A feature's PSI limit: `psi_max`, or more for a feature whose own training stretches of the same length
    already spread that far (their 99th percentile, times 1 + `psi_margin`)."""
    return max(settings.psi_max, expected.feature_psi_p99.get(name, 0.0) * (1 + settings.psi_margin))


def feature_psi(expected: Expectations, features: Mapping[str, np.ndarray]) -> dict[str, float]:
    """PSI of each feature the expectations describe and the record holds."""
    out: dict[str, float] = {}
    for name, edges in expected.feature_edges.items():
        values = features.get(name)
        if values is None or not np.isfinite(np.asarray(values, dtype="float64")).any():
            continue
        out[name] = psi(expected.feature_fractions[name], bin_fractions(values, edges, prior=0.5))
    return out


def shortfall_cusum(returns: np.ndarray, mean: float, std: float, k: float) -> tuple[float, int]:
    """Page's one-sided CUSUM of (mean - r) / std - k over `returns`, oldest first: (its final value, the index
    where its current run began)."""
    statistic, start = 0.0, len(returns)
    for i, r in enumerate(((mean - np.asarray(returns, dtype="float64")) / std - k).tolist()):
        statistic += r
        if statistic <= 0.0:
            statistic, start = 0.0, i + 1
    return statistic, min(start, len(returns) - 1) if len(returns) else 0


def assess(expected: Expectations, observed: Observed, settings: MonitorSettings) -> list[Breach]:
    """Every way the champion's record departs from its backtest beyond the thresholds (empty: it behaves)."""
    n = len(observed)
    if n < settings.min_bars:
        return []
    breaches: list[Breach] = []
    recent = np.asarray(observed.returns[-settings.window_bars :], dtype="float64")
    std = expected.return_std
    held = held_returns(observed.returns, observed.positions)
    if expected.held_std > 0 and len(held):
        statistic, at = shortfall_cusum(held, expected.held_mean, expected.held_std, settings.cusum_k)
        if statistic > settings.cusum_h:
            breaches.append(
                Breach(
                    "returns",
                    f"returns in the market fell short of the backtest's {expected.held_mean:+.5f}/bar per unit "
                    f"held: CUSUM {statistic:.1f} > {settings.cusum_h:g} backtest standard deviations "
                    f"({expected.held_std:.5f}); mean {float(np.mean(held[at:])):+.5f} over its last "
                    f"{len(held) - at} bars in the market",
                )
            )
    if std > 0:
        live_std = float(np.std(recent, ddof=1))
        if live_std > settings.vol_ratio_max * std:
            breaches.append(
                Breach(
                    "volatility",
                    f"return volatility {live_std:.5f}/bar over the last {len(recent)} bars is "
                    f"{live_std / std:.1f}x the backtest's {std:.5f} (limit {settings.vol_ratio_max:g}x)",
                )
            )
    horizon = max(len(expected.bar_returns), settings.min_bars)
    drawdown = returns_drawdown(observed.returns[-horizon:])
    worst = max(expected.max_drawdown, expected.drawdown_p99)
    if drawdown > worst * (1 + settings.drawdown_margin) and drawdown > 0:
        breaches.append(
            Breach(
                "drawdown",
                f"drawdown {drawdown:.2%} over the last {min(n, horizon)} bars beyond the backtest's worst "
                f"{worst:.2%} (its own {expected.max_drawdown:.2%}, 99th percentile of its resampled returns "
                f"{expected.drawdown_p99:.2%}) by more than {settings.drawdown_margin:.0%}",
            )
        )
    positions = np.asarray(observed.positions[-settings.window_bars :], dtype="float64")
    live_turnover = turnover(positions[1:], initial=positions[0]) if len(positions) > 1 else 0.0
    turnover_limit = max(expected.turnover * settings.turnover_factor, settings.turnover_floor)
    if live_turnover > turnover_limit:
        breaches.append(
            Breach(
                "turnover",
                f"position change {live_turnover:.3f}/bar vs the backtest's {expected.turnover:.3f} "
                f"(limit {turnover_limit:.3f})",
            )
        )
    live_hits, in_market = hit_rate(observed.returns[-horizon:], np.asarray(observed.positions[-horizon:]))
    if (
        in_market >= settings.min_in_market_bars
        and math.isfinite(expected.hit_rate)
        and live_hits < expected.hit_rate - settings.hit_rate_drop
    ):
        breaches.append(
            Breach(
                "hit_rate",
                f"{live_hits:.0%} of {in_market} bars in the market gained vs the backtest's {expected.hit_rate:.0%} "
                f"(allowed drop {settings.hit_rate_drop:.0%})",
            )
        )
    recent_features = (
        {}
        if n < settings.window_bars
        else {name: np.asarray(v, dtype="float64")[-settings.window_bars :] for name, v in observed.features.items()}
    )
    drifted = {
        name: (value, limit)
        for name, value in feature_psi(expected, recent_features).items()
        if value > (limit := psi_limit(expected, name, settings))
    }
    if drifted:
        top = sorted(drifted.items(), key=lambda item: -item[1][0] / item[1][1])[:5]
        breaches.append(
            Breach(
                "feature_drift",
                f"PSI of the last {settings.window_bars} rows against the training rows: "
                + ", ".join(f"{name} {value:.2f} (limit {limit:.2f})" for name, (value, limit) in top),
            )
        )
    return breaches
