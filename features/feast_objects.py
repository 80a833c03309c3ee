"""Feast's objects, derived from the feature registry by pure functions (no I/O), and the RepoConfig builder.

Objects (all derived from `features.registry.FEATURES`, built by pure functions, no I/O):
    Entity "market" (join key `market_id`, String) ─ FileSource "candle_features_source" over the
    feature-table directory ─ PushSource "candle_features_push" wrapping it ─ FeatureView
    "candle_features" (Float64 fields in registry order, online, source = the push source) ─
    FeatureService "features_v<registry_version>" pinning the view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from feast import (
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    PushSource,
    RepoConfig,
    ValueType,
)
from feast.infra.offline_stores.dask import DaskOfflineStoreConfig
from feast.infra.online_stores.redis import RedisOnlineStoreConfig
from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
from feast.types import Float64, String

from features.registry import FEATURES, FeatureSpec, registry_version

ENTITY_NAME = "market"
JOIN_KEY = "market_id"
TIMESTAMP_FIELD = "event_timestamp"
SOURCE_NAME = "candle_features_source"
PUSH_SOURCE_NAME = "candle_features_push"
VIEW_NAME = "candle_features"
DEFAULT_TTL = timedelta(days=3)
DEFAULT_PROJECT = "cta"
# The FileSource path of the CLI repo (features/feature_repo), relative to that folder.
DEFAULT_FEATURES_PATH = "../../data/features"
REGISTRY_FILE = "registry.db"
ONLINE_DB_FILE = "online_store.db"


def feature_service_name(specs: tuple[FeatureSpec, ...] = FEATURES) -> str:
    return f"features_v{registry_version(specs)}"


@dataclass(frozen=True)
class FeastObjects:
    entity: Entity
    batch_source: FileSource
    push_source: PushSource
    feature_view: FeatureView
    feature_service: FeatureService
    specs: tuple[FeatureSpec, ...] = field(default=FEATURES)

    def all(self) -> list[Any]:
        return [self.entity, self.batch_source, self.push_source, self.feature_view, self.feature_service]

    @property
    def feature_names(self) -> list[str]:
        return [s.name for s in self.specs]


def market_entity() -> Entity:
    return Entity(
        name=ENTITY_NAME,
        join_keys=[JOIN_KEY],
        value_type=ValueType.STRING,
        description='one market, "exchange:BASE/QUOTE:timeframe" (str(cta.lake.Market))',
    )


def batch_source(features_path: str | Path = DEFAULT_FEATURES_PATH) -> FileSource:
    """The feature-table root directory (all markets' Parquet files); see the module docstring."""
    return FileSource(
        name=SOURCE_NAME,
        path=str(features_path),
        timestamp_field=TIMESTAMP_FIELD,
        description="feature table: <root>/exchange=/symbol=/timeframe=/features.parquet, one file per market",
    )


def push_source(source: FileSource) -> PushSource:
    return PushSource(
        name=PUSH_SOURCE_NAME,
        batch_source=source,
        description="freshly computed rows from the serving worker (feature-table schema)",
    )


def feature_view(
    entity: Entity, source: PushSource, ttl: timedelta = DEFAULT_TTL, specs: tuple[FeatureSpec, ...] = FEATURES
) -> FeatureView:
    schema = [Field(name=JOIN_KEY, dtype=String)] + [
        Field(name=s.name, dtype=Float64, description=s.description, tags={"version": str(s.version)}) for s in specs
    ]
    return FeatureView(
        name=VIEW_NAME,
        entities=[entity],
        ttl=ttl,
        schema=schema,
        online=True,
        source=source,
        tags={"registry_version": registry_version(specs)},
        description="candle features from features.compute.compute_features, keyed by market and candle close",
    )


def feature_service(view: FeatureView, specs: tuple[FeatureSpec, ...] = FEATURES) -> FeatureService:
    return FeatureService(
        name=feature_service_name(specs),
        features=[view],
        tags={"registry_version": registry_version(specs)},
        description="the feature set pinned by the registry version; training and serving read through it",
    )


def build_objects(
    features_path: str | Path = DEFAULT_FEATURES_PATH,
    ttl: timedelta = DEFAULT_TTL,
    specs: tuple[FeatureSpec, ...] = FEATURES,
) -> FeastObjects:
    entity = market_entity()
    source = batch_source(features_path)
    push = push_source(source)
    view = feature_view(entity, push, ttl, specs)
    return FeastObjects(entity, source, push, view, feature_service(view, specs), specs)


def redis_connection_string(redis_url: str) -> str:
    """Feast's Redis form "host:port,db=N[,password=...]"; also accepts redis://[:password@]host:port[/N]."""
    if not redis_url.startswith(("redis://", "rediss://")):
        return redis_url
    from urllib.parse import urlparse

    url = urlparse(redis_url)
    parts = [f"{url.hostname or '127.0.0.1'}:{url.port or 6379}"]
    db = url.path.lstrip("/")
    if db:
        parts.append(f"db={int(db)}")
    if url.password:
        parts.append(f"password={url.password}")
    if url.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def make_repo_config(
    repo_dir: Path,
    features_dir: Path,
    online: Literal["sqlite", "redis"] = "sqlite",
    redis_url: str | None = None,
    project: str = DEFAULT_PROJECT,
) -> RepoConfig:
    """A RepoConfig with Feast's files (registry, SQLite online store) inside `repo_dir`.

    `features_dir` is not part of Feast's config (the FileSource carries the path); it is accepted here
    so one call describes a whole store, and `FeatureStoreAdapter` builds its objects from it.
    """
    del features_dir  # the path lives in the FileSource, see FeatureStoreAdapter
    repo_dir = Path(repo_dir).resolve()
    online_store: SqliteOnlineStoreConfig | RedisOnlineStoreConfig
    if online == "sqlite":
        online_store = SqliteOnlineStoreConfig(path=str(repo_dir / ONLINE_DB_FILE))
    elif online == "redis":
        if not redis_url:
            raise ValueError('online="redis" needs redis_url, e.g. "127.0.0.1:6379,db=15"')
        online_store = RedisOnlineStoreConfig(connection_string=redis_connection_string(redis_url))
    else:
        raise ValueError(f"unknown online store {online!r}: use 'sqlite' or 'redis'")
    return RepoConfig(
        project=project,
        provider="local",
        registry=str(repo_dir / REGISTRY_FILE),
        online_store=online_store,
        offline_store=DaskOfflineStoreConfig(),
        entity_key_serialization_version=3,
        repo_path=repo_dir,
    )
