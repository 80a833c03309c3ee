"""The lake audit behind `cta validate`: every stored market re-checked against the "candles" suite,
its partition manifests (content hashes) and the timeframe grid (gaps)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cta.errors import CTAError
from cta.lake import CandleLake, Market, PartitionStatus
from cta.validation import find_gaps, validate_candles


@dataclass(frozen=True)
class MarketAudit:
    market: Market
    rows: int
    suite: str  # "passed", the suite's summary of what failed, or why it did not run
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
    *,
    max_close_jump: Mapping[str, float] | None = None,
) -> list[MarketAudit]:
    """Audit the stored markets (or the given subset); CTAError if none matches.

    Every partition is first checked by the lake's one read path (a manifest that does not parse counts as
    its market's problem); the suite runs only over markets whose partitions all match their manifests.
    `max_close_jump` is the per-timeframe bound on close-to-close moves (default: the suite's)."""
    by_market: dict[Market, list[PartitionStatus]] = {}
    for status in lake.partition_status():
        market = status.manifest.market if status.manifest is not None else Market.parse(status.market)
        by_market.setdefault(market, []).append(status)
    markets = [
        m
        for m in sorted(by_market)
        if (not symbols or m.symbol in symbols) and (not timeframes or m.timeframe in timeframes)
    ]
    if not markets:
        raise CTAError(f"no stored candles match in {lake.uri}; run `cta ingest` first")
    audits = []
    for market in markets:
        problems = tuple(f"{s.month}: {s.problem}" for s in by_market[market] if s.problem)
        if problems:
            rows = sum(s.manifest.rows for s in by_market[market] if s.manifest is not None)
            audits.append(MarketAudit(market, rows, "not run: corrupt partitions", problems, 0, 0, passed=False))
            continue
        candles = lake.read(market)
        jump = None if max_close_jump is None else max_close_jump.get(market.timeframe)
        report = validate_candles(candles, market.timeframe, now_ms, results_dir, max_close_jump=jump)
        gaps = find_gaps(candles["ts"], market.timeframe)
        audits.append(
            MarketAudit(
                market=market,
                rows=len(candles),
                suite="passed" if report.success else report.summary(),
                hash_problems=(),
                gaps=len(gaps),
                missing_candles=sum(n for _, n in gaps),
                passed=report.success,
            )
        )
    return audits
