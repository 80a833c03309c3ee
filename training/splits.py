"""Time-ordered splits (pure). Labels look `horizon` bars ahead, so a training row whose label
window reaches into a later block would leak it: every boundary is purged by the label horizon, and
an embargo may add more."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cta.errors import DataValidationError


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    validation: np.ndarray
    out_of_sample: np.ndarray  # reserved for the backtest gate: never used in training or tuning


def _gap(horizon: int, embargo: int) -> int:
    return horizon + embargo


def train_validation_oos(
    rows: int, validation_fraction: float, oos_fraction: float, horizon: int, embargo: int = 0
) -> Split:
    """[train | gap | validation | gap | out-of-sample], in time order."""
    gap = _gap(horizon, embargo)
    oos = round(rows * oos_fraction)
    validation = round(rows * validation_fraction)
    train_end = rows - oos - gap - validation - gap
    if train_end < 1 or validation < 1 or oos < 1:
        raise DataValidationError(
            f"{rows} rows are too few to split into train/validation/out-of-sample with a purge of {gap} bars"
        )
    index = np.arange(rows)
    validation_start = train_end + gap
    oos_start = validation_start + validation + gap
    return Split(index[:train_end], index[validation_start : validation_start + validation], index[oos_start:])


def walk_forward_folds(
    rows: int, folds: int, min_train: int, horizon: int, embargo: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Expanding-window folds: train on [0, start - gap), test on [start, start + size)."""
    gap = _gap(horizon, embargo)
    size = (rows - min_train - gap) // folds
    if size < 1:
        raise DataValidationError(
            f"{rows} rows are too few for {folds} walk-forward folds with {min_train} training rows "
            f"and a purge of {gap} bars"
        )
    out = []
    for k in range(folds):
        test_start = min_train + gap + k * size
        out.append((np.arange(test_start - gap), np.arange(test_start, test_start + size)))
    return out
