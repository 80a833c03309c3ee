"""Build a ccxt exchange object from plain settings: the one place ccxt objects are constructed."""

from __future__ import annotations

import functools
import logging
import re
from typing import Any, Protocol

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
    """Replace the scheme and host of every API URL of a ccxt exchange with `base_url`, keeping the path.

    'https://api.binance.com/api/v3' -> 'http://127.0.0.1:8765/api/v3' (and with a base that has a path,
    'https://proxy.example/binance' -> 'https://proxy.example/binance/api/v3'). So any server that speaks the
    venue's API at its own address can stand in for the venue: a testnet, a mirror, a recording proxy, the
    local exchange. (Only the spot endpoints are used; Binance's futures hosts share paths such as
    /futures/data, which one base URL cannot tell apart.)
    """
    base = base_url.rstrip("/")
    if isinstance(urls, dict):
        return {k: rewrite_api_urls(v, base_url) for k, v in urls.items()}
    if isinstance(urls, str):
        return re.sub(r"^https?://[^/]+", lambda _: base, urls)
    return urls


class SandboxUnavailable(ValueError):
    """The venue has no sandbox (testnet) URLs in ccxt."""


_verbose_log = logging.getLogger("ccxt.verbose")


class RequestBudget(Protocol):
    """What every request of a budgeted async ccxt exchange waits for, instead of ccxt's own throttler."""

    async def acquire(self, cost: float | None) -> None:
        """Return when a request costing `cost` units of the venue's budget (None: 1) may be sent."""
        ...


class _LoggedVerbose:
    """Mixin before a ccxt exchange class: ccxt prints its verbose output through `log`; this sends it through
    logging instead (and so through the log redaction)."""

    def log(self, *args: Any) -> None:
        _verbose_log.debug(" ".join(str(arg) for arg in args))


class _Budgeted(_LoggedVerbose):
    """Mixin before an async ccxt exchange class: ccxt's `fetch2` awaits `self.throttle(cost)` before every request
    (with the request's cost in units of `rateLimit`); this awaits the budget the exchange was built with."""

    def __init__(self, config: dict[str, Any], budget: RequestBudget) -> None:
        self._request_budget = budget
        super().__init__(config)  # type: ignore[call-arg]  # the next class in the MRO is the ccxt exchange

    async def throttle(self, cost: float | None = None) -> None:
        await self._request_budget.acquire(cost)


@functools.cache
def _exchange_class(ccxt_class: type, budgeted: bool) -> type:
    """ccxt's exchange class with CTA's mixin in front (one class per ccxt class and mixin, built once)."""
    mixin = _Budgeted if budgeted else _LoggedVerbose
    return type(ccxt_class.__name__, (mixin, ccxt_class), {"__module__": __name__})


def venue_rate_limit_ms(exchange_id: str, rate_limit_share: float = 1.0) -> float:
    """ccxt's model of the venue's request budget (its `rateLimit`: ms per cost unit), scaled to a share of the
    budget (0.9 = use 90 % of it: 1 / 0.9 of the interval)."""
    return float(getattr(ccxt, exchange_id)().rateLimit) / rate_limit_share


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
    budget: RequestBudget | None = None,
    sandbox: bool = False,
) -> Any:
    """A configured ccxt exchange (async by default). Raises AttributeError for an unknown id.

    `rate_limit_share` scales ccxt's own model of the venue's request budget (0.9 = use 90 % of it);
    `rate_limit_ms` sets ccxt's rateLimit directly instead. With a `budget` (async only), every request waits for
    `budget.acquire(cost)` instead of ccxt's throttler (the cost in units of the exchange's `rateLimit`).
    Verbose output (`verbose`) goes to the logger `ccxt.verbose` at DEBUG. `sandbox` switches to the venue's
    testnet URLs (ccxt's sandbox mode; SandboxUnavailable where ccxt has none); `api_url` then replaces their host.
    """
    if budget is not None and not asynchronous:
        raise ValueError("a request budget replaces the throttler of an async ccxt exchange only")
    module = ccxt_async if asynchronous else ccxt
    exchange_class = _exchange_class(getattr(module, exchange_id), budget is not None)
    if rate_limit_share is not None:
        rate_limit_ms = venue_rate_limit_ms(exchange_id, rate_limit_share)
    config: dict[str, Any] = {
        "enableRateLimit": True,
        "timeout": timeout_ms,
        "verbose": verbose,
        "options": {**SPOT_ONLY_OPTIONS, **(extra_options or {})},
    }
    if rate_limit_ms is not None:
        config["rateLimit"] = rate_limit_ms
    if api_key:
        config["apiKey"] = api_key
    if api_secret:
        config["secret"] = api_secret
    exchange = exchange_class(config) if budget is None else exchange_class(config, budget)
    if sandbox:
        if not exchange.urls.get("test"):
            raise SandboxUnavailable(
                f"ccxt has no sandbox (testnet) URLs for {exchange_id}: set exchange.sandbox=false"
            )
        exchange.set_sandbox_mode(True)
    if api_url:
        exchange.urls["api"] = rewrite_api_urls(exchange.urls["api"], api_url)
    return exchange
