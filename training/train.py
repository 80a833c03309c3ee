"""Training one market: split, walk-forward folds, fit each candidate family, log to MLflow with
lineage, register the model. Families are looked up by name (heavy libraries load only when used)."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np

from cta.config import Settings
from cta.errors import ConfigError
from cta.lake import CandleLake, Market
from features.dataset import Dataset, from_feature_store
from features.registry import select
from training.candidate import Candidate, Family, TrainingData
from training.metrics import summarize_folds
from training.splits import train_validation_oos, walk_forward_folds
from training.tracking import log_params, log_position_model, training_run

if TYPE_CHECKING:
    from features.feast_store import FeatureStoreAdapter

log = logging.getLogger(__name__)

FAMILIES: dict[str, str] = {
    "logistic": "training.models.sklearn_models:fit_logistic",
    "gbm": "training.models.sklearn_models:fit_gbm",
    "keras": "training.models.keras_seq:fit_keras",
    "ppo": "training.models.ppo:fit_ppo",
}


def family(name: str) -> Family:
    try:
        module, function = FAMILIES[name].split(":")
    except KeyError:
        raise ConfigError("training.candidates", name, f"unknown family; known: {', '.join(FAMILIES)}") from None
    fit: Family = getattr(importlib.import_module(module), function)
    return fit


def market_dataset(settings: Settings, store: FeatureStoreAdapter, lake: CandleLake, market: Market) -> Dataset:
    """The market's point-in-time dataset (features from Feast, labels from the lake): the same rows
    for training and, later, for the backtest of its out-of-sample block."""
    names = [spec.name for spec in select(settings.features.names)]
    return from_feature_store(
        store,
        lake,
        market,
        feature_names=names,
        horizon=settings.features.label_horizon,
        dead_zone_bps=settings.features.dead_zone_bps,
    )


def prepare(dataset: Dataset, settings: Settings) -> tuple[TrainingData, np.ndarray]:
    """Purged train / validation / out-of-sample blocks and walk-forward folds over the development
    part. Returns the training data and the out-of-sample rows (reserved for the backtest gate)."""
    training = settings.training
    split = train_validation_oos(
        len(dataset), training.validation_fraction, training.out_of_sample_fraction, dataset.horizon
    )
    development = dataset.take(np.arange(split.validation[-1] + 1))
    folds = walk_forward_folds(len(development), training.folds, training.min_train_rows, dataset.horizon)
    data = TrainingData(
        development=development, folds=folds, train=dataset.take(split.train), validation=dataset.take(split.validation)
    )
    return data, split.out_of_sample


@dataclass
class TrainingOutcome:
    family: str
    model_name: str
    version: str
    run_id: str
    metrics: dict[str, float]


def train_candidate(name: str, data: TrainingData, settings: Settings, registry_version: str) -> TrainingOutcome:
    """Fit one family and log it (params, fold metrics and their mean/std, validation metrics, plots,
    the pyfunc) in its own MLflow run; the run ends FAILED if anything raises."""
    fit = family(name)
    with training_run(settings, data.development, name, registry_version, params={"family": name}) as run:
        candidate: Candidate = fit(data, settings.training, settings.costs)
        log_params(settings, {k: v for k, v in candidate.params.items() if k != "family"})
        for step, metrics in enumerate(candidate.fold_metrics):
            mlflow.log_metrics({f"fold_{k}": v for k, v in metrics.items()}, step=step)
        summary = summarize_folds(candidate.fold_metrics)
        mlflow.log_metrics(summary)
        mlflow.log_metrics({f"validation_{k}": v for k, v in candidate.validation_metrics.items()})
        if candidate.log_extras is not None:
            candidate.log_extras()
        version = log_position_model(
            candidate.python_model,
            data.development,
            family=name,
            pip_requirements=candidate.pip_requirements,
            history_rows=candidate.history_rows,
            stateful=candidate.stateful,
            artifacts=candidate.artifacts,
        )
        return TrainingOutcome(
            name,
            version.name,
            str(version.version),
            run.info.run_id,
            summary | {f"validation_{k}": v for k, v in candidate.validation_metrics.items()},
        )


def outcome_row(outcome: TrainingOutcome) -> dict[str, Any]:
    keep = (
        "balanced_accuracy_mean",
        "auc_mean",
        "ic_mean",
        "net_return_mean",
        "episode_return_after_costs_mean",
        "validation_net_return",
    )
    return {
        "family": outcome.family,
        "model": outcome.model_name,
        "version": outcome.version,
        "run_id": outcome.run_id,
        **{k: outcome.metrics[k] for k in keep if k in outcome.metrics},
    }
