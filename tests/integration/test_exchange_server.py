"""The local exchange over real HTTP with real ccxt (sync and async): no patching of either side."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import ccxt
import pandas as pd
import pytest

from cta.ccxt_factory import rewrite_api_urls
from cta.exchange_server import LocalExchangeServer
from cta.exchange_server.settings import BUNDLED_CANDLES_DIR
from tests.exchange_fixtures import (
    EXCHANGE_START_MS,
    async_client,
    running_exchange,
    sync_client,
)

pytestmark = pytest.mark.integration

H = 3_600_000
# 2022-06-01T00:00:00Z; the BTC/USDT 1h candle opening then: o 31801.05, l 31688.01, v 2237.33599
T0 = EXCHANGE_START_MS


def csv_candles(market: str = "BTCUSDT", timeframe: str = "1h") -> pd.DataFrame:
    return pd.read_csv(BUNDLED_CANDLES_DIR / f"binance_{market}_{timeframe}.csv.gz")


def admin(url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method="GET" if body is None else "POST")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


# ----- market data ---------------------------------------------------------------------------------


def test_load_markets_spot_only(exchange_client: Any) -> None:
    markets = exchange_client.load_markets()
    assert sorted(markets) == ["BTC/USDT", "ETH/USDT"]
    btc = markets["BTC/USDT"]
    assert (btc["id"], btc["type"], btc["spot"], btc["active"]) == ("BTCUSDT", "spot", True, True)
    assert btc["precision"]["price"] == 0.01 and btc["precision"]["amount"] == 0.00001
    assert btc["limits"]["cost"]["min"] == 5


def test_plain_ccxt_with_default_options_also_loads(exchange_server: LocalExchangeServer) -> None:
    """Without the spot-only options ccxt also asks fapi/dapi and signed sapi endpoints; all answer."""
    client = ccxt.binance({"apiKey": "test-key", "secret": "test-secret"})
    client.urls["api"] = rewrite_api_urls(client.urls["api"], exchange_server.url)
    assert sorted(client.load_markets()) == ["BTC/USDT", "ETH/USDT"]
    assert exchange_server.request_count("/fapi/v1/exchangeInfo") == 1
    assert exchange_server.request_count("/sapi/v1/capital/config/getall") == 1


def test_fetch_time_is_the_wall_clock(exchange_client: Any) -> None:
    before = int(time.time() * 1000)
    server_time = exchange_client.fetch_time()
    assert before - 5 <= server_time <= int(time.time() * 1000) + 5


def test_fetch_ohlcv_serves_only_closed_candles_with_csv_values(exchange_client: Any) -> None:
    rows = exchange_client.fetch_ohlcv("BTC/USDT", "1h", limit=5)
    assert [r[0] for r in rows] == [T0 - 5 * H + i * H for i in range(5)]  # the candle opening at T0 is not closed
    csv = csv_candles().set_index("timestamp")
    for ts, o, h, low, c, v in rows:
        assert [o, h, low, c, v] == csv.loc[ts, ["open", "high", "low", "close", "volume"]].tolist()
    eth = exchange_client.fetch_ohlcv("ETH/USDT", "1h", limit=1)
    assert eth[0][0] == T0 - H
    assert exchange_client.fetch_ohlcv("BTC/USDT", "1m", limit=10) == []  # the 1m slice is from 2024


def test_fetch_ohlcv_pagination_and_limit_1000(exchange_client: Any) -> None:
    csv = csv_candles()
    since = 1_640_995_200_000  # 2022-01-01
    first = exchange_client.fetch_ohlcv("BTC/USDT", "1h", since=since, limit=1000)
    second = exchange_client.fetch_ohlcv("BTC/USDT", "1h", since=first[-1][0] + 1, limit=1000)
    assert len(first) == 1000 and first[0][0] == since
    expected = csv[(csv.timestamp >= since) & (csv.timestamp < T0)]
    got = [r[0] for r in first + second]
    assert got == expected.timestamp.tolist()[: len(got)]
    assert len(set(got)) == len(got) and second[0][0] > first[-1][0]
    # the newest page stops at the replay clock
    last = exchange_client.fetch_ohlcv("BTC/USDT", "1h", since=T0 - 3 * H, limit=1000)
    assert [r[0] for r in last] == [T0 - 3 * H, T0 - 2 * H, T0 - H]
    assert len(exchange_client.fetch_ohlcv("BTC/USDT", "1h", limit=1000)) == 1000
    raw = exchange_client.publicGetKlines({"symbol": "BTCUSDT", "interval": "1h", "limit": 2})
    assert len(raw[0]) == 12 and raw[0][6] == raw[0][0] + H - 1 and isinstance(raw[0][1], str)


def test_ticker_price_and_exchange_info_filter(exchange_client: Any) -> None:
    assert exchange_client.publicGetTickerPrice({"symbol": "BTCUSDT"}) == {
        "symbol": "BTCUSDT",
        "price": "31801.05000000",
    }
    assert len(exchange_client.publicGetTickerPrice()) == 2
    info = exchange_client.publicGetExchangeInfo({"symbol": "ETHUSDT"})
    assert [s["symbol"] for s in info["symbols"]] == ["ETHUSDT"]
    assert info["rateLimits"][0] == {
        "rateLimitType": "REQUEST_WEIGHT",
        "interval": "MINUTE",
        "intervalNum": 1,
        "limit": 6000,
    }


def test_moving_the_clock_reveals_new_candles(exchange_server: LocalExchangeServer, exchange_client: Any) -> None:
    assert exchange_client.fetch_ohlcv("BTC/USDT", "1h", limit=1)[0][0] == T0 - H
    exchange_server.clock.set(T0 + 2 * H)
    assert exchange_client.fetch_ohlcv("BTC/USDT", "1h", limit=1)[0][0] == T0 + H
    state = admin(exchange_server.url, "/_cta/clock", {"advance_ms": H + 30 * 60_000})
    assert state["now_ms"] == T0 + 3 * H + 30 * 60_000 and state["speed"] == 0
    assert exchange_client.fetch_ohlcv("BTC/USDT", "1h", limit=1)[0][0] == T0 + 2 * H
    admin(exchange_server.url, "/_cta/clock", {"now": "2024-08-01T00:05:00Z"})
    minutes = exchange_client.fetch_ohlcv("BTC/USDT", "1m", limit=10)
    assert [r[0] for r in minutes] == [1_722_470_400_000 + i * 60_000 for i in range(5)]


def test_speed_makes_replay_time_run(exchange_server: LocalExchangeServer) -> None:
    admin(exchange_server.url, "/_cta/clock", {"now_ms": T0, "speed": 3600.0})
    time.sleep(0.05)
    assert admin(exchange_server.url, "/_cta/clock")["now_ms"] >= T0 + 150_000


# ----- account and orders --------------------------------------------------------------------------


def test_market_buy_then_sell_moves_balances_and_charges_fees(exchange_client: Any) -> None:
    balance = exchange_client.fetch_balance()
    assert balance["USDT"] == {"free": 10000.0, "used": 0.0, "total": 10000.0}
    bought = exchange_client.create_order("BTC/USDT", "market", "buy", 0.1)
    assert bought["status"] == "closed" and bought["average"] == 31801.05  # open of the current candle
    assert bought["fee"] == {"currency": "BTC", "cost": 0.0001}
    balance = exchange_client.fetch_balance()
    assert balance["BTC"]["free"] == pytest.approx(0.0999)
    assert balance["USDT"]["free"] == pytest.approx(10000 - 3180.105)
    sold = exchange_client.create_order("BTC/USDT", "market", "sell", 0.0999)
    assert sold["fee"]["currency"] == "USDT"
    assert sold["fee"]["cost"] == pytest.approx(0.0999 * 31801.05 * 0.001, abs=1e-8)
    balance = exchange_client.fetch_balance()
    assert balance["BTC"]["total"] == 0
    assert balance["USDT"]["free"] == pytest.approx(10000 - 3180.105 + 0.0999 * 31801.05 * 0.999, abs=1e-6)
    trades = exchange_client.fetch_my_trades("BTC/USDT")
    assert [t["side"] for t in trades] == ["buy", "sell"]
    assert int(trades[1]["id"]) > int(trades[0]["id"])
    assert all(t["takerOrMaker"] == "taker" for t in trades)


def test_limit_order_rests_then_fills_partially_then_fully() -> None:
    # participation 0.00005 of candle volume: T0 candle (low 31688.01, v 2237.33599) fills 0.11186,
    # T0+1h and T0+2h stay above 31700, T0+3h (low 31614.01, v 1937.06614) fills 0.09685,
    # T0+4h (low 31371.45) fills the remaining 0.04129.
    with running_exchange(fill_participation=0.00005) as server:
        client = sync_client(server.url)
        order = client.create_order("BTC/USDT", "limit", "buy", 0.25, 31700, params={"clientOrderId": "rest-1"})
        assert order["status"] == "open" and order["filled"] == 0
        assert client.fetch_balance()["USDT"] == {"free": 2075.0, "used": 7925.0, "total": 10000.0}
        assert [o["id"] for o in client.fetch_open_orders("BTC/USDT")] == [order["id"]]
        steps = [
            (H, 0.11186, "open"),
            (3 * H, 0.11186, "open"),
            (4 * H, 0.20871, "open"),
            (5 * H, 0.25, "closed"),
        ]
        for offset, filled, status in steps:
            server.clock.set(T0 + offset)
            seen = client.fetch_order(order["id"], "BTC/USDT")
            assert (seen["filled"], seen["status"]) == (pytest.approx(filled), status), offset
        assert client.fetch_order(None, "BTC/USDT", {"clientOrderId": "rest-1"})["id"] == order["id"]
        assert client.fetch_open_orders("BTC/USDT") == []
        balance = client.fetch_balance()
        assert balance["BTC"]["free"] == pytest.approx(0.25 * 0.999)
        assert balance["USDT"] == {"free": 2075.0, "used": 0.0, "total": 2075.0}
        fills = client.fetch_my_trades("BTC/USDT")
        assert [t["amount"] for t in fills] == pytest.approx([0.11186, 0.09685, 0.04129])
        assert {t["takerOrMaker"] for t in fills} == {"maker"} and {t["price"] for t in fills} == {31700.0}
        assert client.fetch_my_trades("BTC/USDT", since=T0 + 2 * H)[0]["id"] == fills[1]["id"]


def test_fetch_and_cancel_orders(exchange_client: Any) -> None:
    resting = exchange_client.create_order("ETH/USDT", "limit", "buy", 1, 1500, params={"clientOrderId": "eth-bid"})
    by_id = exchange_client.fetch_order(resting["id"], "ETH/USDT")
    by_client_id = exchange_client.fetch_order(None, "ETH/USDT", {"clientOrderId": "eth-bid"})
    assert by_id["id"] == by_client_id["id"] == resting["id"]
    assert by_id["clientOrderId"] == "eth-bid" and by_id["price"] == 1500
    exchange_client.options["fetchOpenOrders"]["warnWithoutSymbol"] = False  # weight 80 instead of 6
    assert len(exchange_client.fetch_open_orders()) == 1
    with pytest.raises(ccxt.OrderNotFound):
        exchange_client.fetch_order("424242", "ETH/USDT")
    canceled = exchange_client.cancel_order(resting["id"], "ETH/USDT")
    assert canceled["status"] == "canceled"
    assert exchange_client.fetch_open_orders("ETH/USDT") == []
    assert exchange_client.fetch_balance()["USDT"]["free"] == 10000
    with pytest.raises(ccxt.OrderNotFound):
        exchange_client.cancel_order(resting["id"], "ETH/USDT")


def test_order_rejections_map_to_ccxt_exceptions(exchange_client: Any) -> None:
    exchange_client.create_order("BTC/USDT", "market", "buy", 0.001, params={"clientOrderId": "once"})
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        exchange_client.create_order("BTC/USDT", "market", "buy", 0.001, params={"clientOrderId": "once"})
    with pytest.raises(ccxt.InsufficientFunds):
        exchange_client.create_order("BTC/USDT", "market", "buy", 1)
    with pytest.raises(ccxt.InsufficientFunds):
        exchange_client.create_order("ETH/USDT", "market", "sell", 1)
    with pytest.raises(ccxt.InvalidOrder, match="LOT_SIZE"):
        exchange_client.privatePostOrder(
            {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.0000001"}
        )
    assert len(exchange_client.fetch_my_trades("BTC/USDT")) == 1


# ----- authentication --------------------------------------------------------------------------------


def test_bad_secret_and_unknown_key_are_authentication_errors(exchange_server: LocalExchangeServer) -> None:
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        sync_client(exchange_server.url, api_secret="wrong").fetch_balance()
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        sync_client(exchange_server.url, api_key="other").fetch_balance()
    restrictions = sync_client(exchange_server.url).sapiGetAccountApiRestrictions()
    assert restrictions["enableWithdrawals"] is False and restrictions["enableSpotAndMarginTrading"] is True


def test_server_without_credentials_refuses_signed_calls() -> None:
    with running_exchange(api_key=None, api_secret=None) as server:
        client = sync_client(server.url)
        assert len(client.fetch_ohlcv("BTC/USDT", "1h", limit=2)) == 2
        with pytest.raises(ccxt.AuthenticationError, match="-2015"):
            client.fetch_balance()


def test_stale_timestamp_is_invalid_nonce(exchange_client: Any) -> None:
    exchange_client.options["timeDifference"] = 120_000  # ccxt signs with wall clock minus this
    with pytest.raises(ccxt.InvalidNonce, match="recvWindow"):
        exchange_client.fetch_balance()
    exchange_client.options["timeDifference"] = -5_000
    with pytest.raises(ccxt.InvalidNonce, match="ahead"):
        exchange_client.fetch_balance()
    exchange_client.options["timeDifference"] = 0
    assert exchange_client.fetch_balance()["USDT"]["free"] == 10000


def test_unknown_symbol_and_interval(exchange_client: Any) -> None:
    with pytest.raises(ccxt.BadSymbol, match="-1121"):
        exchange_client.publicGetKlines({"symbol": "XRPUSDT", "interval": "1h"})
    with pytest.raises(ccxt.BadSymbol):  # ccxt itself refuses a symbol the markets lack
        exchange_client.fetch_ohlcv("XRP/USDT", "1h")
    with pytest.raises(ccxt.BadRequest, match="-1120"):
        exchange_client.publicGetKlines({"symbol": "BTCUSDT", "interval": "7m"})
    with pytest.raises(ccxt.BadRequest, match="-1102"):
        exchange_client.publicGetKlines({"symbol": "BTCUSDT"})


def test_unknown_endpoint_is_an_error(exchange_server: LocalExchangeServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(exchange_server.url + "/api/v3/depth?symbol=BTCUSDT", timeout=5)
    assert err.value.code == 404


# ----- weights and faults ------------------------------------------------------------------------------


def test_weight_limit_answers_429_with_retry_after() -> None:
    with running_exchange(weight_limit_per_minute=60) as server:
        client = sync_client(server.url)
        with pytest.raises(ccxt.DDoSProtection, match="-1003"):  # ccxt raises DDoSProtection for 429
            for _ in range(10):  # exchangeInfo weighs 20: the 4th call in one minute is refused
                client.publicGetExchangeInfo()
                assert int(client.last_response_headers["X-MBX-USED-WEIGHT-1M"]) <= 60
        headers = client.last_response_headers
        assert 1 <= int(headers["Retry-After"]) <= 60
        assert int(headers["X-MBX-USED-WEIGHT-1M"]) > 60


def test_injected_5xx_then_recovery(exchange_server: LocalExchangeServer, exchange_client: Any) -> None:
    exchange_client.load_markets()
    exchange_server.inject_fault("error", "/api/v3/klines", count=2)
    for _ in range(2):
        with pytest.raises(ccxt.ExchangeNotAvailable):
            exchange_client.fetch_ohlcv("BTC/USDT", "1h", limit=1)
    assert len(exchange_client.fetch_ohlcv("BTC/USDT", "1h", limit=1)) == 1
    admin(exchange_server.url, "/_cta/faults", {"kind": "internal_error", "path": "/api/v3/time"})
    with pytest.raises(ccxt.OperationFailed, match="-1001"):  # Binance's JSON 5xx body
        exchange_client.fetch_time()
    exchange_server.inject_fault("rate_limit", "/api/v3/time")
    with pytest.raises(ccxt.DDoSProtection):
        exchange_client.fetch_time()
    assert "Retry-After" in exchange_client.last_response_headers
    assert exchange_client.fetch_time() > 0
    assert exchange_server.request_count("/api/v3/klines") == 3


def test_injected_timeout() -> None:
    with running_exchange(faults={"timeout_s": 0.5}) as server:
        client = sync_client(server.url, timeout_ms=300)
        server.inject_fault("timeout", "/api/v3/time")
        with pytest.raises(ccxt.RequestTimeout):
            client.fetch_time()
        assert client.fetch_time() > 0


def test_drop_after_execute_leaves_the_order_on_the_server(
    exchange_server: LocalExchangeServer, exchange_client: Any
) -> None:
    exchange_client.load_markets()
    exchange_server.inject_fault("drop_after_execute", "/api/v3/order")
    with pytest.raises(ccxt.NetworkError):
        exchange_client.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "lost-reply"})
    found = exchange_client.fetch_order(None, "BTC/USDT", {"clientOrderId": "lost-reply"})
    assert found["status"] == "closed" and found["filled"] == 0.01
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate"):  # a blind retry cannot double-buy
        exchange_client.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "lost-reply"})
    state = admin(exchange_server.url, "/_cta/state")
    assert state["balances"]["BTC"]["free"] == "0.00999000"
    assert state["request_counts"]["/api/v3/order"] == 3


# ----- async ccxt -------------------------------------------------------------------------------------


def test_async_ccxt_client(exchange_server: LocalExchangeServer) -> None:
    async def scenario() -> tuple[list[str], list[list[float]], dict[str, Any], dict[str, Any]]:
        client = async_client(exchange_server.url)
        try:
            markets = await client.load_markets()
            candles = await client.fetch_ohlcv("ETH/USDT", "1h", limit=3)
            order = await client.create_order("ETH/USDT", "market", "buy", 0.5)
            balance = await client.fetch_balance()
        finally:
            await client.close()
        return sorted(markets), candles, order, balance

    markets, candles, order, balance = asyncio.run(scenario())
    assert markets == ["BTC/USDT", "ETH/USDT"]
    assert [c[0] for c in candles] == [T0 - 3 * H, T0 - 2 * H, T0 - H]
    assert order["average"] == 1941.9 and order["fee"]["currency"] == "ETH"
    assert balance["ETH"]["free"] == pytest.approx(0.4995)


# ----- foreground server (cta exchange serve) --------------------------------------------------------


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_forever_logs_and_stops_cleanly(stop_signal: signal.Signals) -> None:
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr, format='%(message)s')\n"
        "from cta.exchange_server import LocalExchangeSettings, serve_forever\n"
        "serve_forever(LocalExchangeSettings(port=0, speed=0), 'k', 's3cr3t-never-logged')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        match = re.search(r"serving at (http://127\.0\.0\.1:\d+)", first)
        assert match, first
        assert "2024-08-04T00:00:00Z" in first  # default start: the end of the data
        with urllib.request.urlopen(match[1] + "/api.binance.com/api/v3/ping", timeout=5) as resp:
            assert json.loads(resp.read()) == {}
        proc.send_signal(stop_signal)
        assert proc.wait(timeout=15) == 0
        rest = proc.stderr.read()
        assert "BTC/USDT 1h: 15550 candles, 2021-01-01T00:00:00Z .. 2022-10-11T11:00:00Z" in rest
        assert "shutting down" in rest
        assert "s3cr3t" not in first + rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
