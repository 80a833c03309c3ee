"""How the CLI shows results: one rich table per kind of result (ingestion, lake, features, training,
verdicts, paper trading, lake audit). Presentation only."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.table import Table

from app.cli.root import console

if TYPE_CHECKING:  # types only: the CLI starts without importing pandas or MLflow
    from cta.lake_audit import MarketAudit
    from cta.registry import VersionRow


def print_ingest(reports: list[dict[str, Any]]) -> None:
    table = Table(title="ingestion")
    for column in ("market", "fetched", "added", "unchanged", "quarantined", "gaps"):
        table.add_column(column, justify="left" if column == "market" else "right")
    for r in reports:
        table.add_row(
            r["market"],
            str(r["fetched"]),
            str(r["added"]),
            str(r["unchanged"]),
            str(r["quarantined"]),
            str(len(r["gaps"])),
        )
    console.print(table)


def print_audit(uri: str, audits: list[MarketAudit]) -> None:
    table = Table(title=f"validation of {uri}")
    for column in ("market", "rows", "suite", "hashes", "gaps (missing)"):
        table.add_column(column)
    for audit in audits:
        table.add_row(
            str(audit.market),
            str(audit.rows),
            audit.suite,
            "ok" if not audit.hash_problems else "; ".join(audit.hash_problems),
            f"{audit.gaps} ({audit.missing_candles})",
        )
    console.print(table)


def print_lake_summary(uri: str, summary: Any) -> None:
    table = Table(title=f"candle lake: {uri}")
    for column in summary.columns:
        table.add_column(str(column))
    for row in summary.itertuples(index=False):
        table.add_row(*(str(v) for v in row))
    console.print(table if len(summary) else f"candle lake {uri} is empty")


def print_features(result: dict[str, Any]) -> None:
    table = Table(title=f"features (registry {result['registry_version']}, online store {result['online_store']})")
    for column in ("market", "status", "rows"):
        table.add_column(column)
    for item in result["markets"]:
        table.add_row(item["market"], item["status"], str(item["rows"]))
    console.print(table)


def print_training(rows: list[dict[str, Any]]) -> None:
    table = Table(title="training (MLflow)")
    for column in ("market", "family", "version", "balanced acc", "AUC", "IC", "validation net", "error"):
        table.add_column(column)

    def fmt(value: Any) -> str:
        return "" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    for row in rows:
        table.add_row(
            row["market"],
            row["family"],
            fmt(row.get("version")),
            fmt(row.get("balanced_accuracy_mean")),
            fmt(row.get("auc_mean")),
            fmt(row.get("ic_mean")),
            fmt(row.get("validation_net_return")),
            fmt(row.get("error")),
        )
    console.print(table)


def print_verdicts(rows: list[dict[str, Any]]) -> None:
    table = Table(title="backtest gate (out-of-sample)")
    for column in ("market", "candidate", "family", "Sharpe", "max DD", "return", "trades", "verdict", "reasons"):
        table.add_column(column, overflow="fold")
    styles = {"champion": "bold green", "passed": "green", "rejected": "red", "failed": "red", "stale": "yellow"}
    for row in rows:
        verdict = row["verdict"]
        table.add_row(
            row["market"],
            f"v{row['version']}",
            row["family"],
            _num(row.get("sharpe"), "{:.2f}"),
            _num(row.get("max_drawdown"), "{:.1%}"),
            _num(row.get("total_return"), "{:+.1%}"),
            str(row.get("trades", "")),
            f"[{styles.get(verdict, '')}]{verdict}[/]",
            row.get("reasons", ""),
        )
    console.print(table)


def _num(value: Any, pattern: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return pattern.format(value)


def print_versions(name: str, rows: list[VersionRow]) -> None:
    table = Table(title=f"{name}" + ("" if rows else " (no versions yet)"))
    for column in ("version", "family", "aliases", "verdict", "OOS Sharpe", "OOS max DD", "reasons"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row.version,
            row.family,
            ", ".join(row.aliases),
            row.verdict,
            row.oos_sharpe,
            row.oos_max_drawdown,
            row.reasons,
        )
    console.print(table)


def print_serving(rows: list[dict[str, Any]]) -> None:
    table = Table(title="paper trading" if rows else "serving")
    for column in ("market", "model", "bars", "decisions", "orders", "fills", "PnL", "buy & hold", "note"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row["market"],
            row["model"],
            str(row["bars"]),
            str(row["decisions"]),
            str(row["orders"]),
            str(row["fills"]),
            f"{row['pnl']:+.2%}",
            f"{row['buy_and_hold']:+.2%}",
            row["note"],
        )
    console.print(table)


def print_gate(gate: Any, profile: str) -> None:
    """The promotion gate the verdicts were judged by, in words; plainly when it does not require beating
    buy-and-hold (or is off)."""
    must = {"flat": "staying flat (total return > 0 after costs)", "buy_and_hold": "buy-and-hold (a higher Sharpe)"}
    beats = " and ".join(must[name] for name in gate.must_beat) or "no benchmark"
    console.print(
        f"promotion gate ({profile} profile): out-of-sample Sharpe >= {gate.min_sharpe:.2f}, max drawdown <= "
        f"{gate.max_drawdown:.0%}, >= {gate.min_trades} trades, deflated Sharpe >= {gate.min_deflated_sharpe:.2f}, "
        f"beats the champion by {gate.champion_margin:.2f} Sharpe, must beat {beats}",
        markup=False,
    )
    if "buy_and_hold" not in gate.must_beat:
        console.print(
            "[bold yellow]this gate does NOT require beating buy-and-hold[/]: a champion may do worse than holding"
        )


def print_paper_orders(orders: list[dict[str, Any]], limit: int = 20) -> None:
    """The paper account's orders (the last `limit`), each with its fill."""
    if not orders:
        console.print("paper orders: none")
        return
    shown = orders[-limit:]
    title = f"paper orders and fills ({len(orders)} orders" + (
        f", the last {limit} shown)" if len(orders) > limit else ")"
    )
    table = Table(title=title)
    for column in ("market", "decided on candle (UTC)", "side", "amount", "status", "filled at (UTC)", "price", "fee"):
        table.add_column(column, justify="right" if column in ("amount", "price", "fee") else "left")
    for order in shown:
        filled = order["fills"] > 0
        table.add_row(
            order["market"],
            _utc(order["candle_ts"]),
            order["side"],
            f"{order['filled'] if filled else order['amount']:.6g}",
            order["status"],
            _utc(order["filled_ts"]) if filled else "waits for the next open",
            _num(order["price"], "{:,.2f}"),
            f"{order['fee']:.4g} {order['fee_currency'] or ''}".strip() if filled else "",
        )
    console.print(table)


