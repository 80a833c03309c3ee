"""The honest per-market report: every candidate a gate judged, after costs, beside buy-and-hold and staying flat,
with its deflated Sharpe and the number of candidates tried, the verdict and its reasons; and for the champion,
how its live record compares with the backtest that promoted it. Markdown and a PNG, readable without any UI.

Pure apart from writing the PNG. The gate writes one per gate run (an MLflow run of kind `gate`); `cta report`
writes one per market from the registry and the trading database.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from backtests.report import markdown_table


@dataclass(frozen=True)
class CandidateLine:
    family: str
    version: str
    total_return: float  # after costs, on the gate's out-of-sample window
    sharpe: float
    max_drawdown: float
    trades: int
    deflated_sharpe: float
    verdict: str  # champion | passed | rejected | stale | failed ...
    reasons: str


@dataclass(frozen=True)
class GateSummary:
    market: str
    window: str  # first - last bar (UTC)
    bars: int
    trials: int  # candidates that ran on the window: what the deflated Sharpe allows for
    buy_and_hold: dict[str, float]  # total_return, sharpe, max_drawdown
    candidates: list[CandidateLine]
    champion_before: str | None = None  # the champion the candidates were compared with


@dataclass(frozen=True)
class LiveRecord:
    """The champion's record while trading, beside what its backtest predicted (cta.monitor's terms)."""

    version: str
    bars: int
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # (measure, live, backtest)
    breaches: list[str] = field(default_factory=list)
    note: str = ""


def _pct(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:+.2%}"


def _num(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2f}"


def market_markdown(
    summary: GateSummary | None, live: LiveRecord | None, *, market: str, image: str | None, with_live: bool = True
) -> str:
    """One market's report (either part may be missing: no gate run yet, or no champion trading); `with_live`
    False leaves the champion's live record out (the gate's own report: nothing traded yet)."""
    lines = [f"## {market}", ""]
    if summary is None:
        lines += ["No gate has run for this market yet.", ""]
    else:
        beat_hold = sum(1 for c in summary.candidates if c.total_return > summary.buy_and_hold["total_return"])
        positive = sum(1 for c in summary.candidates if c.total_return > 0)
        lines += [
            f"Gate window: {summary.window} ({summary.bars:,} out-of-sample bars); {summary.trials} candidate(s) "
            f"tried, compared with champion {summary.champion_before or 'none'}. After costs, {positive} of "
            f"{len(summary.candidates)} made money and {beat_hold} beat buy-and-hold's return "
            f"({summary.buy_and_hold['total_return']:+.2%}; the gate compares Sharpe ratios).",
            "",
        ]
        rows = [
            ["flat (no position)", "-", _pct(0.0), _num(0.0), _pct(0.0), "0", "-", "benchmark", ""],
            [
                "buy-and-hold",
                "-",
                _pct(summary.buy_and_hold["total_return"]),
                _num(summary.buy_and_hold["sharpe"]),
                _pct(-summary.buy_and_hold["max_drawdown"]),
                "1",
                "-",
                "benchmark",
                "",
            ],
        ]
        for c in sorted(summary.candidates, key=lambda c: -c.total_return if math.isfinite(c.total_return) else 1):
            rows.append(
                [
                    c.family,
                    f"v{c.version}",
                    _pct(c.total_return),
                    _num(c.sharpe),
                    _pct(-c.max_drawdown),
                    str(c.trades),
                    _num(c.deflated_sharpe),
                    c.verdict,
                    c.reasons,
                ]
            )
        header = ["model", "version", "return", "Sharpe", "max drawdown", "trades", "deflated Sharpe", "verdict"]
        lines += [*markdown_table([*header, "reasons"], rows), ""]
        if image:
            lines += [f"![candidates]({image})", ""]
    if not with_live:
        return "\n".join(lines)
    if live is None:
        lines += ["No champion is trading this market.", ""]
    else:
        lines += [f"### Champion v{live.version}: live against its backtest ({live.bars:,} bars of live returns)", ""]
        if live.note:
            lines += [live.note, ""]
        if live.rows:
            lines += [*markdown_table(["measure", "live", "backtest"], live.rows), ""]
        lines += (
            ["Monitoring finds it departing from its backtest:", "", *(f"- {b}" for b in live.breaches), ""]
            if live.breaches
            else ["Monitoring finds no departure from its backtest.", ""]
        )
    return "\n".join(lines)


def candidates_figure(summary: GateSummary, path: Path) -> None:
    """Each candidate's return after costs on the gate window, beside buy-and-hold and flat (0)."""
    names = ["flat", "buy-and-hold", *(f"{c.family} v{c.version}" for c in summary.candidates)]
    values = [0.0, summary.buy_and_hold["total_return"], *(c.total_return for c in summary.candidates)]
    colours = ["#999999", "#555555", *("#2a7" if c.verdict == "champion" else "#48c" for c in summary.candidates)]
    figure, axis = plt.subplots(figsize=(max(6.0, 1.1 * len(names)), 4.0), dpi=110)
    axis.bar(names, [100 * (v if math.isfinite(v) else 0.0) for v in values], color=colours)
    axis.axhline(0.0, color="black", linewidth=0.8)
    axis.set_ylabel("return after costs (%)")
    axis.set_title(f"{summary.market}: {summary.window}")
    axis.tick_params(axis="x", labelrotation=30)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
