"""Benchmark runner: runs the named benchmarks (default: all), prints a table, writes JSON.

Each benchmark is a function returning a list of result rows (dicts with at least `case`); the
runner adds machine facts and writes `benchmarks/results/<benchmark>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS_DIR = Path(__file__).resolve().parent / "results"
Benchmark = Callable[[argparse.Namespace], list[dict[str, Any]]]


def registry() -> dict[str, Benchmark]:
    from benchmarks import (
        bench_backtest,
        bench_dashboard,
        bench_features,
        bench_ingest,
        bench_ledger,
        bench_monitor,
        bench_servers,
        bench_serving,
        bench_throughput,
        bench_train,
    )

    return {
        "ingest": bench_ingest.run,
        "ingest_venues": bench_ingest.run_venues,
        "features": bench_features.run,
        "train": bench_train.run,
        "backtest": bench_backtest.run,
        "serving": bench_serving.run,
        "decide": bench_serving.run_latency,
        "decide_ledger": bench_serving.run_ledger_latency,
        "throughput": bench_throughput.run,
        "servers": bench_servers.run,
        "ledger": bench_ledger.run,
        "monitor": bench_monitor.run,
        "dashboard": bench_dashboard.run,
    }


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


def load() -> str:
    """The machine's load averages (1, 5, 15 min): a run on a busy machine is not a run on a quiet one."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def print_table(name: str, rows: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    table = Table(title=f"benchmark: {name}")
    for column in columns:
        table.add_column(column, justify="left" if column == "case" else "right")
    for row in rows:
        table.add_row(*(_fmt(row.get(c, "")) for c in columns))
    Console(width=240).print(table)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    args = parser.parse_args(argv)
    from app.runtime_env import apply_offline_env

    apply_offline_env(Path("data"))
    benchmarks = registry()
    unknown = [n for n in args.names if n not in benchmarks]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {sorted(benchmarks)}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    for name in args.names or list(benchmarks):
        started, load_before = time.time(), load()
        rows = benchmarks[name](args)
        print_table(name, rows)
        print(f"load average (1/5/15 min) before: {load_before}; after: {load()}; {os.cpu_count()} cpus")
        out = RESULTS_DIR / f"{name}.json"
        out.write_text(
            json.dumps(
                {
                    "benchmark": name,
                    "started_unix": started,
                    "quick": args.quick,
                    "machine": machine(),
                    "load_before": load_before,
                    "load_after": load(),
                    "results": rows,
                },
                indent=1,
            )
        )
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
