"""ccxt's verbose request dump (signed requests included) goes through logging, and the log file
never holds the API key, the secret or a signature, even at DEBUG."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from cta.config import ExchangeSettings, LoggingSettings, Secrets
from cta.exchange import ExchangeAdapter
from cta.exchange_server import LocalExchangeServer
from cta.logs import configure_logging
from tests.exchange_fixtures import EXCHANGE_API_KEY, EXCHANGE_API_SECRET

pytestmark = pytest.mark.integration


def test_verbose_ccxt_at_debug_leaks_no_secret(exchange_server: LocalExchangeServer, tmp_path: Path) -> None:
    secrets = Secrets.from_env({"CTA_API_KEY": EXCHANGE_API_KEY, "CTA_API_SECRET": EXCHANGE_API_SECRET})
    log_file = configure_logging(LoggingSettings(level="DEBUG"), tmp_path, secrets.values())
    settings = ExchangeSettings(api_url=exchange_server.url, verbose=True)

    async def signed_requests() -> None:
        async with ExchangeAdapter(settings, secrets) as exchange:
            await exchange.check_credentials()  # GET /api/v3/account, signed
            await exchange.api_restrictions()

    try:
        asyncio.run(signed_requests())
        for handler in logging.getLogger().handlers:
            handler.flush()
        text = log_file.read_text()
    finally:
        configure_logging(LoggingSettings(level="WARNING"), tmp_path / "after")
    assert "/api/v3/account" in text and "signature=***" in text  # the dump is there, redacted
    assert EXCHANGE_API_KEY not in text and EXCHANGE_API_SECRET not in text
