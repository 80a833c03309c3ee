"""scikit-learn candidates: a regularised multinomial logistic regression and a gradient-boosted
classifier, each a Pipeline (preprocessing inside), predicting the direction class; the score
P(up) - P(down) becomes a position through a threshold policy fitted on the validation block."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from cta.config import TrainingSettings
from cta.costs import CostModel
from features.dataset import Dataset
from training.candidate import Candidate, TrainingData
from training.contract import fit_threshold_policy
from training.metrics import classification_metrics, position_metrics

# Prediction cost grows with the number of trees (iterations x 3 classes): 60 iterations at a higher
# learning rate keep one decision well inside the 5 ms serving budget.
GBM_ITERATIONS = 60
GBM_LEARNING_RATE = 0.1


class SklearnPositionModel(PythonModel):
    """pyfunc: features -> positions. Needs only numpy, pandas and scikit-learn to load."""

    def __init__(self, pipeline: Pipeline, feature_names: list[str], long_above: float, short_below: float) -> None:
        self.pipeline = pipeline
        self.feature_names = feature_names
        self.long_above = long_above
        self.short_below = short_below

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        rows = frame[self.feature_names].to_numpy(dtype="float64")
        if len(rows) >= SMALL_BATCH_ROWS:
            proba = full_proba(self.pipeline, rows)
        elif (forest := self._forest()) is not None:  # a decision: the packed trees, bit for bit sklearn's
            scalers = self._scalers()
            proba = forest_proba(self.pipeline, forest, rows, scalers)
        elif (linear := self._linear()) is not None:  # a decision: the scaler and the linear model as numpy
            proba = linear(rows)
        else:
            proba = full_proba(self.pipeline, rows)
        return np.asarray(proba[:, 2] - proba[:, 0], dtype="float64")

    def _forest(self) -> PackedForest | None:
        """The gradient-boosted trees packed into flat arrays (built on first use, not pickled); None for a
        pipeline without them."""
        if not hasattr(self, "_packed"):
            self._packed = pack_forest(self.pipeline[-1])
        return self._packed

    def _scalers(self) -> PackedScalers | None:
        if not hasattr(self, "_packed_scalers"):
            self._packed_scalers = pack_scalers(self.pipeline)
        return self._packed_scalers

    def _linear(self) -> PackedLinear | None:
        if not hasattr(self, "_packed_linear"):
            self._packed_linear = pack_linear(self.pipeline)
        return self._packed_linear

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_packed")}

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        score = self.score(model_input)
        # ThresholdPolicy.positions, inlined: the wrapper is pickled by value and must not import `training`.
        positions = np.zeros(len(score), dtype="float64")
        positions[score > self.long_above] = 1.0
        positions[score < self.short_below] = -1.0
        if "vol_24" in model_input:  # a market that has not moved for a day pays costs for no edge: stay flat
            positions[model_input["vol_24"].to_numpy() == 0] = 0.0
        return positions


# Below this many rows the packed trees beat scikit-learn's predictor, which costs ~25 us per tree per call
# whatever the row count (180 trees: ~5 ms for one row; packed: ~0.2 ms).
SMALL_BATCH_ROWS = 1000


@dataclass(frozen=True)
class PackedForest:
    """A fitted HistGradientBoostingClassifier's trees as flat arrays, to walk every tree at once.

    Node arrays hold all trees' nodes back to back, children as global indices; a leaf is its own left and right
    child, so that walking `depth` steps from the roots ends on every tree's leaf. `roots` are in scikit-learn's
    order (iteration-major, then class), `per_iteration` trees per boosting iteration."""

    feature: np.ndarray  # intp: the column a split node tests (0 for leaves)
    threshold: np.ndarray  # float64: go left when value <= threshold
    nan_left: np.ndarray  # bool: where a missing value goes
    left: np.ndarray  # intp
    right: np.ndarray  # intp
    value: np.ndarray  # float64: leaf values
    roots: np.ndarray  # intp
    depth: int
    per_iteration: int
    baseline: np.ndarray  # (1, per_iteration) float64


def pack_forest(model: Any) -> PackedForest | None:
    """Pack a fitted HistGradientBoostingClassifier (numeric features only); None for any other estimator."""
    if not isinstance(model, HistGradientBoostingClassifier):
        return None
    trees = [predictor.nodes for iteration in model._predictors for predictor in iteration]
    if any(nodes["is_categorical"].any() for nodes in trees):
        return None
    offsets = np.cumsum([0] + [len(nodes) for nodes in trees])
    nodes = np.concatenate(trees)
    own = np.arange(len(nodes), dtype=np.intp)
    shift = np.repeat(offsets[:-1], [len(tree) for tree in trees]).astype(np.intp)
    leaf = nodes["is_leaf"].astype(bool)
    return PackedForest(
        feature=np.where(leaf, 0, nodes["feature_idx"]).astype(np.intp),
        threshold=nodes["num_threshold"].astype("float64"),
        nan_left=nodes["missing_go_to_left"].astype(bool),
        left=np.where(leaf, own, nodes["left"].astype(np.intp) + shift),
        right=np.where(leaf, own, nodes["right"].astype(np.intp) + shift),
        value=nodes["value"].astype("float64"),
        roots=offsets[:-1].astype(np.intp),
        depth=int(nodes["depth"].max()),
        per_iteration=int(model.n_trees_per_iteration_),
        baseline=np.asarray(model._baseline_prediction, dtype="float64").reshape(1, -1),
    )


def forest_raw(forest: PackedForest, rows: np.ndarray) -> np.ndarray:
    """The raw predictions scikit-learn's `_raw_predict` computes, bit for bit: the same comparisons per node
    (a missing value follows `nan_left`, else left when value <= threshold) and the leaf values added to the
    baseline one iteration after the other, in the same order."""
    at = np.broadcast_to(forest.roots, (len(rows), len(forest.roots)))
    row = np.arange(len(rows))[:, None]
    for _ in range(forest.depth):
        value = rows[row, forest.feature[at]]
        go_left = np.where(np.isnan(value), forest.nan_left[at], value <= forest.threshold[at])
        at = np.where(go_left, forest.left[at], forest.right[at])
    leaves = forest.value[at].reshape(len(rows), -1, forest.per_iteration)
    start = np.zeros((len(rows), 1, forest.per_iteration)) + forest.baseline[:, None, :]
    return np.cumsum(np.concatenate([start, leaves], axis=1), axis=1)[:, -1, :]  # cumsum adds in order


def forest_proba(
    pipeline: Pipeline, forest: PackedForest, features: np.ndarray, scalers: PackedScalers | None = None
) -> np.ndarray:
    """`full_proba` through the packed trees: the pipeline's transforms (`scalers`, their numpy form, when given),
    then the estimator's own link."""
    rows = features
    if scalers is not None:
        rows = scalers(rows)
    else:
        for _, step in pipeline.steps[:-1]:
            rows = step.transform(rows)
    model = pipeline[-1]
    return in_class_order(model._loss.predict_proba(forest_raw(forest, np.asarray(rows, dtype="float64"))), model)


