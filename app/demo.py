"""The demo's composition root: the local exchange started for the demo unless one already answers."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from urllib.parse import urlparse

from cta.config import Settings
from cta.errors import CTAError


@contextlib.contextmanager
def local_exchange_for(settings: Settings, say: Callable[[str], None]) -> Iterator[None]:
    """Start the local exchange for the demo unless one already answers at exchange.api_url."""
    url = settings.exchange.api_url
    parsed = urlparse(url or "")
    if not url or parsed.hostname not in ("127.0.0.1", "localhost"):
        raise CTAError("the demo runs against the local exchange: set exchange.api_url to http://127.0.0.1:PORT")
    port = parsed.port or 80
    if _listening(parsed.hostname or "127.0.0.1", port):
        say(f"using the exchange already listening at {url}")
        yield
        return
    from cta.exchange_server.runner import LocalExchangeServer

    secrets = settings.secrets
    server = LocalExchangeServer(
        settings.local_exchange.model_copy(update={"port": port}),
        api_key=secrets.api_key.get_secret_value() if secrets.api_key else None,
        api_secret=secrets.api_secret.get_secret_value() if secrets.api_secret else None,
    )
    say(f"local exchange replaying real Binance candles at {server.start()}")
    try:
        yield
    finally:
        server.stop()


def _listening(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0
