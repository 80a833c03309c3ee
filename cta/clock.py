"""Clocks are injected: domain code never calls datetime.now() itself."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Current time as UTC epoch milliseconds."""
        ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that moves only when told to. For tests and deterministic replays."""

    def __init__(self, start_ms: int) -> None:
        self._now = start_ms
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        with self._lock:
            return self._now

    def set(self, now_ms: int) -> None:
        with self._lock:
            self._now = now_ms

    def advance(self, delta_ms: int) -> None:
        with self._lock:
            self._now += delta_ms


class ReplayClock:
    """Market time that starts at `start_ms` and runs `speed` times faster than the wall clock.

    speed=0 freezes it (then only `set` moves it). The wall clock is read through `wall`,
    so tests can drive it too.
    """

    def __init__(self, start_ms: int, speed: float = 1.0, wall: Clock | None = None) -> None:
        if speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        self._wall = wall or SystemClock()
        self._lock = threading.Lock()
        self._anchor_market = start_ms
        self._anchor_wall = self._wall.now_ms()
        self.speed = speed

    def now_ms(self) -> int:
        with self._lock:
            elapsed = self._wall.now_ms() - self._anchor_wall
            return self._anchor_market + int(elapsed * self.speed)

    def set(self, now_ms: int, speed: float | None = None) -> None:
        with self._lock:
            self._anchor_market = now_ms
            self._anchor_wall = self._wall.now_ms()
            if speed is not None:
                if speed < 0:
                    raise ValueError(f"speed must be >= 0, got {speed}")
                self.speed = speed
