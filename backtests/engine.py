"""The fast backtest engine (numba, one pass over the bars). Its fills follow the execution model in
`cta.execution`, which the backtrader engine and the paper broker share, so all three fill alike.

Execution model (both engines; the rules themselves live in cta.execution):
- The model's prediction for bar t is known at the close of bar t. `decide()` turns it into a target
  position (a fraction of equity); a change is executed at the OPEN of bar t+1 as a market order.
- Fill price: open x (1 + slippage) for a buy, open x (1 - slippage) for a sell. Fee: a share of the
  fill's notional (taker rate).
- Size: target x sizing fraction x equity at that open (the cash left if the current position were
  closed there, slippage and fee included), divided by the worst-case cost of one unit
  (open x (1 + slippage) x (1 + fee)), shaved by one part in 1e9, so an all-in buy plus its fee
  always fits in the cash (backtrader silently rejects an order that misses by one rounding digit).
  Units are fractional and held unchanged between fills: no rebalancing while the target is unchanged.
- Equity at each bar = cash + units x close. A short (only if the limits allow it) is cash-collateralised,
  as backtrader's stock-like broker models it.
The decision at the close of the last bar has no next open and is not executed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numba
import numpy as np
import pandas as pd

from backtests.metrics import equity_metrics, round_trip_pnls, trade_metrics
from cta.decide import Limits
from cta.errors import DataValidationError
from cta.execution import Execution, fill_fee, fill_price, liquidation_equity, order_units


class InvalidPredictions(DataValidationError):
    """Model output the backtest refuses: values outside [-1, 1]."""


@dataclass(frozen=True)
class Bars:
    """The bars a backtest runs over: open time (ms), open and close prices, in time order."""

    ts: np.ndarray
    open: np.ndarray
    close: np.ndarray
    timeframe: str

    @classmethod
    def from_candles(cls, candles: pd.DataFrame, timeframe: str) -> Bars:
        return cls(
            candles["ts"].to_numpy(dtype="int64"),
            np.ascontiguousarray(candles["open"].to_numpy(dtype="float64")),
            np.ascontiguousarray(candles["close"].to_numpy(dtype="float64")),
            timeframe,
        )

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(frozen=True)
class Fills:
    bar: np.ndarray  # index of the bar whose open filled the order
    units: np.ndarray  # signed size (buy > 0)
    price: np.ndarray
    fee: np.ndarray

    def __len__(self) -> int:
        return len(self.bar)

    def frame(self, ts: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "time": pd.to_datetime(ts[self.bar], unit="ms", utc=True),
                "side": np.where(self.units > 0, "buy", "sell"),
                "units": self.units,
                "price": self.price,
                "fee": self.fee,
            }
        )


@dataclass(frozen=True)
class BacktestResult:
    """Equity and units after each bar, the fills, the decision path, and the metrics."""

    engine: str
    bars: Bars
    targets: np.ndarray  # target position decided at each bar's close
    equity: np.ndarray
    units: np.ndarray
    fills: Fills
    metrics: dict[str, float] = field(default_factory=dict)


@numba.njit(cache=True)
def _decide_kernel(
    predictions: np.ndarray, max_position: float, min_trade: float, floor: float, initial: float
) -> np.ndarray:
    """`cta.decide.decide_path` compiled: same rule, tested equal on random inputs."""
    out = np.empty(len(predictions))
    position = initial
    for i in range(len(predictions)):
        prediction = predictions[i]
        if math.isfinite(prediction):
            target = min(max(prediction, floor), max_position)
            delta = target - position
            if delta != 0.0 and not (abs(delta) < min_trade and target != 0.0):
                position = target
        out[i] = position
    return out


def decide_targets(predictions: np.ndarray, limits: Limits) -> np.ndarray:
    floor = -limits.max_position if limits.allow_short else 0.0
    return _decide_kernel(
        np.ascontiguousarray(predictions, dtype="float64"), limits.max_position, limits.min_trade, floor, 0.0
    )


@numba.njit(cache=True)
def _simulate(  # noqa: PLR0917 (a numba kernel takes plain positional arrays)
    open_: np.ndarray,
    close: np.ndarray,
    targets: np.ndarray,
    fraction: float,
    slippage: float,
    fee_rate: float,
    cash: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = len(close)
    equity = np.empty(n)
    held = np.empty(n)
    fill_bar = np.empty(n, dtype=np.int64)
    fill_units = np.empty(n)
    fill_prices = np.empty(n)
    fill_fees = np.empty(n)
    units = 0.0
    previous_target = 0.0
    count = 0
    for i in range(n):
        if i > 0 and targets[i - 1] != previous_target:
            previous_target = targets[i - 1]
            price_open = open_[i]
            equity_now = liquidation_equity(cash, units, price_open, slippage, fee_rate)
            desired = order_units(previous_target * fraction, equity_now, price_open, slippage, fee_rate)
            delta = desired - units
            if delta != 0.0:
                price = fill_price(price_open, delta, slippage)
                fee = fill_fee(delta, price, fee_rate)
                cash -= delta * price + fee
                units = desired
                fill_bar[count] = i
                fill_units[count] = delta
                fill_prices[count] = price
                fill_fees[count] = fee
                count += 1
        equity[i] = cash + units * close[i]
        held[i] = units
    return equity, held, fill_bar[:count], fill_units[:count], fill_prices[:count], fill_fees[:count]


@numba.njit(cache=True)
def _count_outside(predictions: np.ndarray) -> int:
    """How many finite predictions lie outside [-1, 1] (NaN compares False, so it is not counted)."""
    count = 0
    for value in predictions:
        if 1.0 < abs(value) < math.inf:
            count += 1
    return count


def check_predictions(predictions: np.ndarray, ts: np.ndarray | None = None) -> None:
    """Refuse predictions outside [-1, 1] (NaN is allowed: it never becomes an order). One compiled
    count over the predictions; the message (first offender) is only built when there is one."""
    outside = _count_outside(np.ascontiguousarray(predictions, dtype="float64"))
    if outside:
        finite = np.isfinite(predictions)
        first = int(np.argmax(finite & (np.abs(np.where(finite, predictions, 0.0)) > 1.0)))
        where = f" at ts {int(ts[first])}" if ts is not None else f" at row {first}"
        raise InvalidPredictions(
            f"model predictions must be positions in [-1, 1]: {outside} outside, "
            f"first {float(predictions[first])!r}{where}"
        )


def result_metrics(
    bars: Bars, equity: np.ndarray, units: np.ndarray, fills: Fills, initial_cash: float
) -> dict[str, float]:
    """Every metric of one run, computed the same way for both engines. The curve starts at the
    initial cash (before the first bar), so a loss at the first fill shows; the cash is passed apart
    (`start`), not prepended, so the 1-minute year's curve is never copied."""
    notional = float(np.sum(np.abs(fills.units) * fills.price))  # one value per fill: small
    trips = round_trip_pnls(fills.units, fills.price, fills.fee)
    metrics = equity_metrics(equity, bars.timeframe, start=initial_cash)
    metrics |= trade_metrics(units, len(fills), notional, equity, trips, start=initial_cash)
    metrics["final_equity"] = float(equity[-1]) if len(equity) else float(initial_cash)
    metrics["bars"] = float(len(bars))
    return metrics


