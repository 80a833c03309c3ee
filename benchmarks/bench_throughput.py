"""One worker, many markets: 10 / 100 / 300 markets at 1m on the local exchange (`python -m benchmarks.run
throughput [--quick]`).

Each count runs `cta serve`'s runtime (`serving_runtime`: SQLite, Feast SQLite online store, MLflow registry, the
paper broker, the API) in a child process against a LocalExchangeServer in its own process. The exchange serves
`count` markets (S000/USDT ... : real BTC/USDT 1m candles, each market shifted by its own number of minutes and
scaled, so no two are the same series) on a replay clock running SPEED times faster than real time: a 1m candle
closes every 60 / SPEED seconds. Every market trades a "flip" champion (one MLflow model, registered under each
market's name) that alternates long/flat, so every market sends an order at every candle: the worst case.

Per minute: the time from the minute's close (on the exchange's clock, converted to wall time) to the FIRST and
to the LAST market's order sent; p50/p99 over the measured minutes (the first WARM_MINUTES are warm-up). The
worker fetches the markets' candles concurrently (`serving.fetch_concurrency` requests at a time, within the
exchange client's rate budget), then decides market by market. CPU per market per minute: the worker process's
CPU time over the measured minutes / (markets x minutes), polling between candles included (it polls every 20 ms
here: its share weighs on small counts), and the CPU inside the minute's step alone / markets. "Enough" for one
worker: the per-minute work (the last order's delay) fits in the minute with room to spare; the doc extrapolates
where it stops fitting on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.bench_serving import (
    REPO,
    _child_rows,
    bench_settings,
    exchange_process,
    log_flip_model,
    replay_candles,
)

COUNTS = (10, 100, 300)
QUICK_COUNTS = (10, 30)
MINUTES = 14
QUICK_MINUTES = 5
WARM_MINUTES = 2
SPEED = 12.0  # a 1m candle closes every 5 s
HISTORY_MINUTES = 400  # candles before the replay start: the features' history
BACKLOG_MINUTES = 10  # spare candles after the measured minutes
CHILD = (sys.executable, "-m", "benchmarks.bench_throughput", "--child")


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    quick = bool(getattr(args, "quick", False))
    counts, minutes = (QUICK_COUNTS, QUICK_MINUTES) if quick else (COUNTS, MINUTES)
    rows: list[dict[str, Any]] = []
    for count in counts:
        argv = ["--markets", str(count), "--minutes", str(minutes)]
        rows += _child_rows(argv, f"{count} markets", timeout_s=3600, child=CHILD)
    return rows


# --- the child ---------------------------------------------------------------------------------------------------
def market_files(data_dir: Path, count: int, minutes: int) -> tuple[list[str], str]:
    """`count` markets' 1m candle files (real BTC/USDT candles, market i shifted by 37 i minutes and scaled by
    1 + i / 100), long enough for the history and the replay; the symbols and the replay start (ISO)."""
    import pandas as pd

    need = HISTORY_MINUTES + minutes + BACKLOG_MINUTES
    candles, _ = replay_candles(need + 37 * count)
    data_dir.mkdir(parents=True, exist_ok=True)
    symbols = []
    first_ts = int(candles.ts.iloc[0])
    for i in range(count):
        part = candles.iloc[37 * i : 37 * i + need].reset_index(drop=True)
        scale = 1.0 + i / 100
        frame = pd.DataFrame(
            {
                "timestamp": first_ts + 60_000 * part.index.to_numpy(),  # every market on the same minutes
                "open": part.open * scale,
                "high": part.high * scale,
                "low": part.low * scale,
                "close": part.close * scale,
                "volume": part.volume,
            }
        )
        frame.to_parquet(data_dir / f"S{i:03d}_USDT-1m.parquet", index=False)
        symbols.append(f"S{i:03d}/USDT")
    start = pd.Timestamp(first_ts + 60_000 * HISTORY_MINUTES, unit="ms", tz="UTC").isoformat()
    return symbols, start


def register_flip_champions(settings: Any, markets: list[Any]) -> None:
    """One flip model, registered under every market's name and made its champion (no training: this measures
    serving)."""
    from mlflow import MlflowClient

    from cta.registry import CHAMPION, configure_mlflow, registered_model_name

    configure_mlflow(settings)
    client = MlflowClient()
    first = registered_model_name(markets[0])
    version = log_flip_model(first)
    client.set_registered_model_alias(first, CHAMPION, version)
    source = str(client.get_model_version(first, version).source)
    for market in markets[1:]:
        name = registered_model_name(market)
        client.create_registered_model(name)
        created = client.create_model_version(name, source)
        client.set_registered_model_alias(name, CHAMPION, created.version)


def start_clock(url: str) -> None:
    """Set the local exchange's replay clock running at SPEED from where it stands."""
    import urllib.request

    request = urllib.request.Request(f"{url}/_cta/clock", data=json.dumps({"speed": SPEED}).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def child(count: int, minutes: int) -> None:
    from app.serve import serving_runtime
    from cta.components import configured_markets
    from serving.worker import Worker

    sent: dict[int, list[float]] = {}  # candle open time -> wall time each market's order was sent
    in_steps: list[float] = []  # CPU time inside each step that decided something
    clock: dict[str, float] = {}  # when the exchange's clock started, and at which market time
    stop = asyncio.Event()
    step, decide = Worker.step, Worker._decide
    wanted = minutes + WARM_MINUTES

    async def timed_step(self: Worker) -> int:
        cpu_started = time.process_time()
        processed = await step(self)
        if processed and clock:
            in_steps.append((time.process_time() - cpu_started) / processed)
        done = [ts for ts in sent if len(sent[ts]) == count]
        if len(done) >= wanted and "stopped" not in clock:
            clock["stopped"], clock["cpu_end"] = time.perf_counter(), time.process_time()
            stop.set()
        return processed

    async def timed_decide(self: Worker, state: Any, **kwargs: Any) -> Any:
        record = await decide(self, state, **kwargs)
        if record.order is not None and clock:
            sent.setdefault(int(kwargs["ts"]), []).append(float(kwargs["seen"]) + record.latency_s)
        return record

    Worker.step, Worker._decide = timed_step, timed_decide  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix=f"cta-bench-throughput-{count}-") as tmp:
        work = Path(tmp)
        symbols, start = market_files(work / "candles", count, minutes)
        # the exchange's clock stands still (speed 0) until the worker has warmed every market and loaded every
        # champion, then runs at SPEED from `start`: a minute closing at C closes at wall time
        # started + (C - start) / SPEED
        with exchange_process(0.0, start, work / "candles") as url:
            settings = bench_settings(work, work / "serve", url=url, timeframe="1m", symbols=tuple(symbols))
            markets = configured_markets(settings)
            began = time.perf_counter()
            register_flip_champions(settings, markets)

            async def serve() -> None:
                async with serving_runtime(settings) as runtime:
                    for market in runtime.worker.states:
                        await runtime.worker.models.refresh(market)
                    clock["setup_s"] = time.perf_counter() - began
                    start_clock(url)
                    clock["wall"], clock["cpu"] = time.perf_counter(), time.process_time()
                    await runtime.worker.run(stop)

            asyncio.run(serve())
    start_ms = int(pd.Timestamp(start).timestamp() * 1000)
    print(json.dumps(summarize(count, start_ms, sent, in_steps, clock)), flush=True)


