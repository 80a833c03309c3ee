"""The keras family: walk-forward metrics, the pyfunc contract, no look-ahead, reproducibility and an
MLflow round trip into a fresh process that never imports CTA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cta.config import TrainingSettings
from cta.costs import CostModel
from tests.factories import training_data
from training.candidate import Candidate, TrainingData
from training.models.keras_seq import fit_keras

ROWS = 2500
FOLD_KEYS = {"accuracy", "balanced_accuracy", "log_loss", "ic", "net_return", "exposure", "turnover"}
# Op determinism plus a seed per fitted model make two fits bit-identical on this machine (observed
# difference 0.0); 1e-6 leaves room for a different BLAS/oneDNN build.
REPRODUCIBILITY_TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return training_data(rows=ROWS)


@pytest.fixture(scope="module")
def settings() -> TrainingSettings:
    return TrainingSettings(keras_epochs=2)


@pytest.fixture(scope="module")
def candidate(data: TrainingData, settings: TrainingSettings) -> Candidate:
    return fit_keras(data, settings, CostModel())


def test_fit_returns_a_candidate_with_fold_metrics_and_a_position_model(
    data: TrainingData, settings: TrainingSettings, candidate: Candidate
) -> None:
    window = settings.keras_window
    assert candidate.family == "keras"
    assert candidate.history_rows == window
    assert {"window", "units", "epochs", "lr", "batch"} <= set(candidate.params)
    assert candidate.params["window"] == window and candidate.params["epochs"] == 2
    assert any(r.startswith("tensorflow-cpu") for r in candidate.pip_requirements)
    assert candidate.artifacts is not None and Path(candidate.artifacts["keras_model"]).is_file()
    assert callable(candidate.log_extras)

    assert len(candidate.fold_metrics) == len(data.folds)
    for metrics in candidate.fold_metrics:
        assert set(metrics) >= FOLD_KEYS
        assert all(np.isfinite(v) for v in metrics.values())
        assert metrics["exposure"] == 1.0  # the fold policy is sign(score): always in the market
    assert {"accuracy", "log_loss", "ic", "net_return", "flat_policy"} <= set(candidate.validation_metrics)

    model = candidate.python_model
    assert isinstance(model.long_above, float) and isinstance(model.short_below, float)
    assert model.feature_names == list(data.development.X.columns)
    frame = data.development.X
    positions = model.predict(None, frame)
    assert positions.dtype == np.float64
    assert len(positions) == len(frame)
    assert set(np.unique(positions)) <= {-1.0, 0.0, 1.0}
    assert np.all(positions[: window - 1] == 0.0)
    # Columns are selected by name: order does not matter, extra columns are ignored.
    shuffled = frame[list(reversed(frame.columns))].assign(extra=1.0)
    np.testing.assert_array_equal(model.predict(None, shuffled), positions)
    # Fewer rows than a window: all flat.
    assert np.all(model.predict(None, frame.head(window - 1)) == 0.0)
    assert len(model.predict(None, frame.head(0))) == 0
    # Probabilities are a distribution over (-1, 0, +1) wherever there is a window.
    proba = model.predict_proba(frame)
    assert np.isnan(proba[: window - 1]).all()
    np.testing.assert_allclose(proba[window - 1 :].sum(axis=1), 1.0, atol=1e-12)


def test_no_look_ahead(data: TrainingData, candidate: Candidate) -> None:
    model = candidate.python_model
    frame = data.development.X.reset_index(drop=True)
    t = len(frame) // 2
    rng = np.random.default_rng(0)
    poisoned = frame.copy()
    poisoned.iloc[t + 1 :] = rng.normal(0, 1e3, size=(len(frame) - t - 1, frame.shape[1]))

    clean_score, poisoned_score = model.score(frame), model.score(poisoned)
    assert not np.allclose(clean_score[t + 1 :], poisoned_score[t + 1 :])  # the poison does change the future
    np.testing.assert_array_equal(poisoned_score[: t + 1], clean_score[: t + 1])
    np.testing.assert_array_equal(model.predict(None, poisoned)[: t + 1], model.predict(None, frame)[: t + 1])
    # And a frame cut at t (a live decision) agrees with the full-frame prediction up to t.
    np.testing.assert_allclose(model.score(frame.iloc[: t + 1]), clean_score[: t + 1], atol=1e-6)


def test_numpy_forward_is_keras_own_forward(
    data: TrainingData, settings: TrainingSettings, candidate: Candidate
) -> None:
    """The serving forward pass (numpy) gives Keras' probabilities, for one window and for a series of them; a
    network of another shape is not packed (it would run through TensorFlow)."""
    import keras

    from training.models.keras_seq import numpy_forward, window_view

    model = candidate.python_model
    assert model._model is not None
    packed = numpy_forward(model._model)
    assert packed is not None and len(packed.convs) == 2
    rows = data.development.X.to_numpy(dtype="float32")
    windows = np.ascontiguousarray(window_view(rows, settings.keras_window))
    expected = np.asarray(model._model(windows, training=False))
    np.testing.assert_allclose(packed(windows), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(packed(windows[-1:]), expected[-1:], rtol=1e-4, atol=1e-6)
    # one window alone gives the same float32 numbers as inside a batch (what the worker and the backtest see)
    np.testing.assert_array_equal(packed(windows[-1:]), packed(windows)[-1:])
    assert model.forward(windows[-1:]).shape == (1, 3)

    inputs = keras.Input((settings.keras_window, rows.shape[1]))
    other = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.LSTM(4)(inputs)))
    assert numpy_forward(other) is None


def test_same_seed_same_model(data: TrainingData, settings: TrainingSettings, candidate: Candidate) -> None:
    again = fit_keras(data, settings, CostModel())
    for first, second in zip(candidate.fold_metrics, again.fold_metrics, strict=True):
        assert first.keys() == second.keys()
        for key in first:
            assert abs(first[key] - second[key]) <= REPRODUCIBILITY_TOLERANCE, key
    for key in ("accuracy", "log_loss", "ic", "net_return"):
        assert abs(candidate.validation_metrics[key] - again.validation_metrics[key]) <= REPRODUCIBILITY_TOLERANCE
    frame = data.development.X
    np.testing.assert_allclose(
        candidate.python_model.score(frame), again.python_model.score(frame), atol=REPRODUCIBILITY_TOLERANCE
    )


def test_inference_latency_for_one_window(data: TrainingData, settings: TrainingSettings, candidate: Candidate) -> None:
    one = data.development.X.tail(settings.keras_window)
    p50, p99 = _latency_ms(candidate.python_model, one)
    print(f"keras in-process predict, one window: p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    assert p50 < 10.0  # a traced forward pass (< 1 ms here), not model.predict (tens of ms)


def _latency_ms(model: Any, frame: pd.DataFrame, calls: int = 300) -> tuple[float, float]:
    for _ in range(20):
        model.predict(None, frame)
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        model.predict(None, frame)
        samples.append(time.perf_counter() - started)
    return float(np.percentile(samples, 50) * 1e3), float(np.percentile(samples, 99) * 1e3)


LOAD_SCRIPT = """
import json, sys, time
import numpy as np, pandas as pd
import mlflow

