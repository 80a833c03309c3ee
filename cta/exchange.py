"""The exchange adapter: ccxt (async) behind a small interface, errors translated once, reads retried.

Retries live here and only here: a READ that fails with a temporary error (network, timeout, 5xx,
HTTP 429) is retried with jittered exponential backoff, honouring the venue's Retry-After. Anything
else (unknown symbol, bad key, bad request) is raised at once. Order submission is never retried here.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import ccxt

from cta.ccxt_factory import build_ccxt, venue_rate_limit_ms
from cta.config import DEFAULT_BURST_COST, ExchangeSettings, Secrets
from cta.errors import ExchangeError, TemporaryExchangeError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0

    def delay_s(self, attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
        """Backoff before retry number `attempt` (0-based): Retry-After if given, else jittered 2^n."""
        if retry_after_s is not None:
            return min(retry_after_s, self.backoff_max_s) + rng.uniform(0, self.backoff_base_s)
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2**attempt)
        return rng.uniform(ceiling / 2, ceiling)


class RequestSpacer:
    """A token bucket over the venue's request budget: it refills one cost unit per `ms_per_cost` milliseconds and
    holds at most `burst_cost` units.

    Why it exists: ccxt's async throttler waits a full cost interval after EVERY request when requests are
    sequential (its bucket only refills while it is waiting), so a backfill whose requests take longer than the
    interval still waited the whole interval each time (measured: 40 % of a backfill's time), and one order
    (balance, then order) waited ~400 ms of budget it had not used. Here a request whose cost is in the bucket goes at
    once; otherwise it waits only for the missing units. A reservation takes its units at once (the level goes
    negative while it waits), so concurrent callers queue in call order.

    The bound: requests started in any window of t milliseconds cost at most `burst_cost + t / ms_per_cost` units
    (a request costing more than the whole burst waits only for what the full bucket lacks, so it is a burst of its
    own size). Binance's per-minute limits are far above a burst of about a second of budget (`DEFAULT_BURST_COST`,
    setting `exchange.rate_limit_burst`).
    """

    def __init__(
        self,
        ms_per_cost: float,
        burst_cost: float = DEFAULT_BURST_COST,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        if ms_per_cost <= 0 or burst_cost < 0:
            raise ValueError(f"ms_per_cost must be > 0 and burst_cost >= 0, got {ms_per_cost}, {burst_cost}")
        self._seconds_per_cost = ms_per_cost / 1000
        self._burst = burst_cost
        self._now = now
        self._level = burst_cost  # units available; negative while reserved requests wait for their units
        self._stamp: float | None = None

    def reserve(self, cost: float) -> float:
        """Reserve `cost` units for a request; returns the seconds to wait before sending it."""
        now = self._now()
        if self._stamp is not None:
            refill = (now - self._stamp) / self._seconds_per_cost
            self._level = min(self._burst, self._level + refill)
        self._stamp = now
        self._level -= cost
        return max(0.0, -self._level * self._seconds_per_cost)


class SpacedRequestBudget:
    """The adapter's request budget: every request of the adapter's ccxt exchange waits in `acquire` (the exchange is
    built with it: `build_ccxt(budget=...)`), spaced by a RequestSpacer on the venue's budget (ccxt's rateLimit and
    per-endpoint costs). It counts the requests and the wall time during which at least one request was held back."""

    def __init__(self, spacer: RequestSpacer) -> None:
        self._spacer = spacer
        self.requests = 0
        self.wait_s = 0.0
        self._waiting = 0
        self._waiting_since = 0.0

    async def acquire(self, cost: float | None) -> None:
        self.requests += 1
        delay = self._spacer.reserve(1.0 if cost is None else float(cost))
        if delay <= 0:
            return
        self._waiting += 1
        if self._waiting == 1:
            self._waiting_since = time.perf_counter()
        try:
            await asyncio.sleep(delay)
        finally:
            self._waiting -= 1
            if self._waiting == 0:  # wall time during which at least one request was held back
                self.wait_s += time.perf_counter() - self._waiting_since


def translate_ccxt_error(error: Exception, headers: dict[str, Any] | None = None) -> Exception:
    """Map a ccxt exception to CTA's hierarchy (temporary → retryable, else operational)."""
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, ccxt.InvalidNonce):
        return ExchangeError(f"clock skew against the exchange ({text}); sync the system clock")
    if isinstance(error, ccxt.DDoSProtection | ccxt.RateLimitExceeded):
        return TemporaryExchangeError(f"rate limited ({text})", retry_after_s=_retry_after(headers))
    if isinstance(error, ccxt.OperationFailed):  # network, timeouts, 5xx, unparseable responses
        return TemporaryExchangeError(f"exchange unreachable or failing ({text})")
    if isinstance(error, ccxt.BadSymbol):
        return ExchangeError(f"unknown symbol ({text})")
    if isinstance(error, ccxt.AuthenticationError):
        return ExchangeError(f"authentication failed ({text})")
    if isinstance(error, ccxt.BaseError):
        return ExchangeError(text)
    return error