def summarize(
    count: int, start_ms: int, sent: dict[int, list[float]], in_steps: list[float], clock: dict[str, float]
) -> dict[str, Any]:
    """Per minute after WARM_MINUTES: its close (on the exchange's clock, in wall time) -> the first and the LAST
    market's order sent (ms); CPU per market and minute over the run (polling between candles included) and
    inside the steps alone."""
    firsts, lasts, complete = [], [], 0
    for ts in sorted(sent)[WARM_MINUTES:]:
        close_wall = clock["wall"] + (ts + 60_000 - start_ms) / 1000 / SPEED
        times = sent[ts]
        complete += len(times) == count
        firsts.append((min(times) - close_wall) * 1000)
        lasts.append((max(times) - close_wall) * 1000)

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")

    wall_s = clock.get("stopped", float("nan")) - clock["wall"]
    cpu_s = clock.get("cpu_end", float("nan")) - clock["cpu"]
    minutes = len(sent)
    return {
        "case": f"{count} markets at 1m, one worker",
        "minutes": len(lasts),
        "minutes_all_markets_ordered": complete,
        "first_order_p50_ms": pct(firsts, 0.5),
        "last_order_p50_ms": pct(lasts, 0.5),
        "last_order_p99_ms": pct(lasts, 0.99),
        "last_order_max_ms": max(lasts) if lasts else float("nan"),
        "cpu_ms_per_market_minute": cpu_s * 1000 / (count * max(minutes, 1)),
        "step_cpu_ms_per_market": statistics.median(in_steps or [float("nan")]) * 1000,
        "detail": (
            f"a minute every {60 / SPEED:.0f} s wall; {minutes} minutes in {wall_s:.0f} s, worker CPU {cpu_s:.1f} s "
            f"({cpu_s / wall_s:.0%} of a core); last order after each close, ms: "
            f"{' '.join(f'{v:.0f}' for v in lasts)}; set-up (registry, warm-up, every champion loaded) "
            f"{clock.get('setup_s', 0):.0f} s"
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", action="store_true", required=True)
    parser.add_argument("--markets", type=int, required=True)
    parser.add_argument("--minutes", type=int, default=MINUTES)
    args = parser.parse_args(argv)
    from app.runtime_env import apply_offline_env

    apply_offline_env(REPO / "data")
    child(args.markets, args.minutes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
