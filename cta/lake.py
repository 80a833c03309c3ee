"""The candle lake: Parquet partitioned by exchange/symbol/timeframe/month, with a manifest each.

Layout under the storage root:
    candles/exchange=binance/symbol=BTC_USDT/timeframe=1h/month=2022-01/manifest.json
    candles/exchange=binance/symbol=BTC_USDT/timeframe=1h/month=2022-01/data-<hash16>.parquet

The manifest is the commit point. An upsert writes a new content-addressed data file, then atomically
replaces the manifest that names it, then deletes the old file. A crash at any step leaves the
previous manifest and its file intact (an orphaned new file is ignored and cleaned up later), so a
reader never sees a torn partition. Closed candles are immutable: re-ingesting a window changes
nothing, and a candle that disagrees with the stored one is returned as a conflict, not written.

Every read goes through ONE verified path (`_read_partition`): the data file must exist, decode as the
candle schema, and match its manifest (row count, first/last candle, content hash), or LakeCorruptionError
names the partition and file. `read`, `snapshot`, `lineage` (what features, training and backtests record),
`upsert` (which would otherwise fold a changed file into a fresh, valid-looking hash), `verify` (`cta
validate`) and `partition_status` (`cta lake show`) all use it, so no stage can use a partition that
`cta validate` rejects. A manifest that does not parse is refused the same way.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime

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
from cta.errors import LakeCorruptionError
from cta.storage import Storage

log = logging.getLogger(__name__)

ROOT = "candles"
_DATA_FILE = re.compile(r"^data-[0-9a-f]{16}\.parquet$")


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


@dataclass(frozen=True)
class LakeSnapshot:
    """Verified candles and the partitions they came from ({month: content hash})."""

    candles: pd.DataFrame
    lineage: dict[str, str]


@dataclass(frozen=True)
class PartitionStatus:
    """One partition checked by the read path: its manifest (None if it does not parse) and its problem
    (None = the data file matches the manifest)."""

    market: str
    month: str
    manifest: PartitionManifest | None
    problem: str | None


@dataclass
class UpsertResult:
    rows_added: int = 0
    rows_unchanged: int = 0
    partitions_written: list[str] = field(default_factory=list)
    conflicts: pd.DataFrame = field(default_factory=empty_candles)


def month_of(ts_ms: pd.Series) -> pd.Series:
    return pd.to_datetime(ts_ms, unit="ms", utc=True).dt.strftime("%Y-%m")


def _month(ts_ms: int | None) -> str | None:
    return None if ts_ms is None else datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m")


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
        key = f"{self._partition_prefix(market, month)}/manifest.json"
        raw = self.storage.get(key)
        return None if raw is None else _parse_manifest(key, raw)

    def manifests(self, market: Market | None = None) -> list[PartitionManifest]:
        """Every partition's manifest (of `market`, or all); LakeCorruptionError for one that does not parse."""
        prefix = f"{ROOT}/{market.key}/" if market else f"{ROOT}/"
        found = [
            _parse_manifest(key, raw)
            for key in self.storage.list(prefix)
            if key.endswith("/manifest.json") and (raw := self.storage.get(key)) is not None
        ]
        return sorted(found, key=lambda m: (m.exchange, m.symbol, m.timeframe, m.month))

    def markets(self) -> list[Market]:
        return sorted({m.market for m in self.manifests()})

    def _read_partition(self, manifest: PartitionManifest) -> pd.DataFrame:
        """THE read path: the partition's candles, checked against its manifest, or LakeCorruptionError."""
        prefix = self._partition_prefix(manifest.market, manifest.month)

        def corrupt(problem: str) -> LakeCorruptionError:
            return LakeCorruptionError(str(manifest.market), manifest.month, f"{prefix}/{manifest.data_file}", problem)

        if not _DATA_FILE.match(manifest.data_file) or not manifest.content_hash.startswith(manifest.data_file[5:21]):
            raise corrupt("the manifest names a data file that is not this partition's")
        raw = self.storage.get(f"{prefix}/{manifest.data_file}")
        if raw is None:
            raise corrupt("missing file")
        try:
            frame = normalize_candles(pd.read_parquet(io.BytesIO(raw)))
        except (pa.ArrowException, OSError, ValueError, KeyError, TypeError) as e:  # not the file that was written
            detail = str(e).splitlines()[0] if str(e) else "no detail"
            raise corrupt(f"unreadable as candles ({type(e).__name__}: {detail})") from e
        if len(frame) != manifest.rows:
            raise corrupt(f"row count mismatch ({len(frame)} rows, the manifest says {manifest.rows})")
        if content_hash(frame, normalized=True) != manifest.content_hash:
            raise corrupt("hash mismatch (the data does not match its manifest: changed after it was written)")
        first, last = (int(frame["ts"].iloc[i]) for i in (0, -1)) if len(frame) else (None, None)
        if (first, last) != (manifest.first_ts, manifest.last_ts) or {_month(first), _month(last)} != {manifest.month}:
            raise corrupt("its candles are not the manifest's month or first/last candle")
        return frame

    def snapshot(self, market: Market, start_ms: int | None = None, end_ms: int | None = None) -> LakeSnapshot:
        """Verified candles of `market` with start_ms <= ts < end_ms (either bound optional), sorted by ts,
        and the lineage of the partitions read. LakeCorruptionError names the first bad partition."""
        frames, lineage = [], {}
        for manifest in self.manifests(market):
            if start_ms is not None and manifest.last_ts < start_ms:
                continue
            if end_ms is not None and manifest.first_ts >= end_ms:
                continue
            frames.append(self._read_partition(manifest))
            lineage[manifest.month] = manifest.content_hash
        if not frames:
            return LakeSnapshot(empty_candles(), lineage)
        candles = pd.concat(frames, ignore_index=True)  # partitions are sorted and in month order
        mask = pd.Series(True, index=candles.index)
        if start_ms is not None:
            mask &= candles["ts"] >= start_ms
        if end_ms is not None:
            mask &= candles["ts"] < end_ms
        return LakeSnapshot(candles[mask].reset_index(drop=True), lineage)

    def read(self, market: Market, start_ms: int | None = None, end_ms: int | None = None) -> pd.DataFrame:
        """Verified candles of `market` with start_ms <= ts < end_ms (either bound optional), sorted by ts."""
        return self.snapshot(market, start_ms, end_ms).candles

    def last_ts(self, market: Market) -> int | None:
        """The newest stored candle's open time, from the manifests (where ingestion resumes; the partition it
        writes into is verified when the upsert reads it)."""
        manifests = self.manifests(market)
        return manifests[-1].last_ts if manifests else None

    def lineage(self, market: Market) -> dict[str, str]:
        """{month: content hash} of every partition, each verified: what later stages record as their data."""
        return self.snapshot(market).lineage

    def verify(self, market: Market) -> list[str]:
        """What is wrong with the market's partitions (empty = every one matches its manifest)."""
        return [f"{s.month}: {s.problem}" for s in self.partition_status(market) if s.problem]

    def partition_status(self, market: Market | None = None) -> list[PartitionStatus]:
        """Every partition (of `market`, or all) checked by the one read path, whatever is wrong with it (a
        manifest that does not parse is listed under its directory's market)."""
        prefix = f"{ROOT}/{market.key}/" if market else f"{ROOT}/"
        statuses: list[tuple[str, PartitionStatus]] = []
        for key in sorted(k for k in self.storage.list(prefix) if k.endswith("/manifest.json")):
            raw = self.storage.get(key)
            if raw is None:  # removed since listed
                continue
            manifest = None
            try:
                manifest = _parse_manifest(key, raw)
                self._read_partition(manifest)
            except LakeCorruptionError as e:
                statuses.append((key, PartitionStatus(e.market, e.month, manifest, e.problem)))
                continue
            statuses.append((key, PartitionStatus(str(manifest.market), manifest.month, manifest, None)))
        # A manifest that does not parse is named after its sibling partitions' market when there is one.
        named = {key.rsplit("/month=", 1)[0]: s.market for key, s in statuses if s.manifest is not None}
        return [
            s if s.manifest is not None else replace(s, market=named.get(key.rsplit("/month=", 1)[0], s.market))
            for key, s in statuses
        ]

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


