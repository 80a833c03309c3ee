"""The "keras" family: a small temporal-convolution classifier over windows of consecutive feature rows.

The row at t is classified from rows t-window+1..t (never later rows); the model outputs P(down),
P(flat), P(up) in CLASSES order, and the score P(up) - P(down) becomes a position through the
threshold policy fitted on the validation block. Normalisation lives inside the Keras model (a
`Normalization` layer adapted on the training rows), so the raw feature frame goes in.

Serving: `KerasSequencePolicy` is an MLflow pyfunc that depends only on numpy, pandas and
keras/tensorflow. `training.tracking.log_position_model` pickles it *by value*, so the logged
`python_model.pkl` carries the class itself and the serving process loads it without importing
`training` (or `cta`). The Keras model travels as the artifact `keras_model`
(`model.keras`) and is loaded in `load_context`. TensorFlow is imported lazily: importing this
module is cheap.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel

from cta.config import TrainingSettings
from cta.costs import CostModel
from cta.errors import DataValidationError
from features.dataset import Dataset
from training.candidate import Candidate, TrainingData
from training.contract import ThresholdPolicy, fit_threshold_policy
from training.metrics import CLASSES, classification_metrics, position_metrics

FAMILY = "keras"
ARTIFACT_KEY = "keras_model"
PIP_REQUIREMENTS = ["tensorflow-cpu==2.21.0", "keras"]
UNITS = 16  # filters per temporal-convolution layer
LEARNING_RATE = 1e-3
BATCH_SIZE = 64
KERNEL_SIZE = 3
PREDICT_CHUNK = 8192  # windows per forward pass when predicting a long frame


# --------------------------------------------------------------------------------------------
# Serving side: numpy / pandas / keras only. Nothing below may reference `cta` or `training`.
# --------------------------------------------------------------------------------------------


def window_view(rows: np.ndarray, window: int) -> np.ndarray:
    """(n, features) -> (n - window + 1, window, features): window i holds rows i..i+window-1, so it
    belongs to (ends at) row i+window-1. A read-only view, no copy."""
    return np.lib.stride_tricks.sliding_window_view(rows, window, axis=0).transpose(0, 2, 1)


@dataclass(frozen=True)
class NumpyForward:
    """The trained network's forward pass in numpy (float32), for the architecture `_build_model` builds:
    Normalization -> causal dilated Conv1D (ReLU) x n -> GlobalAveragePooling1D -> Dense (softmax).

    Why: a decision is one window, and TensorFlow's per-call cost (a traced function, ~0.5 ms, and its
    thread pool, whose hand-offs spike when both CPUs are busy) is most of what the model adds to the
    decision's latency; these few small matrix products cost ~0.05 ms on the calling thread. It is the
    serving path for every batch size (the backtest's series and the worker's one window), so backtest
    and serving compute the same numbers; tests hold it to Keras' own output."""

    mean: np.ndarray  # (features,)
    denominator: np.ndarray  # max(sqrt(variance), epsilon), (features,)
    convs: tuple[tuple[np.ndarray, np.ndarray, int], ...]  # (kernel (k, in, out), bias (out,), dilation)
    dense: tuple[np.ndarray, np.ndarray]  # (kernel (in, classes), bias (classes,))

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """(n, window, features) float32 -> (n, classes) float32 softmax probabilities."""
        hidden = (np.asarray(windows, dtype="float32") - self.mean) / self.denominator
        count, steps = hidden.shape[0], hidden.shape[1]
        for kernel, bias, dilation in self.convs:
            pad = (kernel.shape[0] - 1) * dilation
            padded = np.concatenate([np.zeros((count, pad, hidden.shape[2]), dtype="float32"), hidden], axis=1)
            out = np.broadcast_to(bias, (count, steps, bias.shape[0])).copy()
            for k in range(kernel.shape[0]):  # causal: output t sees inputs t - (k_size - 1 - k) * dilation
                out += np.einsum("ntc,co->nto", padded[:, k * dilation : k * dilation + steps, :], kernel[k])
            hidden = np.maximum(out, np.float32(0.0))
        # einsum (numpy's own loop, not BLAS, whose kernels differ by row count): a window's probabilities are the
        # same bits alone (the worker) or in a series (the backtest)
        logits = np.einsum("nc,co->no", hidden.mean(axis=1, dtype="float32"), self.dense[0]) + self.dense[1]
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        proba: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
        return proba


