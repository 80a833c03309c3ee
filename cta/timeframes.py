"""Timeframes: the candle durations CTA understands, as exact millisecond lengths."""

from __future__ import annotations

from cta.errors import ConfigError

TIMEFRAME_MS: dict[str, int] = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
}


def timeframe_ms(timeframe: str) -> int:
    """Length of one candle of `timeframe` in milliseconds; ConfigError for an unknown timeframe."""
    try:
        return TIMEFRAME_MS[timeframe]
    except KeyError:
        known = ", ".join(TIMEFRAME_MS)
        raise ConfigError("timeframe", timeframe, f"unsupported timeframe (known: {known})") from None


def floor_to_timeframe(ts_ms: int, timeframe: str) -> int:
    """Open time of the candle that contains `ts_ms`."""
    step = timeframe_ms(timeframe)
    return ts_ms - ts_ms % step


def last_closed_open_time(now_ms: int, timeframe: str) -> int:
    """Open time of the newest candle whose close time (open + length) is <= now."""
    return floor_to_timeframe(now_ms, timeframe) - timeframe_ms(timeframe)
