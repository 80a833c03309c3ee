"""Champion monitoring (`cta.monitor`): how soon a regime change is caught, how often a champion that behaves like
its backtest is wrongly flagged, and what one assessment costs.

Synthetic, seeded scenarios (numbers, not a market): a backtest of 1,000 bars whose model is long or flat in
blocks of 24 bars on returns N(0.0002, 0.01), eight features N(0, 1) over 5,000 training rows; then a live record
from the same process (behaving) or one that changes at bar 600: the edge turns into a loss (in-market returns
N(-0.002, 0.01) or N(-0.005, 0.01)), one feature shifts by 1.5 standard deviations, or volatility quadruples. Each
live record is assessed every `every_bars` bars with the default thresholds, as the worker does.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from cta.monitor import Expectations, MonitorSettings, Observed, assess, expectations

FEATURES = 8
CHANGE_AT = 600


@dataclass(frozen=True)
class Record:
    returns: np.ndarray
    positions: np.ndarray
    features: dict[str, np.ndarray]


def behaving(rng: np.random.Generator, bars: int) -> Record:
    positions = np.repeat(rng.choice([0.0, 1.0], size=bars // 24 + 1), 24)[:bars]
    returns = np.concatenate([[0.0], positions[:-1] * rng.normal(0.0002, 0.01, bars - 1)])
    return Record(returns, positions, {f"f{i}": rng.normal(0.0, 1.0, bars) for i in range(FEATURES)})


def backtest(rng: np.random.Generator) -> Expectations:
    record = behaving(rng, 1000)
    training = {f"f{i}": rng.normal(0.0, 1.0, 5000) for i in range(FEATURES)}
    return expectations("1", record.returns, record.positions, training)


def changed(rng: np.random.Generator, kind: str, bars: int) -> Record:
    """A behaving record whose regime changes at CHANGE_AT."""
    record = behaving(rng, bars)
    returns, features = record.returns.copy(), dict(record.features)
    tail = bars - CHANGE_AT
    if kind == "small loss":
        returns[CHANGE_AT:] = record.positions[CHANGE_AT - 1 : -1] * rng.normal(-0.002, 0.01, tail)
    elif kind == "loss":
        returns[CHANGE_AT:] = record.positions[CHANGE_AT - 1 : -1] * rng.normal(-0.005, 0.01, tail)
    elif kind == "feature shift":
        features["f3"] = features["f3"].copy()
        features["f3"][CHANGE_AT:] += 1.5
    elif kind == "volatility x4":
        returns[CHANGE_AT:] *= 4.0
    else:
        raise ValueError(kind)
    return Record(returns, record.positions, features)


def first_breach(
    expected: Expectations, record: Record, settings: MonitorSettings, start: int, keep: int = 1000
) -> tuple[int, list[str]] | None:
    """(bar, checks) of the first assessment that finds a breach, assessing every `every_bars` from `start` on
    the last `keep` bars (what the worker reads), or None."""
    for end in range(start, len(record.returns) + 1, settings.every_bars):
        lo = max(0, end - keep)
        window = Observed(
            record.returns[lo:end], record.positions[lo:end], {k: v[lo:end] for k, v in record.features.items()}
        )
        breaches = assess(expected, window, settings)
        if breaches:
            return end, [b.check for b in breaches]
    return None


def false_alarms(seeds: range, bars: int, settings: MonitorSettings) -> list[tuple[int, int, list[str]]]:
    """(seed, bar, checks) of every behaving replay that was flagged."""
    out = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        expected = backtest(rng)
        found = first_breach(expected, behaving(rng, bars), settings, settings.min_bars)
        if found is not None:
            out.append((seed, *found))
    return out


def detection_delays(kind: str, seeds: range, bars: int, settings: MonitorSettings) -> list[int | None]:
    """Bars from the change to the first breach, per seed (None: not caught within the record)."""
    delays: list[int | None] = []
    for seed in seeds:
        rng = np.random.default_rng(10_000 + seed)
        expected = backtest(rng)
        found = first_breach(expected, changed(rng, kind, bars), settings, CHANGE_AT)
        delays.append(None if found is None else found[0] - CHANGE_AT)
    return delays


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    settings = MonitorSettings()
    seeds = range(10 if args.quick else 40)
    bars = 3000 if args.quick else 6000
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    alarms = false_alarms(seeds, bars, settings)
    rows.append(
        {
            "case": f"behaving, {bars} bars",
            "replays": len(seeds),
            "flagged": len(alarms),
            "checks": ",".join(sorted({c for _, _, checks in alarms for c in checks})) or "-",
            "seconds": round(time.perf_counter() - started, 1),
        }
    )
    for kind in ("loss", "small loss", "feature shift", "volatility x4"):
        started = time.perf_counter()
        delays = detection_delays(kind, range(len(seeds) // 2), CHANGE_AT + 1000, settings)
        caught = [d for d in delays if d is not None]
        rows.append(
            {
                "case": f"{kind} at bar {CHANGE_AT}",
                "replays": len(delays),
                "caught_within_1000": len(caught),
                "median_delay_bars": float(np.median(caught)) if caught else None,
                "max_delay_bars": max(caught) if caught else None,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    rng = np.random.default_rng(0)
    expected, record = backtest(rng), behaving(rng, 1000)
    observed = Observed(record.returns, record.positions, record.features)
    assess(expected, observed, settings)
    timings = []
    for _ in range(50 if args.quick else 200):
        t0 = time.perf_counter()
        assess(expected, observed, settings)
        timings.append(time.perf_counter() - t0)
    rows.append({"case": "one assessment, 1000 bars, 8 features", "p50_ms": round(1000 * float(np.median(timings)), 3)})
    return rows