def numpy_forward(model: Any) -> NumpyForward | None:
    """`model`'s forward pass in numpy when its layers are exactly `_build_model`'s kinds and settings; None for
    any other network (it then runs through TensorFlow)."""
    import keras

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if len(layers) < 4 or not isinstance(layers[0], keras.layers.Normalization) or layers[0].invert:
        return None
    convs, pool, dense = layers[1:-2], layers[-2], layers[-1]
    if not isinstance(pool, keras.layers.GlobalAveragePooling1D) or pool.data_format != "channels_last":
        return None
    if not isinstance(dense, keras.layers.Dense) or dense.activation is not keras.activations.softmax:
        return None
    packed = []
    for conv in convs:
        if not isinstance(conv, keras.layers.Conv1D) or conv.padding != "causal" or tuple(conv.strides) != (1,):
            return None
        if conv.groups != 1 or conv.activation is not keras.activations.relu or not conv.use_bias:
            return None
        kernel, bias = (np.asarray(keras.ops.convert_to_numpy(w), dtype="float32") for w in conv.weights)
        packed.append((kernel, bias, int(conv.dilation_rate[0])))
    normalize = layers[0]
    mean = np.asarray(keras.ops.convert_to_numpy(normalize.mean), dtype="float32").reshape(-1)
    variance = np.asarray(keras.ops.convert_to_numpy(normalize.variance), dtype="float32").reshape(-1)
    denominator = np.maximum(np.sqrt(variance), np.float32(keras.backend.epsilon())).astype("float32")
    if not dense.use_bias:
        return None
    weights, bias = (np.asarray(keras.ops.convert_to_numpy(w), dtype="float32") for w in dense.weights)
    return NumpyForward(mean, denominator, tuple(packed), (weights, bias))


class KerasSequencePolicy(PythonModel):
    """Feature rows in time order -> one target position in {-1, 0, 1} per row (float64).

    Rows without a full window of history (the first window-1 of the input) get 0. Attributes are
    plain Python values so the pickled wrapper needs nothing from CTA."""

    def __init__(
        self,
        feature_names: list[str],
        window: int,
        long_above: float,
        short_below: float,
        model: Any = None,
    ) -> None:
        self.feature_names = [str(name) for name in feature_names]
        self.window = int(window)
        self.long_above = float(long_above)
        self.short_below = float(short_below)
        self._model = model  # in memory until logged; loaded from the artifact after
        self._forward: Any = None
        self._numpy: NumpyForward | bool | None = None  # None: not packed yet; False: not packable

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_model"] = None  # travels as the `keras_model` artifact, not in the pickle
        state["_forward"] = None
        state["_numpy"] = None
        return state

    def forward(self, windows: np.ndarray) -> np.ndarray:
        """(n, window, features) float32 windows -> (n, 3) probabilities: the numpy forward pass when the network
        is one it can pack (built on first use), else the traced TensorFlow one."""
        packed = getattr(self, "_numpy", None)
        if packed is None:
            if self._model is None:
                raise RuntimeError("the Keras model is not loaded (load the pyfunc through MLflow)")
            packed = self._numpy = numpy_forward(self._model) or False
        if isinstance(packed, NumpyForward):
            return packed(windows)
        return np.asarray(self._compiled()(windows).numpy())

    def load_context(self, context: Any) -> None:
        import keras

        self._model = keras.saving.load_model(context.artifacts["keras_model"], compile=False)
        self._forward = None
        self._numpy = None

    def _compiled(self) -> Any:
        """A traced forward pass: an eager `model(x)` costs ~5 ms per call here, `model.predict` more; this ~0.5 ms."""
        if self._forward is None:
            if self._model is None:
                raise RuntimeError("the Keras model is not loaded (load the pyfunc through MLflow)")
            import tensorflow as tf

            model = self._model
            spec = tf.TensorSpec((None, self.window, len(self.feature_names)), tf.float32)
            self._forward = tf.function(
                lambda x: model(x, training=False), input_signature=[spec], autograph=False, reduce_retracing=True
            )
        return self._forward

    def predict_proba(self, model_input: Any) -> np.ndarray:
        """(rows, 3) class probabilities in (-1, 0, +1) order; NaN for rows without a full window."""
        if isinstance(model_input, pd.DataFrame):
            frame = model_input if list(model_input.columns) == self.feature_names else model_input[self.feature_names]
            rows = frame.to_numpy(dtype="float32")
        else:
            rows = np.asarray(model_input, dtype="float32").reshape(-1, len(self.feature_names))
        out = np.full((len(rows), 3), np.nan, dtype="float64")
        if len(rows) < self.window:
            return out
        windows = window_view(rows, self.window)
        for start in range(0, len(windows), PREDICT_CHUNK):
            chunk = np.ascontiguousarray(windows[start : start + PREDICT_CHUNK])
            first = self.window - 1 + start
            out[first : first + len(chunk)] = self.forward(chunk)
        normalized: np.ndarray = out / out.sum(axis=1, keepdims=True)  # float32 softmax -> float64 rows summing to 1
        return normalized

    def score(self, model_input: Any) -> np.ndarray:
        """P(up) - P(down) per row; 0 for rows without a full window."""
        proba = self.predict_proba(model_input)
        score: np.ndarray = np.nan_to_num(proba[:, 2] - proba[:, 0], nan=0.0)
        return score

    def positions_from_score(self, score: np.ndarray) -> np.ndarray:
        out = np.zeros(len(score), dtype="float64")
        out[score > self.long_above] = 1.0
        out[score < self.short_below] = -1.0
        return out

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        """Positions in {-1, 0, 1} (float64), one per input row; 0 without a full window."""
        return self.positions_from_score(self.score(model_input))


