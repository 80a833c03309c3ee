"""The scikit-learn candidates end to end: walk-forward metrics, the pyfunc contract, MLflow lineage,
the registry round trip in a fresh process, behaviour, reproducibility."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest

from cta.config import load_settings
from cta.costs import CostModel
from cta.lake import Market
from cta.registry import configure_mlflow, registered_model_name
from features.compute import compute_features
from features.dataset import Dataset
from features.labels import DIRECTION, FORWARD_RETURN, LABEL_PREFIX, make_labels
from features.registry import feature_names
from tests.conftest import CONFIG_DIR
from tests.factories import training_data
from training.candidate import TrainingData
from training.models.sklearn_models import (
    SMALL_BATCH_ROWS,
    fit_gbm,
    fit_logistic,
    forest_proba,
    full_proba,
    gbm_pipeline,
    logistic_pipeline,
    pack_forest,
    pack_linear,
    pack_scalers,
)
from training.train import prepare, train_candidate

MARKET = Market("binance", "BTC/USDT", "1h")


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return training_data(rows=3000)


@pytest.fixture
def settings(tmp_path: Path) -> Any:
    settings = load_settings(
        env={},
        config_dir=CONFIG_DIR,
        overrides={
            "training": {
                "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                "artifact_root": str(tmp_path / "artifacts"),
                "min_train_rows": 600,
                "folds": 3,
            }
        },
    )
    configure_mlflow(settings)
    return settings


@pytest.mark.parametrize("fit", [fit_logistic, fit_gbm], ids=["logistic", "gbm"])
def test_candidate_follows_the_contract(fit: Any, data: TrainingData) -> None:
    settings = load_settings(env={}, config_dir=CONFIG_DIR).training
    candidate = fit(data, settings, CostModel())
    assert len(candidate.fold_metrics) == len(data.folds)
    assert {"accuracy", "balanced_accuracy", "log_loss", "auc", "ic", "net_return"} <= set(candidate.fold_metrics[0])
    positions = candidate.python_model.predict(None, data.validation.X)
    assert positions.shape == (len(data.validation),) and set(np.unique(positions)) <= {-1.0, 0.0, 1.0}
    assert not [c for c in data.validation.X.columns if c.startswith(LABEL_PREFIX)]
    again = fit(data, settings, CostModel())  # same data, config and seed: exactly the same metrics
    assert again.fold_metrics == candidate.fold_metrics and again.validation_metrics == candidate.validation_metrics


@pytest.mark.parametrize("classes", [(-1, 0, 1), (-1, 1)], ids=["three-classes", "two-classes"])
def test_packed_trees_predict_exactly_what_sklearn_predicts(classes: tuple[int, ...]) -> None:
    """The serving path for a few rows walks the packed trees; its probabilities equal scikit-learn's bit for bit
    (scaled, wild and missing inputs), so a decision is the same whichever path computed it."""
    rng = np.random.default_rng(3)
    features = rng.normal(size=(2000, 6))
    features[rng.random(features.shape) < 0.03] = np.nan  # learned missing-value directions
    direction = np.asarray(classes)[rng.integers(0, len(classes), 2000)]
    direction[features[:, 0] > 0.5] = classes[-1]  # some structure, so the trees split
    pipeline = gbm_pipeline(seed=0).fit(features, direction)
    forest = pack_forest(pipeline[-1])
    assert forest is not None and len(forest.roots) == 60 * (3 if len(classes) == 3 else 1) and forest.depth >= 2

    unseen = rng.normal(size=(400, 6)) * rng.choice([0.01, 1.0, 100.0], size=(400, 1))
    unseen[rng.random(unseen.shape) < 0.1] = np.nan
    unseen[0] = np.nan  # every feature missing
    assert np.array_equal(forest_proba(pipeline, forest, unseen), full_proba(pipeline, unseen))
    for row in range(0, 400, 7):  # one row at a time, as the worker asks
        one = unseen[row : row + 1]
        assert np.array_equal(forest_proba(pipeline, forest, one), full_proba(pipeline, one))
    assert len(np.unique(full_proba(pipeline, unseen)[:, 2])) > 20  # the trees discriminate: not a constant


def test_gbm_model_predicts_the_same_positions_on_either_path(data: TrainingData) -> None:
    """The pickled-by-value model uses the packed trees below SMALL_BATCH_ROWS rows and scikit-learn above."""
    settings = load_settings(env={}, config_dir=CONFIG_DIR).training
    model = fit_gbm(data, settings, CostModel()).python_model
    frame = pd.concat([data.train.X, data.validation.X]).iloc[: SMALL_BATCH_ROWS + 50]
    assert len(frame) > SMALL_BATCH_ROWS
    batch = model.score(frame)
    streamed = np.concatenate([model.score(frame.iloc[i : i + 50]) for i in range(0, len(frame), 50)])
    assert np.array_equal(batch, streamed)
    assert "_packed" in model.__dict__ and "_packed" not in model.__getstate__()
    assert pack_forest(logistic_pipeline(0)[-1]) is None  # no trees: the logistic model keeps sklearn's path


def test_logistic_model_decides_a_row_as_numpy_what_sklearn_decides(data: TrainingData) -> None:
    """Below SMALL_BATCH_ROWS rows the logistic pipeline runs as numpy (its scaler, x @ coef.T + intercept, the
    softmax): scores equal scikit-learn's to 1e-12 and the same positions, one row at a time as the worker asks; a
    pipeline it cannot reproduce keeps scikit-learn's path."""
    settings = load_settings(env={}, config_dir=CONFIG_DIR).training
    model = fit_logistic(data, settings, CostModel()).python_model
    frame = pd.concat([data.train.X, data.validation.X]).iloc[: SMALL_BATCH_ROWS + 50]
    batch = model.score(frame)  # scikit-learn's predict_proba: a batch of SMALL_BATCH_ROWS or more
    rows = range(0, len(frame), 9)
    streamed = np.concatenate([model.score(frame.iloc[i : i + 1]) for i in rows])
    np.testing.assert_allclose(streamed, batch[list(rows)], rtol=0, atol=1e-12)
    positions = model.predict(None, frame)
    assert [model.predict(None, frame.iloc[i : i + 1])[0] for i in rows] == list(positions[list(rows)])
    assert model._linear() is not None and "_packed_linear" not in model.__getstate__()
    assert pack_linear(gbm_pipeline(0)) is None  # trees: the packed forest's path
    scaled = pack_scalers(model.pipeline)
    assert scaled is not None
    values = frame[model.feature_names].to_numpy(dtype="float64")
    assert np.array_equal(scaled(values), model.pipeline[0].transform(values))  # the same bits as the scaler