@dataclass(frozen=True)
class PackedScalers:
    """A pipeline's StandardScaler steps as numpy: `(x - mean) / scale`, the same elementwise operations as
    `StandardScaler.transform` (so the same bits), without scikit-learn's per-call input validation, which costs
    more than the arithmetic for one row."""

    steps: tuple[tuple[np.ndarray | None, np.ndarray | None], ...]  # (mean or None, scale or None) per scaler

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        out = np.array(rows, dtype="float64")  # a copy, as the scaler's transform makes one
        for mean, scale in self.steps:
            if mean is not None:
                out -= mean
            if scale is not None:
                out /= scale
        return out


def pack_scalers(pipeline: Pipeline) -> PackedScalers | None:
    """The pipeline's transform steps when every one is a fitted StandardScaler (no step: identity); None
    otherwise."""
    steps = []
    for _, step in pipeline.steps[:-1]:
        if type(step) is not StandardScaler or not hasattr(step, "n_features_in_"):  # another transform, or unfitted
            return None
        steps.append((step.mean_ if step.with_mean else None, step.scale_ if step.with_std else None))
    return PackedScalers(tuple(steps))


@dataclass(frozen=True)
class PackedLinear:
    """A scaler + multinomial LogisticRegression pipeline as numpy: its scalers, `x @ coef.T + intercept` and the
    softmax as `sklearn.utils.extmath.softmax` computes it. `pack_linear` keeps it only when it gives the
    pipeline's own probabilities on a probe."""

    scalers: PackedScalers
    coef_t: np.ndarray  # (features, classes seen)
    intercept: np.ndarray
    classes_: np.ndarray  # named as the estimator's (`in_class_order` reads it)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        decision = self.scalers(features) @ self.coef_t + self.intercept
        decision -= decision.max(axis=1).reshape((-1, 1))
        np.exp(decision, out=decision)
        decision /= decision.sum(axis=1).reshape((-1, 1))
        return in_class_order(decision, self)


def pack_linear(pipeline: Pipeline) -> PackedLinear | None:
    """The numpy form of a scalers + multinomial LogisticRegression pipeline with 3 or more classes, checked
    against `full_proba` on a probe around the scaler's mean (to 1e-12); None for anything else."""
    model = pipeline[-1]
    if type(model) is not LogisticRegression or len(getattr(model, "classes_", ())) < 3:
        return None
    scalers = pack_scalers(pipeline)
    if scalers is None:
        return None
    packed = PackedLinear(scalers, np.ascontiguousarray(model.coef_.T), model.intercept_.copy(), model.classes_)
    width = model.coef_.shape[1]
    center = scalers.steps[0][0] if scalers.steps and scalers.steps[0][0] is not None else np.zeros(width)
    spread = scalers.steps[0][1] if scalers.steps and scalers.steps[0][1] is not None else np.ones(width)
    probe = center + spread * np.random.default_rng(0).normal(0.0, 2.0, size=(64, width))
    for rows in (probe, probe[:1]):
        if not np.allclose(packed(rows), full_proba(pipeline, rows), rtol=1e-12, atol=1e-15):
            return None
    return packed