uri, frame_path, out_path = sys.argv[1:4]
model = mlflow.pyfunc.load_model(uri)
assert "training" not in sys.modules and "cta" not in sys.modules, sorted(
    m for m in sys.modules if m.split(".")[0] in ("training", "cta", "features")
)
frame = pd.read_parquet(frame_path)
np.save(out_path, np.asarray(model.predict(frame), dtype="float64"))
one = frame.tail(int(sys.argv[4]))
for _ in range(20):
    model.predict(one)
samples = []
for _ in range(300):
    started = time.perf_counter()
    model.predict(one)
    samples.append(time.perf_counter() - started)
print(json.dumps({"p50_ms": float(np.percentile(samples, 50) * 1e3), "p99_ms": float(np.percentile(samples, 99) * 1e3),
                  "cta_modules": [m for m in sys.modules if m.split(".")[0] in ("training", "cta", "features")]}))
"""


def test_mlflow_round_trip_in_a_fresh_process(
    tmp_path: Path, data: TrainingData, settings: TrainingSettings, candidate: Candidate
) -> None:
    import cloudpickle
    import mlflow
    from mlflow.models import infer_signature

    from training.models import keras_seq

    cloudpickle.register_pickle_by_value(keras_seq)  # as training.tracking.log_position_model does
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("keras-seq-test", artifact_location=(tmp_path / "artifacts").as_uri())
    model = candidate.python_model
    example = data.development.X.head(max(candidate.history_rows, 5))
    with mlflow.start_run(experiment_id=experiment) as run:
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            artifacts=candidate.artifacts,
            signature=infer_signature(example, model.predict(None, example)),
            input_example=example,
            pip_requirements=["numpy", "pandas", "cloudpickle", *candidate.pip_requirements],
            metadata={"history_rows": candidate.history_rows, "family": candidate.family},
        )
        assert candidate.log_extras is not None
        candidate.log_extras()
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "plots")]
    assert artifacts == ["plots/keras_learning_curve.png"]

    frame = data.validation.X
    frame.to_parquet(tmp_path / "frame.parquet")
    script = tmp_path / "load.py"
    script.write_text(LOAD_SCRIPT)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            info.model_uri,
            str(tmp_path / "frame.parquet"),
            str(tmp_path / "out.npy"),
            str(settings.keras_window),
        ],
        env={**env, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(
        f"keras after pyfunc load (fresh process), one window: p50 {report['p50_ms']:.3f} ms, "
        f"p99 {report['p99_ms']:.3f} ms"
    )
    assert report["cta_modules"] == []
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), model.predict(None, frame))
