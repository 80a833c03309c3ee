"""`pipeline_flow`: the whole pipeline as one Prefect flow of subflows:
ingest (with the candle validation gate) -> features (with the feature gate) -> train -> per market:
backtest -> gate -> promote. Bad data stops the flow before training; a failing candidate is
rejected by the gate without blocking the others. Returns the verdict rows."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from cta.config import Settings
from cta.errors import CTAError
from flows.evaluate import evaluate_training
from flows.features import features_flow
from flows.ingest import ingest_flow
from flows.train import train_flow


@flow(name="pipeline")
async def pipeline_flow(
    settings: Settings,
    symbols: list[str] | None = None,
    timeframes: list[str] | None = None,
    candidates: list[str] | None = None,
) -> dict[str, Any]:
    logger = get_run_logger()
    ingest = await ingest_flow(settings, symbols=symbols, timeframes=timeframes)
    features = features_flow(settings, symbols=symbols, timeframes=timeframes)
    training = train_flow(settings, symbols=symbols, timeframes=timeframes, candidates=candidates)
    verdicts = evaluate_training(settings, training)
    if not verdicts:
        raise CTAError("the pipeline produced no candidate to evaluate")
    champions = [row for row in verdicts if row["verdict"] == "champion"]
    logger.info("pipeline done: %d candidates, %d promoted", len(verdicts), len(champions))
    return {"ingest": ingest, "features": features, "training": training, "verdicts": verdicts}