def print_trading_summary(session: Any) -> None:
    """The last word of the demo: orders and fills per market, the candles traded, the account."""
    span = f"candles {_utc(session.first_ms)} .. {_utc(session.last_ms)} UTC" if session.first_ms else "no candle"
    console.print(f"\n[bold]Paper trading summary[/bold] ({span}; paper account {session.database}):", highlight=False)
    per_market: dict[str, list[dict[str, Any]]] = {}
    for order in session.orders:
        per_market.setdefault(order["market"], []).append(order)
    for row in session.rows:
        orders = per_market.get(row["market"], [])
        fills = sum(order["fills"] for order in orders)
        if row["model"] == "none" and not orders:
            what = f"nothing traded: {row['note'] or 'no model'}"
        elif row["model"] == "none":  # it traded, then lost its champion (demoted by monitoring)
            what = (
                f"{len(orders)} orders, {fills} fills over {row['bars']} candles, PnL {row['pnl']:+.2%} "
                f"(buy & hold {row['buy_and_hold']:+.2%}); now no model: {row['note'] or 'none'}"
            )
        else:
            what = (
                f"champion {row['model']}: {len(orders)} orders, {fills} fills over {row['bars']} candles, "
                f"PnL {row['pnl']:+.2%} (buy & hold {row['buy_and_hold']:+.2%})"
            )
        console.print(f"  {row['market']}: {what}", markup=False, highlight=False)
    if session.extended:
        console.print(
            f"  (planned for {session.candles} candles; went on while a champion had no fill yet or an order waited "
            "for its fill)",
            highlight=False,
        )
    for note in session.notes:
        console.print(f"  note: {note}", markup=False, highlight=False)


def _utc(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
