"""Endpoint logic in Binance spot JSON shapes, independent of HTTP.

Each handler takes the request parameters (str -> str) and the replay time, and returns the JSON
body or raises ApiError. Prices, quantities and balances are strings with 8 decimals, as Binance
sends them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from decimal import Decimal

from cta.clock import Clock
from cta.exchange_server import api_errors
from cta.exchange_server.api_errors import ApiError
from cta.exchange_server.candle_store import CandleStore, market_id
from cta.exchange_server.markets import exchange_info
from cta.exchange_server.matching import (
    MatchingEngine,
    Order,
    OrderRequest,
    OrderType,
    Side,
    TimeInForce,
    Trade,
    parse_decimal,
    to_decimal,
)

Params = Mapping[str, str]
Json = object
Handler = Callable[[Params, int], Json]

BINANCE_INTERVALS: frozenset[str] = frozenset(
    {"1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M"}
)
KLINES_DEFAULT_LIMIT = 500
KLINES_MAX_LIMIT = 1000
LIST_DEFAULT_LIMIT = 500
LIST_MAX_LIMIT = 1000


def fmt(value: Decimal | float) -> str:
    """Binance number string: 8 decimals."""
    dec = value if isinstance(value, Decimal) else to_decimal(value)
    return f"{dec:.8f}"


def require(params: Params, name: str) -> str:
    value = params.get(name)
    if not value:
        raise api_errors.missing_param(name)
    return value


def opt_int(params: Params, name: str) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise api_errors.illegal_param(name) from None


def clamp_limit(params: Params, default: int, maximum: int) -> int:
    limit = opt_int(params, "limit")
    if limit is None:
        return default
    if limit < 1:
        raise ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
    return min(limit, maximum)


class SpotApi:
    """The Binance spot endpoints over one CandleStore and one MatchingEngine."""

    def __init__(
        self, store: CandleStore, engine: MatchingEngine, weight_limit: int, wall: Clock, withdrawals: bool = False
    ) -> None:
        self._withdrawals = withdrawals
        self._store = store
        self._engine = engine
        self._weight_limit = weight_limit
        self._wall = wall

    def symbol(self, params: Params) -> str:
        """The unified symbol of the mandatory `symbol` parameter; -1121 if not served."""
        symbol = self._store.symbol_for_market_id(require(params, "symbol"))
        if symbol is None:
            raise api_errors.invalid_symbol()
        return symbol

    def optional_symbol(self, params: Params) -> str | None:
        return self.symbol(params) if params.get("symbol") else None

    # ----- public -------------------------------------------------------------------------------

    def ping(self, params: Params, now_ms: int) -> Json:
        return {}

    def server_time(self, params: Params, now_ms: int) -> Json:
        """The WALL clock: ccxt signs requests with it, so replay time would break signed calls."""
        return {"serverTime": self._wall.now_ms()}

    def exchange_info(self, params: Params, now_ms: int) -> Json:
        symbols = self._store.symbols
        wanted: list[str] | None = None
        if params.get("symbol"):
            wanted = [params["symbol"]]
        elif params.get("symbols"):
            try:
                parsed = json.loads(params["symbols"])
            except ValueError:
                raise api_errors.illegal_param("symbols") from None
            if not isinstance(parsed, list) or not all(isinstance(x, str) for x in parsed):
                raise api_errors.illegal_param("symbols")
            wanted = parsed
        if wanted is not None:
            selected = [self._store.symbol_for_market_id(m) for m in wanted]
            if any(s is None for s in selected):
                raise api_errors.invalid_symbol()
            symbols = [s for s in selected if s is not None]
        return exchange_info(symbols, self._wall.now_ms(), self._weight_limit)

    def klines(self, params: Params, now_ms: int) -> Json:
        symbol = self.symbol(params)
        interval = require(params, "interval")
        if interval not in BINANCE_INTERVALS:
            raise api_errors.invalid_interval()
        series = self._store.series(symbol, interval)
        if series is None:
            raise api_errors.invalid_interval()
        limit = clamp_limit(params, KLINES_DEFAULT_LIMIT, KLINES_MAX_LIMIT)
        start, end = opt_int(params, "startTime"), opt_int(params, "endTime")
        tf = series.tf_ms
        rows: list[list[object]] = []
        for i in series.select(now_ms, start, end, limit):
            o, h, lo, c, v = (
                float(series.open[i]),
                float(series.high[i]),
                float(series.low[i]),
                float(series.close[i]),
                float(series.volume[i]),
            )
            open_ms = int(series.ts[i])
            quote_volume = v * (h + lo + c) / 3.0  # estimate: the source data has no quote volume
            rows.append(
                [
                    open_ms,
                    fmt(o),
                    fmt(h),
                    fmt(lo),
                    fmt(c),
                    fmt(v),
                    open_ms + tf - 1,
                    f"{quote_volume:.8f}",
                    0,
                    "0.00000000",
                    "0.00000000",
                    "0",
                ]
            )
        return rows

    def ticker_price(self, params: Params, now_ms: int) -> Json:
        symbol = self.optional_symbol(params)
        if symbol is not None:
            price = self._store.price_at(symbol, now_ms)
            if price is None:
                raise api_errors.market_closed()
            return {"symbol": market_id(symbol), "price": fmt(price)}
        out = []
        for sym in self._store.symbols:
            price = self._store.price_at(sym, now_ms)
            if price is not None:
                out.append({"symbol": market_id(sym), "price": fmt(price)})
        return out

    # ----- signed -------------------------------------------------------------------------------

    def account(self, params: Params, now_ms: int) -> Json:
        cfg = self._engine.config
        omit_zero = params.get("omitZeroBalances", "").lower() == "true"
        balances = [
            {"asset": asset, "free": fmt(free), "locked": fmt(locked)}
            for asset, (free, locked) in self._engine.balances().items()
            if not (omit_zero and free == 0 and locked == 0)
        ]
        return {
            "makerCommission": int(cfg.maker_fee_rate * 10000),
            "takerCommission": int(cfg.taker_fee_rate * 10000),
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {
                "maker": fmt(cfg.maker_fee_rate),
                "taker": fmt(cfg.taker_fee_rate),
                "buyer": fmt(Decimal(0)),
                "seller": fmt(Decimal(0)),
            },
            "canTrade": True,
            "canWithdraw": False,
            "canDeposit": False,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": now_ms,
            "accountType": "SPOT",
            "balances": balances,
            "permissions": ["SPOT"],
            "uid": 1,
        }

    def api_restrictions(self, params: Params, now_ms: int) -> Json:
        return {
            "ipRestrict": False,
            "createTime": self._store.first_open_ms,
            "enableReading": True,
            "enableWithdrawals": self._withdrawals,
            "enableInternalTransfer": False,
            "enableMargin": False,
            "enableFutures": False,
            "permitsUniversalTransfer": False,
            "enableVanillaOptions": False,
            "enableFixApiTrade": False,
            "enableFixReadOnly": False,
            "enableSpotAndMarginTrading": True,
            "enablePortfolioMarginTrading": False,
        }

    def new_order(self, params: Params, now_ms: int) -> Json:
        symbol = self.symbol(params)
        side_raw = require(params, "side")
        type_raw = require(params, "type")
        try:
            side = Side(side_raw)
        except ValueError:
            raise ApiError(-1117, "Invalid side.") from None
        try:
            order_type = OrderType(type_raw)
        except ValueError:
            raise ApiError(-1116, "Invalid orderType.") from None
        tif: TimeInForce | None = None
        if params.get("timeInForce"):
            try:
                tif = TimeInForce(params["timeInForce"])
            except ValueError:
                raise ApiError(-1115, "Invalid timeInForce.") from None
        resp_type = params.get("newOrderRespType") or "FULL"
        if resp_type not in ("ACK", "RESULT", "FULL"):
            raise ApiError(-1100, "Illegal characters found in parameter 'newOrderRespType'.")
        request = OrderRequest(
            symbol=symbol,
            side=side,
            type=order_type,
            quantity=parse_decimal("quantity", params["quantity"]) if params.get("quantity") else None,
            quote_order_qty=(
                parse_decimal("quoteOrderQty", params["quoteOrderQty"]) if params.get("quoteOrderQty") else None
            ),
            price=parse_decimal("price", params["price"]) if params.get("price") else None,
            time_in_force=tif,
            client_order_id=params.get("newClientOrderId") or None,
        )
        order = self._engine.place(request, now_ms)
        ack: dict[str, object] = {
            "symbol": market_id(order.symbol),
            "orderId": order.order_id,
            "orderListId": -1,
            "clientOrderId": order.client_order_id,
            "transactTime": now_ms,
        }
        if resp_type == "ACK":
            return ack
        result = {
            **ack,
            **self._order_fields(order),
            "workingTime": order.time_ms,
            "selfTradePreventionMode": "NONE",
        }
        if resp_type == "FULL":
            result["fills"] = [
                {
                    "price": fmt(t.price),
                    "qty": fmt(t.qty),
                    "commission": fmt(t.commission),
                    "commissionAsset": t.commission_asset,
                    "tradeId": t.trade_id,
                }
                for t in order.fills
            ]
        return result

    def get_order(self, params: Params, now_ms: int) -> Json:
        symbol = self.symbol(params)
        order_id, client_id = self._order_ref(params)
        return self._order_json(self._engine.get_order(symbol, order_id, client_id))

    def cancel_order(self, params: Params, now_ms: int) -> Json:
        symbol = self.symbol(params)
        order_id, client_id = self._order_ref(params)
        order = self._engine.cancel(symbol, order_id, client_id, now_ms)
        return self._cancel_json(order, params.get("newClientOrderId") or f"cancel-{order.order_id}", now_ms)

    def cancel_open_orders(self, params: Params, now_ms: int) -> Json:
        symbol = self.symbol(params)
        orders = self._engine.open_orders(symbol)
        if not orders:
            raise api_errors.unknown_order()
        return [
            self._cancel_json(self._engine.cancel(symbol, o.order_id, None, now_ms), f"cancel-{o.order_id}", now_ms)
            for o in orders
        ]

    def open_orders(self, params: Params, now_ms: int) -> Json:
        return [self._order_json(o) for o in self._engine.open_orders(self.optional_symbol(params))]

    def all_orders(self, params: Params, now_ms: int) -> Json:
        symbol = self.symbol(params)
        limit = clamp_limit(params, LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT)
        from_id, start, end = (
            opt_int(params, "orderId"),
            opt_int(params, "startTime"),
            opt_int(params, "endTime"),
        )
        orders = self._engine.all_orders(symbol)
        if from_id is not None:
            orders = [o for o in orders if o.order_id >= from_id][:limit]
        elif start is not None or end is not None:
            orders = [o for o in orders if (start is None or o.time_ms >= start) and (end is None or o.time_ms <= end)]
            orders = orders[:limit] if start is not None else orders[-limit:]
        else:
            orders = orders[-limit:]
        return [self._order_json(o) for o in orders]

    def my_trades(self, params: Params, now_ms: int) -> Json:
        symbol = self.symbol(params)
        limit = clamp_limit(params, LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT)
        order_id, from_id = opt_int(params, "orderId"), opt_int(params, "fromId")
        start, end = opt_int(params, "startTime"), opt_int(params, "endTime")
        trades = self._engine.trades(symbol)
        if order_id is not None:
            trades = [t for t in trades if t.order_id == order_id]
        if from_id is not None:
            trades = [t for t in trades if t.trade_id >= from_id][:limit]
        elif start is not None or end is not None:
            trades = [t for t in trades if (start is None or t.time_ms >= start) and (end is None or t.time_ms <= end)]
            trades = trades[:limit] if start is not None else trades[-limit:]
        else:
            trades = trades[-limit:]
        return [self._trade_json(t) for t in trades]

    # ----- shapes -------------------------------------------------------------------------------

    @staticmethod
    def _order_ref(params: Params) -> tuple[int | None, str | None]:
        order_id = opt_int(params, "orderId")
        client_id = params.get("origClientOrderId") or None
        if order_id is None and client_id is None:
            raise ApiError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        return order_id, client_id

    @staticmethod
    def _order_fields(order: Order) -> dict[str, object]:
        return {
            "price": fmt(order.price),
            "origQty": fmt(order.orig_qty),
            "executedQty": fmt(order.executed_qty),
            "origQuoteOrderQty": fmt(order.orig_quote_qty),
            "cummulativeQuoteQty": fmt(order.cum_quote),
            "status": str(order.status),
            "timeInForce": str(order.time_in_force or TimeInForce.GTC),
            "type": str(order.type),
            "side": str(order.side),
        }

    def _order_json(self, order: Order) -> dict[str, object]:
        return {
            "symbol": market_id(order.symbol),
            "orderId": order.order_id,
            "orderListId": -1,
            "clientOrderId": order.client_order_id,
            **self._order_fields(order),
            "stopPrice": fmt(Decimal(0)),
            "icebergQty": fmt(Decimal(0)),
            "time": order.time_ms,
            "updateTime": order.update_ms,
            "isWorking": True,
            "workingTime": order.time_ms,
            "selfTradePreventionMode": "NONE",
        }

    def _cancel_json(self, order: Order, cancel_client_id: str, now_ms: int) -> dict[str, object]:
        return {
            "symbol": market_id(order.symbol),
            "origClientOrderId": order.client_order_id,
            "orderId": order.order_id,
            "orderListId": -1,
            "clientOrderId": cancel_client_id,
            "transactTime": now_ms,
            **self._order_fields(order),
            "selfTradePreventionMode": "NONE",
        }

    @staticmethod
    def _trade_json(t: Trade) -> dict[str, object]:
        return {
            "symbol": market_id(t.symbol),
            "id": t.trade_id,
            "orderId": t.order_id,
            "orderListId": -1,
            "price": fmt(t.price),
            "qty": fmt(t.qty),
            "quoteQty": fmt(t.quote_qty),
            "commission": fmt(t.commission),
            "commissionAsset": t.commission_asset,
            "time": t.time_ms,
            "isBuyer": t.side is Side.BUY,
            "isMaker": t.is_maker,
            "isBestMatch": True,
        }

    def futures_exchange_info(self, params: Params, now_ms: int) -> Json:
        """fapi/dapi exchangeInfo with no markets, so a ccxt client with default options loads spot only."""
        return {
            "timezone": "UTC",
            "serverTime": self._wall.now_ms(),
            "rateLimits": [],
            "exchangeFilters": [],
            "assets": [],
            "symbols": [],
        }

    @staticmethod
    def empty_list(params: Params, now_ms: int) -> Json:
        return []
