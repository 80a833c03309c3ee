"""Any Binance-compatible endpoint, not only CTA's own local exchange: `exchange.api_url` replaces the venue's host
(a testnet, a mirror, a recording proxy), and the market clock comes from the venue unless the local exchange's
replay clock is chosen, in which case a server without one is named with the setting to change.

The server here is independent of `cta.exchange_server`: a plain `http.server` that speaks the three public
endpoints ingestion needs (exchangeInfo, klines, time) with Binance's JSON shapes, over the bundled real candles.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest

from cta.ccxt_factory import build_ccxt, rewrite_api_urls
from cta.config import ConfigError, load_settings
from cta.lake import CandleLake, Market
from cta.storage import LocalStorage
from tests.conftest import CONFIG_DIR, REPO_ROOT, run_cta, subprocess_env

CANDLES = REPO_ROOT / "cta" / "data" / "candles" / "binance_BTCUSDT_1h.csv.gz"
FIRST_MS = 1_640_995_200_000  # 2022-01-01T00:00Z: the first candle this venue has
NOW_MS = 1_641_772_800_000 + 30 * 60_000  # 2022-01-10T00:30Z: the venue's clock (frozen)
HOUR_MS = 3_600_000

BTCUSDT = {
    "symbol": "BTCUSDT",
    "status": "TRADING",
    "baseAsset": "BTC",
    "baseAssetPrecision": 8,
    "quoteAsset": "USDT",
    "quotePrecision": 8,
    "quoteAssetPrecision": 8,
    "orderTypes": ["LIMIT", "MARKET"],
    "icebergAllowed": True,
    "ocoAllowed": True,
    "isSpotTradingAllowed": True,
    "isMarginTradingAllowed": False,
    "permissions": ["SPOT"],
    "permissionSets": [["SPOT"]],
    "filters": [
        {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000.00", "tickSize": "0.01"},
        {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000.00", "stepSize": "0.00001"},
        {"filterType": "NOTIONAL", "minNotional": "5.00", "maxNotional": "9000000.00"},
    ],
}


class VenueHandler(BaseHTTPRequestHandler):
    candles: ClassVar[list[list[Any]]] = []
    paths: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _json(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.paths.append(url.path)
        if url.path == "/api/v3/time":
            self._json(200, {"serverTime": NOW_MS})
        elif url.path == "/api/v3/exchangeInfo":
            self._json(200, {"timezone": "UTC", "serverTime": NOW_MS, "rateLimits": [], "symbols": [BTCUSDT]})
        elif url.path == "/api/v3/klines" and query.get("symbol") == "BTCUSDT" and query.get("interval") == "1h":
            start = int(query.get("startTime", FIRST_MS))
            end = int(query.get("endTime", NOW_MS))
            limit = min(int(query.get("limit", 500)), 1000)
            rows = [c for c in self.candles if start <= c[0] <= end and c[0] + HOUR_MS <= NOW_MS + HOUR_MS]
            self._json(200, rows[:limit])
        else:
            self._json(404, {"code": -1, "msg": f"no route {url.path}"})


@pytest.fixture
def venue() -> Iterator[tuple[str, list[str]]]:
    with gzip.open(CANDLES, "rt") as f:
        frame = pd.read_csv(f)
    frame = frame[(frame.timestamp >= FIRST_MS) & (frame.timestamp < NOW_MS)]
    VenueHandler.candles = [
        [int(r.timestamp), f"{r.open:.2f}", f"{r.high:.2f}", f"{r.low:.2f}", f"{r.close:.2f}", f"{r.volume:.6f}",
         int(r.timestamp) + HOUR_MS - 1, "0", 0, "0", "0", "0"]
        for r in frame.itertuples()
    ]  # fmt: skip
    VenueHandler.paths = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), VenueHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", VenueHandler.paths
    finally:
        server.shutdown()
        server.server_close()


def test_api_url_replaces_the_venues_host_and_keeps_its_path() -> None:
    urls = {"public": "https://api.binance.com/api/v3", "sapi": "https://api.binance.com/sapi/v1", "n": None}
    assert rewrite_api_urls(urls, "http://127.0.0.1:9") == {
        "public": "http://127.0.0.1:9/api/v3",
        "sapi": "http://127.0.0.1:9/sapi/v1",
        "n": None,
    }
    assert rewrite_api_urls("https://api.binance.com/api/v3", "https://mirror.example/binance/") == (
        "https://mirror.example/binance/api/v3"
    )


def test_sandbox_is_the_venues_testnet_and_a_venue_without_one_is_refused() -> None:
    assert build_ccxt("binance", sandbox=True).urls["api"]["public"] == "https://testnet.binance.vision/api/v3"
    settings = load_settings(env={}, config_dir=CONFIG_DIR, overrides={"exchange": {"sandbox": True}})
    assert settings.exchange.sandbox
    with pytest.raises(ConfigError, match=r"exchange\.sandbox.*coinbase"):
        load_settings(env={}, config_dir=CONFIG_DIR, overrides={"exchange": {"id": "coinbase", "sandbox": True}})


def test_ingest_from_an_independent_binance_compatible_server(venue: tuple[str, list[str]], tmp_path: Path) -> None:
    url, paths = venue
    env = subprocess_env(
        tmp_path,
        CTA_EXCHANGE__API_URL=url,
        CTA_EXCHANGE__MARKET_TIME="venue",
        CTA_INGEST__START="2022-01-01",
        CTA_MARKETS__SYMBOLS='["BTC/USDT"]',
    )
    run_cta("ingest", "--no-progress", env=env, cwd=tmp_path)
    assert paths and all(p.startswith("/api/v3/") for p in paths), sorted(set(paths))
    assert "/api/v3/time" in paths and "/_cta/clock" not in paths
    frame = CandleLake(LocalStorage(tmp_path / "lake")).read(Market("binance", "BTC/USDT", "1h"))
    # every candle closed by the venue's clock, from its first: 9 days of hours
    assert len(frame) == 9 * 24
    assert int(frame["ts"].iloc[0]) == FIRST_MS


def test_replay_clock_on_a_venue_without_one_names_the_setting(venue: tuple[str, list[str]], tmp_path: Path) -> None:
    import subprocess
    import sys

    url, paths = venue
    env = subprocess_env(tmp_path, CTA_EXCHANGE__API_URL=url, CTA_EXCHANGE__MARKET_TIME="replay")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "ingest", "-s", "BTC/USDT", "--no-progress"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode != 0
    assert "exchange.market_time" in result.stderr and f"{url}/_cta/clock" in result.stderr, result.stderr[-2000:]
    assert paths.count("/_cta/clock") == 1  # said once, not retried as "unreachable"
    assert time.monotonic() - started < 120
