"""Feature build throughput on real candles, the feature-table write rate, Feast materialisation
time and online read latency.

Data: the shared real Binance candles (../shared/data/binance): 6 symbols x ~5 years of 1h and
2 symbols x a month of 1m for the build; those 8 markets plus 2 of 5m for the Feast measurements
(10 markets). The alternative measured in the same run is the serving path: recomputing the newest
row from the last `history_needed()` candles on every new candle.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cta.candles import normalize_candles
from cta.config import FeatureSettings
from cta.lake import Market
from features.compute import compute_features, history_needed
from features.table import FeatureTable, feature_frame

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "binance"
BUNDLED = Path(__file__).resolve().parents[1] / "cta" / "data" / "candles"
HOURLY = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "ADAUSDT", "LTCUSDT")
MINUTE = ("BTCUSDT", "ETHUSDT")
FIVE_MINUTE = ("BTCUSDT", "XRPUSDT")


def load(symbol: str, timeframe: str) -> pd.DataFrame:
    path = SHARED / f"binance_{symbol}_{timeframe}.csv.gz"
    if not path.exists():
        path = BUNDLED / f"binance_{symbol}_{timeframe}.csv.gz"
    return normalize_candles(pd.read_csv(path).rename(columns={"timestamp": "ts"}))


def market(symbol: str, timeframe: str) -> Market:
    return Market("binance", f"{symbol[:-4]}/{symbol[-4:]}", timeframe)


def build_rate(sets: list[pd.DataFrame], rounds: int) -> tuple[float, int]:
    rows = sum(len(c) for c in sets)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for candles in sets:
            compute_features(candles)
        times.append(time.perf_counter() - started)
    return statistics.median(times), rows


def incremental_rate(candles: pd.DataFrame, steps: int) -> float:
    tail = history_needed()
    started = time.perf_counter()
    for t in range(len(candles) - steps, len(candles)):
        compute_features(candles.iloc[t + 1 - tail : t + 1])
    return (time.perf_counter() - started) / steps


def feast_numbers(markets: dict[Market, pd.DataFrame], work: Path, online: str, calls: int) -> list[dict[str, Any]]:
    from features.feast_store import feature_store_for

    settings = FeatureSettings(
        table_dir=work / "features",
        feast_dir=work / f"feast-{online}",
        online_store=online,
        redis_url="127.0.0.1:6379,db=14",
    )
    table = FeatureTable(settings.table_dir)
    for m, candles in markets.items():
        table.write(m, feature_frame(candles, m), {"bench": "1"}, None)
    store = feature_store_for(settings)
    store.apply()
    newest = max(table.read(m)["event_timestamp"].max() for m in markets)
    started = time.perf_counter()
    store.materialize(newest.to_pydatetime())
    materialize_s = time.perf_counter() - started
    ids = [str(m) for m in markets]
    rows = [
        {
            "case": f"feast materialise {len(ids)} markets ({online})",
            "seconds": materialize_s,
            "rows": sum(len(c) for c in markets.values()),
        }
    ]
    for subset in (ids[:1], ids[:10]):
        store.online(subset)  # warm
        latencies = []
        for _ in range(calls):
            started = time.perf_counter()
            store.online(subset)
            latencies.append((time.perf_counter() - started) * 1000)
        rows.append(
            {
                "case": f"feast online read, {len(subset)} market(s) in one call ({online})",
                "p50_ms": float(np.percentile(latencies, 50)),
                "p99_ms": float(np.percentile(latencies, 99)),
                "calls": calls,
            }
        )
    if online == "redis":
        import redis

        redis.Redis(host="127.0.0.1", port=6379, db=14).flushdb()
    return rows


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rounds = 1 if args.quick else 5
    hourly = [load(s, "1h") for s in HOURLY]
    minute = [load(s, "1m") for s in MINUTE]
    results: list[dict[str, Any]] = []
    for label, sets in (("6 symbols x ~5 y of 1h", hourly), ("2 symbols x 1 month of 1m", minute)):
        seconds, rows = build_rate(sets, rounds)
        results.append(
            {"case": f"compute_features batch, {label}", "rows": rows, "seconds": seconds, "rows_per_s": rows / seconds}
        )
    per_candle = incremental_rate(hourly[0], 50 if args.quick else 500)
    results.append(
        {
            "case": "alternative: serving path, newest row from the tail, per candle",
            "seconds_per_candle": per_candle,
            "rows_per_s": 1 / per_candle,
            "batch_speedup": results[0]["rows_per_s"] * per_candle,
        }
    )
    with tempfile.TemporaryDirectory(prefix="cta-bench-features-") as tmp:
        work = Path(tmp)
        table = FeatureTable(work / "write-rate")
        frames = [(market(s, "1h"), feature_frame(c, market(s, "1h"))) for s, c in zip(HOURLY, hourly, strict=True)]
        started = time.perf_counter()
        for m, frame in frames:
            table.write(m, frame, {}, None)
        seconds = time.perf_counter() - started
        written = sum(len(f) for _, f in frames)
        results.append(
            {
                "case": "feature table write (Parquet + manifest)",
                "rows": written,
                "seconds": seconds,
                "rows_per_s": written / seconds,
            }
        )
        markets = {market(s, "1h"): c for s, c in zip(HOURLY, hourly, strict=True)}
        markets |= {market(s, "1m"): c for s, c in zip(MINUTE, minute, strict=True)}
        markets |= {market(s, "5m"): load(s, "5m") for s in FIVE_MINUTE}
        for online in ("sqlite", "redis"):
            results += feast_numbers(markets, work, online, 50 if args.quick else 300)
    return results
