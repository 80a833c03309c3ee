"""Live safety on Coinbase (issue 18, item 5): against the local exchange's Coinbase dialect, with CDP keys and
ES256 JWTs checked by the server, live trading refuses to start without keys, with a key the venue rejects, with a
key that can transfer funds (Advanced Trade's key permissions), or with the host's clock off the venue's."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import cta.exchange as exchange_module
from app.serve import live_exchange_problems, live_settings_problems
from cta.components import make_exchange
from cta.config import Settings, load_settings
from cta.exchange_server.coinbase_auth import CoinbaseKey, generate_key
from tests.conftest import CONFIG_DIR
from tests.integration.test_coinbase_dialect import KEY_NAME, coinbase_exchange

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cdp_key() -> tuple[CoinbaseKey, str]:
    return generate_key(KEY_NAME)


def live(url: str, pem: str | None) -> Settings:
    env = {"CTA_API_KEY": KEY_NAME, "CTA_API_SECRET": pem} if pem else {}
    overrides: dict[str, Any] = {
        "mode": "live",
        "exchange": {"id": "coinbase", "api_url": url, "market_time": "venue"},
        "serving": {"broker": "ccxt"},
    }
    return load_settings(env=env, config_dir=CONFIG_DIR, overrides=overrides)


async def exchange_problems(settings: Settings) -> list[str]:
    async with make_exchange(settings) as exchange:
        return await live_exchange_problems(settings, exchange)


def test_a_trade_only_key_on_a_synchronised_host_may_start(cdp_key: tuple[CoinbaseKey, str]) -> None:
    with coinbase_exchange(cdp_key[0]) as server:
        settings = live(server.url, cdp_key[1])
        assert live_settings_problems(settings) == []
        assert asyncio.run(exchange_problems(settings)) == []
        assert server.request_count("/api/v3/brokerage/key_permissions", "GET") == 1


def test_live_refuses_no_keys_a_rejected_key_a_key_that_can_transfer_and_clock_skew(
    cdp_key: tuple[CoinbaseKey, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with coinbase_exchange(cdp_key[0], withdrawals_enabled=True) as server:
        assert any("CTA_API_KEY" in p for p in live_settings_problems(live(server.url, None)))

        other_key = generate_key(KEY_NAME)[1]  # same name, another private key: the server's signature check fails
        rejected = asyncio.run(exchange_problems(live(server.url, other_key)))
        assert any("rejected the API key" in p for p in rejected), rejected

        problems = asyncio.run(exchange_problems(live(server.url, cdp_key[1])))
        assert problems == ["the API key may withdraw funds: use a trade-only key"]

        real_clock = exchange_module.local_clock_ms
        monkeypatch.setattr(exchange_module, "local_clock_ms", lambda: real_clock() + 5_000)  # host 5 s fast
        skewed = asyncio.run(exchange_problems(live(server.url, cdp_key[1])))
        assert any("clock is" in p and "ms off" in p for p in skewed), skewed
