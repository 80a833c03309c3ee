"""`features_flow` under a real Prefect API: lake -> compute_features -> gate -> tables -> Feast."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cta.components import make_lake
from cta.errors import ConfigError, DataValidationError
from cta.exchange_server import LocalExchangeServer
from features.compute import compute_features
from features.feast_store import feature_store_for
from features.registry import feature_names, registry_version
from features.table import FeatureTable
from flows.features import features_flow
from flows.ingest import ingest_flow

pytestmark = pytest.mark.integration


@pytest.fixture
def ingested(prefect_harness: None, exchange_server: LocalExchangeServer, settings_for: Any, tmp_path: Path) -> Any:
    settings = settings_for(
        exchange={"api_url": exchange_server.url, "market_time": "replay"},
        ingest={"start": "2022-04-01"},
        features={"table_dir": str(tmp_path / "features"), "feast_dir": str(tmp_path / "feast")},
    )
    asyncio.run(ingest_flow(settings))
    return settings


def test_features_flow_builds_gates_and_materialises(ingested: Any) -> None:
    settings = ingested
    result = features_flow(settings)
    assert result["registry_version"] == registry_version()
    assert [m["status"] for m in result["markets"]] == ["rebuilt", "rebuilt"]
    lake, table = make_lake(settings), FeatureTable(settings.features.table_dir)
    store = feature_store_for(settings.features)
    for market in lake.markets():
        stored = table.read(market)
        expected = compute_features(lake.read(market))
        np.testing.assert_array_equal(stored[feature_names()].to_numpy(), expected[feature_names()].to_numpy())
        assert table.manifest(market).lake_partitions == lake.lineage(market)  # type: ignore[union-attr]
        online = store.online([str(market)])
        np.testing.assert_array_equal(online[feature_names()].to_numpy()[0], stored[feature_names()].to_numpy()[-1])
    # unchanged candles and registry: nothing is rebuilt
    assert [m["status"] for m in features_flow(settings)["markets"]] == ["up to date", "up to date"]


def test_unknown_feature_name_lists_the_valid_ones(ingested: Any, settings_for: Any) -> None:
    settings = settings_for(features={"names": ["ret_1", "moon_phase"]})
    with pytest.raises(ConfigError, match=r"features.names.*moon_phase.*valid names: ret_1"):
        features_flow(settings)


def test_too_little_history_fails_before_anything_is_written(
    prefect_harness: None, exchange_server: LocalExchangeServer, settings_for: Any, tmp_path: Path
) -> None:
    settings = settings_for(
        exchange={"api_url": exchange_server.url, "market_time": "replay"},
        ingest={"start": "2022-05-31T12:00:00Z"},
        features={"table_dir": str(tmp_path / "features"), "feast_dir": str(tmp_path / "feast")},
    )
    asyncio.run(ingest_flow(settings))
    with pytest.raises(DataValidationError, match=r"binance:BTC/USDT:1h: 12 candles are too few .* need at least 168"):
        features_flow(settings)
    assert not (tmp_path / "features").exists() or not list((tmp_path / "features").rglob("*.parquet"))
    assert not (tmp_path / "feast" / "online_store.db").exists()
