"""The composition root: builds CTA's adapters from the one Settings object.

Only here (and in entry points) does configuration pick an implementation (local dir vs S3, ...).
"""

from __future__ import annotations

from cta.config import Settings
from cta.exchange import ExchangeAdapter, RetryPolicy
from cta.lake import CandleLake, Market
from cta.quarantine import Quarantine
from cta.storage import Storage, open_storage


def storage_for(settings: Settings, uri: str) -> Storage:
    return open_storage(uri, s3_endpoint_url=settings.lake.s3_endpoint_url, s3_region=settings.lake.s3_region)


def make_lake(settings: Settings) -> CandleLake:
    return CandleLake(storage_for(settings, settings.lake.uri))


def make_quarantine(settings: Settings) -> Quarantine:
    return Quarantine(storage_for(settings, settings.validation.quarantine_uri))


def make_exchange(settings: Settings) -> ExchangeAdapter:
    retry = RetryPolicy(
        max_retries=settings.ingest.max_retries,
        backoff_base_s=settings.ingest.backoff_base_s,
        backoff_max_s=settings.ingest.backoff_max_s,
    )
    return ExchangeAdapter(settings.exchange, settings.secrets, retry)


def configured_markets(
    settings: Settings, symbols: list[str] | None = None, timeframes: list[str] | None = None
) -> list[Market]:
    """The markets to work on: the config's, or the given subset (validated like the config)."""
    from pydantic import ValidationError

    from cta.config import MarketSettings
    from cta.errors import ConfigError

    try:
        chosen = MarketSettings(
            symbols=tuple(symbols or settings.markets.symbols),
            timeframes=tuple(timeframes or settings.markets.timeframes),
        )
    except ValidationError as e:
        error = e.errors()[0]
        raise ConfigError(f"markets.{error['loc'][0]}", error.get("input"), error["msg"]) from None
    return [Market(settings.exchange.id, s, t) for s in chosen.symbols for t in chosen.timeframes]
