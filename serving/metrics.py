"""The serving worker's Prometheus metrics, in a registry of their own.

A private `CollectorRegistry` (not prometheus_client's global one) keeps each worker's series apart, so tests
and several workers in one process never see each other's counts, and `/metrics` shows only what the worker
exports (no process/platform collectors from other libraries).
"""

from __future__ import annotations

import logging
import math

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import values as prometheus_values

from serving.orders import OrderStatus, TradingState

log = logging.getLogger(__name__)

# Importing Feast sets PROMETHEUS_MULTIPROC_DIR (for Feast's own metrics server, which CTA does not run);
# prometheus_client then keeps every metric value of the process in shared mmap files, so two
# registries would see each other's counts. The worker's metrics are per instance and in memory.
prometheus_values.ValueClass = prometheus_values.MutexValue

# From 0.5 ms (a cached model on a small feature row) to 1 s (far beyond a healthy decision).
DECISION_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
TRADING_STATE_CODES: dict[TradingState, int] = {
    TradingState.RUNNING: 0,
    TradingState.REDUCING: 1,
    TradingState.HALTED: 2,
}
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


class WorkerMetrics:
    """The counters, histogram and gauges the worker updates; `render()` is the `/metrics` body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._decisions = Counter("cta_decisions", "Decisions made, per market.", ["market"], registry=self.registry)
        self._orders = Counter(
            "cta_orders",
            "Order status changes seen, per market and status.",
            ["market", "status"],
            registry=self.registry,
        )
        self._errors = Counter("cta_errors", "Errors handled, per kind.", ["kind"], registry=self.registry)
        self._latency = Histogram(
            "cta_decision_latency_seconds",
            "Time from the candle being available to the decision, per market.",
            ["market"],
            buckets=DECISION_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._model_version = Gauge(
            "cta_model_version", "The model version the worker trades, per market.", ["market"], registry=self.registry
        )
        self._trading_state = Gauge(
            "cta_trading_state", "The kill switch: 0 running, 1 reducing, 2 halted.", registry=self.registry
        )
        self._equity = Gauge("cta_equity", "Equity in quote currency, per market.", ["market"], registry=self.registry)

    def decision(self, market: str, latency_s: float) -> None:
        """One decision for `market`, made `latency_s` seconds after its candle was available."""
        self._decisions.labels(market=market).inc()
        self._latency.labels(market=market).observe(latency_s)

    def order(self, market: str, status: OrderStatus | str) -> None:
        """One order of `market` reached `status` (PENDING_SUBMIT when sent, FILLED, REJECTED, ...)."""
        self._orders.labels(market=market, status=str(status)).inc()

    def error(self, kind: str) -> None:
        """One error of `kind` (e.g. "exchange", "model", "risk") was handled."""
        self._errors.labels(kind=kind).inc()

    def model(self, market: str, version: str | int) -> None:
        """The worker now trades `version` of `market`'s model (MLflow versions are integers; else NaN)."""
        try:
            value = float(int(version))
        except (TypeError, ValueError):
            log.warning("model version %r of %s is not an integer; exporting NaN", version, market)
            value = math.nan
        self._model_version.labels(market=market).set(value)

    def state(self, state: TradingState | str) -> None:
        """The kill switch is now `state`."""
        self._trading_state.set(TRADING_STATE_CODES[TradingState(state)])

    def equity(self, market: str, value: float) -> None:
        """`market`'s equity (quote currency) is now `value`."""
        self._equity.labels(market=market).set(value)

    def render(self) -> bytes:
        """Every metric in the Prometheus text exposition format (serve with METRICS_CONTENT_TYPE)."""
        return generate_latest(self.registry)