def run_fast(bars: Bars, predictions: np.ndarray, limits: Limits, execution: Execution) -> BacktestResult:
    """Backtest a model's predictions (one per bar) on the bars with the numba engine."""
    if len(predictions) != len(bars):
        raise ValueError(f"{len(predictions)} predictions for {len(bars)} bars")
    check_predictions(predictions, bars.ts)
    targets = decide_targets(predictions, limits)
    return simulate_targets(bars, targets, execution, engine="fast")


def simulate_targets(bars: Bars, targets: np.ndarray, execution: Execution, engine: str = "fast") -> BacktestResult:
    equity, units, bar, size, price, fee = _simulate(
        bars.open,
        bars.close,
        np.ascontiguousarray(targets, dtype="float64"),
        execution.position_fraction,
        execution.slippage,
        execution.fee_rate,
        execution.initial_cash,
    )
    fills = Fills(bar, size, price, fee)
    return BacktestResult(
        engine, bars, targets, equity, units, fills, result_metrics(bars, equity, units, fills, execution.initial_cash)
    )


def buy_and_hold(bars: Bars, execution: Execution) -> BacktestResult:
    """All in at the first bar's close decision (filled at the second bar's open), same costs."""
    all_in = Execution(execution.fee_rate, execution.slippage, 1.0, execution.initial_cash)
    return simulate_targets(bars, np.ones(len(bars)), all_in, engine="buy_and_hold")
