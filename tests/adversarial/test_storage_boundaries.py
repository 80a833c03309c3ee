"""Corrupted files at every storage boundary beyond the lake (issue 19, "Done means" 2): the feature tables
(Feast's offline Parquet files) and the online store, the model artifacts in a real MLflow store, and the
serving worker's SQLite database.

What must happen, against real components (real files, Feast, an MLflow SQLite store, SQLite):
- a feature table that no longer matches its manifest (garbage, truncated, edited, deleted, its manifest broken,
  a stray Parquet file Feast would read) is never read: training, backtests and materialisation stop with the
  file named; `features build` rebuilds a damaged table from the verified lake;
- a damaged online store is one error naming its file and what to do;
- a champion whose artifact files are truncated, garbage or missing is never swapped in: the worker keeps the
  last good model and says why (one line); `cta models promote` / `rollback` refuse to hand it the alias;
- a serving database that is garbage or truncated stops `cta kill-switch`, `cta ledger verify` and `cta serve`
  with one `error:` line naming the file, no traceback on screen, and the file unchanged (nothing written).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.models import infer_signature

from cta.config import LoggingSettings
from cta.errors import CTAError, DataValidationError, FeatureTableCorruptionError, OnlineStoreError
from cta.lake import CandleLake, Market
from cta.logs import configure_logging
from serving.models_manager import ModelManager
from tests.conftest import subprocess_env
from tests.factories import real_candles
from tests.serving.test_model_manager import ROWS, ConstantPosition

MARKET = Market("binance", "BTC/USDT", "1h")
NAME = "cta.binance.BTC_USDT.1h"  # cta.registry.registered_model_name(MARKET)
KEY = str(MARKET)


# ----- running the real `cta` entry point in this process ---------------------------------------------------------


def run_main(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
) -> tuple[int, str, str]:
    """`cta ARGS` through `app.cli.main` (the console entry point) in this process: (exit code, stdout, stderr).
    The environment is a subprocess's (`subprocess_env`: every file under tmp_path), restored afterwards."""
    from app.cli import main

    for name, value in subprocess_env(tmp_path, **(env or {})).items():
        if name.startswith("CTA_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["cta", *args])
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        configure_logging(LoggingSettings(level="WARNING"), tmp_path / "after")
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(code: int, err: str, *fragments: str) -> str:
    """A failed command's stderr: exit 1, no traceback, exactly one `error:` line containing `fragments`."""
    assert code == 1, err
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err[-3000:]
    assert len([line for line in err.splitlines() if line.strip()]) <= 3, err[-3000:]  # a WARNING or two at most
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


# ----- feature tables: the offline Parquet files Feast, training and backtests read -------------------------------


def table_settings(settings_for: Any, tmp_path: Path) -> Any:
    return settings_for(features={"table_dir": str(tmp_path / "features"), "feast_dir": str(tmp_path / "feast")})


@pytest.fixture
def built(lake: CandleLake, settings_for: Any, tmp_path: Path) -> tuple[Any, Any, CandleLake]:
    """(settings, FeatureTable) after `features build`'s own task built MARKET's table from a 70-day lake."""
    from features.table import FeatureTable
    from flows.features import build_market_features

    settings = table_settings(settings_for, tmp_path)
    table = FeatureTable(settings.features.table_dir)
    lake.upsert(MARKET, real_candles(rows=24 * 70))
    assert build_market_features.fn(lake, table, MARKET, settings)["status"] == "rebuilt"
    return settings, table, lake


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00\xffnot parquet" * 100)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:300])


def _edit_value(path: Path) -> None:
    """A valid Parquet file with one feature value changed: only the manifest's hash can tell."""
    frame = pd.read_parquet(path)
    column = frame.columns[-1]
    frame.loc[len(frame) // 2, column] = frame[column].iloc[len(frame) // 2] + 0.5
    frame.to_parquet(path, index=False)


def _delete(path: Path) -> None:
    path.unlink()


def _manifest_not_json(path: Path) -> None:
    (path.parent / "manifest.json").write_text('{"market_id": "binance:BTC/USDT:1h", "rows": ')


def _manifest_deleted(path: Path) -> None:
    (path.parent / "manifest.json").unlink()


def _manifest_without_hash(path: Path) -> None:
    """A manifest as versions before verification wrote it (no content hash)."""
    manifest_path = path.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["content_hash"]
    manifest_path.write_text(json.dumps(manifest))


TABLE_TAMPERINGS: dict[str, tuple[Callable[[Path], None], str]] = {
    "garbage bytes": (_garbage, "hash mismatch"),
    "truncated": (_truncate, "hash mismatch"),
    "one value edited": (_edit_value, "hash mismatch"),
    "file deleted": (_delete, "missing file"),
    "manifest not JSON": (_manifest_not_json, "manifest unreadable: not JSON"),
    "manifest deleted": (_manifest_deleted, "no manifest beside it"),
    "manifest without a hash": (_manifest_without_hash, "no content hash"),
}
ALL_TABLE_TAMPERINGS = pytest.mark.parametrize("tampering", list(TABLE_TAMPERINGS))


def _assert_names_the_table(error: FeatureTableCorruptionError, path: Path, problem: str) -> None:
    assert error.file == str(path) and problem in error.problem, error
    assert len(str(error).splitlines()) == 1 and str(error).startswith(f"corrupt feature table {path}: ")
    assert isinstance(error, DataValidationError)  # stops a flow like any bad data


@ALL_TABLE_TAMPERINGS
def test_a_damaged_feature_table_is_never_read_for_training_or_backtests(
    built: tuple[Any, Any, CandleLake], tampering: str
) -> None:
    """Before: garbage and truncated tables raised pyarrow's errors (no file named), and an edited value or a
    table without a manifest was read as if nothing happened."""
    from features.dataset import from_feature_store
    from features.feast_store import feature_store_for

    settings, table, lake = built
    tamper, problem = TABLE_TAMPERINGS[tampering]
    path = table.path(MARKET)
    tamper(path)
    with pytest.raises(FeatureTableCorruptionError) as caught:
        table.read(MARKET)  # what materialisation reads
    _assert_names_the_table(caught.value, path, problem)
    store = feature_store_for(settings.features)
    with pytest.raises(FeatureTableCorruptionError) as caught:  # the training and backtest dataset (asof engine)
        from_feature_store(store, lake, MARKET, feature_names=store.feature_names[:3], horizon=4, dead_zone_bps=10.0)
    _assert_names_the_table(caught.value, path, problem)


@ALL_TABLE_TAMPERINGS
def test_features_build_rebuilds_a_damaged_table_from_the_verified_lake(
    built: tuple[Any, Any, CandleLake], tampering: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: the table counted as "up to date" (its manifest named the same lake partitions) and Feast was
    loaded from the damaged file."""
    from flows.features import build_market_features

    settings, table, lake = built
    before = table.read(MARKET)
    tamper, problem = TABLE_TAMPERINGS[tampering]
    tamper(table.path(MARKET))
    with caplog.at_level("WARNING", logger="features.table"):
        assert build_market_features.fn(lake, table, MARKET, settings)["status"] == "rebuilt"
    warned = [r.getMessage() for r in caplog.records if "rebuilding" in r.getMessage()]
    assert any(str(table.path(MARKET)) in m and problem in m for m in warned), warned
    pd.testing.assert_frame_equal(table.read(MARKET), before)
    assert table.problem(MARKET) is None
    assert build_market_features.fn(lake, table, MARKET, settings)["status"] == "up to date"


def test_feast_reads_no_damaged_or_foreign_parquet_file(built: tuple[Any, Any, CandleLake], tmp_path: Path) -> None:
    """Feast's file source reads every Parquet file under the directory: Feast's own point-in-time join and
    materialisation verify them all first. Before: an edited table was joined and materialised, and a stray
    Parquet file became part of the offline store."""
    from features.feast_store import feature_store_for

    settings, table, _ = built
    store = feature_store_for(settings.features)
    store.apply()
    entity = pd.DataFrame({"market_id": [KEY], "event_timestamp": [table.read(MARKET)["event_timestamp"].iloc[-1]]})
    assert not store.historical(entity, engine="feast").isna().any().any()  # intact: Feast reads it

    stray = Path(settings.features.table_dir) / "exchange=binance" / "notes.parquet"
    table.read(MARKET).head(3).to_parquet(stray, index=False)
    for call in (lambda: store.historical(entity, engine="feast"), lambda: store.materialize(pd.Timestamp.now("UTC"))):
        with pytest.raises(FeatureTableCorruptionError, match="not a table CTA wrote") as caught:
            call()
        assert caught.value.file == str(stray)
    stray.unlink()

    _edit_value(table.path(MARKET))
    for engine in ("feast", "asof"):
        with pytest.raises(FeatureTableCorruptionError, match="hash mismatch"):
            store.historical(entity, engine=engine)  # type: ignore[arg-type]
    with pytest.raises(FeatureTableCorruptionError, match="hash mismatch"):
        store.materialize(pd.Timestamp.now("UTC"))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_online_store_is_one_error_naming_the_file(settings_for: Any, tmp_path: Path, damage: str) -> None:
    """The SQLite online store (what the worker writes and reads back every candle). Before: sqlite3's
    "file is not a database" / "malformed" escaped as an unexpected error naming nothing."""
    from features.feast_store import feature_store_for

    settings = table_settings(settings_for, tmp_path)
    store = feature_store_for(settings.features)
    store.apply()
    values = dict.fromkeys(store.feature_names, 0.5)
    stamp = pd.Timestamp("2024-01-01", tz="UTC").to_pydatetime()
    store.write_online(KEY, stamp, values)
    online = Path(settings.features.feast_dir) / "online_store.db"
    if damage == "garbage":
        online.write_bytes(b"\x13\x37 definitely not sqlite " * 400)
    else:
        online.write_bytes(online.read_bytes()[: 4096 + 100])
    fresh = feature_store_for(settings.features)  # as a restarted worker opens it
    calls: list[Callable[[], object]] = [
        lambda: fresh.write_online(KEY, stamp, values),
        lambda: fresh.read_online(KEY),
        lambda: fresh.online([KEY]),
    ]
    for call in calls:
        with pytest.raises(OnlineStoreError) as caught:
            call()
        message = str(caught.value)
        assert str(online) in message and "damaged" in message and "cta features build" in message
        assert len(message.splitlines()) == 1


# ----- model artifacts: a champion whose files are damaged ---------------------------------------------------------


def artifact_dir(client: MlflowClient, version: str) -> Path:
    source = client.get_model_version(NAME, version).source
    if source.startswith("file://"):  # a version registered from a copy of v1's files
        return Path(source.removeprefix("file://"))
    model_id = source.removeprefix("models:/")
    return Path(mlflow.get_logged_model(model_id).artifact_location.removeprefix("file://"))


def _pickle(folder: Path) -> Path:
    (found,) = folder.glob("python_model.pkl")
    return found


ARTIFACT_TAMPERINGS: dict[str, Callable[[Path], None]] = {
    "pickle truncated": lambda d: _pickle(d).write_bytes(_pickle(d).read_bytes()[:40]),
    "pickle garbage": lambda d: _pickle(d).write_bytes(b"\x80\x05garbage" * 20),
    "pickle missing": lambda d: _pickle(d).unlink(),
    "MLmodel missing": lambda d: (d / "MLmodel").unlink(),
    "MLmodel binary garbage": lambda d: (d / "MLmodel").write_bytes(b"\xff\xfe\x00" * 50),
    "artifact directory missing": shutil.rmtree,
}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MlflowClient, Path, dict[str, str]]]:
    """A real MLflow SQLite store: v1 good, then one damaged version per tampering, then a last good one.
    Yields (client, store dir, tampering -> version)."""
    root = tmp_path_factory.mktemp("registry")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    experiment = mlflow.create_experiment("models", artifact_location=(root / "artifacts").as_uri())
    client = MlflowClient()
    model = ConstantPosition(0.5)
    with mlflow.start_run(experiment_id=experiment):  # v1, logged as training logs them
        mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            signature=infer_signature(ROWS, model.predict(None, ROWS)),
            registered_model_name=NAME,
        )
    for number in range(2, len(ARTIFACT_TAMPERINGS) + 3):  # copies of v1's files (logging is slow): same model
        copy = root / "copies" / str(number)
        shutil.copytree(artifact_dir(client, "1"), copy)
        client.create_model_version(NAME, copy.as_uri())
    damaged = {name: str(number) for number, name in enumerate(ARTIFACT_TAMPERINGS, start=2)}
    for name, version in damaged.items():
        ARTIFACT_TAMPERINGS[name](artifact_dir(client, version))
    try:
        yield client, root, damaged
    finally:
        mlflow.set_tracking_uri(previous)


def manager(client: MlflowClient) -> ModelManager:
    return ModelManager(client, {KEY: NAME}, lambda market: ROWS, poll_s=0.0)


@pytest.mark.parametrize("tampering", list(ARTIFACT_TAMPERINGS))
def test_the_worker_keeps_the_last_good_champion_and_says_why(
    registry: tuple[MlflowClient, Path, dict[str, str]], tampering: str
) -> None:
    client, _, damaged = registry
    bad = damaged[tampering]
    models = manager(client)
    client.set_registered_model_alias(NAME, "champion", "1")
    asyncio.run(models.refresh(KEY))
    assert models.model(KEY).version == "1"  # type: ignore[union-attr]

    client.set_registered_model_alias(NAME, "champion", bad)
    asyncio.run(models.refresh(KEY))
    asyncio.run(models.refresh(KEY))  # polled again: not retried, not swapped, still serving
    kept, problem = models.model(KEY), models.problem(KEY) or ""
    assert kept is not None and kept.version == "1"
    assert f"champion v{bad} failed to load" in problem and problem.endswith("keeping v1"), problem
    assert len(problem.splitlines()) == 1, problem
    assert kept.predict_next(ROWS) == 0.5  # the kept model still trades

    starting = manager(client)  # a worker (re)started while the champion is the damaged version
    asyncio.run(starting.refresh(KEY))
    assert starting.model(KEY) is None
    assert f"champion v{bad} failed to load" in (starting.problem(KEY) or "") and "no model serving" in (
        starting.problem(KEY) or ""
    )
    client.set_registered_model_alias(NAME, "champion", "1")


def test_cta_models_refuses_to_move_the_alias_to_a_damaged_version(
    registry: tuple[MlflowClient, Path, dict[str, str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before: `cta models promote` gave the champion alias to a version whose files were gone (the worker then
    kept its old model, silently for the operator); a rollback with nothing to roll back to was an
    "unexpected MlflowException"."""
    from cta.registry import promote, promotion_lock
    from tests.conftest import CONFIG_DIR

    client, root, damaged = registry
    client.set_registered_model_alias(NAME, "champion", "1")
    last_good = str(len(ARTIFACT_TAMPERINGS) + 2)
    env = {"CTA_TRAINING__TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    market = ["-s", "BTC/USDT", "-t", "1h"]
    for tampering, version in damaged.items():
        code, _, err = run_main(
            monkeypatch, capsys, tmp_path, "models", "promote", version, "--reason", "t", *market, env=env
        )
        one_error_line(code, err, f"{NAME} v{version} cannot be loaded", "not moved")
        assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1", tampering

    from cta.config import load_settings

    settings = load_settings(env={}, config_dir=CONFIG_DIR, overrides={"paths": {"data_dir": str(tmp_path / "data")}})
    bad = damaged["pickle missing"]
    for version in (bad, last_good):  # history [..., bad, last_good]: a rollback would restore the damaged one
        current = str(client.get_model_version_by_alias(NAME, "champion").version)
        assert (
            promote(
                client, NAME, version, expected_champion=current, reason="t", lock=promotion_lock(settings, NAME)
            ).outcome
            == "champion"
        )
    code, _, err = run_main(monkeypatch, capsys, tmp_path, "models", "rollback", *market, env=env)
    one_error_line(code, err, f"v{bad} cannot be loaded")
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == last_good
    code, out, err = run_main(
        monkeypatch, capsys, tmp_path, "models", "promote", "1", "--reason", "ok", *market, env=env
    )
    assert code == 0 and "v1 is the champion" in out, err
    client.set_registered_model_alias(NAME, "champion", "1")


@pytest.mark.parametrize("command", [["models", "list"], ["models", "show", "-s", "BTC/USDT", "-t", "1h"]])
def test_a_damaged_mlflow_store_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """Before: "unexpected DatabaseError: (sqlite3.DatabaseError) file is not a database [SQL: ...]"."""
    store = tmp_path / "mlflow.db"
    store.write_bytes(b"\x00garbage, not sqlite" * 200)
    env = {"CTA_TRAINING__TRACKING_URI": f"sqlite:///{store}"}
    code, _, err = run_main(monkeypatch, capsys, tmp_path, *command, env=env)
    one_error_line(code, err, f"the model registry sqlite:///{store} cannot be read", "file is not a database")


# ----- the serving database ----------------------------------------------------------------------------------------


def _healthy_database(path: Path) -> bytes:
    """A migrated serving database with a few ledger entries, checkpointed into the main file; its bytes."""
    from serving.control import TradingState, set_trading_state
    from serving.db import checkpoint, make_engine, session_factory, upgrade

    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    sessions = session_factory(engine)
    for number in range(30):
        set_trading_state(sessions, TradingState.HALTED if number % 2 else TradingState.RUNNING, f"r{number}", "test")
    checkpoint(sessions)
    engine.dispose()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path.read_bytes()


DB_DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "garbage": lambda data: b"\x00\x01 not a database \xff" * 300,
    "header only": lambda data: data[:100],
    "one page": lambda data: data[:4096],
    "half": lambda data: data[: len(data) // 2],
    "header overwritten": lambda data: b"\x00" * 100 + data[100:],
}


@pytest.fixture(params=list(DB_DAMAGE))
def damaged_db(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "serving.db"
    damaged = DB_DAMAGE[request.param](_healthy_database(path))
    path.write_bytes(damaged)
    return path, damaged


@pytest.mark.parametrize(
    "command",
    [["kill-switch", "halt", "--reason", "incident"], ["ledger", "verify"]],
    ids=["kill-switch", "ledger-verify"],
)
def test_a_damaged_serving_database_is_one_line_and_untouched(
    damaged_db: tuple[Path, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    """Before: "unexpected DatabaseError: (sqlite3.DatabaseError) file is not a database" (or "malformed"),
    naming no file; a file cut at a page boundary was even migrated and written to."""
    path, damaged = damaged_db
    code, _, err = run_main(
        monkeypatch, capsys, tmp_path, *command, env={"CTA_SERVING__DATABASE_URL": f"sqlite:///{path}"}
    )
    one_error_line(code, err, f"the serving database {path} is damaged", "nothing was written")
    assert path.read_bytes() == damaged


def test_serve_stops_at_once_on_a_damaged_database_instead_of_waiting_for_it(tmp_path: Path) -> None:
    """`cta serve` waits for a database that is down; a damaged file is not down, and waiting will not repair it.
    Before: it logged "not ready ... file is not a database" with growing delays, forever."""
    path = tmp_path / "serving.db"
    damaged = DB_DAMAGE["garbage"](b"")
    path.write_bytes(damaged)
    env = subprocess_env(
        tmp_path,
        CTA_SERVING__DATABASE_URL=f"sqlite:///{path}",
        CTA_SERVING__API_PORT="0",
        CTA_TRAINING__TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
        OMP_NUM_THREADS="1",
    )
    try:
        result = subprocess.run(
            [sys.executable, "-m", "app.cli", "serve", "--bars", "1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
            cwd=tmp_path,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError("cta serve kept waiting for a damaged database") from e
    one_error_line(result.returncode, result.stderr, f"the serving database {path} is damaged")
    assert path.read_bytes() == damaged


def test_the_integrity_check_refuses_before_any_migration_or_write(tmp_path: Path) -> None:
    from serving.db import DatabaseCorrupt, database_problem, make_engine, upgrade

    path = tmp_path / "serving.db"
    damaged = DB_DAMAGE["half"](_healthy_database(path))
    path.write_bytes(damaged)
    engine = make_engine(f"sqlite:///{path}")
    try:
        with pytest.raises(DatabaseCorrupt, match="is damaged"):
            upgrade(engine)
        assert isinstance(DatabaseCorrupt("x"), CTAError)
        garbage = tmp_path / "garbage.db"
        garbage.write_bytes(DB_DAMAGE["garbage"](b""))
        other = make_engine(f"sqlite:///{garbage}")
        with pytest.raises(DatabaseCorrupt, match=str(garbage)):
            database_problem(other)  # not "unavailable": serve must not wait for it
        other.dispose()
    finally:
        engine.dispose()
    assert path.read_bytes() == damaged