# --------------------------------------------------------------------------------------------
# Training side.
# --------------------------------------------------------------------------------------------


def _build_model(rows: np.ndarray, window: int, lr: float) -> Any:
    """Normalization (adapted on `rows`) -> two causal dilated Conv1D -> average pool -> softmax(3)."""
    import keras

    normalization = keras.layers.Normalization(axis=-1, name="normalize")
    normalization.adapt(rows[:, None, :])  # per-feature statistics of the training rows
    inputs = keras.Input((window, rows.shape[1]), name="features")
    hidden = normalization(inputs)
    for dilation in (1, 2):
        hidden = keras.layers.Conv1D(
            UNITS, KERNEL_SIZE, padding="causal", dilation_rate=dilation, activation="relu", name=f"conv_d{dilation}"
        )(hidden)
    hidden = keras.layers.GlobalAveragePooling1D(name="pool")(hidden)
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax", name="direction")(hidden)
    model = keras.Model(inputs, outputs, name="keras_seq")
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy")
    return model


def _normalized(proba: np.ndarray) -> np.ndarray:
    proba = proba.astype("float64")
    normalized: np.ndarray = proba / proba.sum(axis=1, keepdims=True)
    return normalized


def _class_index(direction: np.ndarray) -> np.ndarray:
    return np.searchsorted(CLASSES, direction).astype("int32")


