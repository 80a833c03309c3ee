"""The lake audit behind `cta validate`: every stored market re-checked against the "candles" suite,
its partition manifests (content hashes) and the timeframe grid (gaps)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cta.errors import CTAError
from cta.lake import CandleLake, Market
from cta.validation import find_gaps, validate_candles


@dataclass(frozen=True)
class MarketAudit:
    market: Market
    rows: int
    suite: str  # "passed" or the suite's summary of what failed
    hash_problems: tuple[str, ...]
    gaps: int
    missing_candles: int
    passed: bool


def audit_lake(
    lake: CandleLake,
    now_ms: int,
    results_dir: Path,
    symbols: list[str] | None = None,
    timeframes: list[str] | None = None,
) -> list[MarketAudit]:
    """Audit the stored markets (or the given subset); CTAError if none matches."""
    markets = [
        m
        for m in lake.markets()
        if (not symbols or m.symbol in symbols) and (not timeframes or m.timeframe in timeframes)
    ]
    if not markets:
        raise CTAError(f"no stored candles match in {lake.uri}; run `cta ingest` first")
    audits = []
    for market in markets:
        candles = lake.read(market)
        report = validate_candles(candles, market.timeframe, now_ms, results_dir)
        problems = tuple(lake.verify(market))
        gaps = find_gaps(candles["ts"], market.timeframe)
        audits.append(
            MarketAudit(
                market=market,
                rows=len(candles),
                suite="passed" if report.success else report.summary(),
                hash_problems=problems,
                gaps=len(gaps),
                missing_candles=sum(n for _, n in gaps),
                passed=report.success and not problems,
            )
        )
    return audits
