"""The feature table: one Parquet file per market (Feast's offline source), with a manifest that
records the lake partitions (content hashes) and the feature registry version it was built from.

Rebuilding is idempotent: when neither the candles nor the registry changed, nothing is recomputed
or rewritten.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from cta.lake import Market
from cta.storage import LocalStorage
from cta.timeframes import timeframe_ms
from features.compute import InsufficientHistory, compute_features
from features.registry import registry_version, select

TABLE_FILE = "features.parquet"
MANIFEST_FILE = "manifest.json"
KEY_COLUMNS = ("market_id", "ts", "event_timestamp")


@dataclass(frozen=True)
class FeatureTableManifest:
    market_id: str
    rows: int
    first_ts: int
    last_ts: int
    registry_version: str
    feature_names: list[str]
    lake_partitions: dict[str, str]  # month -> content hash of the candles it was built from


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
        raw = self._storage.get(f"{market.key}/{MANIFEST_FILE}")
        return None if raw is None else FeatureTableManifest(**json.loads(raw))

    def is_current(self, market: Market, lake_partitions: dict[str, str], names: tuple[str, ...] | None) -> bool:
        manifest = self.manifest(market)
        return (
            manifest is not None
            and manifest.lake_partitions == lake_partitions
            and manifest.registry_version == registry_version(select(names))
            and self.path(market).exists()
        )

    def write(
        self, market: Market, frame: pd.DataFrame, lake_partitions: dict[str, str], names: tuple[str, ...] | None
    ) -> FeatureTableManifest:
        """Atomically replace the market's table, then its manifest."""
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        self._storage.put(f"{market.key}/{TABLE_FILE}", buffer.getvalue())
        specs = select(names)
        manifest = FeatureTableManifest(
            market_id=str(market),
            rows=len(frame),
            first_ts=int(frame["ts"].iloc[0]),
            last_ts=int(frame["ts"].iloc[-1]),
            registry_version=registry_version(specs),
            feature_names=[s.name for s in specs],
            lake_partitions=lake_partitions,
        )
        self._storage.put(f"{market.key}/{MANIFEST_FILE}", json.dumps(asdict(manifest), indent=1).encode())
        return manifest

    def read(self, market: Market) -> pd.DataFrame:
        return pd.read_parquet(self.path(market))