def synthetic_trend_market(drift: float, rows: int = 1200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(drift + rng.normal(0, 0.001, rows)))
    ts = 1_640_995_200_000 + np.arange(rows, dtype=np.int64) * 3_600_000
    return pd.DataFrame(
        {
            "ts": ts,
            "open": close,
            "high": close * 1.001,
            "low": close * 0.999,
            "close": close,
            "volume": 10.0 + rng.uniform(0, 1, rows),
        }
    )


def test_behaviour_on_markets_whose_answer_is_known() -> None:
    """Minimum functionality: trained where momentum persists, a model goes long a strong uptrend,
    short a strong downtrend, and stays flat in a dead-flat market; prices' scale changes nothing."""
    pieces = []
    for i, drift in enumerate([0.003, -0.003, 0.0] * 4):
        candles = synthetic_trend_market(drift, rows=330, seed=i)
        candles["ts"] += i * 10_000 * 3_600_000
        labels = make_labels(candles, 4, 10.0).assign(next_return=candles["close"].pct_change().shift(-1))
        pieces.append(compute_features(candles).merge(labels, on="ts").dropna())
    joined = pd.concat(pieces, ignore_index=True)
    dataset = Dataset(
        MARKET,
        joined["ts"].to_numpy(),
        joined[feature_names()],
        joined[FORWARD_RETURN].to_numpy(),
        joined[DIRECTION].astype(float).to_numpy(),
        joined["next_return"].to_numpy(),
        4,
    )
    settings = load_settings(env={}, config_dir=CONFIG_DIR, overrides={"training": {"min_train_rows": 500}})
    prepared, _ = prepare(dataset, settings)
    model = fit_logistic(prepared, settings.training, CostModel()).python_model
    model.long_above, model.short_below = 0.3, -0.3  # a fixed policy: this tests the wiring, not the fit
    up, down = synthetic_trend_market(0.004, 400, seed=11), synthetic_trend_market(-0.004, 400, seed=12)
    assert (model.predict(None, compute_features(up)) == 1).mean() > 0.9
    assert (model.predict(None, compute_features(down)) == -1).mean() > 0.9
    flat = up.assign(open=100.0, high=100.0, low=100.0, close=100.0, volume=10.0)
    assert (model.predict(None, compute_features(flat)) == 0).all()
    scaled = up.assign(**{c: up[c] * 1000 for c in ("open", "high", "low", "close")})
    np.testing.assert_array_equal(
        model.predict(None, compute_features(scaled)), model.predict(None, compute_features(up))
    )


