"""Pure parts of the local exchange: candle store, matching, fees, partial fills, weights, faults, auth."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from cta.clock import ManualClock
from cta.errors import ConfigError
from cta.exchange_server.api_errors import ApiError
from cta.exchange_server.auth import Credentials, sign, verify_signed_request
from cta.exchange_server.candle_store import CandleStore, parse_candle_file_name, split_market_id
from cta.exchange_server.faults import FaultInjector, FaultKind, normalize_path
from cta.exchange_server.matching import (
    EngineConfig,
    MatchingEngine,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from cta.exchange_server.rate_limit import WeightLimiter, klines_weight, request_weight
from cta.exchange_server.settings import (
    BUNDLED_CANDLES_DIR,
    FaultSettings,
    LocalExchangeSettings,
    parse_start_ms,
)

H = 3_600_000
M = 60_000
ZERO = Decimal(0)
T0 = 1_654_041_600_000  # 2022-06-01T00:00:00Z


def hourly(prices: list[tuple[float, float, float, float, float]], start: int = T0) -> pd.DataFrame:
    """1h candles from (open, high, low, close, volume) tuples."""
    return pd.DataFrame(
        [(start + i * H, *p) for i, p in enumerate(prices)],
        columns=["timestamp", "open", "high", "low", "close", "volume"],
    )


@pytest.fixture
def store() -> CandleStore:
    btc = hourly(
        [
            (100.0, 101.0, 99.0, 100.5, 10.0),  # T0 .. T0+1h
            (100.5, 102.0, 95.0, 96.0, 10.0),  # trades down to 95
            (96.0, 97.0, 94.0, 96.5, 10.0),  # and to 94
            (96.5, 110.0, 96.0, 109.0, 10.0),  # up to 110
        ]
    )
    return CandleStore.from_frames({("BTC/USDT", "1h"): btc})


def engine_for(
    store: CandleStore, usdt: float = 1000.0, btc: float = 0.0, participation: str = "0.1"
) -> MatchingEngine:
    config = EngineConfig(Decimal("0.001"), Decimal("0.0005"), Decimal(participation))
    return MatchingEngine(store, {"USDT": usdt, "BTC": btc}, config)


def buy(qty: str, price: str | None = None, **kw: object) -> OrderRequest:
    return OrderRequest(
        "BTC/USDT",
        Side.BUY,
        OrderType.LIMIT if price else OrderType.MARKET,
        quantity=Decimal(qty),
        price=Decimal(price) if price else None,
        time_in_force=TimeInForce.GTC if price else None,
        **kw,  # type: ignore[arg-type]
    )


def sell(qty: str, price: str | None = None, **kw: object) -> OrderRequest:
    return OrderRequest(
        "BTC/USDT",
        Side.SELL,
        OrderType.LIMIT if price else OrderType.MARKET,
        quantity=Decimal(qty),
        price=Decimal(price) if price else None,
        time_in_force=TimeInForce.GTC if price else None,
        **kw,  # type: ignore[arg-type]
    )


# ----- candle store ---------------------------------------------------------------------------------


def test_split_market_id_and_file_names() -> None:
    assert split_market_id("BTCUSDT") == ("BTC", "USDT")
    assert split_market_id("ETHBTC") == ("ETH", "BTC")
    assert split_market_id("BTCFDUSD") == ("BTC", "FDUSD")
    assert parse_candle_file_name("binance_ETHUSDT_1m.csv.gz") == ("ETH", "USDT", "1m")
    assert parse_candle_file_name("SOL_USDC-4h.parquet") == ("SOL", "USDC", "4h")
    assert parse_candle_file_name("PROVENANCE.md") is None
    with pytest.raises(ValueError, match="no known quote"):
        split_market_id("FOOBAR")


def test_bundled_candles_load() -> None:
    store = CandleStore.load_dir(BUNDLED_CANDLES_DIR)
    assert store.symbols == ["BTC/USDT", "ETH/USDT"]
    assert store.timeframes("BTC/USDT") == ["1m", "1h"]
    assert store.symbol_for_market_id("ETHUSDT") == "ETH/USDT"
    series = store.series("BTC/USDT", "1h")
    assert series is not None
    assert len(series) == 15550
    assert series.ts[0] == 1_609_459_200_000
    assert store.last_close_ms == 1_722_729_600_000  # the last 1m candle closes 2024-08-04T00:00Z


def test_load_dir_errors_and_other_formats(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no candle files"):
        CandleStore.load_dir(tmp_path)
    with pytest.raises(ConfigError, match="not a directory"):
        CandleStore.load_dir(tmp_path / "missing")
    frame = hourly([(1.0, 2.0, 0.5, 1.5, 3.0), (1.5, 2.5, 1.0, 2.0, 4.0)])
    frame.to_parquet(tmp_path / "SOL_USDC-1h.parquet")
    frame.rename(columns={"timestamp": "ts"}).to_csv(tmp_path / "ADA_USDT-1h.csv.gz", index=False)
    store = CandleStore.load_dir(tmp_path)
    assert store.symbols == ["ADA/USDT", "SOL/USDC"]
    assert store.symbol_for_market_id("SOLUSDC") == "SOL/USDC"


def test_only_closed_candles_are_selected(store: CandleStore) -> None:
    series = store.series("BTC/USDT", "1h")
    assert series is not None
    assert list(series.select(T0 + H - 1, None, None, 500)) == []
    assert list(series.select(T0 + H, None, None, 500)) == [0]
    assert list(series.select(T0 + 3 * H + 5, None, None, 500)) == [0, 1, 2]
    assert list(series.select(T0 + 10 * H, None, None, 2)) == [2, 3]
    assert list(series.select(T0 + 10 * H, T0 + H, None, 2)) == [1, 2]
    assert list(series.select(T0 + 10 * H, T0 + 1, T0 + 2 * H, 500)) == [1, 2]


def test_tape_prefers_finer_candles() -> None:
    fine = pd.DataFrame(
        [(T0 + H + i * M, 200.0 + i, 201.0 + i, 199.0 + i, 200.5 + i, 1.0) for i in range(60)],
        columns=["timestamp", "open", "high", "low", "close", "volume"],
    )
    coarse = hourly([(100.0, 101.0, 99.0, 100.5, 10.0), (1.0, 1.0, 1.0, 1.0, 1.0), (300.0, 301.0, 299.0, 300.5, 10.0)])
    store = CandleStore.from_frames({("BTC/USDT", "1h"): coarse, ("BTC/USDT", "1m"): fine})
    assert store.price_at("BTC/USDT", T0 - 1) is None
    assert store.price_at("BTC/USDT", T0 + 10) == 100.0  # only the hour candle covers it
    assert store.price_at("BTC/USDT", T0 + H + 5 * M + 1) == 205.0  # the 1m candle, not the overlapping hour
    assert store.price_at("BTC/USDT", T0 + 2 * H) == 300.0
    assert store.price_at("BTC/USDT", T0 + 10 * H) == 300.5  # after the data: the last close
    bars = store.bars_closed_between("BTC/USDT", T0, T0 + 2 * H)
    assert len(bars) == 61  # first hour + 60 minutes; the overlapping hour candle is not on the tape
    assert bars[0].close_ms == T0 + H and bars[-1].close_ms == T0 + 2 * H


# ----- matching ------------------------------------------------------------------------------------


def test_market_buy_then_sell_charges_fee_in_received_asset(store: CandleStore) -> None:
    engine = engine_for(store)
    order = engine.place(buy("1"), T0 + 10)
    assert order.status is OrderStatus.FILLED
    (fill,) = order.fills
    assert (fill.price, fill.qty, fill.commission, fill.commission_asset) == (
        Decimal("100.0"),
        Decimal("1"),
        Decimal("0.001"),
        "BTC",
    )
    assert engine.balances()["BTC"] == (Decimal("0.999"), ZERO)
    assert engine.balances()["USDT"] == (Decimal("900"), ZERO)
    sold = engine.place(sell("0.999"), T0 + H + 10)  # next candle opens at 100.5
    assert sold.fills[0].commission == Decimal("0.10039950")  # 0.999 * 100.5 * 0.001, rounded to 8 dp
    assert sold.fills[0].commission_asset == "USDT"
    assert engine.balances()["BTC"] == (ZERO, ZERO)
    assert engine.balances()["USDT"][0] == Decimal("900") + Decimal("100.3995") - Decimal("0.10039950")
    assert [t.trade_id for t in engine.trades()] == [1, 2]


def test_market_order_by_quote_quantity(store: CandleStore) -> None:
    engine = engine_for(store)
    order = engine.place(OrderRequest("BTC/USDT", Side.BUY, OrderType.MARKET, quote_order_qty=Decimal("50.5")), T0)
    assert order.executed_qty == Decimal("0.505")
    assert order.orig_quote_qty == Decimal("50.5")


@pytest.mark.parametrize(
    ("request_", "code", "msg"),
    [
        (buy("20"), -2010, "Account has insufficient balance for requested action."),
        (sell("1"), -2010, "Account has insufficient balance for requested action."),
        (buy("0.000001"), -1013, "Filter failure: LOT_SIZE"),
        (buy("0.01"), -1013, "Filter failure: NOTIONAL"),
        (buy("1", "90.001"), -1013, "Filter failure: PRICE_FILTER"),
        (buy("20", "90"), -2010, "Account has insufficient balance for requested action."),
    ],
)
def test_rejections(store: CandleStore, request_: OrderRequest, code: int, msg: str) -> None:
    engine = engine_for(store)
    with pytest.raises(ApiError) as err:
        engine.place(request_, T0 + 10)
    assert (err.value.code, err.value.msg) == (code, msg)
    assert engine.balances()["USDT"] == (Decimal("1000"), ZERO)


def test_duplicate_client_order_id(store: CandleStore) -> None:
    engine = engine_for(store)
    engine.place(buy("1", client_order_id="same-id"), T0)
    with pytest.raises(ApiError, match="Duplicate order sent"):
        engine.place(buy("1", client_order_id="same-id"), T0)
    assert engine.get_order("BTC/USDT", client_order_id="same-id").order_id == 1


def test_market_closed_before_the_data(store: CandleStore) -> None:
    with pytest.raises(ApiError, match="Market is closed"):
        engine_for(store).place(buy("1"), T0 - 1)


def test_resting_limit_buy_locks_then_fills_partially_per_candle(store: CandleStore) -> None:
    engine = engine_for(store, participation="0.1")  # at most 1 BTC per candle (volume 10)
    order = engine.place(buy("1.5", "95"), T0 + 10)
    assert order.status is OrderStatus.NEW
    assert engine.balances()["USDT"] == (Decimal("857.5"), Decimal("142.5"))
    assert engine.advance(T0 + H) == []  # first candle: low 99, no fill
    assert engine.advance(T0 + 2 * H - 1) == []  # the second candle has not closed yet
    (first,) = engine.advance(T0 + 2 * H)  # low 95 touches the price
    assert (first.qty, first.price, first.is_maker, first.time_ms) == (
        Decimal("1.0"),
        Decimal("95"),
        True,
        T0 + 2 * H - 1,
    )
    assert first.commission == Decimal("0.0005")  # maker fee, in BTC
    assert str(order.status) == "PARTIALLY_FILLED"
    assert engine.advance(T0 + 2 * H) == []  # idempotent
    (second,) = engine.advance(T0 + 3 * H)
    assert second.qty == Decimal("0.5")
    assert str(order.status) == "FILLED"
    assert engine.balances()["USDT"] == (Decimal("857.5"), ZERO)
    assert engine.balances()["BTC"][0] == Decimal("1.5") - Decimal("0.00075")
    assert engine.open_orders() == []


def test_candles_before_the_order_do_not_fill_it(store: CandleStore) -> None:
    engine = engine_for(store)
    order = engine.place(buy("1", "95"), T0 + 2 * H + 1)  # placed after the 95 candle closed
    assert engine.advance(T0 + 3 * H) != []  # the third candle (low 94) fills it
    assert order.fills[0].time_ms == T0 + 3 * H - 1


def test_one_big_jump_processes_every_candle_in_order(store: CandleStore) -> None:
    engine = engine_for(store, btc=2.0, participation="0.05")  # 0.5 BTC per candle
    engine.place(sell("1.2", "105"), T0)
    engine.place(buy("0.6", "96"), T0)
    trades = engine.advance(T0 + 10 * H)
    assert [(t.side, t.qty, t.time_ms) for t in trades] == [
        (Side.BUY, Decimal("0.50"), T0 + 2 * H - 1),
        (Side.BUY, Decimal("0.10"), T0 + 3 * H - 1),
        (Side.SELL, Decimal("0.50"), T0 + 4 * H - 1),
    ]
    assert [t.trade_id for t in trades] == [1, 2, 3]
    assert engine.balances()["BTC"][1] == Decimal("0.7")  # the unfilled rest of the sell stays locked


def test_marketable_limit_fills_at_once_as_taker(store: CandleStore) -> None:
    engine = engine_for(store)
    order = engine.place(buy("1", "150"), T0 + 10)
    assert order.status is OrderStatus.FILLED
    assert order.fills[0].price == Decimal("100.0")
    assert not order.fills[0].is_maker
    assert order.fills[0].commission == Decimal("0.001")  # taker rate
    assert engine.balances()["USDT"] == (Decimal("900"), ZERO)  # the lock at 150 was released


def test_limit_maker_and_ioc(store: CandleStore) -> None:
    engine = engine_for(store)
    maker = OrderRequest("BTC/USDT", Side.BUY, OrderType.LIMIT_MAKER, quantity=Decimal(1), price=Decimal(150))
    with pytest.raises(ApiError, match="immediately match"):
        engine.place(maker, T0)
    ioc = OrderRequest(
        "BTC/USDT",
        Side.BUY,
        OrderType.LIMIT,
        quantity=Decimal(1),
        price=Decimal(90),
        time_in_force=TimeInForce.IOC,
    )
    assert engine.place(ioc, T0).status is OrderStatus.EXPIRED
    assert engine.balances()["USDT"] == (Decimal("1000"), ZERO)


def test_cancel_releases_the_rest(store: CandleStore) -> None:
    engine = engine_for(store, participation="0.05")
    order = engine.place(buy("1", "95"), T0)
    engine.advance(T0 + 2 * H)  # 0.5 filled
    engine.cancel("BTC/USDT", order.order_id, None, T0 + 2 * H)
    assert order.status is OrderStatus.CANCELED
    assert engine.balances()["USDT"] == (Decimal("1000") - Decimal("47.5"), ZERO)
    with pytest.raises(ApiError, match="Unknown order sent"):
        engine.cancel("BTC/USDT", order.order_id, None, T0 + 2 * H)
    with pytest.raises(ApiError, match="Order does not exist"):
        engine.get_order("BTC/USDT", 99)


# ----- rate limit ----------------------------------------------------------------------------------


def test_weights() -> None:
    assert [klines_weight(n) for n in (1, 99, 100, 499, 500, 1000)] == [2] * 6
    assert request_weight("GET", "/api/v3/klines", {}) == 2
    assert request_weight("GET", "/api/v3/openOrders", {"symbol": "BTCUSDT"}) == 6
    assert request_weight("GET", "/api/v3/openOrders", {}) == 80
    assert request_weight("GET", "/api/v3/order", {}) == 4
    assert request_weight("POST", "/api/v3/order", {}) == 1
    assert request_weight("GET", "/api/v3/exchangeInfo", {}) == 20


def test_fixed_minute_windows() -> None:
    wall = ManualClock(10 * 60_000 + 45_500)  # 45.5 s into a minute
    limiter = WeightLimiter(50, wall)
    assert limiter.consume(20).allowed
    assert limiter.consume(30).allowed
    refused = limiter.consume(1)
    assert not refused.allowed
    assert refused.used == 51
    assert refused.retry_after_s == 15  # ceil(14.5 s)
    wall.advance(14_499)
    assert limiter.consume(1).retry_after_s == 1
    wall.advance(1)  # the next minute starts
    fresh = limiter.consume(50)
    assert fresh.allowed and fresh.used == 50


# ----- faults ----------------------------------------------------------------------------------------


def test_armed_faults_are_one_shot_and_path_specific() -> None:
    faults = FaultInjector(FaultSettings())
    faults.arm(FaultKind.ERROR, "/api.binance.com/api/v3/klines", count=2)
    faults.arm("drop_after_execute", "/api/v3/order")
    assert faults.plan("GET", "/api/v3/time").kind is None
    assert faults.plan("GET", "/api/v3/klines").kind is FaultKind.ERROR
    assert faults.plan("GET", "/api/v3/order").kind is None  # drop applies to POST only
    assert faults.plan("GET", "/api/v3/klines").kind is FaultKind.ERROR
    assert faults.plan("GET", "/api/v3/klines").kind is None
    assert faults.plan("POST", "/api/v3/order").kind is FaultKind.DROP_AFTER_EXECUTE
    assert faults.armed() == []


def test_random_faults_are_seeded() -> None:
    settings = FaultSettings(error_rate=0.3, timeout_rate=0.2, seed=7, latency_ms=5)

    def draws() -> list[FaultKind | None]:
        injector = FaultInjector(settings)
        return [injector.plan("GET", "/api/v3/time").kind for _ in range(200)]

    first = draws()
    assert first == draws()
    assert 30 < first.count(FaultKind.ERROR) < 90
    assert FaultKind.TIMEOUT in first
    assert FaultInjector(settings).plan("GET", "/x").latency_s == 0.005


def test_normalize_path() -> None:
    assert normalize_path("/api.binance.com/api/v3/time") == "/api/v3/time"
    assert normalize_path("/api/v3/time") == "/api/v3/time"
    assert normalize_path("/sapi/v1/account/apiRestrictions") == "/sapi/v1/account/apiRestrictions"


# ----- auth ------------------------------------------------------------------------------------------


def test_signed_request_checks() -> None:
    creds = Credentials("key", "secret")
    now = 1_700_000_000_000

    def check(query: str, key: str = "key", body: str = "", signature: str | None = None) -> None:
        payload = query + body
        sig = signature or sign("secret", payload)
        params = dict(p.split("=", 1) for p in (query + ("&" if query and body else "") + body).split("&") if p)
        params["signature"] = sig
        verify_signed_request(
            credentials=creds,
            api_key=key,
            raw_query=f"{query}&signature={sig}" if query else "",
            raw_body=f"{body}&signature={sig}" if body else "",
            params=params,
            wall_now_ms=now,
            max_recv_window_ms=60_000,
        )

    check(f"timestamp={now}&recvWindow=10000")
    check("", body=f"symbol=BTCUSDT&timestamp={now - 4000}")
    for kwargs, code in [
        ({"query": f"timestamp={now}", "key": "other"}, -2015),
        ({"query": f"timestamp={now}", "signature": "00" * 32}, -1022),
        ({"query": f"timestamp={now - 6000}"}, -1021),
        ({"query": f"timestamp={now + 1001}"}, -1021),
        ({"query": f"timestamp={now}&recvWindow=70000"}, -1131),
        ({"query": "symbol=BTCUSDT"}, -1102),
    ]:
        with pytest.raises(ApiError) as err:
            check(**kwargs)
        assert err.value.code == code, kwargs
    with pytest.raises(ApiError) as err:
        verify_signed_request(
            credentials=None,
            api_key="key",
            raw_query="",
            raw_body="",
            params={},
            wall_now_ms=now,
            max_recv_window_ms=60_000,
        )
    assert (err.value.code, err.value.status) == (-2015, 401)


# ----- settings --------------------------------------------------------------------------------------


def test_settings_validation_names_the_field() -> None:
    with pytest.raises(ValidationError, match="fill_participation"):
        LocalExchangeSettings(fill_participation=0)
    with pytest.raises(ValidationError, match="error_rate"):
        LocalExchangeSettings(faults=FaultSettings(error_rate=2))
    with pytest.raises(ValidationError, match="start"):
        LocalExchangeSettings(start="yesterday")
    with pytest.raises(ValidationError, match="bogus"):
        LocalExchangeSettings(bogus=1)  # type: ignore[call-arg]
    assert LocalExchangeSettings(start="2022-06-01T00:00:00Z").start_ms() == T0
    assert LocalExchangeSettings(start=T0).start_ms() == T0
    assert LocalExchangeSettings().start_ms() is None
    assert parse_start_ms("2022-06-01T00:00:00") == T0
    assert LocalExchangeSettings().resolved_data_dir() == BUNDLED_CANDLES_DIR