_MANIFEST_FIELDS: dict[str, type] = {
    "exchange": str,
    "symbol": str,
    "timeframe": str,
    "month": str,
    "rows": int,
    "first_ts": int,
    "last_ts": int,
    "content_hash": str,
    "data_file": str,
}


def _parse_manifest(key: str, raw: bytes) -> PartitionManifest:
    """The manifest stored at `key`, or LakeCorruptionError: not JSON, fields missing, unknown or of the wrong
    type, or naming another partition than the one whose directory holds it (a copied manifest)."""
    parts = dict(p.split("=", 1) for p in key.split("/") if "=" in p)
    market = f"{parts.get('exchange', '?')}:{parts.get('symbol', '?')}:{parts.get('timeframe', '?')}"
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or set(data) != set(_MANIFEST_FIELDS):
            raise ValueError(f"fields are not {', '.join(_MANIFEST_FIELDS)}")
        wrong = [f for f, t in _MANIFEST_FIELDS.items() if not isinstance(data[f], t) or isinstance(data[f], bool)]
        if wrong:
            raise ValueError(f"{wrong[0]} is not of type {_MANIFEST_FIELDS[wrong[0]].__name__}")
    except ValueError as e:  # also JSONDecodeError and UnicodeDecodeError
        raise LakeCorruptionError(market, parts.get("month", "?"), key, f"manifest unreadable ({e})") from e
    manifest = PartitionManifest(**data)
    names = (manifest.exchange, symbol_to_path(manifest.symbol), manifest.timeframe, manifest.month)
    if names != tuple(parts.get(k) for k in ("exchange", "symbol", "timeframe", "month")):
        problem = f"manifest names another partition ({manifest.market} {manifest.month})"
        raise LakeCorruptionError(market, parts.get("month", "?"), key, problem)
    return manifest


def summarize_status(statuses: Iterable[PartitionStatus]) -> pd.DataFrame:
    """`summarize` of the checked partitions (`CandleLake.partition_status`) plus a status column per market:
    "ok", or "corrupt: " and each bad partition's month and problem (what `cta lake show` prints)."""
    statuses = list(statuses)
    summary = summarize(s.manifest for s in statuses if s.manifest is not None)
    problems: dict[str, list[str]] = {}
    for status in statuses:
        problems.setdefault(status.market, [])
        if status.problem:
            problems[status.market].append(f"{status.month} {status.problem}")
    unlisted = [m for m in problems if m not in set(summary["market"])]  # only unparsable manifests
    if unlisted:
        extra = pd.DataFrame({"market": unlisted, "partitions": 0, "rows": 0, "first": "", "last": ""})
        summary = pd.concat([summary, extra], ignore_index=True) if len(summary) else extra
    summary["status"] = ["corrupt: " + "; ".join(problems[m]) if problems.get(m) else "ok" for m in summary["market"]]
    return summary.sort_values("market", kind="stable").reset_index(drop=True)


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
