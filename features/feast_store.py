"""Feast over the feature table: a small adapter (apply / materialize / historical / online / push) that
training and serving use, over the objects and repo config of `features.feast_objects`.

How the file offline store reads the per-market Parquet files (checked against Feast 0.67.0, dask
2026.8, pyarrow): Feast's `type: file` offline store is `DaskOfflineStore`; its `_read_datasource`
resolves the FileSource path (relative paths against the repo) and calls `dask.dataframe.read_parquet`
on it unchanged. Given a directory, dask lists it recursively (`fs.find`), keeps only files ending in
.parquet/.parq/.pq (so the table's `manifest.json` and the `.features.parquet.*.tmp` files of an atomic
write are skipped), and reads them as ONE pyarrow dataset with hive partitioning: the
`exchange=/symbol=/timeframe=` folders become three extra categorical columns, which Feast never
selects (the view's schema names the columns it reads). So a FileSource on the feature-table root
directory is honest: every market's file takes part in point-in-time joins and in materialisation,
verified by tests/integration/test_feast_store.py. Costs and caveats:
  * every historical query and every materialisation reads all markets' files (no pruning by market);
    fine for tens of markets of hourly candles, not for thousands.
  * `FileSource.validate` at apply time reads the schema with pyarrow's `ParquetDataset`, which does
    not filter by extension; it only logs a warning if that fails.
  * the schema is given explicitly, so Feast never has to infer it from the files (apply works before
    the first table is written).

Behaviours of Feast 0.67 the adapter corrects or documents:
  * the dask point-in-time join is a left merge on `market_id` alone followed by the TTL filter, so it
    builds (entity rows x table rows) per market before filtering: measured ~26 ms per entity row
    against 15k-row market tables and ~0.5 GB per 1M joined rows, i.e. ~26 s for 1 000 entity rows,
    and all 30k closes of 2 x 15k-row tables would need ~100 GB in one call (feast-dev/feast#3003,
    #3863). `historical(engine="feast")` splits
    requests into chunks of at most `merge_budget_rows` joined rows (memory bounded, time still
    linear in entity rows x table rows); `historical(engine="asof")` does the same join with
    pandas.merge_asof over the same files and TTL (0.1 s for 2 x 15k rows) and is tested to agree
    exactly with Feast. For whole-table training sets use "asof" (or a SQL offline store).
  * the dask join DROPS an entity row when its market has rows but none within [T - ttl, T], and
    collapses requests sharing (market_id, T) (feast-dev/feast#6787); `historical()` returns every
    entity row, in input order, with NaN features where nothing is in range.
  * the first `materialize_incremental` starts at wall-clock `now - ttl`, which misses replayed or
    back-filled candles; `materialize(end)` therefore starts its first run at `end - ttl`, then
    continues incrementally from the last materialised end. Materialising writes only the newest row
    per market in the window (0.1-0.2 s for 2 markets x 15k rows).
  * online reads do NOT apply the TTL: a stale value is returned as if fresh. `online()` returns each
    row's `event_timestamp` so the caller can check freshness.
  * SQLite's online write is an unconditional upsert, Redis's skips rows older than the stored one:
    after a push of a newer row, materialising an older row regresses SQLite (measured), not Redis.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from feast import FeatureStore
from feast.data_source import PushMode
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from cta.config import FeatureSettings
from cta.errors import OnlineStoreError
from features.feast_objects import (
    DEFAULT_PROJECT,
    DEFAULT_TTL,
    JOIN_KEY,
    ONLINE_DB_FILE,
    PUSH_SOURCE_NAME,
    TIMESTAMP_FIELD,
    VIEW_NAME,
    build_objects,
    make_repo_config,
)
from features.table import table_files, verified_tables

log = logging.getLogger(__name__)


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


class FeatureStoreAdapter:
    """The project's door to Feast. Training: `historical`; serving: `online` and `push`; flows:
    `apply` and `materialize`. Feast prints progress bars and banners; they are kept off stdout."""

    def __init__(
        self,
        repo_dir: Path,
        features_dir: Path,
        *,
        online: Literal["sqlite", "redis"] = "sqlite",
        redis_url: str | None = None,
        project: str = DEFAULT_PROJECT,
        ttl: timedelta = DEFAULT_TTL,
        merge_budget_rows: int = 1_000_000,
    ) -> None:
        self.merge_budget_rows = merge_budget_rows
        self.repo_dir = Path(repo_dir).resolve()
        self.repo_dir.mkdir(parents=True, exist_ok=True)
        self.features_dir = Path(features_dir).resolve()
        self.config = make_repo_config(self.repo_dir, self.features_dir, online, redis_url, project)
        self.objects = build_objects(self.features_dir, ttl)
        self.store = FeatureStore(config=self.config)
        self.online_where = str(self.repo_dir / ONLINE_DB_FILE) if online == "sqlite" else "redis"
        self._online_view: Any = None
        self._provider: Any = None

    @property
    def feature_names(self) -> list[str]:
        return self.objects.feature_names

    @property
    def feature_service_name(self) -> str:
        return self.objects.feature_service.name

    def apply(self) -> None:
        """Register the objects; applying unchanged objects again changes nothing."""
        with _quiet(), self._online_errors():
            self.store.apply(self.objects.all())

    def materialize(self, end: datetime) -> None:
        """Load the newest row per market up to `end` into the online store: incrementally from the last
        materialised end; the first run starts at `end - ttl` (not wall-clock now - ttl)."""
        end = _utc(end)
        self.verify_tables()  # Feast's file source reads every table: none may be corrupt
        view = self.store.get_feature_view(VIEW_NAME)
        with _quiet(), self._online_errors():
            last = view.most_recent_end_time
            if last is None:
                ttl = view.ttl or DEFAULT_TTL
                self.store.materialize(start_date=end - ttl, end_date=end, feature_views=[VIEW_NAME])
            elif end > _utc(last):
                self.store.materialize_incremental(end_date=end, feature_views=[VIEW_NAME])

    def historical(self, entity_df: pd.DataFrame, engine: Literal["feast", "asof"] = "feast") -> pd.DataFrame:
        """Point-in-time join: for each (market_id, event_timestamp) row, the features of that market's
        newest table row with event_timestamp <= it and >= it - ttl, else NaN. Returns market_id,
        event_timestamp, then the FeatureService's features (registry order); same rows, same order, same
        index as `entity_df` (duplicate requests each get their row).

        engine="feast": Feast's get_historical_features through the FeatureService (dask offline store).
        Its cost grows with (entity rows x table rows) per market, so the request is split into chunks
        of at most `merge_budget_rows` joined rows (~0.5 GB each); see the module docstring for timings.
        engine="asof": the same join done with pandas.merge_asof over the same files and TTL, for
        training sets of whole tables; tests check that both engines agree exactly.
        """
        missing = {JOIN_KEY, TIMESTAMP_FIELD} - set(entity_df.columns)
        if missing:
            raise ValueError(f"entity_df needs columns {sorted(missing)}")
        requests = pd.DataFrame(
            {
                JOIN_KEY: entity_df[JOIN_KEY].astype(str).to_numpy(),
                TIMESTAMP_FIELD: pd.DatetimeIndex(pd.to_datetime(entity_df[TIMESTAMP_FIELD], utc=True)),
            }
        )
        # Feast's dask join keeps one row per (join key, timestamp): ask once per distinct pair.
        unique = requests.drop_duplicates().sort_values([JOIN_KEY, TIMESTAMP_FIELD], ignore_index=True)
        if unique.empty:
            values = self._empty_frame()
        elif engine == "feast":
            values = self._historical_feast(unique)
        elif engine == "asof":
            values = self._historical_asof(unique)
        else:
            raise ValueError(f"unknown engine {engine!r}: use 'feast' or 'asof'")
        out = requests.merge(values, on=[JOIN_KEY, TIMESTAMP_FIELD], how="left", validate="many_to_one")
        out.index = entity_df.index
        return out.astype(dict.fromkeys(self.feature_names, "float64"))

    def _historical_feast(self, unique: pd.DataFrame) -> pd.DataFrame:
        names = self.feature_names
        service = self.store.get_feature_service(self.feature_service_name)
        chunk = max(1, self.merge_budget_rows // max(1, self._max_table_rows()))  # verifies every table
        parts = []
        for first in range(0, len(unique), chunk):
            part = unique.iloc[first : first + chunk]
            with _quiet():
                joined = self.store.get_historical_features(entity_df=part, features=service).to_df()
            joined[TIMESTAMP_FIELD] = pd.to_datetime(joined[TIMESTAMP_FIELD], utc=True)
            # rows with no table row in [T - ttl, T] are dropped by Feast's dask join: they come back as NaN
            parts.append(
                part.merge(
                    joined[[JOIN_KEY, TIMESTAMP_FIELD, *names]],
                    on=[JOIN_KEY, TIMESTAMP_FIELD],
                    how="left",
                    validate="one_to_one",
                )
            )
        return pd.concat(parts, ignore_index=True)

    def _historical_asof(self, unique: pd.DataFrame) -> pd.DataFrame:
        names = self.feature_names
        table = self._read_tables([JOIN_KEY, TIMESTAMP_FIELD, *names])
        table = table[table[JOIN_KEY].isin(set(unique[JOIN_KEY]))].sort_values(TIMESTAMP_FIELD, kind="stable")
        table[TIMESTAMP_FIELD] = pd.to_datetime(table[TIMESTAMP_FIELD], utc=True).astype("datetime64[ns, UTC]")
        left = unique.sort_values(TIMESTAMP_FIELD, kind="stable")
        left[TIMESTAMP_FIELD] = left[TIMESTAMP_FIELD].astype("datetime64[ns, UTC]")
        ttl = self.objects.feature_view.ttl
        return pd.merge_asof(
            left,
            table,
            on=TIMESTAMP_FIELD,
            by=JOIN_KEY,
            direction="backward",
            allow_exact_matches=True,
            tolerance=pd.Timedelta(ttl) if ttl else None,
        )

    def _table_files(self) -> list[Path]:
        """The files the dask offline store reads: every *.parquet/.parq/.pq under the directory."""
        return table_files(self.features_dir)

    def verify_tables(self) -> None:
        """Every file Feast's file source would read is a feature table matching its manifest, else
        FeatureTableCorruptionError naming the file (the verified read path of `features.table`)."""
        verified_tables(self.features_dir, columns=[JOIN_KEY])

    def _max_table_rows(self) -> int:
        """The longest table's rows, every table verified first (Feast reads them all next)."""
        return max((len(frame) for frame in verified_tables(self.features_dir, columns=[JOIN_KEY])), default=0)

    def _read_tables(self, columns: list[str]) -> pd.DataFrame:
        frames = verified_tables(self.features_dir, columns)
        return pd.concat(frames, ignore_index=True) if frames else self._empty_frame()[columns]

    def online(self, market_ids: Sequence[str]) -> pd.DataFrame:
        """The latest online values: market_id, event_timestamp (NaT and NaN features for a market that is
        not in the online store), then the features in registry order. The TTL is not applied."""
        if not market_ids:
            return self._empty_frame()
        service = self.store.get_feature_service(self.feature_service_name, allow_cache=True)
        with self._online_errors():
            response = self.store.get_online_features(
                features=service, entity_rows=[{JOIN_KEY: m} for m in market_ids]
            ).to_dict(include_event_timestamps=True)
        names = self.feature_names
        seconds = np.asarray(response[f"{names[0]}__ts"], dtype="int64")
        data: dict[str, Any] = {
            JOIN_KEY: list(market_ids),
            TIMESTAMP_FIELD: _seconds_to_utc(seconds),
        }
        for name in names:
            data[name] = np.array([np.nan if v is None else v for v in response[name]], dtype="float64")
        return pd.DataFrame(data)

    def push(self, rows: pd.DataFrame) -> None:
        """Write rows (feature-table schema: market_id, [ts,] event_timestamp, features) to the online store."""
        names = self.feature_names
        missing = [c for c in (JOIN_KEY, TIMESTAMP_FIELD, *names) if c not in rows.columns]
        if missing:
            raise ValueError(f"push rows miss columns {missing}")
        frame = rows[[JOIN_KEY, TIMESTAMP_FIELD, *names]].copy()
        frame[TIMESTAMP_FIELD] = pd.to_datetime(frame[TIMESTAMP_FIELD], utc=True)
        frame[names] = frame[names].astype("float64")
        with self._online_errors():
            self.store.push(PUSH_SOURCE_NAME, frame, to=PushMode.ONLINE)

    def write_online(self, market_id: str, event_timestamp: datetime, values: dict[str, float]) -> None:
        """Write one market's newest feature row to the online store through Feast's provider, without
        the DataFrame -> Arrow -> proto conversion of `push` (~20 ms per call): the serving worker's
        per-candle path. Same rows as `push` (tested)."""
        view, provider = self._online_path()
        row = {name: Value(double_val=float(values[name])) for name in self.feature_names}
        with self._online_errors():
            provider.online_write_batch(
                self.config, view, [(_entity_key(market_id), row, _utc(event_timestamp), None)], progress=None
            )

    def read_online(self, market_id: str) -> tuple[datetime | None, dict[str, float]]:
        """One market's online row through Feast's provider: (event time, features); (None, {}) when the
        market has none. The serving worker's read-back (what `online` returns, without the request
        validation of get_online_features, ~10 ms per call)."""
        view, provider = self._online_path()
        with self._online_errors():
            [(stamp, values)] = provider.online_read(self.config, view, [_entity_key(market_id)], self.feature_names)
        if stamp is None or values is None:
            return None, {}
        features = {name: _double(values.get(name)) for name in self.feature_names}
        return _utc(stamp), features

    @contextlib.contextmanager
    def _online_errors(self) -> Iterator[None]:
        """A damaged SQLite online store (not a database, malformed) becomes one OnlineStoreError naming the file
        and what to do; other errors pass unchanged."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            if (getattr(e, "sqlite_errorcode", 0) or 0) & 0xFF not in SQLITE_DAMAGED:  # extended codes too
                raise
            raise OnlineStoreError(
                f"the online feature store {self.online_where} is damaged ({e}): move it aside and run "
                "`cta features build` to materialise a new one (the feature tables hold everything it held)"
            ) from e

    def _online_path(self) -> tuple[Any, Any]:
        if self._online_view is None:
            self._online_view = self.store.get_feature_view(VIEW_NAME)
            self._provider = self.store._get_provider()
        return self._online_view, self._provider

    def _empty_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame({JOIN_KEY: pd.Series(dtype=str), TIMESTAMP_FIELD: pd.Series(dtype="datetime64[ns, UTC]")})
        for name in self.feature_names:
            frame[name] = pd.Series(dtype="float64")
        return frame


SQLITE_DAMAGED = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def _entity_key(market_id: str) -> EntityKey:
    return EntityKey(join_keys=[JOIN_KEY], entity_values=[Value(string_val=market_id)])


def _double(value: Value | None) -> float:
    return float("nan") if value is None or not value.HasField("double_val") else float(value.double_val)


def _seconds_to_utc(seconds: np.ndarray) -> pd.DatetimeIndex:
    """Feast reports a missing value's timestamp as 0 seconds: NaT then."""
    stamps = pd.to_datetime(seconds, unit="s", utc=True)
    return stamps.where(seconds > 0, pd.NaT)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Feast prints banners and tqdm bars to stdout/stderr during apply and materialize: send them to
    the debug log instead (the redirect is process-wide, so it is not used on the serving path)."""
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        if sink.getvalue().strip():
            log.debug("feast: %s", sink.getvalue().strip())


def feature_store_for(settings: FeatureSettings) -> FeatureStoreAdapter:
    """The adapter configured by the `features` section (SQLite by default, Redis in production)."""
    return FeatureStoreAdapter(
        settings.feast_dir,
        settings.table_dir,
        online=settings.online_store,
        redis_url=settings.redis_url if settings.online_store == "redis" else None,
        ttl=timedelta(days=settings.ttl_days),
    )
