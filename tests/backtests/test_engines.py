"""Both backtest engines: hand-computed golden numbers, reruns, parity on real candles, bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backtests.bt_engine import run_backtrader
from backtests.engine import Bars, InvalidPredictions, buy_and_hold, decide_targets, run_fast
from backtests.metrics import bars_per_year, cagr, sharpe, sortino
from cta.decide import Limits, decide_path
from cta.execution import SIZE_HAIRCUT, Execution
from cta.metrics import bar_returns, max_drawdown
from tests.factories import real_candles

HOUR_MS = 3_600_000
LONG_ONLY = Limits(max_position=1.0, min_trade=0.05, allow_short=False)
LONG_SHORT = Limits(max_position=1.0, min_trade=0.05, allow_short=True)
EXECUTION = Execution(fee_rate=0.001, slippage=0.0005, position_fraction=1.0, initial_cash=1000.0)


def tiny_bars() -> Bars:
    ts = np.arange(4, dtype="int64") * HOUR_MS
    return Bars(ts, np.array([100.0, 110.0, 120.0, 90.0]), np.array([105.0, 115.0, 100.0, 80.0]), "1h")


def momentum_signal(bars: Bars, lookback: int = 24) -> np.ndarray:
    """A deterministic long/short signal: the sign of the last `lookback` bars' return (NaN before)."""
    signal = np.full(len(bars), np.nan)
    signal[lookback:] = np.sign(bars.close[lookback:] / bars.close[:-lookback] - 1.0)
    return signal


def real_bars(symbol: str = "BTCUSDT", timeframe: str = "1h", rows: int = 2000) -> Bars:
    return Bars.from_candles(real_candles(symbol, timeframe, rows), timeframe)


@pytest.mark.parametrize("engine", [run_fast, run_backtrader])
def test_golden_hand_computed_backtest(engine) -> None:
    """Long at bar 1's open, out at bar 2's open, long again at bar 3's open (and down 11 % by its
    close); every number by hand."""
    f, s, h = 0.001, 0.0005, SIZE_HAIRCUT
    result = engine(tiny_bars(), np.array([1.0, 0.0, 1.0, 1.0]), LONG_ONLY, EXECUTION)

    buy1 = 110 * (1 + s)
    units1 = 1000 * (1 - h) / (buy1 * (1 + f))
    cash1 = 1000 - units1 * buy1 - units1 * f * buy1
    sell2 = 120 * (1 - s)
    cash2 = cash1 + units1 * sell2 - units1 * f * sell2
    buy3 = 90 * (1 + s)
    units3 = cash2 * (1 - h) / (buy3 * (1 + f))
    cash3 = cash2 - units3 * buy3 - units3 * f * buy3
    expected_equity = [1000.0, cash1 + units1 * 115, cash2, cash3 + units3 * 80]

    np.testing.assert_allclose(result.equity, expected_equity, rtol=1e-12)
    np.testing.assert_array_equal(result.fills.bar, [1, 2, 3])
    np.testing.assert_allclose(result.fills.price, [buy1, sell2, buy3], rtol=1e-15)
    np.testing.assert_allclose(result.fills.units, [units1, -units1, units3], rtol=1e-12)
    metrics = result.metrics
    assert metrics["trades"] == 3
    assert metrics["final_equity"] == pytest.approx(cash3 + units3 * 80, rel=1e-12)
    assert metrics["total_return"] == pytest.approx((cash3 + units3 * 80) / 1000 - 1, rel=1e-12)
    assert metrics["win_rate"] == 1.0  # the one closed round trip: bought 110.055, sold 119.94, fees 0.23
    assert metrics["exposure"] == 0.5  # holding after bars 1 and 3
    assert metrics["max_drawdown"] == pytest.approx(1 - expected_equity[3] / expected_equity[2], rel=1e-12)


def test_golden_real_candles_numbers() -> None:
    """A fixed signal on the first 2,000 bundled BTC/USDT 1h candles: numbers pinned (any change in
    execution, costs or metrics shows here)."""
    bars = real_bars()
    result = run_fast(bars, momentum_signal(bars), LONG_ONLY, EXECUTION)
    metrics = result.metrics
    assert metrics["trades"] == GOLDEN["trades"]
    for key in ("final_equity", "sharpe", "max_drawdown", "win_rate", "exposure", "turnover"):
        assert metrics[key] == pytest.approx(GOLDEN[key], rel=1e-9), key


GOLDEN: dict[str, float] = {
    "trades": 188,
    "final_equity": 1085.0435933379688,
    "sharpe": 0.8444948496789152,
    "max_drawdown": 0.2756455748916674,
    "win_rate": 0.3404255319148936,
    "exposure": 0.56,
    "turnover": 186.1605871826141,
}


def test_metrics_equal_the_numpy_definitions_on_the_curve_with_the_initial_cash() -> None:
    """result_metrics passes the initial cash apart (no copy of the curve): the numbers must be those of
    the curve with the cash prepended, computed with the plain numpy definitions."""
    bars = real_bars(rows=3000)
    result = run_fast(bars, momentum_signal(bars), LONG_SHORT, EXECUTION)
    curve = np.concatenate([[EXECUTION.initial_cash], result.equity])
    periods = bars_per_year(bars.timeframe)
    returns = bar_returns(curve)
    expected = {
        "total_return": curve[-1] / curve[0] - 1.0,
        "cagr": cagr(curve, periods),
        "sharpe": sharpe(returns, periods),
        "sortino": sortino(returns, periods),
        "max_drawdown": max_drawdown(curve),
        "exposure": np.mean(result.units != 0),
        "turnover": np.sum(np.abs(result.fills.units) * result.fills.price) / np.mean(curve),
        "final_equity": curve[-1],
    }
    for key, value in expected.items():
        assert result.metrics[key] == pytest.approx(value, rel=1e-12), key


