"""Performance metrics of an equity curve (pure). Annualisation uses the bars per year of the
timeframe (crypto trades all year: 365 days)."""

from __future__ import annotations

import math

import numpy as np

from cta.timeframes import timeframe_ms

MS_PER_YEAR = 365 * 86_400_000
SIZE_TOLERANCE = 1e-9


def bars_per_year(timeframe: str) -> float:
    return MS_PER_YEAR / timeframe_ms(timeframe)


def bar_returns(equity: np.ndarray) -> np.ndarray:
    return np.asarray(equity[1:] / equity[:-1] - 1.0, dtype="float64")


def max_drawdown(equity: np.ndarray) -> float:
    """Largest peak-to-trough fall, as a positive fraction (0.25 = -25 %)."""
    peaks = np.maximum.accumulate(equity)
    return float(np.max(1.0 - equity / peaks)) if len(equity) else 0.0


def sharpe(returns: np.ndarray, periods_per_year: float) -> float:
    std = float(np.std(returns, ddof=1)) if len(returns) > 1 else 0.0
    return 0.0 if std == 0.0 else float(np.mean(returns) / std * math.sqrt(periods_per_year))


def sortino(returns: np.ndarray, periods_per_year: float) -> float:
    """Mean return over downside deviation (root mean square of the negative returns)."""
    downside = np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2)) if len(returns) else 0.0
    return 0.0 if downside == 0.0 else float(np.mean(returns) / downside * math.sqrt(periods_per_year))


def cagr(equity: np.ndarray, periods_per_year: float) -> float:
    years = (len(equity) - 1) / periods_per_year
    if years <= 0 or equity[0] <= 0 or equity[-1] <= 0:
        return 0.0
    return float((equity[-1] / equity[0]) ** (1.0 / years) - 1.0)


def equity_metrics(equity: np.ndarray, timeframe: str) -> dict[str, float]:
    """total_return, cagr, sharpe, sortino, max_drawdown, calmar of one equity curve (one value per bar)."""
    periods = bars_per_year(timeframe)
    returns = bar_returns(equity)
    growth = cagr(equity, periods)
    drawdown = max_drawdown(equity)
    return {
        "total_return": float(equity[-1] / equity[0] - 1.0),
        "cagr": growth,
        "sharpe": sharpe(returns, periods),
        "sortino": sortino(returns, periods),
        "max_drawdown": drawdown,
        "calmar": 0.0 if drawdown == 0.0 else growth / drawdown,
    }


def trade_metrics(
    units: np.ndarray, fills: int, traded_notional: float, equity: np.ndarray, trade_pnls: np.ndarray
) -> dict[str, float]:
    """Number of trades (fills), win rate of closed round trips, exposure (share of bars holding a
    position) and turnover (traded notional over mean equity)."""
    mean_equity = float(np.mean(equity)) if len(equity) else 0.0
    return {
        "trades": float(fills),
        "win_rate": float(np.mean(trade_pnls > 0)) if len(trade_pnls) else 0.0,
        "exposure": float(np.mean(units != 0)) if len(units) else 0.0,
        "turnover": traded_notional / mean_equity if mean_equity > 0 else 0.0,
    }


def round_trip_pnls(units: np.ndarray, prices: np.ndarray, fees: np.ndarray) -> np.ndarray:
    """Net P&L of each closed round trip (flat -> position -> flat, or a reversal) from signed fill
    sizes, fill prices and fees. Fees of a fill that closes and reopens are split pro rata. Sizes that
    differ by float rounding only (a partial reduction leaves 1e-17 units) count as equal."""
    pnls: list[float] = []
    position = average = trip = 0.0
    for size, price, fee in zip(units.tolist(), prices.tolist(), fees.tolist(), strict=True):
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
        pnls.append(trip)
        rest = size - closing
        if abs(rest) > abs(size) * SIZE_TOLERANCE:
            position, average, trip = rest, price, -(fee - closing_fee)
        else:
            position = average = trip = 0.0
    return np.asarray(pnls, dtype="float64")
