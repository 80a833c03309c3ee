"""Binance request weights, counted in fixed one-minute windows of the wall clock."""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from cta.clock import Clock

WINDOW_MS = 60_000

_FIXED_WEIGHTS: dict[tuple[str, str], int] = {
    ("GET", "/api/v3/ping"): 1,
    ("GET", "/api/v3/time"): 1,
    ("GET", "/api/v3/exchangeInfo"): 20,
    ("GET", "/api/v3/account"): 20,
    ("POST", "/api/v3/order"): 1,
    ("GET", "/api/v3/order"): 4,
    ("DELETE", "/api/v3/order"): 1,
    ("DELETE", "/api/v3/openOrders"): 1,
    ("GET", "/api/v3/myTrades"): 20,
    ("GET", "/api/v3/allOrders"): 20,
}


def klines_weight(limit: int) -> int:
    """Binance's current spot weight for klines: 2 whatever the limit (1..1000)."""
    return 2


def request_weight(method: str, path: str, params: Mapping[str, str]) -> int:
    """Weight of one request to `path` (already stripped of any host prefix)."""
    if path == "/api/v3/klines":
        try:
            limit = int(params.get("limit", "500"))
        except ValueError:
            limit = 500
        return klines_weight(limit)
    if path == "/api/v3/openOrders" and method == "GET":
        return 6 if "symbol" in params else 80
    if path == "/api/v3/ticker/price":
        return 2 if "symbol" in params else 4
    return _FIXED_WEIGHTS.get((method, path), 1)


@dataclass(frozen=True)
class WeightDecision:
    allowed: bool
    used: int
    retry_after_s: int


class WeightLimiter:
    """Adds request weight to the current wall-clock minute; refuses once the limit is exceeded.

    Refused requests still count (as on Binance), so hammering keeps the window exhausted.
    """

    def __init__(self, limit: int, wall: Clock) -> None:
        self._limit = limit
        self._wall = wall
        self._lock = threading.Lock()
        self._window_start = -1
        self._used = 0

    @property
    def limit(self) -> int:
        return self._limit

    def _roll(self, now_ms: int) -> None:
        start = now_ms - now_ms % WINDOW_MS
        if start != self._window_start:
            self._window_start = start
            self._used = 0

    def retry_after_s(self, now_ms: int) -> int:
        """Whole seconds until the current window ends (at least 1)."""
        end = now_ms - now_ms % WINDOW_MS + WINDOW_MS
        return max(1, math.ceil((end - now_ms) / 1000))

    def consume(self, weight: int) -> WeightDecision:
        with self._lock:
            now = self._wall.now_ms()
            self._roll(now)
            self._used += weight
            allowed = self._used <= self._limit
            return WeightDecision(allowed, self._used, 0 if allowed else self.retry_after_s(now))

    def used(self) -> int:
        """Weight used in the current window."""
        with self._lock:
            self._roll(self._wall.now_ms())
            return self._used
