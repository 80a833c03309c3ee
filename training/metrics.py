"""Evaluation metrics (pure)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, balanced_accuracy_score, log_loss, roc_auc_score

from cta.costs import CostModel

CLASSES = np.array([-1.0, 0.0, 1.0])


def classification_metrics(direction: np.ndarray, proba: np.ndarray, forward_return: np.ndarray) -> dict[str, float]:
    """`proba` has one column per class in CLASSES order. Score = P(up) - P(down)."""
    predicted = CLASSES[np.argmax(proba, axis=1)]
    score = proba[:, 2] - proba[:, 0]
    out = {
        "accuracy": float(accuracy_score(direction, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(direction, predicted)),
        "log_loss": float(log_loss(direction, np.clip(proba, 1e-12, 1), labels=CLASSES)),
        "ic": information_coefficient(score, forward_return),
    }
    present = np.unique(direction)
    if len(present) == len(CLASSES):
        out["auc"] = float(roc_auc_score(direction, proba, multi_class="ovr", labels=CLASSES))
    return out


def information_coefficient(score: np.ndarray, forward_return: np.ndarray) -> float:
    """Spearman rank correlation of the score with the forward return (0 for a constant score)."""
    if np.std(score) == 0 or np.std(forward_return) == 0:
        return 0.0
    return float(pd.Series(score).corr(pd.Series(forward_return), method="spearman"))


def position_metrics(positions: np.ndarray, next_return: np.ndarray, costs: CostModel) -> dict[str, float]:
    net = costs.net_returns(positions, next_return)
    return {
        "net_return": float(np.prod(1 + net) - 1),
        "exposure": float(np.mean(positions != 0)),
        "turnover": float(np.abs(np.diff(np.concatenate([[0.0], positions]))).sum()),
    }


def summarize_folds(fold_metrics: list[dict[str, float]]) -> dict[str, float]:
    """mean and std of every metric over the folds, named `<metric>_mean` / `<metric>_std`."""
    frame = pd.DataFrame(fold_metrics)
    out: dict[str, float] = {}
    for column in frame.columns:
        out[f"{column}_mean"] = float(frame[column].mean())
        out[f"{column}_std"] = float(frame[column].std(ddof=0))
    return out
