"""Build a ccxt exchange object from plain settings: the one place ccxt objects are constructed."""

from __future__ import annotations

import logging
import re
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async

# Options that keep ccxt from making signed calls the system does not need (Binance-specific keys are
# ignored by other venues), and restrict market loading to spot.
SPOT_ONLY_OPTIONS: dict[str, Any] = {
    "defaultType": "spot",
    "fetchMarkets": {"types": ["spot"]},
    "fetchCurrencies": False,
    "fetchMargins": False,
}


def rewrite_api_urls(urls: Any, base_url: str) -> Any:
    """Point every API URL of a ccxt exchange at `base_url`, keeping the original host as a path.

    'https://api.binance.com/api/v3' -> 'http://127.0.0.1:8765/api.binance.com/api/v3'.
    The local exchange server accepts both that form and the plain '/api/v3/...' form.
    """
    base = base_url.rstrip("/") + "/"
    if isinstance(urls, dict):
        return {k: rewrite_api_urls(v, base_url) for k, v in urls.items()}
    if isinstance(urls, str):
        return re.sub(r"^https?://", base, urls)
    return urls


_verbose_log = logging.getLogger("ccxt.verbose")


def _log_verbose(*args: Any) -> None:
    _verbose_log.debug(" ".join(str(arg) for arg in args))


def build_ccxt(
    exchange_id: str,
    *,
    api_url: str | None = None,
    api_key: str | None = None,
    api_secret: str | None = None,
    rate_limit_ms: float | None = None,
    rate_limit_share: float | None = None,
    timeout_ms: int = 10_000,
    asynchronous: bool = True,
    extra_options: dict[str, Any] | None = None,
    verbose: bool = False,
) -> Any:
    """A configured ccxt exchange (async by default). Raises AttributeError for an unknown id.

    `rate_limit_share` scales ccxt's own model of the venue's request budget (0.9 = use 90 % of it);
    `rate_limit_ms` sets ccxt's rateLimit directly instead.
    """
    module = ccxt_async if asynchronous else ccxt
    exchange_class = getattr(module, exchange_id)
    if rate_limit_share is not None:
        venue_rate_limit_ms = float(getattr(ccxt, exchange_id)().rateLimit)
        rate_limit_ms = venue_rate_limit_ms / rate_limit_share
    config: dict[str, Any] = {
        "enableRateLimit": True,
        "timeout": timeout_ms,
        "options": {**SPOT_ONLY_OPTIONS, **(extra_options or {})},
    }
    if rate_limit_ms is not None:
        config["rateLimit"] = rate_limit_ms
    if api_key:
        config["apiKey"] = api_key
    if api_secret:
        config["secret"] = api_secret
    exchange = exchange_class(config)
    exchange.log = _log_verbose  # ccxt prints verbose output; send it through logging (and its redaction)
    exchange.verbose = verbose
    if api_url:
        exchange.urls["api"] = rewrite_api_urls(exchange.urls["api"], api_url)
    return exchange
