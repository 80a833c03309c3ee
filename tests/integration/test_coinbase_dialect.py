"""The local exchange's Coinbase Advanced Trade dialect, driven by a REAL `ccxt.async_support.coinbase` client
over HTTP (nothing patched): load_markets, candles, balance, orders, fills, cancel, with ES256 JWTs checked by
the server; and the state it shares with the Binance dialect (account, replay clock, request budget, faults).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import pandas as pd
import pytest

from cta.exchange_server import LocalExchangeServer, LocalExchangeSettings
from cta.exchange_server.coinbase_auth import CoinbaseKey, generate_key
from tests.conftest import REPO_ROOT
from tests.exchange_fixtures import EXCHANGE_START, EXCHANGE_START_MS, sync_client

KEY_NAME = "organizations/local-org/apiKeys/local-key"
HOUR_MS = 3_600_000
CANDLES = REPO_ROOT / "cta" / "data" / "candles" / "binance_BTCUSDT_1h.csv.gz"


@pytest.fixture(scope="module")
def cdp_key() -> tuple[CoinbaseKey, str]:
    """The server's view of a CDP key and the client's private PEM."""
    return generate_key(KEY_NAME)


@contextlib.contextmanager
def coinbase_exchange(key: CoinbaseKey | None, **settings: Any) -> Iterator[LocalExchangeServer]:
    """A started local exchange that checks Coinbase JWTs against `key` (Binance credentials as in the fixtures)."""
    values: dict[str, Any] = {"port": 0, "speed": 0.0, "start": EXCHANGE_START, **settings}
    server = LocalExchangeServer(LocalExchangeSettings(**values), "test-key", "test-secret", coinbase_key=key)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(cdp_key: tuple[CoinbaseKey, str]) -> Iterator[LocalExchangeServer]:
    with coinbase_exchange(cdp_key[0]) as running:
        yield running


def coinbase_client(url: str, pem: str | None, name: str = KEY_NAME, **options: Any) -> Any:
    """A real ccxt coinbase client, pointed at `url` the documented way (urls['api']['rest'])."""
    config: dict[str, Any] = {"enableRateLimit": False, "timeout": 5_000, "options": options}
    if pem is not None:
        config.update(apiKey=name, secret=pem)
    client = ccxt_async.coinbase(config)
    client.urls["api"]["rest"] = url
    return client


@contextlib.asynccontextmanager
async def client_for(url: str, pem: str | None, **kwargs: Any) -> AsyncIterator[Any]:
    client = coinbase_client(url, pem, **kwargs)
    try:
        yield client
    finally:
        await client.close()


def get_json(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def test_load_markets_public_and_with_the_fee_tier(
    server: LocalExchangeServer, cdp_key: tuple[CoinbaseKey, str]
) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any], int]:
        async with client_for(server.url, None) as public, client_for(server.url, cdp_key[1]) as private:
            return await public.load_markets(), await private.load_markets(), await private.fetch_time()

    public, private, server_time = asyncio.run(scenario())
    assert sorted(public) == sorted(private) == ["BTC/USDT", "ETH/USDT"]
    market = private["BTC/USDT"]
    assert (market["id"], market["base"], market["quote"], market["spot"], market["active"]) == (
        "BTC-USDT",
        "BTC",
        "USDT",
        True,
        True,
    )
    assert market["precision"] == {"amount": 0.00001, "price": 0.01}
    assert market["limits"]["cost"]["min"] == 5.0
    assert market["taker"] == market["maker"] == 0.001  # from the signed transaction_summary (JWT accepted)
    assert server.request_count("/api/v3/brokerage/transaction_summary") >= 1
    assert server.request_count("/v2/currencies") >= 1 and server.request_count("/v2/exchange-rates") >= 1
    assert abs(server_time - time.time() * 1000) < 60_000  # the wall clock, which clients sign with


def test_candles_are_coinbase_shaped_and_ccxt_pages_them(server: LocalExchangeServer) -> None:
    start_s = (EXCHANGE_START_MS - 1000 * HOUR_MS) // 1000
    path = "/api/v3/brokerage/market/products/BTC-USDT/candles"
    status, body = get_json(f"{server.url}{path}?granularity=ONE_HOUR&start={start_s}&end={start_s + 300 * 3600}")
    assert status == 200 and len(body["candles"]) == 300
    first = body["candles"][0]
    assert set(first) == {"start", "low", "high", "open", "close", "volume"} and all(
        isinstance(v, str) for v in first.values()
    )
    starts = [int(c["start"]) for c in body["candles"]]
    assert starts == sorted(starts, reverse=True) and starts[-1] == start_s  # newest first, from start
    too_many = f"{server.url}{path}?granularity=ONE_HOUR&start={start_s}&end={start_s + 301 * 3600}"
    status, body = get_json(too_many)
    assert status == 400 and body["error"] == "INVALID_ARGUMENT" and "300" in body["message"]
    status, body = get_json(f"{server.url}{path}?granularity=FOUR_HOUR&start={start_s}&end={start_s + 3600}")
    assert status == 400 and "ONE_HOUR" in body["message"]  # no 4h on Coinbase: the granularities are named

    async def page(client: Any, since: int) -> list[list[float]]:
        return list(await client.fetch_ohlcv("BTC/USDT", "1h", since=since, limit=300))

    async def scenario() -> tuple[list[list[float]], Exception | None]:
        async with client_for(server.url, None) as client:
            rows: list[list[float]] = []
            since = start_s * 1000
            while since < EXCHANGE_START_MS:  # ccxt pages by time window: 300 candles per request
                batch = await page(client, since)
                assert len(batch) <= 300
                rows += [r for r in batch if r[0] < EXCHANGE_START_MS]
                since += 300 * HOUR_MS
            beyond = await page(client, EXCHANGE_START_MS)  # the replay clock: nothing after "now"
            assert beyond == []
            try:
                await page_4h(client)
            except ccxt.BaseError as exc:
                return rows, exc
            return rows, None

    async def page_4h(client: Any) -> None:
        await client.fetch_ohlcv("BTC/USDT", "4h", since=start_s * 1000, limit=10)

    rows, refused = asyncio.run(scenario())
    with gzip.open(CANDLES, "rt") as f:
        frame = pd.read_csv(f)
    expected = frame[(frame.timestamp >= start_s * 1000) & (frame.timestamp < EXCHANGE_START_MS)]
    assert [int(r[0]) for r in rows] == expected.timestamp.tolist()  # 1000 hours, each once, in order
    assert [r[4] for r in rows] == pytest.approx(expected.close.tolist())
    assert isinstance(refused, ccxt.ExchangeError) and "FOUR_HOUR" not in str(type(refused))


def test_orders_balance_fills_and_cancel(server: LocalExchangeServer, cdp_key: tuple[CoinbaseKey, str]) -> None:
    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with client_for(server.url, cdp_key[1]) as ex:
            out["before"] = (await ex.fetch_balance())["total"]
            buy = await ex.create_order(
                "BTC/USDT", "market", "buy", 100, None, {"createMarketBuyOrderRequiresPrice": False}
            )
            out["buy_ack"] = buy
            out["buy"] = await ex.fetch_order(buy["id"], "BTC/USDT")
            sell = await ex.create_order("BTC/USDT", "market", "sell", 0.001)
            out["sell"] = await ex.fetch_order(sell["id"], "BTC/USDT")
            limit = await ex.create_order("BTC/USDT", "limit", "buy", 0.001, 10000, {"client_order_id": "cta-limit-1"})
            out["limit"] = await ex.fetch_order(limit["id"], "BTC/USDT")
            out["during"] = await ex.fetch_balance({"v3": True})  # v3 accounts report the hold; v2 only totals
            out["cancel"] = await ex.cancel_order(limit["id"])
            out["cancelled"] = await ex.fetch_order(limit["id"], "BTC/USDT")
            out["trades"] = await ex.fetch_my_trades("BTC/USDT")
            out["after"] = (await ex.fetch_balance())["total"]
            try:
                await ex.cancel_order(limit["id"])  # no longer open: the batch answers success false
            except ccxt.BadRequest as exc:
                out["cancel_again"] = exc
        return out

    out = asyncio.run(scenario())
    assert out["buy_ack"]["status"] is None and out["buy_ack"]["filled"] is None  # Coinbase: no fill status at once
    buy, sell, limit = out["buy"], out["sell"], out["limit"]
    assert (buy["status"], buy["side"], buy["type"], buy["symbol"]) == ("closed", "buy", "market", "BTC/USDT")
    assert buy["clientOrderId"].startswith("ccxt-")  # ccxt's own client id (41 characters) is kept
    price = buy["average"]
    assert buy["filled"] * price <= 100
    assert buy["filled"] * price + float(buy["fee"]["cost"]) == pytest.approx(100, abs=0.5)  # quote size: fees in
    assert buy["fee"]["currency"] == "USDT"  # Coinbase charges the quote asset
    assert (sell["status"], sell["filled"]) == ("closed", 0.001)
    assert (limit["status"], limit["price"], limit["amount"], limit["clientOrderId"]) == (
        "open",
        10000.0,
        0.001,
        "cta-limit-1",
    )
    assert limit["timeInForce"] == "GTC"
    assert out["during"]["USDT"]["used"] == pytest.approx(10.0 * 1.001)  # the hold: price x size plus the fee
    assert out["cancelled"]["status"] == "canceled"
    assert isinstance(out.get("cancel_again"), ccxt.BadRequest)
    trades = [t for t in out["trades"] if t["order"] in (buy["id"], sell["id"])]
    assert sorted(t["side"] for t in trades) == ["buy", "sell"]
    assert all(t["fee"]["currency"] == "USDT" and t["takerOrMaker"] == "taker" for t in trades)
    before, after = out["before"], out["after"]
    fees = float(buy["fee"]["cost"]) + float(sell["fee"]["cost"])
    assert after["BTC"] - before["BTC"] == pytest.approx(buy["filled"] - 0.001)
    spent = buy["filled"] * buy["average"] - 0.001 * sell["average"] + fees
    assert before["USDT"] - after["USDT"] == pytest.approx(spent)


def test_client_order_id_is_idempotent_and_failures_are_coinbase_shaped(
    server: LocalExchangeServer, cdp_key: tuple[CoinbaseKey, str]
) -> None:
    async def scenario() -> tuple[Any, Any, Exception, Exception, Exception]:
        async with client_for(server.url, cdp_key[1]) as ex:
            params = {"client_order_id": "cta-once-1"}
            first = await ex.create_order("ETH/USDT", "limit", "buy", 0.01, 500, params)
            again = await ex.create_order("ETH/USDT", "limit", "buy", 0.01, 500, params)
            errors = []
            for call in (
                ex.create_order("ETH/USDT", "limit", "buy", 1000, 1000),  # 1M USDT
                ex.fetch_order("00000000-0000-4000-8000-0000ffffffff"),
                ex.create_order("ETH/USDT", "limit", "sell", 0.01, 5000, {"timeInForce": "GTD", "end_time": "x"}),
            ):
                try:
                    await call
                except ccxt.BaseError as exc:
                    errors.append(exc)
            second = await ex.create_order("ETH/USDT", "limit", "buy", 0.02, 400)
            cancelled = await ex.cancel_orders([first["id"], second["id"]])  # one batch_cancel request
            assert [c["id"] for c in cancelled] == [first["id"], second["id"]]
            states = [(await ex.fetch_order(o["id"], "ETH/USDT"))["status"] for o in (first, second)]
            assert states == ["canceled", "canceled"]
            return first, again, errors[0], errors[1], errors[2]

    cancels_before = server.request_count("/api/v3/brokerage/orders/batch_cancel", "POST")
    first, again, poor, unknown, unsupported = asyncio.run(scenario())
    assert server.request_count("/api/v3/brokerage/orders/batch_cancel", "POST") == cancels_before + 1
    assert first["id"] == again["id"]  # a repeated client_order_id creates nothing
    assert isinstance(poor, ccxt.InsufficientFunds)
    assert isinstance(unknown, ccxt.ExchangeError) and "NOT_FOUND" in str(unknown)
    assert isinstance(unsupported, ccxt.ExchangeError) and "UNSUPPORTED_ORDER_CONFIGURATION" in str(unsupported)


def test_the_jwt_is_verified(server: LocalExchangeServer, cdp_key: tuple[CoinbaseKey, str]) -> None:
    _, other_pem = generate_key(KEY_NAME)  # same name, another private key

    async def refused(pem: str | None, name: str = KEY_NAME) -> Exception | None:
        async with client_for(server.url, pem, name=name) as ex:
            try:
                await ex.fetch_balance()
            except ccxt.BaseError as exc:
                return exc
        return None

    async def scenario() -> list[Exception | None]:
        return [await refused(other_pem), await refused(cdp_key[1], name="organizations/x/apiKeys/unknown")]

    bad_signature, unknown_kid = asyncio.run(scenario())
    assert isinstance(bad_signature, ccxt.AuthenticationError) and "bad signature" in str(bad_signature)
    assert isinstance(unknown_kid, ccxt.AuthenticationError) and "kid" in str(unknown_kid)

    # Tokens made by ccxt's own signer, sent by hand: expiry, the uri claim, the header
    signer = coinbase_client(server.url, cdp_key[1])
    path = "/api/v3/brokerage/accounts"
    now = int(time.time())
    cases = {
        "expired": signer.create_auth_token(now - 600, "GET", server.url + path),
        "not valid yet": signer.create_auth_token(now + 600, "GET", server.url + path),
        "uri claim": signer.create_auth_token(now, "GET", server.url + "/api/v3/brokerage/orders/historical/fills"),
        "'POST ": signer.create_auth_token(now, "POST", server.url + path),  # another method: the uri claim
    }
    for reason, token in cases.items():
        status, body = get_json(server.url + path, {"Authorization": f"Bearer {token}"})
        assert status == 401 and body["error"] == "unauthorized", (reason, body)
        assert reason in body["error_details"], (reason, body)
    status, body = get_json(server.url + path)
    assert status == 401 and "Authorization" in body["error_details"]
    good = signer.create_auth_token(now, "GET", server.url + path + "?limit=250")  # the query is not in the claim
    status, body = get_json(server.url + path + "?limit=250", {"Authorization": f"Bearer {good}"})
    assert status == 200 and {a["currency"] for a in body["accounts"]} >= {"BTC", "USDT"}
    asyncio.run(signer.close())


def test_one_account_clock_budget_and_faults_with_the_binance_dialect(cdp_key: tuple[CoinbaseKey, str]) -> None:
    with coinbase_exchange(cdp_key[0], weight_limit_per_minute=1000) as srv:
        binance = sync_client(srv.url)

        async def buy_on_coinbase() -> tuple[Any, list[list[float]], list[list[float]]]:
            async with client_for(srv.url, cdp_key[1]) as ex:
                order = await ex.create_order(
                    "BTC/USDT", "market", "buy", 50, None, {"createMarketBuyOrderRequiresPrice": False}
                )
                before = await ex.fetch_ohlcv("BTC/USDT", "1h", since=EXCHANGE_START_MS - 2 * HOUR_MS, limit=5)
                srv.clock.set(EXCHANGE_START_MS + 2 * HOUR_MS)  # the one replay clock moves
                after = await ex.fetch_ohlcv("BTC/USDT", "1h", since=EXCHANGE_START_MS - 2 * HOUR_MS, limit=5)
                return await ex.fetch_order(order["id"], "BTC/USDT"), before, after

        order, before, after = asyncio.run(buy_on_coinbase())
        assert len(before) == 2 and len(after) == 4
        bought = binance.fetch_balance()["BTC"]["total"]  # the same account, seen through Binance's dialect
        assert bought == pytest.approx(order["filled"])

        async def faults() -> list[type[Exception]]:
            seen: list[type[Exception]] = []
            async with client_for(srv.url, cdp_key[1]) as ex:
                for kind in ("error", "rate_limit", "internal_error"):
                    srv.inject_fault(kind, "/api/v3/brokerage/orders/historical/fills")
                    try:
                        await ex.fetch_my_trades("BTC/USDT")
                    except ccxt.BaseError as exc:
                        seen.append(type(exc))
                srv.inject_fault("drop_after_execute", "/api/v3/brokerage/orders", method="POST")
                try:
                    await ex.create_order("BTC/USDT", "market", "sell", 0.0005)
                except ccxt.BaseError as exc:
                    seen.append(type(exc))
            return seen

        trades_before = srv.state()["trades"]
        seen = asyncio.run(faults())
        assert issubclass(seen[0], ccxt.ExchangeNotAvailable)
        assert issubclass(seen[1], ccxt.RateLimitExceeded)
        assert issubclass(seen[2], ccxt.ExchangeError)
        assert issubclass(seen[3], ccxt.NetworkError)  # no answer ...
        assert srv.state()["trades"] == trades_before + 1  # ... but the sell was executed

    with coinbase_exchange(cdp_key[0], weight_limit_per_minute=3) as tight:  # one budget for both dialects
        binance = sync_client(tight.url)
        binance.fetch_time()  # weight 1
        status, _ = get_json(tight.url + "/api/v3/brokerage/time")  # weight 1
        assert status == 200
        status, _ = get_json(tight.url + "/api/v3/brokerage/time")
        assert status == 200
        status, body = get_json(tight.url + "/api/v3/brokerage/time")
        assert status == 429 and body["errors"][0]["id"] == "rate_limit_exceeded"
        with pytest.raises(ccxt.DDoSProtection):
            binance.fetch_time()


def test_a_resting_limit_order_fills_on_the_replay_clock(cdp_key: tuple[CoinbaseKey, str]) -> None:
    with coinbase_exchange(cdp_key[0]) as srv:

        async def scenario() -> tuple[Any, list[Any], Any, list[Any], list[Any], dict[str, Any]]:
            async with client_for(srv.url, cdp_key[1]) as ex:
                price = round((await ex.fetch_ohlcv("BTC/USDT", "1h", since=EXCHANGE_START_MS - HOUR_MS))[-1][4] * 0.97)
                order = await ex.create_order("BTC/USDT", "limit", "buy", 0.01, price)
                resting = await ex.fetch_open_orders("BTC/USDT")
                srv.clock.set(EXCHANGE_START_MS + 14 * 24 * HOUR_MS)  # two weeks on: BTC fell through the price
                filled = await ex.fetch_order(order["id"], "BTC/USDT")
                return (
                    order,
                    resting,
                    filled,
                    await ex.fetch_open_orders("BTC/USDT"),
                    await ex.fetch_my_trades("BTC/USDT"),
                    (await ex.fetch_balance({"v3": True}))["USDT"],
                )

        order, resting, filled, still_open, trades, usdt = asyncio.run(scenario())
    assert [o["id"] for o in resting] == [order["id"]] and resting[0]["status"] == "open"
    assert (filled["status"], filled["filled"], filled["average"]) == ("closed", 0.01, filled["price"])
    assert still_open == []
    [trade] = trades
    assert (trade["order"], trade["takerOrMaker"], trade["price"]) == (order["id"], "maker", filled["price"])
    assert trade["fee"]["cost"] == pytest.approx(0.01 * filled["price"] * 0.001)  # in USDT
    assert usdt["used"] == 0  # the hold is released in full
    assert usdt["free"] == pytest.approx(10_000 - 0.01 * filled["price"] * 1.001)


def test_jwt_rules_beyond_what_ccxt_would_send(cdp_key: tuple[CoinbaseKey, str]) -> None:
    from cta.exchange_server.coinbase_auth import JwtRejected, verify_jwt

    key, pem = cdp_key
    signer = ccxt.coinbase({"apiKey": KEY_NAME, "secret": pem})
    now = int(time.time())
    host, path = "127.0.0.1:9", "/api/v3/brokerage/accounts"

    def token(claims: dict[str, Any], alg: str = "ES256", secret: str = pem) -> str:
        base = {"iss": "cdp", "sub": KEY_NAME, "nbf": now, "exp": now + 120, "uri": f"GET {host}{path}", **claims}
        return str(signer.jwt(base, signer.encode(secret), "sha256", False, {"kid": KEY_NAME, "alg": alg}))

    def check(tok: str) -> None:
        verify_jwt(f"Bearer {tok}", key, method="GET", host=host, path=path, now_s=now)

    check(token({}))
    check(token({"uri": f"GET https://{host}{path}"}))  # the scheme, as against a real https host, is accepted
    cases = {
        "lives longer": token({"exp": now + 3600}),
        "alg": token({}, alg="HS256", secret="shared-secret"),
        "issuer": token({"iss": "someone"}),
        "sub": token({"sub": "organizations/x/apiKeys/y"}),
    }
    for reason, tok in cases.items():
        with pytest.raises(JwtRejected, match=reason):
            check(tok)
    with pytest.raises(JwtRejected, match="disabled"):
        verify_jwt(f"Bearer {token({})}", None, method="GET", host=host, path=path, now_s=now)
