"""Importing Feast switches prometheus_client to shared multi-process storage; the worker's metrics stay
per instance (two workers, or two tests, in one process never see each other's counts)."""

from __future__ import annotations

import feast.metrics  # noqa: F401 (sets PROMETHEUS_MULTIPROC_DIR, as any Feast import in the worker does)

from serving.metrics import WorkerMetrics


def test_two_worker_metrics_never_share_counts() -> None:
    first, second = WorkerMetrics(), WorkerMetrics()
    first.decision("binance:BTC/USDT:1h", 0.001)
    first.state("HALTED")
    second.decision("binance:BTC/USDT:1h", 0.001)
    lines = second.render().decode().splitlines()
    assert 'cta_decisions_total{market="binance:BTC/USDT:1h"} 1.0' in lines
    assert "cta_trading_state 0.0" in lines
