"""Feast over the feature table, for real (Feast 0.67, dask offline store, SQLite and Redis online
stores, the `feast` CLI) in temp dirs: training and serving read exactly what the table holds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cta.lake import Market
from cta.timeframes import timeframe_ms
from features.compute import compute_features
from features.registry import FEATURES, feature_names, registry_version, warmup_bars
from tests.factories import real_candles

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Downcasting object dtype arrays:FutureWarning"),  # inside dask's join
]

REPO_ROOT = Path(__file__).resolve().parents[2]
BTC = Market("binance", "BTC/USDT", "1h")
ETH = Market("binance", "ETH/USDT", "1h")
ROWS = 300  # feature rows per market (after the warm-up)
REDIS_URL = "127.0.0.1:6379,db=15"


def feature_table(market: Market, rows: int) -> pd.DataFrame:
    """A feature table in the documented schema: market_id, ts, event_timestamp (= close), features."""
    base = market.symbol.replace("/", "")
    features = compute_features(real_candles(base, market.timeframe, rows=rows + warmup_bars()))
    close = pd.to_datetime(features["ts"] + timeframe_ms(market.timeframe), unit="ms", utc=True)
    keys = pd.DataFrame({"market_id": str(market), "ts": features["ts"], "event_timestamp": close})
    return pd.concat([keys, features.drop(columns="ts")], axis=1)


def write_tables(features_dir: Path, tables: dict[Market, pd.DataFrame]) -> None:
    """As `cta features build` writes them (a file and its manifest: every read verifies one against the other)."""
    from features.table import FeatureTable

    for market, table in tables.items():
        FeatureTable(features_dir).write(market, table, {}, None)


@pytest.fixture(scope="module")
def tables() -> dict[Market, pd.DataFrame]:
    return {BTC: feature_table(BTC, ROWS), ETH: feature_table(ETH, ROWS)}


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory: pytest.TempPathFactory, tables: dict[Market, pd.DataFrame]) -> Path:
    root = tmp_path_factory.mktemp("feast") / "features"
    write_tables(root, tables)
    return root


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory, features_dir: Path) -> Any:
    from features.feast_store import FeatureStoreAdapter

    store = FeatureStoreAdapter(tmp_path_factory.mktemp("feast_repo"), features_dir, online="sqlite")
    store.apply()
    return store


def last_close(tables: dict[Market, pd.DataFrame]) -> Any:
    return max(t["event_timestamp"].max() for t in tables.values()).to_pydatetime()


def assert_online_equals(online: pd.DataFrame, expected: dict[str, pd.Series]) -> None:
    for market_id, row in expected.items():
        got = online.set_index("market_id").loc[market_id]
        assert got["event_timestamp"] == row["event_timestamp"]
        names = feature_names()
        np.testing.assert_array_equal(got[names].to_numpy("float64"), row[names].to_numpy("float64"))


def test_objects_are_derived_from_the_registry() -> None:
    from feast.types import Float64

    from features import feast_objects

    objects = feast_objects.build_objects("/somewhere/features", ttl=timedelta(hours=5))
    view = objects.feature_view
    assert [f.name for f in view.features] == feature_names() == [s.name for s in FEATURES]
    assert all(f.dtype == Float64 for f in view.features)
    assert view.online and view.ttl == timedelta(hours=5) and view.entities == ["market"]
    assert objects.entity.join_key == "market_id"
    assert view.stream_source is not None and view.stream_source.name == "candle_features_push"
    assert view.batch_source.path == "/somewhere/features"
    assert objects.feature_service.name == f"features_v{registry_version()}"
    assert [p.name for p in objects.feature_service.feature_view_projections] == ["candle_features"]
    # the CLI repo's objects point at the project's data dir, relative to features/feature_repo
    assert feast_objects.build_objects().feature_view.batch_source.path == "../../data/features"


@pytest.mark.parametrize("engine", ["feast", "asof"])
def test_historical_returns_the_table_at_every_close(
    adapter: Any, tables: dict[Market, pd.DataFrame], engine: str
) -> None:
    table = pd.concat(tables.values(), ignore_index=True)
    entity_df = table[["market_id", "event_timestamp"]].sample(frac=1.0, random_state=7)  # any order
    got = adapter.historical(entity_df, engine=engine)
    assert list(got.columns) == ["market_id", "event_timestamp", *feature_names()]
    assert got.index.equals(entity_df.index)
    expected = table.loc[entity_df.index]
    assert (got["market_id"] == expected["market_id"]).all()
    assert (got["event_timestamp"] == expected["event_timestamp"]).all()
    np.testing.assert_array_equal(got[feature_names()].to_numpy(), expected[feature_names()].to_numpy())


@pytest.mark.parametrize("engine", ["feast", "asof"])
def test_historical_is_point_in_time(adapter: Any, tables: dict[Market, pd.DataFrame], engine: str) -> None:
    btc = tables[BTC]
    k = 100
    close_k = btc["event_timestamp"].iloc[k]
    entity_df = pd.DataFrame(
        {
            "market_id": str(BTC),
            "event_timestamp": [
                close_k + pd.Timedelta(minutes=30),  # between two closes: row k, not row k + 1
                close_k - pd.Timedelta(milliseconds=1),  # just before close k: row k - 1
                btc["event_timestamp"].iloc[0] - pd.Timedelta(hours=1),  # before the first close: nothing
                btc["event_timestamp"].iloc[-1] + pd.Timedelta(days=3, hours=1),  # older than the TTL: nothing
                btc["event_timestamp"].iloc[-1] + pd.Timedelta(days=3),  # exactly the TTL old: the last row
                close_k + pd.Timedelta(minutes=30),  # a duplicate request (Feast's dask join collapses those)
            ],
        }
    )
    got = adapter.historical(entity_df, engine=engine)
    values = got[feature_names()].to_numpy()
    table_values = btc[feature_names()].to_numpy()
    np.testing.assert_array_equal(values[[0, 5]], table_values[[k, k]])
    np.testing.assert_array_equal(values[1], table_values[k - 1])
    assert np.isnan(values[2:4]).all()  # kept (Feast's dask join drops these rows), as NaN
    np.testing.assert_array_equal(values[4], table_values[-1])
    assert len(got) == 6 and (got["event_timestamp"] == entity_df["event_timestamp"]).all()


def test_historical_feast_engine_splits_large_requests(
    adapter: Any, tables: dict[Market, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    table = pd.concat(tables.values(), ignore_index=True).iloc[::7]
    monkeypatch.setattr(adapter, "merge_budget_rows", ROWS * 20)  # 20 entity rows per Feast call
    got = adapter.historical(table[["market_id", "event_timestamp"]])
    np.testing.assert_array_equal(got[feature_names()].to_numpy(), table[feature_names()].to_numpy())


@pytest.fixture(scope="module")
def materialized(adapter: Any, tables: dict[Market, pd.DataFrame]) -> Any:
    adapter.materialize(last_close(tables))
    return adapter


def test_online_serves_each_markets_latest_row(materialized: Any, tables: dict[Market, pd.DataFrame]) -> None:
    online = materialized.online([str(BTC), str(ETH), "binance:DOGE/USDT:1h"])
    assert list(online.columns) == ["market_id", "event_timestamp", *feature_names()]
    assert_online_equals(online, {str(m): t.iloc[-1] for m, t in tables.items()})
    unknown = online.iloc[2]
    assert pd.isna(unknown["event_timestamp"]) and unknown[feature_names()].isna().all()


def test_apply_and_materialize_again_change_nothing(materialized: Any, tables: dict[Market, pd.DataFrame]) -> None:
    from google.protobuf.json_format import MessageToDict

    def specs() -> list[Any]:
        store = materialized.store
        objs = [
            store.get_entity("market"),
            store.get_feature_view("candle_features"),
            store.get_feature_service(materialized.feature_service_name),
            *store.list_data_sources(),
        ]
        return [_without_meta(MessageToDict(o.to_proto())) for o in objs]

    before_specs = specs()
    intervals = materialized.store.get_feature_view("candle_features").materialization_intervals
    before = materialized.online([str(BTC), str(ETH)])
    materialized.apply()
    assert specs() == before_specs  # only Feast's created/updated timestamps move
    assert materialized.store.get_feature_view("candle_features").materialization_intervals == intervals
    materialized.materialize(last_close(tables))
    pd.testing.assert_frame_equal(materialized.online([str(BTC), str(ETH)]), before)


def test_push_reaches_the_online_store(materialized: Any, tables: dict[Market, pd.DataFrame]) -> None:
    row = tables[BTC].tail(1).copy()
    row["ts"] += timeframe_ms("1h")
    row["event_timestamp"] += pd.Timedelta(hours=1)
    row[feature_names()] = np.linspace(-1, 1, len(feature_names()))
    materialized.push(row)
    assert_online_equals(
        materialized.online([str(BTC), str(ETH)]), {str(BTC): row.iloc[0], str(ETH): tables[ETH].iloc[-1]}
    )


def test_write_online_stores_what_push_stores(materialized: Any, tables: dict[Market, pd.DataFrame]) -> None:
    """The worker's one-row write path and `push` leave the same online row."""
    row = tables[BTC].tail(1).copy()
    row["event_timestamp"] += pd.Timedelta(hours=2)
    row[feature_names()] = np.linspace(1, 2, len(feature_names()))
    materialized.push(row)
    pushed = materialized.online([str(BTC)])
    written = row.iloc[0]
    later = written["event_timestamp"] + pd.Timedelta(hours=1)
    materialized.write_online(str(BTC), later.to_pydatetime(), {n: float(written[n]) for n in feature_names()})
    online = materialized.online([str(BTC)])
    assert online["event_timestamp"].iloc[0] == later
    np.testing.assert_array_equal(online[feature_names()].to_numpy(), pushed[feature_names()].to_numpy())
    stamp, values = materialized.read_online(str(BTC))
    assert stamp == later and list(values.values()) == list(online[feature_names()].iloc[0])
    assert materialized.read_online("binance:NOPE/USDT:1h") == (None, {})


