"""Training wall time and peak RSS per candidate family on the default dataset (BTC/USDT 1h, the
bundled real candles), and pyfunc inference latency per decision after loading from the registry.

Each family runs in its own process (clean peak RSS); the decision latency is one `predict` on the
rows one decision needs (one row, or one window), p50/p99 over repeated calls after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FAMILIES = ("logistic", "gbm", "keras", "ppo")


def child(family: str, work: str, calls: int) -> None:
    import mlflow
    import numpy as np

    from cta.config import load_settings
    from cta.lake import Market
    from cta.registry import configure_mlflow
    from features.compute import compute_features
    from features.dataset import assemble
    from features.registry import registry_version
    from tests.factories import real_candles
    from training.train import prepare, train_candidate

    settings = load_settings(
        env={},
        overrides={
            "training": {
                "tracking_uri": f"sqlite:///{work}/mlflow.db",
                "artifact_root": f"{work}/artifacts",
                "ray_dir": f"{work}/ray",
            }
        },
    )
    configure_mlflow(settings)
    candles = real_candles("BTCUSDT", "1h")
    market = Market("binance", "BTC/USDT", "1h")
    dataset = assemble(
        market,
        candles,
        compute_features(candles),
        horizon=settings.features.label_horizon,
        dead_zone_bps=settings.features.dead_zone_bps,
    )
    data, _ = prepare(dataset, settings)
    started = time.perf_counter()
    outcome = train_candidate(family, data, settings, registry_version())
    train_s = time.perf_counter() - started
    model = mlflow.pyfunc.load_model(f"models:/{outcome.model_name}/{outcome.version}")
    history = int(model.metadata.metadata.get("history_rows", 1)) if model.metadata.metadata else 1
    window = data.validation.X.tail(history)
    for _ in range(20):
        model.predict(window)
    latencies = []
    for _ in range(calls):
        t = time.perf_counter()
        model.predict(window)
        latencies.append((time.perf_counter() - t) * 1000)
    print(
        json.dumps(
            {
                "case": f"train {family}",
                "rows": len(data.train),
                "folds": len(data.folds),
                "train_s": train_s,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "history_rows": history,
                "decision_p50_ms": float(np.percentile(latencies, 50)),
                "decision_p99_ms": float(np.percentile(latencies, 99)),
            }
        )
    )


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    calls = 100 if args.quick else 500
    repo = Path(__file__).resolve().parents[1]
    for family in FAMILIES:
        with tempfile.TemporaryDirectory(prefix=f"cta-bench-train-{family}-") as work:
            result = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    f"from benchmarks.bench_train import child; child({family!r}, {work!r}, {calls})",
                ],
                capture_output=True,
                text=True,
                cwd=repo,
                timeout=1800,
                check=False,
            )
            lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
            if result.returncode != 0 or not lines:
                rows.append({"case": f"train {family}", "error": (result.stderr or result.stdout)[-400:]})
                continue
            rows.append(json.loads(lines[-1]))
    return rows
