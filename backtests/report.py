"""Report builders for one backtest: an equity/drawdown PNG, a short Markdown report and the fills as a
table. Pure apart from writing the PNG; nothing is shown (matplotlib's Agg backend, selected before
pyplot is imported, so this works on a headless worker).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from backtests.engine import BacktestResult

MAX_MARKERS = 500  # fill markers drawn at most; more are subsampled evenly
FIGURE_SIZE = (10.0, 6.0)
DPI = 110


def _percent(value: float) -> str:
    return f"{value:.2%}"


def _ratio(value: float) -> str:
    return f"{value:,.2f}"


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _money(value: float) -> str:
    return f"{value:,.2f}"


# metric -> how its value is written in the table
METRIC_FORMATS: dict[str, Callable[[float], str]] = {
    "total_return": _percent,
    "cagr": _percent,
    "sharpe": _ratio,
    "sortino": _ratio,
    "max_drawdown": _percent,
    "calmar": _ratio,
    "trades": _count,
    "win_rate": _percent,
    "exposure": _percent,
    "turnover": _ratio,
    "final_equity": _money,
}


def bar_times(result: BacktestResult) -> np.ndarray:
    """Open time of each bar as naive datetime64 (UTC)."""
    return np.asarray(result.bars.ts, dtype="int64").astype("datetime64[ms]")


def drawdown(equity: np.ndarray) -> np.ndarray:
    """Fall from the running peak at each bar, in percent (0 or negative)."""
    return (equity / np.maximum.accumulate(equity) - 1.0) * 100.0


def marker_indices(count: int, limit: int = MAX_MARKERS) -> np.ndarray:
    """Indices of the fills to mark: all of them, or `limit` spread evenly over them."""
    if count <= limit:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, limit).round().astype("int64"))


def equity_figure(result: BacktestResult, benchmark: BacktestResult, path: Path, title: str) -> Path:
    """Write a PNG: the strategy's and buy-and-hold's equity with the strategy's fills marked (top), the
    strategy's drawdown in percent (bottom), on a shared UTC time axis. Returns `path`."""
    times = bar_times(result)
    figure, (top, bottom) = plt.subplots(
        2, 1, sharex=True, figsize=FIGURE_SIZE, gridspec_kw={"height_ratios": [3, 1]}, layout="constrained"
    )
    try:
        top.plot(times, result.equity, color="tab:blue", linewidth=1.0, label="strategy")
        top.plot(bar_times(benchmark), benchmark.equity, color="tab:gray", linewidth=1.0, label="buy and hold")
        fills = result.fills
        shown = marker_indices(len(fills))
        bars, units = fills.bar[shown], fills.units[shown]
        buys, sells = bars[units > 0], bars[units < 0]
        top.scatter(times[buys], result.equity[buys], marker="^", color="tab:green", s=18, zorder=3, label="buy")
        top.scatter(times[sells], result.equity[sells], marker="v", color="tab:red", s=18, zorder=3, label="sell")
        top.set_title(title if len(shown) == len(fills) else f"{title} ({len(shown)} of {len(fills)} fills marked)")
        top.set_ylabel("equity")
        top.legend(loc="upper left", fontsize="small")
        top.grid(alpha=0.3)
        bottom.fill_between(times, drawdown(result.equity), 0.0, color="tab:red", alpha=0.35, linewidth=0)
        bottom.set_ylabel("drawdown (%)")
        bottom.set_xlabel("time (UTC)")
        bottom.grid(alpha=0.3)
        locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
        bottom.xaxis.set_major_locator(locator)
        bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=DPI)
    finally:
        plt.close(figure)
    return path


def utc(ts_ms: int) -> str:
    return str(pd.Timestamp(int(ts_ms), unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M UTC"))


def _cell(value: object) -> str:
    """A value as one Markdown table cell: sequences joined, floats short, pipes and newlines escaped."""
    if isinstance(value, set | frozenset):
        text = ", ".join(sorted(str(item) for item in value))
    elif isinstance(value, list | tuple):
        text = ", ".join(str(item) for item in value)
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(header: list[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """A Markdown table's lines (cells through `_cell`: pipes and newlines escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]


def metrics_table(result: BacktestResult, benchmark: BacktestResult, champion: BacktestResult | None) -> list[str]:
    """One row per reported metric; a champion column only when there is a champion."""
    columns = [("candidate", result), ("buy-and-hold", benchmark)]
    columns += [("champion", champion)] if champion is not None else []
    rows: list[list[object]] = [
        [metric, *(write(run.metrics[metric]) if metric in run.metrics else "n/a" for _, run in columns)]
        for metric, write in METRIC_FORMATS.items()
    ]
    return markdown_table(["metric", *(name for name, _ in columns)], rows)


def markdown_report(
    *,
    title: str,
    model: dict[str, str],
    result: BacktestResult,
    benchmark: BacktestResult,
    champion: BacktestResult | None,
    verdict_label: str,
    failures: list[str],
    notes: list[str],
    thresholds: dict[str, object],
    image_name: str = "equity.png",
) -> str:
    """A short Markdown report of one gated backtest: verdict and failure reasons, metrics next to
    buy-and-hold (and the champion, when there is one), the window, the model, the thresholds and the
    equity image (`image_name`, relative to the report)."""
    bars = result.bars
    lines = [f"# {title}", "", f"**Verdict: {verdict_label.upper()}**", ""]
    if failures:
        lines += ["Failed checks:", "", *(f"- {reason}" for reason in failures), ""]
    if notes:
        lines += ["Notes:", "", *(f"- {note}" for note in notes), ""]
    lines += ["## Metrics", "", *metrics_table(result, benchmark, champion), ""]
    window: list[list[object]] = [
        ["first bar", utc(bars.ts[0]) if len(bars) else "n/a"],
        ["last bar", utc(bars.ts[-1]) if len(bars) else "n/a"],
        ["bars", f"{len(bars):,}"],
        ["timeframe", bars.timeframe],
    ]
    lines += ["## Window", "", *markdown_table(["window", "value"], window), ""]
    lines += ["## Model", "", *markdown_table(["field", "value"], [[k, v] for k, v in model.items()]), ""]
    lines += ["## Thresholds", "", *markdown_table(["threshold", "value"], [[k, v] for k, v in thresholds.items()]), ""]
    lines += [f"![equity]({image_name})", ""]
    return "\n".join(lines)


def fills_frame(result: BacktestResult) -> pd.DataFrame:
    """The fills (time UTC, side, units, price, fee) with their notional (|units| x price)."""
    frame = result.fills.frame(result.bars.ts)
    frame["notional"] = np.abs(frame["units"].to_numpy()) * frame["price"].to_numpy()
    return frame
