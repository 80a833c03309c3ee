"""`train_flow`: point-in-time datasets from Feast -> each configured candidate family as its own
Prefect task and MLflow run -> registered model versions. One candidate failing does not lose the
others' runs; the flow fails only if every candidate failed."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from cta.components import configured_markets, make_lake
from cta.config import Settings
from cta.errors import CTAError
from cta.registry import configure_mlflow
from features.feast_store import feature_store_for
from features.registry import registry_version, select
from flows.features import checked_feature_names
from training.candidate import TrainingData
from training.train import market_dataset, outcome_row, prepare, train_candidate


@task(cache_policy=NO_CACHE, task_run_name="train {name} {market_id}")
def train_candidate_task(
    name: str, market_id: str, data: TrainingData, settings: Settings, version: str
) -> dict[str, Any]:
    return outcome_row(train_candidate(name, data, settings, version))


@flow(name="train")
def train_flow(
    settings: Settings,
    symbols: list[str] | None = None,
    timeframes: list[str] | None = None,
    candidates: list[str] | None = None,
) -> list[dict[str, Any]]:
    logger = get_run_logger()
    names = checked_feature_names(settings.features)
    version = registry_version(select(names))
    uri = configure_mlflow(settings)
    store = feature_store_for(settings.features)
    lake = make_lake(settings)
    rows: list[dict[str, Any]] = []
    for market in configured_markets(settings, symbols, timeframes):
        dataset = market_dataset(settings, store, lake, market)
        data, out_of_sample = prepare(dataset, settings)
        logger.info(
            "%s: %d rows (train %d, validation %d, out-of-sample %d reserved)",
            market,
            len(dataset),
            len(data.train),
            len(data.validation),
            len(out_of_sample),
        )
        for name in candidates or list(settings.training.candidates):
            state = train_candidate_task(name, str(market), data, settings, version, return_state=True)
            if state.is_completed():
                rows.append({"market": str(market), **state.result()})
            else:
                message = str(state.message or "failed")
                logger.error("%s %s failed: %s", market, name, message)
                rows.append({"market": str(market), "family": name, "error": message})
    if rows and all("error" in row for row in rows):
        raise CTAError(f"every candidate failed: {rows}")
    logger.info("MLflow: %s (UI: mlflow ui --backend-store-uri %s)", uri, uri)
    return rows
