"""A local Binance-compatible spot exchange that replays real candles (demo, tests, reliability drills), also
speaking the Coinbase Advanced Trade dialect ccxt's `coinbase` uses, over the same state (`coinbase.py`).

Start one with `LocalExchangeServer(LocalExchangeSettings(port=0), key, secret).start()` (returns its URL)
or, in the foreground, `serve_forever(settings, key, secret)` (the `cta exchange serve` command).

The server itself (aiohttp, pandas) is imported on first use, so that importing the settings, as every `cta`
command does, stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cta.exchange_server.faults import FaultKind
from cta.exchange_server.settings import FaultSettings, LocalExchangeSettings

if TYPE_CHECKING:
    from cta.exchange_server.runner import LocalExchangeServer, serve_forever

__all__ = ["FaultKind", "FaultSettings", "LocalExchangeServer", "LocalExchangeSettings", "serve_forever"]


def __getattr__(name: str) -> Any:
    if name in ("LocalExchangeServer", "serve_forever"):
        from cta.exchange_server import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
