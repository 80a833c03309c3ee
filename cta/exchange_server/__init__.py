"""A local Binance-compatible spot exchange that replays real candles (demo, tests, reliability drills).

Start one with `LocalExchangeServer(LocalExchangeSettings(port=0), key, secret).start()` (returns its URL)
or, in the foreground, `serve_forever(settings, key, secret)` (the `cta exchange serve` command).
"""

from cta.exchange_server.faults import FaultKind
from cta.exchange_server.runner import LocalExchangeServer, serve_forever
from cta.exchange_server.settings import FaultSettings, LocalExchangeSettings

__all__ = ["FaultKind", "FaultSettings", "LocalExchangeServer", "LocalExchangeSettings", "serve_forever"]