def _without_meta(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_meta(v) for k, v in value.items() if k != "meta"}
    if isinstance(value, list):
        return [_without_meta(v) for v in value]
    return value


@pytest.fixture
def redis_project() -> Iterator[str]:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=15)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis server on 127.0.0.1:6379")
    project = f"cta_test_{uuid.uuid4().hex[:8]}"
    try:
        yield project
    finally:  # Feast's Redis keys are <serialized entity key><project>
        for key in client.scan_iter(match=f"*{project}", count=1000):
            client.delete(key)
        client.close()


@pytest.mark.production
def test_redis_online_store_parity(
    tmp_path: Path, features_dir: Path, tables: dict[Market, pd.DataFrame], redis_project: str
) -> None:
    import redis

    from features.feast_store import FeatureStoreAdapter

    store = FeatureStoreAdapter(
        tmp_path / "repo", features_dir, online="redis", redis_url=REDIS_URL, project=redis_project
    )
    store.apply()
    store.materialize(last_close(tables))
    assert_online_equals(store.online([str(BTC), str(ETH)]), {str(m): t.iloc[-1] for m, t in tables.items()})
    keys = list(redis.Redis(host="127.0.0.1", port=6379, db=15).scan_iter(match=f"*{redis_project}"))
    assert len(keys) == 2  # one hash per market
    assert not (tmp_path / "repo" / "online_store.db").exists()


@pytest.mark.slow
def test_feast_cli_applies_the_repo_folder(tmp_path: Path, tables: dict[Market, pd.DataFrame]) -> None:
    """`feast apply` on a copy of features/feature_repo whose relative paths land in tmp_path/data."""
    repo = tmp_path / "features" / "feature_repo"
    shutil.copytree(REPO_ROOT / "features" / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__"))
    write_tables(tmp_path / "data" / "features", tables)
    feast = Path(sys.executable).with_name("feast")
    result = subprocess.run(
        [str(feast), "-c", str(repo), "apply"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "data" / "feast" / "registry.db").exists()
    assert sorted(p.name for p in repo.iterdir()) == [".feastignore", "definitions.py", "feature_store.yaml"]

    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    assert store.get_feature_service(f"features_v{registry_version()}").name.endswith(registry_version())
    assert [f.name for f in store.get_feature_view("candle_features").features] == feature_names()