def test_rerun_is_bit_identical() -> None:
    bars = real_bars(rows=3000)
    signal = momentum_signal(bars)
    first, second = (run_fast(bars, signal, LONG_SHORT, EXECUTION) for _ in range(2))
    assert first.metrics == second.metrics
    np.testing.assert_array_equal(first.equity, second.equity)


@pytest.mark.parametrize(
    ("symbol", "timeframe", "rows", "limits", "fraction"),
    [
        ("BTCUSDT", "1h", 4000, LONG_ONLY, 1.0),
        ("ETHUSDT", "1h", 4000, LONG_SHORT, 1.0),
        ("BTCUSDT", "1m", 3000, LONG_SHORT, 0.5),
    ],
)
def test_fast_engine_and_backtrader_agree_on_real_candles(
    symbol: str, timeframe: str, rows: int, limits: Limits, fraction: float
) -> None:
    bars = real_bars(symbol, timeframe, rows)
    rng = np.random.default_rng(3)
    sized = momentum_signal(bars, 12) * rng.choice([0.5, 1.0], len(bars))
    signal = np.where(rng.random(len(bars)) < 0.1, np.nan, sized)
    execution = Execution(0.001, 0.0002, fraction, 10_000.0)
    fast = run_fast(bars, signal, limits, execution)
    slow = run_backtrader(bars, signal, limits, execution)

    assert len(fast.fills) == len(slow.fills) > 50
    np.testing.assert_array_equal(fast.fills.bar, slow.fills.bar)
    np.testing.assert_allclose(fast.fills.price, slow.fills.price, rtol=1e-12)
    np.testing.assert_allclose(fast.fills.fee, slow.fills.fee, rtol=1e-9)
    np.testing.assert_array_equal(fast.targets, slow.targets)
    assert fast.metrics["final_equity"] == pytest.approx(slow.metrics["final_equity"], rel=1e-6)
    np.testing.assert_allclose(fast.equity, slow.equity, rtol=1e-6)
    for key, value in fast.metrics.items():
        assert slow.metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_compiled_decisions_equal_decide_bar_by_bar() -> None:
    rng = np.random.default_rng(11)
    predictions = rng.choice([-1.0, -0.5, -0.02, 0.0, 0.03, 0.5, 0.97, 1.0, np.nan, np.inf], size=5000)
    for limits in (LONG_ONLY, LONG_SHORT, Limits(max_position=0.5, min_trade=0.2)):
        np.testing.assert_array_equal(decide_targets(predictions, limits), decide_path(predictions, limits))


@pytest.mark.parametrize("engine", [run_fast, run_backtrader])
def test_nan_predictions_never_become_orders(engine) -> None:
    bars = real_bars(rows=200)
    assert len(engine(bars, np.full(len(bars), np.nan), LONG_SHORT, EXECUTION).fills) == 0
    signal = np.full(len(bars), np.nan)
    signal[10] = 1.0  # one long entry, then only NaN: held to the end, never exited
    result = engine(bars, signal, LONG_SHORT, EXECUTION)
    np.testing.assert_array_equal(result.fills.bar, [11])


@pytest.mark.parametrize("engine", [run_fast, run_backtrader])
def test_predictions_outside_unit_interval_are_refused(engine) -> None:
    bars = real_bars(rows=50)
    signal = np.zeros(len(bars))
    signal[7] = 1.5
    with pytest.raises(InvalidPredictions, match=r"\[-1, 1\].*1 outside, first 1.5 at ts"):
        engine(bars, signal, LONG_SHORT, EXECUTION)


def test_buy_and_hold_is_one_fill_at_the_second_open() -> None:
    bars = real_bars(rows=500)
    result = buy_and_hold(bars, EXECUTION)
    assert len(result.fills) == 1 and result.fills.bar[0] == 1
    units = result.fills.units[0]
    assert result.metrics["final_equity"] == pytest.approx(
        units * bars.close[-1] + 1000.0 - units * result.fills.price[0] * (1 + EXECUTION.fee_rate), rel=1e-12
    )


def test_an_empty_out_of_sample_block_is_a_clear_error() -> None:
    from backtests.evaluate import out_of_sample_window
    from cta.errors import DataValidationError
    from cta.lake import Market
    from features.compute import compute_features
    from features.dataset import assemble

    candles = real_candles("BTCUSDT", "1h", 400)
    market = Market("binance", "BTC/USDT", "1h")
    dataset = assemble(market, candles, compute_features(candles), horizon=4, dead_zone_bps=10.0)
    with pytest.raises(DataValidationError, match="no out-of-sample rows"):
        out_of_sample_window(dataset, np.array([], dtype="int64"), candles)


def test_warm_execution_rules_compiles_what_the_serving_worker_calls() -> None:
    """`Worker.start()` warms the numba execution rules so that its first order does not load them (0.25-0.8 s);
    in a fresh process, nothing is compiled before and everything the worker and paper broker call is after."""
    script = (
        "from cta import execution as e\n"
        "rules = [e.order_units, e.liquidation_equity, e.fill_price, e.fill_fee]\n"
        "assert not any(r.signatures for r in rules)\n"
        "e.warm_execution_rules()\n"
        "print(all(r.signatures for r in rules))\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=120, cwd=root
    )
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr[-2000:]
