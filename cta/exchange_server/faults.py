"""Fault injection: random faults from FaultSettings (seeded) and armed one-shot faults for tests.

Kinds:
- error: HTTP 503 with a plain-text body. ccxt raises ExchangeNotAvailable (a NetworkError).
- internal_error: HTTP 503 with Binance's JSON {"code": -1001, ...}. ccxt maps -1001 to
  OperationFailed (the parent of NetworkError), which a client must also treat as temporary.
- timeout: wait `timeout_s` (FaultSettings) before handling the request normally.
- drop_after_execute: placing an order only (POST /api/v3/order, or POST /api/v3/brokerage/orders in the
  Coinbase dialect); the order is executed, then the connection is closed without an answer.
- rate_limit: HTTP 429 with Retry-After, as if the weight limit were exceeded.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from enum import StrEnum

from cta.exchange_server.settings import FaultSettings

ORDER_PATH = "/api/v3/order"
COINBASE_ORDER_PATH = "/api/v3/brokerage/orders"


class FaultKind(StrEnum):
    ERROR = "error"
    INTERNAL_ERROR = "internal_error"
    TIMEOUT = "timeout"
    DROP_AFTER_EXECUTE = "drop_after_execute"
    RATE_LIMIT = "rate_limit"


def normalize_path(path: str) -> str:
    """Strip a leading host-like segment: '/api.binance.com/api/v3/time' -> '/api/v3/time'."""
    if not path.startswith("/"):
        path = "/" + path
    first, sep, rest = path[1:].partition("/")
    if "." in first and sep:
        return "/" + rest
    return path


def applies(kind: FaultKind, method: str, path: str) -> bool:
    """drop_after_execute only makes sense for placing an order; every other kind fits anything."""
    return kind is not FaultKind.DROP_AFTER_EXECUTE or (method == "POST" and path in (ORDER_PATH, COINBASE_ORDER_PATH))


@dataclass
class ArmedFault:
    kind: FaultKind
    path: str | None
    method: str | None
    remaining: int

    def matches(self, method: str, path: str) -> bool:
        return (
            (self.path is None or self.path == path)
            and (self.method is None or self.method == method)
            and applies(self.kind, method, path)
        )

    def describe(self) -> dict[str, object]:
        return {"kind": str(self.kind), "path": self.path, "method": self.method, "count": self.remaining}


@dataclass(frozen=True)
class FaultPlan:
    """What to do to one request: wait latency_s first, then apply `kind` (None = nothing)."""

    latency_s: float
    kind: FaultKind | None


class FaultInjector:
    """Thread-safe: tests arm faults from their own thread while the server runs in another."""

    def __init__(self, settings: FaultSettings) -> None:
        self._settings = settings
        self._rng = random.Random(settings.seed)
        self._armed: list[ArmedFault] = []
        self._lock = threading.Lock()

    @property
    def settings(self) -> FaultSettings:
        return self._settings

    def configure(self, settings: FaultSettings) -> None:
        """Replace the random-fault settings while serving (start or stop a faulty period); reseeds the RNG."""
        with self._lock:
            self._settings = settings
            self._rng = random.Random(settings.seed)

    def arm(self, kind: FaultKind | str, path: str | None = None, count: int = 1, method: str | None = None) -> None:
        """Make the next `count` requests matching path (None = any) and method fail with `kind`."""
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        fault = ArmedFault(
            FaultKind(kind),
            None if not path or path == "*" else normalize_path(path),
            method.upper() if method else None,
            count,
        )
        with self._lock:
            self._armed.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()

    def armed(self) -> list[dict[str, object]]:
        with self._lock:
            return [f.describe() for f in self._armed]

    def plan(self, method: str, path: str) -> FaultPlan:
        """Consume a matching armed fault if there is one, else draw the random faults."""
        s = self._settings
        with self._lock:
            latency = s.latency_ms / 1000.0
            for fault in self._armed:
                if fault.matches(method, path):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._armed.remove(fault)
                    return FaultPlan(latency, fault.kind)
            if s.error_rate > 0 and self._rng.random() < s.error_rate:
                return FaultPlan(latency, FaultKind.ERROR)
            if s.timeout_rate > 0 and self._rng.random() < s.timeout_rate:
                return FaultPlan(latency, FaultKind.TIMEOUT)
            if (
                s.drop_after_execute_rate > 0
                and applies(FaultKind.DROP_AFTER_EXECUTE, method, path)
                and self._rng.random() < s.drop_after_execute_rate
            ):
                return FaultPlan(latency, FaultKind.DROP_AFTER_EXECUTE)
            return FaultPlan(latency, None)