def _windows_ending_at(rows: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    """Windows of `rows` ending at each index in `ends` (every end >= window - 1)."""
    return np.ascontiguousarray(window_view(rows, window)[ends - (window - 1)])


def _fit_model(
    rows: np.ndarray,
    direction: np.ndarray,
    settings: TrainingSettings,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[Any, dict[str, list[float]]]:
    """Train on every full window of `rows` (a contiguous block), seeded and deterministic."""
    import keras
    import tensorflow as tf

    window = settings.keras_window
    if len(rows) < window + 1:
        raise DataValidationError(f"{len(rows)} training rows are too few for a window of {window}")
    keras.utils.set_random_seed(settings.seed)
    tf.config.experimental.enable_op_determinism()
    model = _build_model(rows, window, LEARNING_RATE)
    ends = np.arange(window - 1, len(rows))
    history = model.fit(
        _windows_ending_at(rows, ends, window),
        _class_index(direction[ends]),
        epochs=settings.keras_epochs,
        batch_size=BATCH_SIZE,
        shuffle=True,
        validation_data=validation,
        verbose=0,
    )
    return model, {k: [float(v) for v in values] for k, values in history.history.items()}


def _context_ends(development: Dataset, target: Dataset) -> np.ndarray | None:
    """Indices of `target`'s rows in `development` (so windows can use the rows before them)."""
    index = np.searchsorted(development.ts, target.ts)
    if len(target) and index[-1] < len(development) and np.array_equal(development.ts[index], target.ts):
        return index
    return None


def _evaluate(proba: np.ndarray, target: Dataset, costs: CostModel, positions: np.ndarray) -> dict[str, float]:
    """Classification metrics on the rows with a full window, position metrics on all rows."""
    full = ~np.isnan(proba).any(axis=1)
    metrics = classification_metrics(target.direction[full], proba[full], target.forward_return[full])
    metrics.update(position_metrics(positions, target.next_return, costs))
    return metrics


def fit_keras(data: TrainingData, settings: TrainingSettings, costs: CostModel) -> Candidate:
    """Walk-forward fold metrics, then the final model on `train` with its threshold policy fitted on
    `validation` (net of costs)."""
    window = settings.keras_window
    development = data.development
    names = [str(c) for c in development.X.columns]
    dev_rows = development.X.to_numpy(dtype="float32")
    started = time.perf_counter()

    fold_metrics: list[dict[str, float]] = []
    fold_curves: list[list[float]] = []
    sign = ThresholdPolicy(long_above=0.0, short_below=0.0)
    for train_index, test_index in data.folds:
        model, history = _fit_model(dev_rows[train_index], development.direction[train_index], settings)
        fold_curves.append(history["loss"])
        # Test rows are classified from windows of the development frame ending at them (their
        # history may reach back into the purge gap and the training rows: features only, no labels).
        # One eager call per fold (a traced function per fold model would only be retraced).
        proba = np.full((len(test_index), 3), np.nan)
        has_window = test_index >= window - 1
        if has_window.any():
            windows = _windows_ending_at(dev_rows, test_index[has_window], window)
            proba[has_window] = _normalized(np.asarray(model(windows, training=False)))
        score = np.nan_to_num(proba[:, 2] - proba[:, 0], nan=0.0)
        test = development.take(test_index)
        fold_metrics.append(_evaluate(proba, test, costs, sign.positions(score)))

    # Final model on `train`; validation rows are scored from windows over the development frame
    # when they are found in it, else from the validation frame alone (first window-1 rows flat).
    validation = data.validation
    val_ends = _context_ends(development, validation)
    if val_ends is not None and val_ends[0] >= window - 1:
        val_windows = _windows_ending_at(dev_rows, val_ends, window)
        val_mask = np.ones(len(validation), dtype=bool)
    else:
        val_rows = validation.X[names].to_numpy(dtype="float32")
        val_mask = np.arange(len(validation)) >= window - 1
        val_windows = _windows_ending_at(val_rows, np.flatnonzero(val_mask), window)
    monitor = (val_windows, _class_index(validation.direction[val_mask])) if len(val_windows) else None
    train_rows = data.train.X[names].to_numpy(dtype="float32")
    model, history = _fit_model(train_rows, data.train.direction, settings, validation=monitor)

    wrapper = KerasSequencePolicy(names, window, np.inf, -np.inf, model)
    proba = np.full((len(validation), 3), np.nan)
    if len(val_windows):
        proba[val_mask] = _normalized(wrapper.forward(val_windows))  # as the pyfunc will serve it
    score = np.nan_to_num(proba[:, 2] - proba[:, 0], nan=0.0)
    policy = fit_threshold_policy(score, validation.next_return, costs)
    wrapper.long_above, wrapper.short_below = float(policy.long_above), float(policy.short_below)
    validation_metrics = _evaluate(proba, validation, costs, wrapper.positions_from_score(score))
    validation_metrics["flat_policy"] = float(not np.isfinite(policy.long_above))
    if np.isfinite(policy.long_above):
        validation_metrics["threshold"] = float(policy.long_above)
    validation_metrics["fit_seconds"] = time.perf_counter() - started

    artifact_dir = Path(tempfile.mkdtemp(prefix="cta-keras-"))
    model_path = artifact_dir / "model.keras"
    model.save(model_path)
    weakref.finalize(wrapper, shutil.rmtree, str(artifact_dir), ignore_errors=True)  # once the candidate is gone

    return Candidate(
        family=FAMILY,
        python_model=wrapper,
        params={
            "window": window,
            "units": UNITS,
            "epochs": settings.keras_epochs,
            "lr": LEARNING_RATE,
            "batch": BATCH_SIZE,
            "architecture": f"tcn(k={KERNEL_SIZE},d=1,2)+avgpool",
        },
        fold_metrics=fold_metrics,
        pip_requirements=list(PIP_REQUIREMENTS),
        history_rows=window,
        artifacts={ARTIFACT_KEY: str(model_path)},
        log_extras=lambda: log_learning_curve(history, fold_curves),
        validation_metrics=validation_metrics,
    )


def learning_curve_figure(history: dict[str, list[float]], fold_curves: list[list[float]]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(6, 4))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for k, curve in enumerate(fold_curves):
        axes.plot(range(1, len(curve) + 1), curve, color="grey", alpha=0.5, label="fold train loss" if k == 0 else None)
    for key, style in (("loss", "-"), ("val_loss", "--")):
        if key in history:
            axes.plot(range(1, len(history[key]) + 1), history[key], style, label=f"final {key}")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel("cross-entropy")
    axes.set_title("keras: learning curve")
    axes.legend()
    figure.tight_layout()
    return figure


def log_learning_curve(history: dict[str, list[float]], fold_curves: list[list[float]]) -> None:
    """Log the learning curve PNG into the active MLflow run."""
    mlflow.log_figure(learning_curve_figure(history, fold_curves), "plots/keras_learning_curve.png")
