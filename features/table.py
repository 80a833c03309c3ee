"""The feature table: one Parquet file per market (Feast's offline source), with a manifest that
records the lake partitions (content hashes) and the feature registry version it was built from.

Rebuilding is idempotent: when neither the candles nor the registry changed, nothing is recomputed
or rewritten.

Every read is verified, as the lake's are: the manifest records the table file's content hash and row count,
and `FeatureTable.read` and `verified_tables` (what the Feast adapter reads for training, backtests and
materialisation) stop with `FeatureTableCorruptionError` naming the file when it is missing, unreadable,
changed, or when a Parquet file under the directory is not a table CTA wrote (Feast's file source reads every
Parquet file there). `is_current` treats a damaged table as stale, so `cta features build` rebuilds it from
the verified lake (a WARNING names it).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

import pandas as pd

from cta.errors import FeatureTableCorruptionError
from cta.lake import Market
from cta.storage import LocalStorage
from cta.timeframes import timeframe_ms
from features.compute import InsufficientHistory, compute_features
from features.registry import registry_version, select

TABLE_FILE = "features.parquet"
MANIFEST_FILE = "manifest.json"
KEY_COLUMNS = ("market_id", "ts", "event_timestamp")
PARQUET_SUFFIXES = frozenset({".parquet", ".parq", ".pq"})  # what Feast's (dask) file source reads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureTableManifest:
    market_id: str
    rows: int
    first_ts: int
    last_ts: int
    registry_version: str
    feature_names: list[str]
    lake_partitions: dict[str, str]  # month -> content hash of the candles it was built from
    content_hash: str = ""  # sha256 of the table file ("" in manifests written before verification: rebuilt)


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_manifest(raw: bytes) -> FeatureTableManifest:
    """A manifest from its JSON, or ValueError saying what is wrong with it."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not JSON ({e})") from None
    known = {f.name: f for f in fields(FeatureTableManifest)}
    required = {name for name, f in known.items() if f.default is MISSING}
    if not isinstance(data, dict) or not required <= set(data) <= set(known):
        raise ValueError("not a feature-table manifest")
    manifest = FeatureTableManifest(**data)
    types = {"rows": int, "first_ts": int, "last_ts": int, "content_hash": str, "lake_partitions": dict}
    wrong = [name for name, kind in types.items() if not isinstance(getattr(manifest, name), kind)]
    if wrong:
        raise ValueError(f"{', '.join(wrong)} of the wrong type")
    return manifest