def full_proba(pipeline: Pipeline, features: np.ndarray) -> np.ndarray:
    """Class probabilities in CLASSES order (-1, 0, +1), with zeros for a class the fit never saw.
    Pipelines are fitted and called on plain arrays in registry order (no per-call name checks)."""
    return in_class_order(pipeline.predict_proba(features), pipeline)


def in_class_order(proba: np.ndarray, fitted: Any) -> np.ndarray:
    """`fitted`'s probability columns (one per class it saw, in `fitted.classes_` order) as CLASSES columns
    (-1, 0, +1), zeros for a class it never saw."""
    out = np.zeros((len(proba), 3))
    for column, klass in enumerate(fitted.classes_):
        out[:, int(klass) + 1] = proba[:, column]
    return out


def logistic_pipeline(seed: int) -> Pipeline:
    return Pipeline(
        [("scale", StandardScaler()), ("model", LogisticRegression(C=0.05, max_iter=1000, random_state=seed))]
    )


def gbm_pipeline(seed: int) -> Pipeline:
    model = HistGradientBoostingClassifier(
        max_iter=GBM_ITERATIONS,
        learning_rate=GBM_LEARNING_RATE,
        max_leaf_nodes=15,
        l2_regularization=1.0,
        random_state=seed,
    )
    return Pipeline([("scale", StandardScaler()), ("model", model)])


def _fold_metrics(make: Any, data: TrainingData, costs: CostModel) -> list[dict[str, float]]:
    out = []
    for train_rows, test_rows in data.folds:
        train, test = data.development.take(train_rows), data.development.take(test_rows)
        pipeline = make().fit(train.X.to_numpy(), train.direction)
        proba = full_proba(pipeline, test.X.to_numpy())
        score = proba[:, 2] - proba[:, 0]
        metrics = classification_metrics(test.direction, proba, test.forward_return)
        metrics |= position_metrics(np.sign(score), test.next_return, costs)
        out.append(metrics)
    return out


def _fit(family: str, make: Any, params: dict[str, Any], data: TrainingData, costs: CostModel) -> Candidate:
    folds = _fold_metrics(make, data, costs)
    pipeline = make().fit(data.train.X.to_numpy(), data.train.direction)
    validation: Dataset = data.validation
    proba = full_proba(pipeline, validation.X.to_numpy())
    score = proba[:, 2] - proba[:, 0]
    policy = fit_threshold_policy(score, validation.next_return, costs)
    model = SklearnPositionModel(pipeline, list(data.train.X.columns), policy.long_above, policy.short_below)
    validation_metrics = classification_metrics(validation.direction, proba, validation.forward_return)
    validation_metrics |= position_metrics(model.predict(None, validation.X), validation.next_return, costs)
    return Candidate(
        family=family,
        python_model=model,
        params={**params, "long_above": policy.long_above, "short_below": policy.short_below},
        fold_metrics=folds,
        pip_requirements=["scikit-learn==1.9.1"],
        validation_metrics=validation_metrics,
        log_extras=lambda: _log_importance(pipeline, list(data.train.X.columns), validation),
    )


def _log_importance(pipeline: Pipeline, names: list[str], validation: Dataset) -> None:
    """Permutation importance on the validation block (balanced accuracy), as a bar chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.inspection import permutation_importance

    result = permutation_importance(
        pipeline,
        validation.X.to_numpy(),
        validation.direction,
        n_repeats=3,
        random_state=0,
        scoring="balanced_accuracy",
    )
    order = np.argsort(result.importances_mean)
    figure, axis = plt.subplots(figsize=(6, 7))
    axis.barh(np.array(names)[order], result.importances_mean[order])
    axis.set_title("permutation importance (validation, balanced accuracy)")
    figure.tight_layout()
    mlflow.log_figure(figure, "feature_importance.png")
    plt.close(figure)


def fit_logistic(data: TrainingData, settings: TrainingSettings, costs: CostModel) -> Candidate:
    return _fit(
        "logistic", lambda: logistic_pipeline(settings.seed), {"model": "LogisticRegression", "C": 0.05}, data, costs
    )


def fit_gbm(data: TrainingData, settings: TrainingSettings, costs: CostModel) -> Candidate:
    return _fit(
        "gbm",
        lambda: gbm_pipeline(settings.seed),
        {
            "model": "HistGradientBoostingClassifier",
            "max_iter": GBM_ITERATIONS,
            "learning_rate": GBM_LEARNING_RATE,
            "max_leaf_nodes": 15,
        },
        data,
        costs,
    )
