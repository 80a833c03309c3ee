"""Fixtures for the local exchange server (loaded by conftest via pytest_plugins).

- `exchange_server`: a running LocalExchangeServer over the bundled real candles, port 0, frozen clock
  (speed 0) at EXCHANGE_START, credentials EXCHANGE_API_KEY / EXCHANGE_API_SECRET.
- `exchange_client`: a sync ccxt binance client against it (built by cta.ccxt_factory.build_ccxt).
- `running_exchange(**settings)`: context manager for a server with other settings.
- `sync_client(url, ...)` / `async_client(url, ...)`: ccxt clients for any server URL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from cta.ccxt_factory import build_ccxt
from cta.exchange_server import LocalExchangeServer, LocalExchangeSettings

EXCHANGE_START = "2022-06-01T00:00:00Z"
EXCHANGE_START_MS = 1_654_041_600_000
EXCHANGE_API_KEY = "test-key"
EXCHANGE_API_SECRET = "test-secret"


@contextlib.contextmanager
def running_exchange(
    api_key: str | None = EXCHANGE_API_KEY, api_secret: str | None = EXCHANGE_API_SECRET, **settings: Any
) -> Iterator[LocalExchangeServer]:
    """A started server; `settings` override the test defaults (port 0, speed 0, start EXCHANGE_START)."""
    values: dict[str, Any] = {"port": 0, "speed": 0.0, "start": EXCHANGE_START, **settings}
    server = LocalExchangeServer(LocalExchangeSettings(**values), api_key=api_key, api_secret=api_secret)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def sync_client(
    url: str,
    api_key: str | None = EXCHANGE_API_KEY,
    api_secret: str | None = EXCHANGE_API_SECRET,
    timeout_ms: int = 5_000,
    asynchronous: bool = False,
    **options: Any,
) -> Any:
    """A ccxt binance client pointed at `url` (client-side throttling ~off); sync unless `asynchronous`."""
    return build_ccxt(
        "binance",
        api_url=url,
        api_key=api_key,
        api_secret=api_secret,
        rate_limit_ms=1,
        timeout_ms=timeout_ms,
        asynchronous=asynchronous,
        extra_options=options or None,
    )


def async_client(url: str, **kwargs: Any) -> Any:
    """An asyncio ccxt binance client pointed at `url`; the caller must `await client.close()`."""
    return sync_client(url, asynchronous=True, **kwargs)


@pytest.fixture
def exchange_server() -> Iterator[LocalExchangeServer]:
    with running_exchange() as server:
        yield server


@pytest.fixture
def exchange_client(exchange_server: LocalExchangeServer) -> Any:
    return sync_client(exchange_server.url)