def test_training_run_is_logged_with_lineage_and_registered(data: TrainingData, settings: Any) -> None:
    outcome = train_candidate("logistic", data, settings, registry_version="abc123")
    run = mlflow.get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["family"] == "logistic" and tags["feature_registry_version"] == "abc123"
    assert tags["config_hash"] == settings.config_hash() and tags["seed"] == "7" and tags["git_commit"]
    assert len(tags["data_hash"]) == 16
    assert {"balanced_accuracy_mean", "balanced_accuracy_std", "auc_mean", "validation_net_return"} <= set(
        run.data.metrics
    )
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(outcome.run_id)}
    assert {"lineage.json", "feature_importance.png"} <= artifacts
    version = mlflow.MlflowClient().get_model_version(registered_model_name(MARKET), outcome.version)
    assert version.tags["family"] == "logistic" and version.tags["data_hash"] == tags["data_hash"]


def test_pyfunc_from_the_registry_in_a_fresh_process_needs_no_cta(
    data: TrainingData, settings: Any, tmp_path: Path
) -> None:
    outcome = train_candidate("gbm", data, settings, registry_version="abc123")
    uri = f"models:/{registered_model_name(MARKET)}/{outcome.version}"
    expected = mlflow.pyfunc.load_model(uri).predict(data.validation.X)
    data.validation.X.to_parquet(tmp_path / "x.parquet")
    script = f"""
import json, sys, mlflow, pandas as pd
mlflow.set_tracking_uri({settings.training.tracking_uri!r})
model = mlflow.pyfunc.load_model({uri!r})
out = model.predict(pd.read_parquet({str(tmp_path / "x.parquet")!r}))
print(json.dumps({{"positions": [float(v) for v in out],
                  "leaked": sorted(m for m in ("cta", "training", "features") if m in sys.modules)}}))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd="/", timeout=300, check=True
    )
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["leaked"] == []
    np.testing.assert_array_equal(answer["positions"], expected)


def test_a_failing_run_is_marked_failed_not_left_running(
    data: TrainingData, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.train as train_module

    def broken(*_: Any) -> Any:
        raise ValueError("the family blew up")

    monkeypatch.setattr(train_module, "family", lambda name: broken)
    with pytest.raises(ValueError, match="blew up"):
        train_candidate("logistic", data, settings, registry_version="abc123")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert len(failed) == 1 and failed[0].data.tags["error"] == "ValueError: the family blew up"
    assert not [r for r in runs if r.info.status == "RUNNING"]