def _retry_after(headers: dict[str, Any] | None) -> float | None:
    if not headers:
        return None
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
    return None


def local_clock_ms() -> float:
    """This host's wall clock (what ccxt signs requests with)."""
    return time.time() * 1000


class ExchangeAdapter:
    """Async reads from one venue. Use as `async with ExchangeAdapter(...) as exchange:`."""

    def __init__(
        self,
        settings: ExchangeSettings,
        secrets: Secrets | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        seed: int | None = None,
    ) -> None:
        self.settings = settings
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._rng = random.Random(seed)
        secrets = secrets or Secrets()
        # ccxt's model of the venue's budget, scaled to our share: the exchange's rateLimit and the spacer's interval
        rate_limit_ms = venue_rate_limit_ms(settings.id, settings.rate_limit_share)
        spacer = RequestSpacer(ms_per_cost=rate_limit_ms, burst_cost=settings.rate_limit_burst)
        self._budget = SpacedRequestBudget(spacer)  # every request of self._ccxt waits here
        self._ccxt = build_ccxt(
            settings.id,
            api_url=settings.api_url,
            api_key=secrets.api_key.get_secret_value() if secrets.api_key else None,
            api_secret=secrets.api_secret.get_secret_value() if secrets.api_secret else None,
            rate_limit_ms=rate_limit_ms,
            timeout_ms=settings.timeout_ms,
            verbose=settings.verbose,
            budget=self._budget,
            sandbox=settings.sandbox,
        )
        self.retries = 0
        self.backoff_wait_s = 0.0
        self._markets_loaded = False

    @property
    def requests(self) -> int:
        """Requests sent to the venue (each waited for the request budget first)."""
        return self._budget.requests

    @property
    def throttle_wait_s(self) -> float:
        """Wall time during which at least one request was held back by the request budget."""
        return self._budget.wait_s

    async def __aenter__(self) -> ExchangeAdapter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._ccxt.close()

    @property
    def id(self) -> str:
        return str(self.settings.id)

    @property
    def client(self) -> Any:
        """The async ccxt exchange itself, for the calls that must never be retried (placing an order)."""
        return self._ccxt

    async def read(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run the read `call` under this adapter's retry policy (the one layer where reads are retried)."""
        return await self._read(what, call)

    async def _read(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            try:
                return await call()
            except ccxt.BaseError as raw:
                error = translate_ccxt_error(raw, getattr(self._ccxt, "last_response_headers", None))
                if not isinstance(error, TemporaryExchangeError) or attempt >= self.retry.max_retries:
                    raise error from raw
                delay = self.retry.delay_s(attempt, error.retry_after_s, self._rng)
                log.warning(
                    "%s on %s failed (%s); retry %d/%d in %.2fs",
                    what,
                    self.id,
                    error,
                    attempt + 1,
                    self.retry.max_retries,
                    delay,
                )
                self.retries += 1
                self.backoff_wait_s += delay
                await self._sleep(delay)
                attempt += 1

    async def load_markets(self) -> dict[str, Any]:
        if not self._markets_loaded:
            await self._read("load_markets", self._ccxt.load_markets)
            self._markets_loaded = True
        markets: dict[str, Any] = self._ccxt.markets
        return markets

    async def check_market(self, symbol: str, timeframe: str) -> None:
        """Raise ExchangeError unless the venue lists `symbol` as spot and supports `timeframe`."""
        markets = await self.load_markets()
        if symbol not in markets:
            raise ExchangeError(f"unknown symbol {symbol!r} on {self.id}")
        timeframes = self._ccxt.timeframes or {}
        if timeframes and timeframe not in timeframes:
            raise ExchangeError(f"timeframe {timeframe!r} not supported by {self.id} (has: {', '.join(timeframes)})")

    async def fetch_time(self) -> int:
        """Market "now" in epoch ms: the replay clock of the local exchange when configured, else the
        venue's clock (else the local clock where the venue has none)."""
        if self.settings.market_time == "replay":
            return await self._read("replay clock", self._replay_now)
        if self._ccxt.has.get("fetchTime"):
            return int(await self._read("fetch_time", self._ccxt.fetch_time))
        return int(self._ccxt.milliseconds())

    async def clock_offset_ms(self) -> float:
        """The venue's clock minus the local clock, in ms (the venue's time taken at the request's
        midpoint). Signed requests fail when this exceeds the venue's receive window."""
        before = local_clock_ms()
        venue = float(await self._read("fetch_time", self._ccxt.fetch_time))
        after = local_clock_ms()
        return venue - (before + after) / 2

    async def api_restrictions(self) -> dict[str, Any] | None:
        """What the API key may do, where the venue reports it, in Binance's terms (enableWithdrawals, ...):
        Binance's apiRestrictions as they are; Coinbase's key permissions (can_transfer: the key may move funds out)
        translated. None where the venue says nothing."""
        method = getattr(self._ccxt, "sapiGetAccountApiRestrictions", None)
        if method is not None:
            restrictions: dict[str, Any] = await self._read("api restrictions", method)
            return restrictions
        permissions = getattr(self._ccxt, "v3PrivateGetBrokerageKeyPermissions", None)
        if permissions is not None:
            found: dict[str, Any] = await self._read("key permissions", permissions)
            return {
                "enableWithdrawals": bool(found.get("can_transfer")),
                "enableSpotAndMarginTrading": bool(found.get("can_trade")),
                "enableReading": bool(found.get("can_view")),
            }
        return None

    async def check_credentials(self) -> None:
        """A signed read (the balance): raises ExchangeError if the venue rejects the key pair."""
        await self._read("fetch_balance", self._ccxt.fetch_balance)

    async def _replay_now(self) -> int:
        if not self.settings.api_url:
            raise ExchangeError("exchange.market_time='replay' needs exchange.api_url (the local exchange)")
        url = self.settings.api_url.rstrip("/") + "/_cta/clock"
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_ms / 1000)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
                if response.status == 404:  # a venue, a testnet or a proxy: not the local exchange
                    raise ExchangeError(
                        f"GET {url} answered 404: this server has no replay clock (only CTA's local exchange has "
                        "one); set exchange.market_time to 'venue' (CTA_EXCHANGE__MARKET_TIME=venue) to take "
                        "the time from the venue"
                    )
                response.raise_for_status()
                return int((await response.json())["now_ms"])
        except (aiohttp.ClientError, TimeoutError) as e:
            raise ccxt.NetworkError(f"replay clock at {url}: {e}") from e

    async def fetch_ohlcv(self, symbol: str, timeframe: str, since_ms: int, limit: int) -> list[list[Any]]:
        rows: list[list[Any]] = await self._read(
            f"fetch_ohlcv {symbol} {timeframe}",
            lambda: self._ccxt.fetch_ohlcv(symbol, timeframe, since=since_ms, limit=limit),
        )
        return rows
