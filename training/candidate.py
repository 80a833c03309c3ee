"""What every candidate family returns, so training, logging and the flow treat all families alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from cta.config import TrainingSettings
from cta.costs import CostModel
from features.dataset import Dataset

Folds = list[tuple[np.ndarray, np.ndarray]]  # (train rows, test rows) of the development dataset


@dataclass(frozen=True)
class TrainingData:
    """One market's data as every family sees it. `development` is everything before the reserved
    out-of-sample block; `folds` index into it (walk-forward, purged); `train` and `validation` are
    its two purged blocks: the final model is fitted on `train`, its position policy (or early
    stopping) on `validation`. The out-of-sample block is not here: only the backtest gate sees it."""

    development: Dataset
    folds: Folds
    train: Dataset
    validation: Dataset


@dataclass
class Candidate:
    family: str
    python_model: Any  # an mlflow.pyfunc.PythonModel: predict(context, features DataFrame) -> positions
    params: dict[str, Any]
    fold_metrics: list[dict[str, float]]  # one dict per walk-forward fold
    pip_requirements: list[str]
    history_rows: int = 1  # rows of context one decision needs
    stateful: bool = False  # its position depends on its previous position (predict param "previous_position")
    artifacts: dict[str, str] | None = None  # files logged with the pyfunc (e.g. a Keras model)
    log_extras: Callable[[], None] | None = None  # extra MLflow logging (plots) inside the run
    validation_metrics: dict[str, float] = field(default_factory=dict)


class Family(Protocol):
    def __call__(self, data: TrainingData, settings: TrainingSettings, costs: CostModel) -> Candidate: ...
