"""Performance metrics of an equity curve (pure). Annualisation uses the bars per year of the
timeframe (crypto trades all year: 365 days).

`sharpe`, `sortino` and `cagr` are the definitions, in plain numpy (`bar_returns` and `max_drawdown`: `cta.metrics`).
`equity_metrics` computes the same numbers in two compiled passes over the curve without any
full-size temporary (a 1-minute year is 525,600 bars: numpy's version allocates a dozen 4 MB arrays);
tests check that both agree (to ~1e-15 in practice). Sums in the compiled passes are compensated
(Neumaier), so they are at least as accurate as numpy's pairwise sums.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from cta.timeframes import timeframe_ms

MS_PER_YEAR = 365 * 86_400_000
SIZE_TOLERANCE = 1e-9


def bars_per_year(timeframe: str) -> float:
    return MS_PER_YEAR / timeframe_ms(timeframe)


def sharpe(returns: np.ndarray, periods_per_year: float) -> float:
    std = float(np.std(returns, ddof=1)) if len(returns) > 1 else 0.0
    return 0.0 if std == 0.0 else float(np.mean(returns) / std * math.sqrt(periods_per_year))


def sortino(returns: np.ndarray, periods_per_year: float) -> float:
    """Mean return over downside deviation (root mean square of the negative returns)."""
    downside = np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2)) if len(returns) else 0.0
    return 0.0 if downside == 0.0 else float(np.mean(returns) / downside * math.sqrt(periods_per_year))


def cagr(equity: np.ndarray, periods_per_year: float) -> float:
    return _growth_rate(float(equity[0]), float(equity[-1]), len(equity), periods_per_year)


def _growth_rate(first: float, last: float, points: int, periods_per_year: float) -> float:
    """Compound annual growth from `first` to `last` over a curve of `points` values (numpy float
    arithmetic: an overflow gives inf, not an exception)."""
    years = (points - 1) / periods_per_year
    if years <= 0 or first <= 0 or last <= 0:
        return 0.0
    return float((np.float64(last) / first) ** (1.0 / years) - 1.0)


@numba.njit(cache=True)
def _add(total: float, compensation: float, value: float) -> tuple[float, float]:
    """One step of a compensated sum (Neumaier's, with Knuth's branch-free TwoSum for the exact rounding
    error of each addition): returns the new running total and the accumulated error; the sum is
    total + compensation, accurate to about one rounding of the result whatever the cancellation."""
    new = total + value
    virtual = new - total
    return new, compensation + ((total - (new - virtual)) + (value - virtual))


@numba.njit(cache=True, error_model="numpy")
def _curve_pass(start: float, equity: np.ndarray) -> tuple[float, float, float, float]:
    """Over the curve [start, *equity] (`start` passed apart so it is never prepended by a copy): the max
    drawdown, and over the bar returns their sum, the sum of squared deviations from their mean and the
    sum of squared negative returns. Two passes (the second needs the mean); the returns are recomputed
    in the second, not stored. Equal, to rounding, to `cta.metrics.max_drawdown`, `sharpe` and `sortino`.

    The drawdown divides once per peak, not once per bar: for a fixed (positive) peak, 1 - value / peak
    is largest at the lowest value (rounding is monotonic), so only each peak's trough is divided. A NaN in the
    curve makes every result NaN, as in numpy (error_model numpy: dividing by zero gives inf/NaN)."""
    peak = trough = start
    worst = 1.0 - start / peak
    previous = start
    total = total_error = downside = downside_error = 0.0
    for value in equity:
        if value > peak:
            worst = max(worst, 1.0 - trough / peak)
            peak = trough = value
        elif value < trough:
            trough = value
        change = value / previous - 1.0
        previous = value
        total, total_error = _add(total, total_error, change)
        negative = (change - abs(change)) * 0.5  # min(change, 0.0), exact, branch-free and NaN-preserving
        downside, downside_error = _add(downside, downside_error, negative * negative)
    worst = max(worst, 1.0 - trough / peak)
    total += total_error
    if math.isnan(total):
        return math.nan, math.nan, math.nan, math.nan
    mean = total / len(equity) if len(equity) else 0.0
    previous = start
    squares = squares_error = 0.0
    for value in equity:
        deviation = value / previous - 1.0 - mean
        previous = value
        squares, squares_error = _add(squares, squares_error, deviation * deviation)
    return worst, total, squares + squares_error, downside + downside_error


def equity_metrics(equity: np.ndarray, timeframe: str, *, start: float | None = None) -> dict[str, float]:
    """total_return, cagr, sharpe, sortino, max_drawdown, calmar of one equity curve (one value per bar),
    equal (to rounding) to the numpy definitions above. `start`: a value before the first bar that
    belongs to the curve (a backtest's initial cash), passed apart so the curve is not copied to prepend it."""
    values = np.ascontiguousarray(equity, dtype="float64")
    first = float(values[0]) if start is None else float(start)
    if start is None:
        values = values[1:]
    last = float(values[-1]) if len(values) else first
    periods = bars_per_year(timeframe)
    drawdown, total, squares, downside_squares = _curve_pass(first, values)
    returns = len(values)
    mean = total / returns if returns else 0.0
    std = math.sqrt(squares / (returns - 1)) if returns > 1 else 0.0
    downside = math.sqrt(downside_squares / returns) if returns else 0.0
    growth = _growth_rate(first, last, returns + 1, periods)
    return {
        "total_return": float(np.float64(last) / first - 1.0),
        "cagr": growth,
        "sharpe": 0.0 if std == 0.0 else mean / std * math.sqrt(periods),
        "sortino": 0.0 if downside == 0.0 else mean / downside * math.sqrt(periods),
        "max_drawdown": drawdown,
        "calmar": 0.0 if drawdown == 0.0 else growth / drawdown,
    }


def trade_metrics(
    units: np.ndarray,
    fills: int,
    traded_notional: float,
    equity: np.ndarray,
    trade_pnls: np.ndarray,
    *,
    start: float | None = None,
) -> dict[str, float]:
    """Number of trades (fills), win rate of closed round trips, exposure (share of bars holding a
    position) and turnover (traded notional over mean equity). `start`: as in `equity_metrics`, a value
    before the first bar that counts in the mean equity."""
    points = len(equity) + (start is not None)
    total = float(np.sum(equity)) + (start or 0.0)
    mean_equity = total / points if points else 0.0
    return {
        "trades": float(fills),
        "win_rate": np.count_nonzero(trade_pnls > 0) / len(trade_pnls) if len(trade_pnls) else 0.0,
        "exposure": np.count_nonzero(units) / len(units) if len(units) else 0.0,
        "turnover": traded_notional / mean_equity if mean_equity > 0 else 0.0,
    }


def round_trip_pnls(units: np.ndarray, prices: np.ndarray, fees: np.ndarray) -> np.ndarray:
    """Net P&L of each closed round trip (flat -> position -> flat, or a reversal) from signed fill
    sizes, fill prices and fees. Fees of a fill that closes and reopens are split pro rata. Sizes that
    differ by float rounding only (a partial reduction leaves 1e-17 units) count as equal."""
    if not len(units) == len(prices) == len(fees):
        raise ValueError(f"{len(units)} sizes, {len(prices)} prices and {len(fees)} fees")
    columns = (np.ascontiguousarray(column, dtype="float64") for column in (units, prices, fees))
    return _round_trips(*columns)


@numba.njit(cache=True)
def _round_trips(units: np.ndarray, prices: np.ndarray, fees: np.ndarray) -> np.ndarray:
    """`round_trip_pnls` compiled (at most one closed trip per fill)."""
    pnls = np.empty(len(units))
    count = 0
    position = average = trip = 0.0
    for i in range(len(units)):
        size, price, fee = units[i], prices[i], fees[i]
        if position == 0.0 or (size > 0) == (position > 0):
            average = (average * position + price * size) / (position + size)
            position += size
            trip -= fee
            continue
        full_close = abs(size) >= abs(position) * (1.0 - SIZE_TOLERANCE)
        closing = -position if full_close else size
        closing_fee = fee * min(abs(closing) / abs(size), 1.0)
        trip += -closing * (price - average) - closing_fee
        if not full_close:
            position += closing
            continue
        pnls[count] = trip
        count += 1
        rest = size - closing
        if abs(rest) > abs(size) * SIZE_TOLERANCE:
            position, average, trip = rest, price, -(fee - closing_fee)
        else:
            position = average = trip = 0.0
    return pnls[:count].copy()