def verified_frame(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """The table file at `path`, read from the bytes whose hash matches the manifest beside it; else
    FeatureTableCorruptionError naming the file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FeatureTableCorruptionError(str(path), "missing file") from None
    if path.name != TABLE_FILE:
        raise FeatureTableCorruptionError(str(path), f"not a table CTA wrote (tables are named {TABLE_FILE})")
    try:
        raw_manifest = (path.parent / MANIFEST_FILE).read_bytes()
    except FileNotFoundError:
        raise FeatureTableCorruptionError(str(path), "no manifest beside it (not a table CTA wrote)") from None
    try:
        manifest = parse_manifest(raw_manifest)
    except ValueError as e:
        raise FeatureTableCorruptionError(str(path), f"manifest unreadable: {e}") from None
    if not manifest.content_hash:
        raise FeatureTableCorruptionError(str(path), "its manifest has no content hash (written by an older version)")
    if content_hash(data) != manifest.content_hash:
        raise FeatureTableCorruptionError(str(path), "hash mismatch (changed since it was written)")
    try:
        frame = pd.read_parquet(io.BytesIO(data), columns=columns)
    except Exception as e:  # pyarrow raises many types for a bad file
        raise FeatureTableCorruptionError(str(path), f"unreadable ({type(e).__name__})") from e
    if len(frame) != manifest.rows:
        raise FeatureTableCorruptionError(str(path), f"row count mismatch ({len(frame)} != {manifest.rows})")
    return frame


def table_files(root: Path) -> list[Path]:
    """Every file Feast's file source would read under `root`: *.parquet, *.parq, *.pq, recursively (the
    `.<name>.tmp` files of an atomic write are not among them)."""
    return sorted(p for p in Path(root).rglob("*") if p.suffix in PARQUET_SUFFIXES and p.is_file())


def verified_tables(root: Path, columns: list[str] | None = None) -> list[pd.DataFrame]:
    """Every table under `root`, each verified against its manifest (`verified_frame`): every Parquet file Feast
    would read, and the table of every manifest (a deleted table is missing, not silently absent)."""
    manifested = {path.parent / TABLE_FILE for path in Path(root).rglob(MANIFEST_FILE)}
    return [verified_frame(path, columns) for path in sorted(set(table_files(root)) | manifested)]


def feature_frame(candles: pd.DataFrame, market: Market, names: tuple[str, ...] | None = None) -> pd.DataFrame:
    """compute_features plus the keys Feast needs: market_id and event_timestamp (the candle's close
    time, when its features become known)."""
    try:
        features = compute_features(candles, names)
    except InsufficientHistory as e:
        raise InsufficientHistory(e.needed, e.got, market=str(market)) from None
    event_time = pd.to_datetime(features["ts"] + timeframe_ms(market.timeframe), unit="ms", utc=True)
    keys = pd.DataFrame({"market_id": str(market), "ts": features["ts"], "event_timestamp": event_time})
    return pd.concat([keys, features.drop(columns="ts")], axis=1)


class FeatureTable:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._storage = LocalStorage(root)

    def path(self, market: Market) -> Path:
        return self.root / market.key / TABLE_FILE

    def manifest(self, market: Market) -> FeatureTableManifest | None:
        """The market's manifest (None before the first build); FeatureTableCorruptionError if unreadable."""
        raw = self._storage.get(f"{market.key}/{MANIFEST_FILE}")
        if raw is None:
            return None
        try:
            return parse_manifest(raw)
        except ValueError as e:
            raise FeatureTableCorruptionError(str(self.path(market)), f"manifest unreadable: {e}") from None

    def problem(self, market: Market) -> str | None:
        """Why the market's table cannot be read as written (None: it can)."""
        try:
            verified_frame(self.path(market), columns=["ts"])
        except FeatureTableCorruptionError as e:
            return e.problem
        return None

    def is_current(self, market: Market, lake_partitions: dict[str, str], names: tuple[str, ...] | None) -> bool:
        """Built from these lake partitions with this registry, and intact. A damaged table is not current
        (a WARNING names it): it is rebuilt."""
        try:
            manifest = self.manifest(market)
        except FeatureTableCorruptionError as e:
            log.warning("%s; rebuilding it", e)
            return False
        if manifest is None:  # never built, or a table file left without its manifest
            if self.path(market).exists():
                log.warning("feature table %s: no manifest beside it; rebuilding it", self.path(market))
            return False
        problem = self.problem(market)
        if problem is not None:
            log.warning("feature table %s: %s; rebuilding it", self.path(market), problem)
            return False
        return manifest.lake_partitions == lake_partitions and manifest.registry_version == registry_version(
            select(names)
        )

    def write(
        self, market: Market, frame: pd.DataFrame, lake_partitions: dict[str, str], names: tuple[str, ...] | None
    ) -> FeatureTableManifest:
        """Atomically replace the market's table, then its manifest."""
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        data = buffer.getvalue()
        self._storage.put(f"{market.key}/{TABLE_FILE}", data)
        specs = select(names)
        manifest = FeatureTableManifest(
            market_id=str(market),
            rows=len(frame),
            first_ts=int(frame["ts"].iloc[0]),
            last_ts=int(frame["ts"].iloc[-1]),
            registry_version=registry_version(specs),
            feature_names=[s.name for s in specs],
            lake_partitions=lake_partitions,
            content_hash=content_hash(data),
        )
        self._storage.put(f"{market.key}/{MANIFEST_FILE}", json.dumps(asdict(manifest), indent=1).encode())
        return manifest

    def read(self, market: Market) -> pd.DataFrame:
        """The market's table, verified against its manifest (FeatureTableCorruptionError naming the file)."""
        return verified_frame(self.path(market))
