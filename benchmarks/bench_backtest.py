"""Both backtest engines on the same signal and bars: wall time, bars/s and peak RSS, with a parity
check (fills, final equity, the equity curve) in the same run.

Cases:
- 1m: one year of 1-minute bars (525,600). The shared real data holds only one month of 1m bars
  (BTC/USDT, 43,209), so the full year is SYNTHETIC: a geometric random walk with a fixed seed
  (`synthetic_minutes`); the engines' cost does not depend on the price values, only on the bars and
  the number of fills. `--quick` uses the first 20,000 REAL 1m bars instead (enough real data exists).
- 1h: every real BTC/USDT 1h bar of the shared data (45,024 bars, 2017-08 to 2022-10); `--quick`: the
  first 5,000.

Signal: long/flat daily momentum, the sign of the trailing 24-hour return (24 bars on 1h, 1,440 on 1m;
NaN during the warm-up), with Limits(allow_short=False) so a -1 means flat. A 24-MINUTE lookback on the
1m year flips ~48,000 times and its costs drive equity to 1e-21, which makes the final-equity parity
meaningless; the same 24-hour rule on both timeframes keeps the fill count realistic.

Each engine runs in its own fresh process (`--child ENGINE TIMEFRAME`), so its peak RSS
(`ru_maxrss`) is not polluted by the other engine; the child prints one JSON line and saves its equity
and fills for the parent's parity check. Fast engine: the first call (numba cache load, or compile if
the cache is stale) apart from the median of the warm calls, and the parts of a warm call timed alone
(check, decide, the simulation kernel, the metrics) so the per-bar engine cost and the metric cost are
visible. backtrader: one run per case (~1 minute on the 1m year).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backtests.engine import Bars
from cta.candles import normalize_candles
from cta.decide import Limits
from cta.execution import Execution
from cta.timeframes import timeframe_ms

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "binance"
SYMBOL = "BTCUSDT"
YEAR_MINUTES = 365 * 1440
QUICK_ROWS = {"1m": 20_000, "1h": 5_000}
FULL_ROWS = {"1m": YEAR_MINUTES, "1h": 0}  # 0: every real bar
SYNTHETIC_START_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC
SYNTHETIC_SEED = 7
SYNTHETIC_SIGMA = 0.0008  # per-minute log-return volatility, about BTC's
SYNTHETIC_START_PRICE = 60_000.0
LOOKBACK_MS = 24 * 3_600_000
LIMITS = Limits(allow_short=False)
EXECUTION = Execution(fee_rate=0.001, slippage=0.0002, position_fraction=1.0, initial_cash=10_000.0)
WARM_RUNS = 7
FAST_TARGET_BARS_PER_S = 20e6
BACKTRADER_TARGET_BARS_PER_S = 12e3
PARITY_TOLERANCE = 1e-6


def real_bars(timeframe: str, rows: int) -> Bars | None:
    """The first `rows` real bars (0: all), or None when the shared data holds fewer."""
    candles = pd.read_csv(SHARED / f"binance_{SYMBOL}_{timeframe}.csv.gz").rename(columns={"timestamp": "ts"})
    candles = normalize_candles(candles)
    if rows and len(candles) < rows:
        return None
    return Bars.from_candles(candles.head(rows) if rows else candles, timeframe)


def synthetic_minutes(n: int, seed: int = SYNTHETIC_SEED) -> Bars:
    """A geometric random walk of `n` 1-minute bars; each open is the previous close."""
    rng = np.random.default_rng(seed)
    close = SYNTHETIC_START_PRICE * np.exp(np.cumsum(rng.normal(0.0, SYNTHETIC_SIGMA, n)))
    open_ = np.concatenate([[SYNTHETIC_START_PRICE], close[:-1]])
    ts = SYNTHETIC_START_MS + np.arange(n, dtype="int64") * timeframe_ms("1m")
    return Bars(ts, open_, close, "1m")


def case_bars(timeframe: str, rows: int) -> tuple[Bars, str]:
    """The bars of one case and a description of where they come from."""
    bars = real_bars(timeframe, rows)
    if bars is not None:
        first, last = (pd.Timestamp(int(t), unit="ms", tz="UTC").strftime("%Y-%m-%d") for t in bars.ts[[0, -1]])
        return bars, f"real {first}..{last}"
    return synthetic_minutes(rows), f"SYNTHETIC random walk, seed {SYNTHETIC_SEED}"


def momentum_signal(bars: Bars) -> np.ndarray:
    """Sign of the trailing 24-hour return (NaN before a full lookback exists)."""
    lookback = LOOKBACK_MS // timeframe_ms(bars.timeframe)
    signal = np.full(len(bars), np.nan)
    signal[lookback:] = np.sign(bars.close[lookback:] / bars.close[:-lookback] - 1.0)
    return signal


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = function()
    return time.perf_counter() - started, value


def median_seconds(function: Callable[[], Any], runs: int) -> float:
    return statistics.median(timed(function)[0] for _ in range(runs))


def fast_child(bars: Bars, signal: np.ndarray, warm_runs: int) -> tuple[dict[str, Any], Any]:
    """Time run_fast cold and warm, then each part of a warm call alone."""
    from backtests import engine
    from backtests.metrics import equity_metrics, round_trip_pnls

    first_s, result = timed(lambda: engine.run_fast(bars, signal, LIMITS, EXECUTION))
    kernels = (engine._decide_kernel, engine._simulate)
    cache = "compile" if any(sum(k.stats.cache_misses.values()) for k in kernels) else "cache load"
    targets = engine.decide_targets(signal, LIMITS)
    ex = EXECUTION
    raw = engine._simulate(
        bars.open, bars.close, targets, ex.position_fraction, ex.slippage, ex.fee_rate, ex.initial_cash
    )
    equity, units, fills = raw[0], raw[1], engine.Fills(*raw[2:])
    curve = np.concatenate([[ex.initial_cash], equity])
    parts: dict[str, Callable[[], Any]] = {
        "run_fast": lambda: engine.run_fast(bars, signal, LIMITS, ex),
        "simulate_targets (kernel + result_metrics)": lambda: engine.simulate_targets(bars, targets, ex),
        "check_predictions": lambda: engine.check_predictions(signal, bars.ts),
        "decide_targets": lambda: engine.decide_targets(signal, LIMITS),
        "_simulate kernel alone": lambda: engine._simulate(
            bars.open, bars.close, targets, ex.position_fraction, ex.slippage, ex.fee_rate, ex.initial_cash
        ),
        "result_metrics": lambda: engine.result_metrics(bars, equity, units, fills, ex.initial_cash),
        "result_metrics > equity_metrics": lambda: equity_metrics(curve, bars.timeframe),
        "result_metrics > round_trip_pnls": lambda: round_trip_pnls(fills.units, fills.price, fills.fee),
    }
    warm = {name: median_seconds(part, warm_runs) for name, part in parts.items()}
    return {"first_s": first_s, "numba": cache, "warm_s": warm, "warm_runs": warm_runs}, result


def backtrader_child(bars: Bars, signal: np.ndarray) -> tuple[dict[str, Any], Any]:
    from backtests.bt_engine import run_backtrader

    seconds, result = timed(lambda: run_backtrader(bars, signal, LIMITS, EXECUTION))
    return {"first_s": seconds}, result


def child(engine: str, timeframe: str, rows: int, out: Path, warm_runs: int) -> None:
    """Run one engine on one case in this (fresh) process; print one JSON line, save equity and fills."""
    bars, data = case_bars(timeframe, rows)
    signal = momentum_signal(bars)
    rss_load = peak_rss_mb()  # the peak of loading the bars, before the engine
    timing, result = fast_child(bars, signal, warm_runs) if engine == "fast" else backtrader_child(bars, signal)
    np.savez(out / f"{engine}-{timeframe}.npz", equity=result.equity, fill_bar=result.fills.bar)
    report = timing | {
        "bars": len(bars),
        "data": data,
        "rss_peak_mb": peak_rss_mb(),
        "rss_load_mb": rss_load,
        "fills": len(result.fills),
        "final_equity": float(result.metrics["final_equity"]),
    }
    print(json.dumps(report))


def spawn(engine: str, timeframe: str, rows: int, out: Path) -> dict[str, Any]:
    """Run `child` in a fresh interpreter and return its JSON report."""
    command = [sys.executable, "-m", "benchmarks.bench_backtest", "--child", engine, timeframe]
    command += ["--rows", str(rows), "--out", str(out), "--warm-runs", str(WARM_RUNS)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{engine} {timeframe} child failed ({done.returncode}): {done.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def speed(case: str, name: str, bars: int, seconds: float) -> dict[str, Any]:
    return {"case": f"{case} {name}", "bars": bars, "ms": seconds * 1000, "bars_per_s": bars / seconds}


def against(target: float, bars_per_s: float) -> str:
    scaled = f"{target / 1e6:,.0f} M" if target >= 1e6 else f"{target / 1e3:,.0f} k"
    return f"{'met' if bars_per_s >= target else 'MISSED'} (>= {scaled})"


def engine_facts(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("fills", "final_equity", "rss_peak_mb", "rss_load_mb", "data")
    return {key: report[key] for key in keys}


def fast_rows(case: str, report: dict[str, Any]) -> list[dict[str, Any]]:
    """The first call, the warm median, then each part of a warm call with its share of it."""
    bars, warm = report["bars"], report["warm_s"]
    rows = [speed(case, f"fast run_fast, first call ({report['numba']})", bars, report["first_s"])]
    rows[0] |= engine_facts(report)
    for name, seconds in warm.items():
        label = f"run_fast, warm (median of {report['warm_runs']})" if name == "run_fast" else f"part: {name}"
        rows.append(speed(case, f"fast {label}", bars, seconds) | {"share": seconds / warm["run_fast"]})
    rows[1]["target"] = against(FAST_TARGET_BARS_PER_S, rows[1]["bars_per_s"])
    return rows


def backtrader_row(case: str, report: dict[str, Any]) -> dict[str, Any]:
    row = speed(case, "backtrader run_backtrader, one run", report["bars"], report["first_s"])
    return row | engine_facts(report) | {"target": against(BACKTRADER_TARGET_BARS_PER_S, row["bars_per_s"])}


def relative_difference(ours: np.ndarray, theirs: np.ndarray) -> float:
    if len(ours) != len(theirs):
        return float("inf")
    return float(np.max(np.abs(ours - theirs) / np.abs(theirs))) if len(theirs) else 0.0


def parity_row(
    case: str, fast: dict[str, Any], backtrader: dict[str, Any], out: Path, timeframe: str
) -> dict[str, Any]:
    """Fills and equity of the two engines compared (ok: same fill count at the same bars, final equity
    within PARITY_TOLERANCE), and how many times faster the fast engine is than backtrader's one run
    (fast warm median, and fast first call)."""
    ours, theirs = (np.load(out / f"{engine}-{timeframe}.npz") for engine in ("fast", "backtrader"))
    same_bars = bool(np.array_equal(ours["fill_bar"], theirs["fill_bar"]))
    final = relative_difference(np.array([fast["final_equity"]]), np.array([backtrader["final_equity"]]))
    curve = relative_difference(ours["equity"], theirs["equity"])
    ok = fast["fills"] == backtrader["fills"] and same_bars and final <= PARITY_TOLERANCE
    warm = backtrader["first_s"] / fast["warm_s"]["run_fast"]
    first = backtrader["first_s"] / fast["first_s"]
    return {
        "case": f"{case} parity; fast/backtrader speed",
        "bars": fast["bars"],
        "fills": f"{fast['fills']:,} {'=' if ok else 'vs'} {backtrader['fills']:,}",
        "parity": f"{'ok' if ok else 'FAILED'}: final equity rel diff {final:.1e}, curve max {curve:.1e}"
        + ("" if same_bars else ", fills at different bars"),
        "speed_ratio": f"x{warm:,.0f} warm, x{first:,.1f} first call",
    }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows_of = QUICK_ROWS if args.quick else FULL_ROWS
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cta-bench-backtest-") as tmp:
        out = Path(tmp)
        for timeframe, rows in rows_of.items():
            fast = spawn("fast", timeframe, rows, out)
            backtrader = spawn("backtrader", timeframe, rows, out)
            case = f"{timeframe}:"
            results += fast_rows(case, fast)
            results.append(backtrader_row(case, backtrader))
            results.append(parity_row(case, fast, backtrader, out, timeframe))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "TIMEFRAME"), help="internal: one engine, one case")
    parser.add_argument("--rows", type=int, default=0, help="bars of the case (0: every real bar)")
    parser.add_argument("--out", type=Path, help="directory for the child's equity and fills")
    parser.add_argument("--warm-runs", type=int, default=WARM_RUNS)
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    args = parser.parse_args(argv)
    if args.child:
        engine, timeframe = args.child
        if engine not in {"fast", "backtrader"} or args.out is None:
            parser.error("--child needs ENGINE fast|backtrader and --out")
        child(engine, timeframe, args.rows, args.out, args.warm_runs)
        return 0
    from benchmarks import run as runner

    return runner.main(["backtest", *(["--quick"] if args.quick else [])])


if __name__ == "__main__":
    sys.exit(main())
