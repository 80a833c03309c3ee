"""`learn_flow`: one market's scheduled learning loop, as one Prefect flow of subflows: features (rebuilt only
if the market's candles changed) -> train -> backtest -> gate -> promote. Served as one deployment per market
on `prefect.learn_cron` (and run on demand from the Prefect UI or `prefect deployment run`), with a
concurrency limit of one, so two promotions of one market never overlap (the registry lock guards the alias
too). Ingestion runs on its own schedule; the trading worker picks up a new champion by itself."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from cta.config import Settings
from cta.errors import CTAError
from cta.lake import Market
from flows.evaluate import evaluate_training
from flows.features import features_flow
from flows.train import train_flow


@flow(name="learn", flow_run_name="learn {market_id}")
def learn_flow(settings: Settings, market_id: str, candidates: list[str] | None = None) -> list[dict[str, Any]]:
    """Rebuild features, train the candidates, backtest, gate and promote for one market; the verdict rows."""
    market = Market.parse(market_id)
    only = {"symbols": [market.symbol], "timeframes": [market.timeframe]}
    features_flow(settings, **only)
    training = train_flow(settings, **only, candidates=candidates)
    verdicts = evaluate_training(settings, training)
    if not verdicts:
        raise CTAError(f"{market}: the learning loop produced no candidate to evaluate")
    champions = [row for row in verdicts if row["verdict"] == "champion"]
    get_run_logger().info("%s: %d candidates, %d promoted", market, len(verdicts), len(champions))
    return verdicts
