"""The serving worker's Prometheus metrics: values kept per instance, in memory, exported from a registry of their own.

A private `CollectorRegistry` (not prometheus_client's global one) keeps each worker's series apart, so tests and
several workers in one process never see each other's counts, and `/metrics` shows only what the worker exports (no
process/platform collectors from other libraries).

The values live in this object and a custom collector (prometheus_client's documented extension point) exports them
as metric families. prometheus_client's own Counter/Gauge/Histogram are not used: they pick where values live once,
when prometheus_client is imported, and importing Feast sets PROMETHEUS_MULTIPROC_DIR first (for Feast's metrics
server, which CTA does not run), which would put every value of the process in shared mmap files.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from serving.control import TradingState
from serving.orders import OrderStatus

log = logging.getLogger(__name__)

# From 0.5 ms (a cached model on a small feature row) to 1 s (far beyond a healthy decision).
DECISION_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
TRADING_STATE_CODES: dict[TradingState, int] = {
    TradingState.RUNNING: 0,
    TradingState.REDUCING: 1,
    TradingState.HALTED: 2,
}
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


def _le(bound: float) -> str:
    """A bucket's `le` label as prometheus_client's own Histogram writes it."""
    label: str = floatToGoString(bound)  # type: ignore[no-untyped-call]  # prometheus_client.utils is untyped
    return label


LATENCY_BUCKET_LABELS = (*(_le(bound) for bound in DECISION_LATENCY_BUCKETS), "+Inf")


def _created_series_enabled() -> bool:
    """Whether counters and histograms export `_created` (prometheus_client's PROMETHEUS_DISABLE_CREATED_SERIES)."""
    return os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() not in ("true", "1", "t")


@dataclass
class _Count:
    value: float = 0.0
    created: float = field(default_factory=time.time)


@dataclass
class _Distribution:
    buckets: list[float]  # observations per bucket (not cumulative), the last one +Inf
    total: float = 0.0
    created: float = field(default_factory=time.time)


class _Values(Collector):
    """The worker's series, by metric and label values; `collect()` exports them (prometheus_client calls it)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.decisions: dict[tuple[str, ...], _Count] = {}  # by label values
        self.orders: dict[tuple[str, ...], _Count] = {}
        self.errors: dict[tuple[str, ...], _Count] = {}
        self.latency: dict[str, _Distribution] = {}
        self.model_version: dict[str, float] = {}
        self.trading_state = 0.0
        self.equity: dict[str, float] = {}
        self.created_series = _created_series_enabled()

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            yield self._counter("cta_decisions", "Decisions made, per market.", ["market"], self.decisions)
            yield self._counter(
                "cta_orders", "Order status changes seen, per market and status.", ["market", "status"], self.orders
            )
            yield self._counter("cta_errors", "Errors handled, per kind.", ["kind"], self.errors)
            yield self._histogram()
            yield self._gauge(
                "cta_model_version", "The model version the worker trades, per market.", self.model_version
            )
            state = GaugeMetricFamily("cta_trading_state", "The kill switch: 0 running, 1 reducing, 2 halted.")
            state.add_metric([], self.trading_state)
            yield state
            yield self._gauge("cta_equity", "Equity in quote currency, per market.", self.equity)

    def _counter(
        self, name: str, documentation: str, labels: list[str], series: dict[tuple[str, ...], _Count]
    ) -> Metric:
        family = CounterMetricFamily(name, documentation, labels=labels)
        for key, count in series.items():
            family.add_metric(list(key), count.value, created=count.created if self.created_series else None)
        return family

    def _histogram(self) -> Metric:
        name = "cta_decision_latency_seconds"
        family = HistogramMetricFamily(
            name, "Time from the candle being available to the decision, per market.", labels=["market"]
        )
        for market, distribution in self.latency.items():
            cumulative, running = [], 0.0
            for bound, count in zip(LATENCY_BUCKET_LABELS, distribution.buckets, strict=True):
                running += count
                cumulative.append((bound, running))
            family.add_metric([market], cumulative, distribution.total)
            if self.created_series:
                family.add_sample(f"{name}_created", {"market": market}, distribution.created)
        return family

    @staticmethod
    def _gauge(name: str, documentation: str, series: dict[str, float]) -> Metric:
        family = GaugeMetricFamily(name, documentation, labels=["market"])
        for market, value in series.items():
            family.add_metric([market], value)
        return family


class WorkerMetrics:
    """The counters, histogram and gauges the worker updates; `render()` is the `/metrics` body."""

    def __init__(self) -> None:
        self._values = _Values()
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self._values)

    def decision(self, market: str, latency_s: float) -> None:
        """One decision for `market`, made `latency_s` seconds after its candle was available."""
        values = self._values
        with values.lock:
            values.decisions.setdefault((market,), _Count()).value += 1.0
            distribution = values.latency.setdefault(
                market, _Distribution(buckets=[0.0] * (len(DECISION_LATENCY_BUCKETS) + 1))
            )
            distribution.total += latency_s
            bucket = _bucket(DECISION_LATENCY_BUCKETS, latency_s)
            if bucket is not None:
                distribution.buckets[bucket] += 1.0

    def order(self, market: str, status: OrderStatus | str) -> None:
        """One order of `market` reached `status` (PENDING_SUBMIT when sent, FILLED, REJECTED, ...)."""
        with self._values.lock:
            self._values.orders.setdefault((market, str(status)), _Count()).value += 1.0

    def error(self, kind: str) -> None:
        """One error of `kind` (e.g. "exchange", "model", "risk") was handled."""
        with self._values.lock:
            self._values.errors.setdefault((kind,), _Count()).value += 1.0

    def model(self, market: str, version: str | int) -> None:
        """The worker now trades `version` of `market`'s model (MLflow versions are integers; else NaN)."""
        try:
            value = float(int(version))
        except (TypeError, ValueError):
            log.warning("model version %r of %s is not an integer; exporting NaN", version, market)
            value = math.nan
        with self._values.lock:
            self._values.model_version[market] = value

    def state(self, state: TradingState | str) -> None:
        """The kill switch is now `state`."""
        code = float(TRADING_STATE_CODES[TradingState(state)])
        with self._values.lock:
            self._values.trading_state = code

    def equity(self, market: str, value: float) -> None:
        """`market`'s equity (quote currency) is now `value`."""
        with self._values.lock:
            self._values.equity[market] = float(value)

    def render(self) -> bytes:
        """Every metric in the Prometheus text exposition format (serve with METRICS_CONTENT_TYPE)."""
        return generate_latest(self.registry)


def _bucket(bounds: Sequence[float], value: float) -> int | None:
    """The index of the first bucket whose upper bound is >= `value` (len(bounds): +Inf); None for NaN (which
    prometheus_client's Histogram counts in no bucket)."""
    for index, bound in enumerate((*bounds, math.inf)):
        if value <= bound:
            return index
    return None
