"""The candle lake: Parquet partitioned by exchange/symbol/timeframe/month, with a manifest each.

Layout under the storage root:
    candles/exchange=binance/symbol=BTC_USDT/timeframe=1h/month=2022-01/manifest.json
    candles/exchange=binance/symbol=BTC_USDT/timeframe=1h/month=2022-01/data-<hash16>.parquet

The manifest is the commit point. An upsert writes a new content-addressed data file, then atomically
replaces the manifest that names it, then deletes the old file. A crash at any step leaves the
previous manifest and its file intact (an orphaned new file is ignored and cleaned up later), so a
reader never sees a torn partition. Closed candles are immutable: re-ingesting a window changes
nothing, and a candle that disagrees with the stored one is returned as a conflict, not written.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cta.candles import (
    CANDLE_COLUMNS,
    content_hash,
    empty_candles,
    normalize_candles,
    symbol_to_path,
)
from cta.storage import Storage

log = logging.getLogger(__name__)

ROOT = "candles"


@dataclass(frozen=True, order=True)
class Market:
    exchange: str
    symbol: str
    timeframe: str

    @property
    def key(self) -> str:
        return f"exchange={self.exchange}/symbol={symbol_to_path(self.symbol)}/timeframe={self.timeframe}"

    def __str__(self) -> str:
        return f"{self.exchange}:{self.symbol}:{self.timeframe}"

    @classmethod
    def parse(cls, market_id: str) -> Market:
        """The inverse of str(): "binance:BTC/USDT:1h"."""
        parts = market_id.split(":")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"market id {market_id!r} is not exchange:symbol:timeframe")
        return cls(*parts)


@dataclass(frozen=True)
class PartitionManifest:
    exchange: str
    symbol: str
    timeframe: str
    month: str
    rows: int
    first_ts: int
    last_ts: int
    content_hash: str
    data_file: str

    @property
    def market(self) -> Market:
        return Market(self.exchange, self.symbol, self.timeframe)


@dataclass
class UpsertResult:
    rows_added: int = 0
    rows_unchanged: int = 0
    partitions_written: list[str] = field(default_factory=list)
    conflicts: pd.DataFrame = field(default_factory=empty_candles)


def month_of(ts_ms: pd.Series) -> pd.Series:
    return pd.to_datetime(ts_ms, unit="ms", utc=True).dt.strftime("%Y-%m")


def _to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


class CandleLake:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    @property
    def uri(self) -> str:
        return self.storage.uri

    # --- reading -------------------------------------------------------------------------------
    def _partition_prefix(self, market: Market, month: str) -> str:
        return f"{ROOT}/{market.key}/month={month}"

    def manifest(self, market: Market, month: str) -> PartitionManifest | None:
        raw = self.storage.get(f"{self._partition_prefix(market, month)}/manifest.json")
        return None if raw is None else PartitionManifest(**json.loads(raw))

    def manifests(self, market: Market | None = None) -> list[PartitionManifest]:
        prefix = f"{ROOT}/{market.key}/" if market else f"{ROOT}/"
        found = [
            PartitionManifest(**json.loads(raw))
            for key in self.storage.list(prefix)
            if key.endswith("/manifest.json") and (raw := self.storage.get(key)) is not None
        ]
        return sorted(found, key=lambda m: (m.exchange, m.symbol, m.timeframe, m.month))

    def markets(self) -> list[Market]:
        return sorted({m.market for m in self.manifests()})

    def _read_partition(self, manifest: PartitionManifest) -> pd.DataFrame:
        market = manifest.market
        raw = self.storage.get(f"{self._partition_prefix(market, manifest.month)}/{manifest.data_file}")
        if raw is None:
            raise FileNotFoundError(f"lake partition {market} {manifest.month}: missing {manifest.data_file}")
        return pd.read_parquet(io.BytesIO(raw))

    def read(self, market: Market, start_ms: int | None = None, end_ms: int | None = None) -> pd.DataFrame:
        """Candles of `market` with start_ms <= ts < end_ms (either bound optional), sorted by ts."""
        frames = []
        for manifest in self.manifests(market):
            if start_ms is not None and manifest.last_ts < start_ms:
                continue
            if end_ms is not None and manifest.first_ts >= end_ms:
                continue
            frames.append(self._read_partition(manifest))
        if not frames:
            return empty_candles()
        candles = normalize_candles(pd.concat(frames, ignore_index=True))
        mask = pd.Series(True, index=candles.index)
        if start_ms is not None:
            mask &= candles["ts"] >= start_ms
        if end_ms is not None:
            mask &= candles["ts"] < end_ms
        return candles[mask].reset_index(drop=True)

    def last_ts(self, market: Market) -> int | None:
        manifests = self.manifests(market)
        return manifests[-1].last_ts if manifests else None

    def lineage(self, market: Market) -> dict[str, str]:
        """{month: content hash} of every partition: what later stages record as their data snapshot."""
        return {m.month: m.content_hash for m in self.manifests(market)}

    def verify(self, market: Market) -> list[str]:
        """Problems found when re-hashing every partition against its manifest (empty = consistent)."""
        problems = []
        for manifest in self.manifests(market):
            try:
                frame = self._read_partition(manifest)
            except FileNotFoundError as e:
                problems.append(str(e))
                continue
            if content_hash(frame) != manifest.content_hash or len(frame) != manifest.rows:
                problems.append(f"{market} {manifest.month}: content does not match its manifest")
        return problems

    # --- writing -------------------------------------------------------------------------------
    def upsert(self, market: Market, candles: pd.DataFrame) -> UpsertResult:
        """Merge validated candles into the lake; idempotent; per-partition atomic."""
        result = UpsertResult()
        if candles.empty:
            return result
        incoming = normalize_candles(candles).drop_duplicates()
        conflicts: list[pd.DataFrame] = []
        for month, new_rows in incoming.groupby(month_of(incoming["ts"]), sort=True):
            written, unchanged, conflict = self._upsert_partition(market, str(month), new_rows)
            result.rows_added += written
            result.rows_unchanged += unchanged
            if written:
                result.partitions_written.append(str(month))
            if not conflict.empty:
                conflicts.append(conflict)
        if conflicts:
            result.conflicts = pd.concat(conflicts, ignore_index=True)
        return result

    def _upsert_partition(self, market: Market, month: str, new_rows: pd.DataFrame) -> tuple[int, int, pd.DataFrame]:
        old_manifest = self.manifest(market, month)
        existing = self._read_partition(old_manifest) if old_manifest else empty_candles()
        joined = new_rows.merge(existing, on="ts", how="left", suffixes=("", "_stored"), indicator=True)
        is_new = (joined["_merge"] == "left_only").to_numpy()
        stored_cols = [f"{c}_stored" for c in CANDLE_COLUMNS[1:]]
        same = (joined[list(CANDLE_COLUMNS[1:])].to_numpy() == joined[stored_cols].to_numpy()).all(axis=1)
        conflict = new_rows[~is_new & ~same]
        added = new_rows[is_new]
        unchanged = int((~is_new & same).sum())
        if added.empty:
            return 0, unchanged, conflict
        merged = normalize_candles(pd.concat([existing, added], ignore_index=True))
        digest = content_hash(merged)
        data_file = f"data-{digest[:16]}.parquet"
        prefix = self._partition_prefix(market, month)
        self.storage.put(f"{prefix}/{data_file}", _to_parquet_bytes(merged))
        manifest = PartitionManifest(
            exchange=market.exchange,
            symbol=market.symbol,
            timeframe=market.timeframe,
            month=month,
            rows=len(merged),
            first_ts=int(merged["ts"].iloc[0]),
            last_ts=int(merged["ts"].iloc[-1]),
            content_hash=digest,
            data_file=data_file,
        )
        self.storage.put(f"{prefix}/manifest.json", json.dumps(asdict(manifest), indent=1).encode())
        self._remove_orphans(prefix, keep=data_file)
        log.debug("lake %s %s: +%d rows (%d total)", market, month, len(added), len(merged))
        return len(added), unchanged, conflict

    def _remove_orphans(self, prefix: str, keep: str) -> None:
        for key in list(self.storage.list(prefix + "/")):
            name = key.rsplit("/", 1)[-1]
            if name.startswith("data-") and name != keep:
                self.storage.delete(key)


def summarize(manifests: Iterable[PartitionManifest]) -> pd.DataFrame:
    """One row per market: partitions, rows, first and last candle (UTC)."""
    rows = [asdict(m) for m in manifests]
    if not rows:
        return pd.DataFrame(columns=["market", "partitions", "rows", "first", "last"])
    frame = pd.DataFrame(rows)
    grouped = frame.groupby(["exchange", "symbol", "timeframe"], sort=True).agg(
        partitions=("month", "count"), rows=("rows", "sum"), first_ts=("first_ts", "min"), last_ts=("last_ts", "max")
    )
    grouped = grouped.reset_index()
    grouped["first"] = pd.to_datetime(grouped["first_ts"], unit="ms", utc=True).dt.strftime("%Y-%m-%d %H:%M")
    grouped["last"] = pd.to_datetime(grouped["last_ts"], unit="ms", utc=True).dt.strftime("%Y-%m-%d %H:%M")
    grouped["market"] = grouped["exchange"] + ":" + grouped["symbol"] + ":" + grouped["timeframe"]
    return grouped[["market", "partitions", "rows", "first", "last"]]
