"""The Coinbase Advanced Trade dialect of the local exchange: what ccxt's `coinbase` class calls.

Served by the same aiohttp app as the Binance dialect (`cta.exchange_server.app` routes `/api/v3/brokerage/...`
and `/v2/...` here), over the SAME candle store, replay clock, matching engine (one account), request budget
and fault injection. Endpoint logic only: each handler takes a `CoinbaseRequest` and the replay time and
returns the JSON body, or raises `CoinbaseError` (HTTP status + Coinbase's error body).

Shapes follow Coinbase (and what ccxt 4.5 parses): product ids `BTC-USDT`; candles newest first with string
fields and `start` in unix seconds, at most MAX_CANDLES per request, granularities ONE_MINUTE .. ONE_DAY (no
four-hour); an order's creation answers `{"success": true, "success_response": {...}}` with no fill status,
the historical order lookup has it; failures to create are `{"success": false, "error_response": {...}}`
with HTTP 200; other errors `{"error", "error_details", "message"}`. Commission is charged in the quote
asset (the engine's `fee_in_quote`), as Coinbase does.

Routes (public unless marked JWT):
- GET /v2/time, /api/v3/brokerage/time, /v2/currencies, /v2/currencies/crypto, /v2/exchange-rates
- GET /api/v3/brokerage/market/products, /api/v3/brokerage/market/products/{product_id}[/candles]
- JWT: GET /api/v3/brokerage/products[/{product_id}[/candles]], /api/v3/brokerage/transaction_summary,
  /api/v3/brokerage/key_permissions,
  /v2/accounts, /api/v3/brokerage/accounts, /api/v3/brokerage/orders/historical/{order_id},
  /api/v3/brokerage/orders/historical/batch, /api/v3/brokerage/orders/historical/fills;
  POST /api/v3/brokerage/orders, /api/v3/brokerage/orders/batch_cancel
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from cta.clock import Clock
from cta.exchange_server.api_errors import ApiError
from cta.exchange_server.candle_store import CandleStore, base_quote
from cta.exchange_server.matching import (
    MatchingEngine,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    Trade,
)

Json = object
GRANULARITIES: dict[str, str] = {
    "ONE_MINUTE": "1m",
    "FIVE_MINUTE": "5m",
    "FIFTEEN_MINUTE": "15m",
    "THIRTY_MINUTE": "30m",
    "ONE_HOUR": "1h",
    "TWO_HOUR": "2h",
    "SIX_HOUR": "6h",
    "ONE_DAY": "1d",
}
MAX_CANDLES = 300  # per request, as ccxt pages them (fetchOHLCV limit 300)
MAX_BATCH_CANCEL = 100
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
ORDER_ID_PREFIX = "00000000-0000-4000-8000-"  # order uuids: this prefix + the engine's order id in 12 hex digits
CLIENT_ORDER_ID_MAX = 128
FIAT = {"USD": "United States Dollar", "EUR": "Euro", "GBP": "British Pound"}


class CoinbaseError(Exception):
    """An error answer in Coinbase's Advanced Trade shape."""

    def __init__(self, status: int, error: str, message: str, details: str = "") -> None:
        super().__init__(f"{status} {error}: {message}")
        self.status = status
        self.error = error
        self.message = message
        self.details = details

    def body(self) -> dict[str, object]:
        return {"error": self.error, "error_details": self.details or self.message, "message": self.message}


def invalid_argument(message: str) -> CoinbaseError:
    return CoinbaseError(400, "INVALID_ARGUMENT", message)


def not_found(message: str) -> CoinbaseError:
    return CoinbaseError(404, "NOT_FOUND", message)


@dataclass(frozen=True)
class CoinbaseRequest:
    query: Mapping[str, Sequence[str]]  # every value of each name (Coinbase repeats names for arrays)
    body: Mapping[str, Any]  # the JSON body of a POST ({} otherwise)
    path_params: Mapping[str, str]

    def first(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    def all(self, *names: str) -> list[str]:
        return [v for name in names for v in self.query.get(name, ()) if v]


CoinbaseHandler = Callable[[CoinbaseRequest, int], Json]


@dataclass(frozen=True)
class CoinbaseRoute:
    method: str
    template: str  # e.g. /api/v3/brokerage/orders/historical/{order_id}
    handler: CoinbaseHandler
    signed: bool
    pattern: re.Pattern[str] = field(compare=False)


def _pattern(template: str) -> re.Pattern[str]:
    regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    return re.compile(f"^{regex}$")


def product_id(symbol: str) -> str:
    """'BTC/USDT' -> 'BTC-USDT'."""
    return symbol.replace("/", "-")


def order_uuid(order_id: int) -> str:
    return f"{ORDER_ID_PREFIX}{order_id:012x}"


def engine_order_id(order_uuid_text: str) -> int | None:
    if not order_uuid_text.startswith(ORDER_ID_PREFIX):
        return None
    tail = order_uuid_text[len(ORDER_ID_PREFIX) :]
    if len(tail) != 12:
        return None
    try:
        return int(tail, 16)
    except ValueError:
        return None


def _iso(ms: int) -> str:
    """RFC 3339 with microseconds, as Coinbase writes times."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _num(value: Decimal | float) -> str:
    dec = value if isinstance(value, Decimal) else Decimal(repr(float(value)))
    text = f"{dec:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _decimal(config: Mapping[str, Any], name: str) -> Decimal | None:
    raw = config.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise invalid_argument(f"{name} is not a number: {raw!r}") from None
    if not value.is_finite() or value <= 0:
        raise invalid_argument(f"{name} must be a positive number, got {raw!r}")
    return value


def _parse_ms(text: str, name: str) -> int:
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        raise invalid_argument(f"{name} must be an RFC 3339 time, got {text!r}") from None


@dataclass
class _OrderMeta:
    """What the Coinbase dialect remembers of an order beyond the engine: its ids and configuration."""

    client_order_id: str
    configuration: dict[str, dict[str, Any]]


# Engine rejections -> Coinbase's create-order failure (error, preview_failure_reason)
_CREATE_FAILURES: tuple[tuple[str, str, str], ...] = (
    ("insufficient balance", "INSUFFICIENT_FUND", "PREVIEW_INSUFFICIENT_FUND"),
    ("LOT_SIZE", "INVALID_SIZE_PRECISION", "PREVIEW_INVALID_BASE_SIZE_TOO_SMALL"),
    ("NOTIONAL", "INVALID_SIZE_PRECISION", "PREVIEW_INVALID_QUOTE_SIZE_TOO_SMALL"),
    ("PRICE_FILTER", "INVALID_LIMIT_PRICE_PRECISION", "PREVIEW_INVALID_LIMIT_PRICE"),
    ("immediately match", "INVALID_LIMIT_PRICE_POST_ONLY", "PREVIEW_INVALID_LIMIT_PRICE_POST_ONLY"),
)


class CoinbaseApi:
    """The Coinbase Advanced Trade endpoints over one CandleStore and one MatchingEngine (shared with Binance's)."""

    def __init__(self, store: CandleStore, engine: MatchingEngine, wall: Clock, *, can_transfer: bool = False) -> None:
        self._store = store
        self._engine = engine
        self._wall = wall
        self._can_transfer = can_transfer  # what key_permissions reports (live-safety drills)
        self._orders: dict[int, _OrderMeta] = {}
        self._by_client_id: dict[str, int] = {}
        self._by_product = {product_id(s): s for s in store.symbols}
        self.routes = self._build_routes()

    def _build_routes(self) -> list[CoinbaseRoute]:
        public: list[tuple[str, str, CoinbaseHandler]] = [
            ("GET", "/v2/time", self.time_v2),
            ("GET", "/api/v3/brokerage/time", self.time_v3),
            ("GET", "/v2/currencies", self.currencies),
            ("GET", "/v2/currencies/crypto", self.crypto_currencies),
            ("GET", "/v2/exchange-rates", self.exchange_rates),
            ("GET", "/api/v3/brokerage/market/products", self.products),
            ("GET", "/api/v3/brokerage/market/products/{product_id}", self.product),
            ("GET", "/api/v3/brokerage/market/products/{product_id}/candles", self.candles),
        ]
        signed: list[tuple[str, str, CoinbaseHandler]] = [
            ("GET", "/api/v3/brokerage/products", self.products),
            ("GET", "/api/v3/brokerage/products/{product_id}", self.product),
            ("GET", "/api/v3/brokerage/products/{product_id}/candles", self.candles),
            ("GET", "/api/v3/brokerage/transaction_summary", self.transaction_summary),
            ("GET", "/api/v3/brokerage/key_permissions", self.key_permissions),
            ("GET", "/v2/accounts", self.accounts_v2),
            ("GET", "/api/v3/brokerage/accounts", self.accounts_v3),
            ("POST", "/api/v3/brokerage/orders", self.create_order),
            ("GET", "/api/v3/brokerage/orders/historical/batch", self.list_orders),
            ("GET", "/api/v3/brokerage/orders/historical/fills", self.fills),
            ("GET", "/api/v3/brokerage/orders/historical/{order_id}", self.get_order),
            ("POST", "/api/v3/brokerage/orders/batch_cancel", self.batch_cancel),
        ]
        return [
            CoinbaseRoute(method, template, handler, is_signed, _pattern(template))
            for routes, is_signed in ((public, False), (signed, True))
            for method, template, handler in routes
        ]

    @staticmethod
    def handles(path: str) -> bool:
        """Paths of this dialect (nothing of Binance's starts so)."""
        return path.startswith(("/api/v3/brokerage/", "/v2/")) or path == "/api/v3/brokerage"

    def match(self, method: str, path: str) -> tuple[CoinbaseRoute | None, str | None, dict[str, str]]:
        """(route, template, path parameters): route None with a template = known path, wrong method;
        both None = no such path. Literal routes win over templated ones (batch, fills before {order_id})."""
        template: str | None = None
        for route in self.routes:
            found = route.pattern.match(path)
            if found is None:
                continue
            if route.method == method:
                return route, route.template, found.groupdict()
            template = template or route.template
        return None, template, {}

    def symbol(self, product: str | None) -> str:
        symbol = self._by_product.get(product or "")
        if symbol is None:
            raise not_found(f"product {product!r} not found") if product else invalid_argument("product_id is required")
        return symbol

    # ----- public -------------------------------------------------------------------------------

    def time_v2(self, req: CoinbaseRequest, now_ms: int) -> Json:
        """The WALL clock, as for Binance's /api/v3/time: clients sign with it."""
        wall = self._wall.now_ms()
        return {"data": {"iso": _iso(wall)[:19] + "Z", "epoch": wall // 1000}}

    def time_v3(self, req: CoinbaseRequest, now_ms: int) -> Json:
        wall = self._wall.now_ms()
        return {"iso": _iso(wall), "epochSeconds": str(wall // 1000), "epochMillis": str(wall)}

    def _assets(self) -> list[str]:
        return sorted({a for s in self._store.symbols for a in base_quote(s)})

    def currencies(self, req: CoinbaseRequest, now_ms: int) -> Json:
        fiat = [a for a in self._assets() if a in FIAT] or ["USD"]
        return {"data": [{"id": a, "name": FIAT.get(a, a), "min_size": "0.01"} for a in fiat]}

    def crypto_currencies(self, req: CoinbaseRequest, now_ms: int) -> Json:
        return {
            "data": [
                {
                    "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"cta-local-exchange/{a}")),
                    "code": a,
                    "name": a,
                    "color": "#0052FF",
                    "sort_index": i,
                    "exponent": 8,
                    "type": "crypto",
                    "address_regex": "",
                }
                for i, a in enumerate(a for a in self._assets() if a not in FIAT)
            ]
        }

    def exchange_rates(self, req: CoinbaseRequest, now_ms: int) -> Json:
        currency = (req.first("currency") or "USD").upper()
        rates: dict[str, str] = {currency: "1"}
        for sym in self._store.symbols:
            base, quote = base_quote(sym)
            price = self._store.price_at(sym, now_ms)
            if price and quote == currency:
                rates[base] = _num(Decimal(1) / Decimal(repr(price)))
        for asset in self._assets():
            rates.setdefault(asset, "0")
        return {"data": {"currency": currency, "rates": rates}}

    def _product_json(self, symbol: str, now_ms: int) -> dict[str, object]:
        rules = self._engine.config.rules
        base, quote = base_quote(symbol)
        price = self._store.price_at(symbol, now_ms)
        return {
            "product_id": product_id(symbol),
            "price": "" if price is None else _num(price),
            "price_percentage_change_24h": "0",
            "volume_24h": "0",
            "volume_percentage_change_24h": "0",
            "base_increment": _num(rules.step_size),
            "quote_increment": _num(rules.tick_size),
            "quote_min_size": _num(rules.min_notional),
            "quote_max_size": "10000000",
            "base_min_size": _num(rules.min_qty),
            "base_max_size": _num(rules.max_qty),
            "base_name": base,
            "quote_name": FIAT.get(quote, quote),
            "watched": False,
            "is_disabled": False,
            "new": False,
            "status": "online",
            "cancel_only": False,
            "limit_only": False,
            "post_only": False,
            "trading_disabled": False,
            "auction_mode": False,
            "product_type": "SPOT",
            "quote_currency_id": quote,
            "base_currency_id": base,
            "fcm_trading_session_details": None,
            "mid_market_price": "",
            "alias": "",
            "alias_to": [],
            "base_display_symbol": base,
            "quote_display_symbol": quote,
            "view_only": False,
            "price_increment": _num(rules.tick_size),
            "display_name": product_id(symbol),
            "product_venue": "CBE",
        }

    def products(self, req: CoinbaseRequest, now_ms: int) -> Json:
        product_type = (req.first("product_type") or "SPOT").upper()
        wanted = set(req.all("product_ids"))
        products = (
            [self._product_json(s, now_ms) for s in self._store.symbols if not wanted or product_id(s) in wanted]
            if product_type == "SPOT"
            else []  # no futures here
        )
        return {"products": products, "num_products": len(products)}

    def product(self, req: CoinbaseRequest, now_ms: int) -> Json:
        return self._product_json(self.symbol(req.path_params.get("product_id")), now_ms)

    def candles(self, req: CoinbaseRequest, now_ms: int) -> Json:
        """Closed candles with start <= open time < end (unix seconds), newest first, at most MAX_CANDLES."""
        symbol = self.symbol(req.path_params.get("product_id"))
        granularity = req.first("granularity") or ""
        timeframe = GRANULARITIES.get(granularity)
        if timeframe is None:
            raise invalid_argument(f"granularity {granularity!r} is not supported; one of {', '.join(GRANULARITIES)}")
        try:
            start_s, end_s = int(req.first("start") or ""), int(req.first("end") or "")
        except ValueError:
            raise invalid_argument("start and end are required, in unix seconds") from None
        if end_s <= start_s:
            raise invalid_argument("start and end argument is invalid - end must be after start")
        series = self._store.series(symbol, timeframe)
        if series is None:
            held = ", ".join(k for k, v in GRANULARITIES.items() if v in self._store.timeframes(symbol))
            raise invalid_argument(f"no {granularity} candles for {product_id(symbol)} here (held: {held or 'none'})")
        if (end_s - start_s) * 1000 // series.tf_ms > MAX_CANDLES:
            raise invalid_argument(
                f"start and end argument is invalid - number of candles requested should be less than "
                f"or equal to {MAX_CANDLES}"
            )
        limit = MAX_CANDLES
        if req.first("limit"):
            try:
                limit = max(1, min(MAX_CANDLES, int(req.first("limit") or "")))
            except ValueError:
                raise invalid_argument("limit must be an integer") from None
        rows = series.select(now_ms, start_s * 1000, end_s * 1000 - 1, limit)
        return {
            "candles": [
                {
                    "start": str(int(series.ts[i]) // 1000),
                    "low": _num(float(series.low[i])),
                    "high": _num(float(series.high[i])),
                    "open": _num(float(series.open[i])),
                    "close": _num(float(series.close[i])),
                    "volume": _num(float(series.volume[i])),
                }
                for i in reversed(rows)
            ]
        }

    # ----- private: account ---------------------------------------------------------------------

    def key_permissions(self, req: CoinbaseRequest, now_ms: int) -> Json:
        """What the CDP key may do (Advanced Trade's Get API Key Permissions): view and trade; transfer only when
        the exchange was started with withdrawals enabled (a key live trading must refuse)."""
        return {
            "can_view": True,
            "can_trade": True,
            "can_transfer": self._can_transfer,
            "portfolio_uuid": "00000000-0000-4000-8000-000000000001",
            "portfolio_type": "DEFAULT",
        }

    def transaction_summary(self, req: CoinbaseRequest, now_ms: int) -> Json:
        cfg = self._engine.config
        trades = self._engine.trades()
        volume = sum((t.quote_qty for t in trades), Decimal(0))
        fees = sum((self._fee_in_quote(t) for t in trades), Decimal(0))
        return {
            "total_volume": float(volume),
            "total_fees": float(fees),
            "fee_tier": {
                "pricing_tier": "Local exchange",
                "usd_from": "0",
                "usd_to": "10000",
                "taker_fee_rate": _num(cfg.taker_fee_rate),
                "maker_fee_rate": _num(cfg.maker_fee_rate),
                "aop_from": "",
                "aop_to": "",
            },
            "margin_rate": None,
            "goods_and_services_tax": None,
            "advanced_trade_only_volume": float(volume),
            "advanced_trade_only_fees": float(fees),
            "coinbase_pro_volume": 0,
            "coinbase_pro_fees": 0,
            "total_balance": "",
            "has_promo_fee": False,
        }

    @staticmethod
    def _account_uuid(asset: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"cta-local-exchange/account/{asset}"))

    def accounts_v2(self, req: CoinbaseRequest, now_ms: int) -> Json:
        """Coinbase App accounts: the balance is the total (available + on hold), as v2 reports it."""
        data = [
            {
                "id": self._account_uuid(asset),
                "name": f"{asset} Wallet",
                "primary": asset == "USD",
                "type": "fiat" if asset in FIAT else "wallet",
                "currency": {"code": asset, "name": FIAT.get(asset, asset), "exponent": 8, "type": "crypto"},
                "balance": {"amount": _num(free + locked), "currency": asset},
                "created_at": _iso(self._store.first_open_ms),
                "updated_at": _iso(now_ms),
                "resource": "account",
                "resource_path": f"/v2/accounts/{self._account_uuid(asset)}",
                "allow_deposits": False,
                "allow_withdrawals": False,
            }
            for asset, (free, locked) in self._engine.balances().items()
        ]
        pagination = {
            "ending_before": None,
            "starting_after": None,
            "previous_ending_before": None,
            "next_starting_after": None,
            "limit": len(data),
            "order": "desc",
            "previous_uri": None,
            "next_uri": None,
        }
        return {"pagination": pagination, "data": data}

    def accounts_v3(self, req: CoinbaseRequest, now_ms: int) -> Json:
        accounts = [
            {
                "uuid": self._account_uuid(asset),
                "name": f"{asset} Wallet",
                "currency": asset,
                "available_balance": {"value": _num(free), "currency": asset},
                "default": True,
                "active": True,
                "created_at": _iso(self._store.first_open_ms),
                "updated_at": _iso(now_ms),
                "deleted_at": None,
                "type": "ACCOUNT_TYPE_FIAT" if asset in FIAT else "ACCOUNT_TYPE_CRYPTO",
                "ready": True,
                "hold": {"value": _num(locked), "currency": asset},
            }
            for asset, (free, locked) in self._engine.balances().items()
        ]
        return {"accounts": accounts, "has_next": False, "cursor": "", "size": len(accounts)}

    # ----- private: orders ----------------------------------------------------------------------

    def create_order(self, req: CoinbaseRequest, now_ms: int) -> Json:
        body = req.body
        client_id = body.get("client_order_id")
        if not isinstance(client_id, str) or not 0 < len(client_id) <= CLIENT_ORDER_ID_MAX:
            raise invalid_argument(f"client_order_id is required (1..{CLIENT_ORDER_ID_MAX} characters)")
        symbol = self.symbol(str(body.get("product_id") or ""))
        side_raw = str(body.get("side") or "").upper()
        if side_raw not in ("BUY", "SELL"):
            raise invalid_argument(f"side must be BUY or SELL, got {body.get('side')!r}")
        config = body.get("order_configuration")
        if not isinstance(config, dict) or len(config) != 1:
            raise invalid_argument("order_configuration must hold exactly one configuration")
        existing = self._by_client_id.get(client_id)
        if existing is not None:  # Coinbase: a repeated client_order_id creates nothing and answers that order
            return self._created(self._order(existing), self._orders[existing])
        [(kind, params)] = config.items()
        if not isinstance(params, dict):
            raise invalid_argument(f"{kind} must be an object")
        try:
            request = self._order_request(symbol, Side(side_raw), kind, params)
        except _Unsupported:
            return self._failure(config, "UNSUPPORTED_ORDER_CONFIGURATION", f"{kind} is not supported here", "")
        try:
            order = self._engine.place(request, now_ms)
        except ApiError as exc:
            for needle, error, preview in _CREATE_FAILURES:
                if needle.lower() in exc.msg.lower():
                    return self._failure(config, error, exc.msg, preview)
            return self._failure(config, "UNKNOWN_FAILURE_REASON", exc.msg, "")
        meta = _OrderMeta(client_id, {kind: dict(params)})
        self._orders[order.order_id] = meta
        self._by_client_id[client_id] = order.order_id
        return self._created(order, meta)

    def _order(self, order_id: int | None) -> Order:
        order = None if order_id is None else self._engine.order_by_id(order_id)
        if order is None:
            raise not_found("order with this orderID was not found")
        return order

    def _created(self, order: Order, meta: _OrderMeta) -> dict[str, object]:
        return {
            "success": True,
            "success_response": {
                "order_id": order_uuid(order.order_id),
                "product_id": product_id(order.symbol),
                "side": str(order.side),
                "client_order_id": meta.client_order_id,
            },
            "order_configuration": meta.configuration,
        }

    @staticmethod
    def _failure(config: object, error: str, message: str, preview: str) -> dict[str, object]:
        return {
            "success": False,
            "failure_reason": "UNKNOWN_FAILURE_REASON",
            "order_id": "",
            "error_response": {
                "error": error,
                "message": message,
                "error_details": message,
                "preview_failure_reason": preview or "UNKNOWN_PREVIEW_FAILURE_REASON",
            },
            "order_configuration": config,
        }

    @staticmethod
    def _order_request(symbol: str, side: Side, kind: str, params: Mapping[str, Any]) -> OrderRequest:
        base_size, quote_size = _decimal(params, "base_size"), _decimal(params, "quote_size")
        if kind == "market_market_ioc":
            if (base_size is None) == (quote_size is None):
                raise invalid_argument("market_market_ioc needs exactly one of base_size and quote_size")
            return OrderRequest(
                symbol, side, OrderType.MARKET, quantity=base_size, quote_order_qty=quote_size, fee_in_quote=True
            )
        tifs = {
            "limit_limit_gtc": TimeInForce.GTC,
            "sor_limit_ioc": TimeInForce.IOC,
            "limit_limit_fok": TimeInForce.FOK,
        }
        if kind not in tifs:
            raise _Unsupported(kind)
        price = _decimal(params, "limit_price")
        if base_size is None or price is None:
            raise invalid_argument(f"{kind} needs base_size and limit_price")
        if params.get("post_only") is True and kind == "limit_limit_gtc":
            return OrderRequest(symbol, side, OrderType.LIMIT_MAKER, quantity=base_size, price=price, fee_in_quote=True)
        return OrderRequest(
            symbol, side, OrderType.LIMIT, quantity=base_size, price=price, time_in_force=tifs[kind], fee_in_quote=True
        )

    def get_order(self, req: CoinbaseRequest, now_ms: int) -> Json:
        return {"order": self._order_json(self._order(engine_order_id(req.path_params.get("order_id", ""))))}

    def list_orders(self, req: CoinbaseRequest, now_ms: int) -> Json:
        symbols = [self.symbol(p) for p in req.all("product_ids", "product_id")] or self._store.symbols
        statuses = {s.upper() for s in req.all("order_status")}
        start, end = req.first("start_date"), req.first("end_date")
        start_ms = _parse_ms(start, "start_date") if start else None
        end_ms = _parse_ms(end, "end_date") if end else None
        orders = [
            self._order_json(o)
            for sym in symbols
            for o in self._engine.all_orders(sym)
            if (start_ms is None or o.time_ms >= start_ms) and (end_ms is None or o.time_ms <= end_ms)
        ]
        if statuses:
            orders = [o for o in orders if o["status"] in statuses]
        orders.sort(key=lambda o: str(o["created_time"]), reverse=True)
        limit, offset = self._page(req)
        page = orders[offset : offset + limit]
        more = offset + limit < len(orders)
        return {"orders": page, "sequence": "0", "has_next": more, "cursor": str(offset + limit) if more else ""}

    def fills(self, req: CoinbaseRequest, now_ms: int) -> Json:
        products = {self.symbol(p) for p in req.all("product_ids", "product_id")}
        order_ids = {engine_order_id(o) for o in req.all("order_ids", "order_id")}
        start = req.first("start_sequence_timestamp")
        end = req.first("end_sequence_timestamp")
        start_ms = _parse_ms(start, "start_sequence_timestamp") if start else None
        end_ms = _parse_ms(end, "end_sequence_timestamp") if end else None
        trades = [
            t
            for t in self._engine.trades()
            if (not products or t.symbol in products)
            and (not order_ids or t.order_id in order_ids)
            and (start_ms is None or t.time_ms >= start_ms)
            and (end_ms is None or t.time_ms <= end_ms)
        ]
        trades.reverse()  # newest first
        limit, offset = self._page(req)
        page = trades[offset : offset + limit]
        more = offset + limit < len(trades)
        return {"fills": [self._fill_json(t) for t in page], "cursor": str(offset + limit) if more else ""}

    @staticmethod
    def _page(req: CoinbaseRequest) -> tuple[int, int]:
        try:
            limit = int(req.first("limit") or DEFAULT_LIST_LIMIT)
            offset = int(req.first("cursor") or 0)
        except ValueError:
            raise invalid_argument("limit and cursor must be integers") from None
        if limit < 1 or offset < 0:
            raise invalid_argument("limit must be >= 1 and cursor >= 0")
        return min(limit, MAX_LIST_LIMIT), offset

    def batch_cancel(self, req: CoinbaseRequest, now_ms: int) -> Json:
        ids = req.body.get("order_ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise invalid_argument("order_ids must be a non-empty list of order ids")
        if len(ids) > MAX_BATCH_CANCEL:
            raise invalid_argument(f"at most {MAX_BATCH_CANCEL} order_ids per request")
        results = []
        for text in ids:
            order_id = engine_order_id(text)
            try:
                order = self._order(order_id)
                if not order.is_open:
                    results.append({"success": False, "failure_reason": "DUPLICATE_CANCEL_REQUEST", "order_id": text})
                    continue
                self._engine.cancel(order.symbol, order.order_id, None, now_ms)
                results.append({"success": True, "failure_reason": "UNKNOWN_CANCEL_FAILURE_REASON", "order_id": text})
            except (CoinbaseError, ApiError):
                results.append({"success": False, "failure_reason": "UNKNOWN_CANCEL_ORDER", "order_id": text})
        return {"results": results}

    # ----- shapes -------------------------------------------------------------------------------

    @staticmethod
    def _fee_in_quote(t: Trade) -> Decimal:
        """A trade's commission valued in the quote asset (an order from the Binance dialect pays buys in base)."""
        base, _ = base_quote(t.symbol)
        return t.commission * t.price if t.commission_asset == base else t.commission

    def _configuration(self, order: Order) -> dict[str, dict[str, Any]]:
        meta = self._orders.get(order.order_id)
        if meta is not None:
            return meta.configuration
        if order.type is OrderType.MARKET:
            sized = {"quote_size": _num(order.orig_quote_qty)} if order.orig_quote_qty else {}
            return {"market_market_ioc": sized or {"base_size": _num(order.orig_qty)}}
        tif = {TimeInForce.IOC: "sor_limit_ioc", TimeInForce.FOK: "limit_limit_fok"}
        kind = tif.get(order.time_in_force or TimeInForce.GTC, "limit_limit_gtc")
        return {
            kind: {
                "base_size": _num(order.orig_qty),
                "limit_price": _num(order.price),
                "post_only": order.type is OrderType.LIMIT_MAKER,
            }
        }

    def _order_json(self, order: Order) -> dict[str, object]:
        status = {
            OrderStatus.NEW: "OPEN",
            OrderStatus.PARTIALLY_FILLED: "OPEN",
            OrderStatus.FILLED: "FILLED",
            OrderStatus.CANCELED: "CANCELLED",
            OrderStatus.EXPIRED: "EXPIRED",
        }[order.status]
        fees = sum((self._fee_in_quote(t) for t in order.fills), Decimal(0))
        filled = order.executed_qty
        average = order.cum_quote / filled if filled else Decimal(0)
        target = order.orig_qty if order.orig_qty else filled
        meta = self._orders.get(order.order_id)
        config = self._configuration(order)
        size_in_quote = "quote_size" in next(iter(config.values()), {})
        tif = {
            TimeInForce.IOC: "IMMEDIATE_OR_CANCEL",
            TimeInForce.FOK: "FILL_OR_KILL",
        }.get(order.time_in_force or TimeInForce.GTC, "GOOD_UNTIL_CANCELLED")
        return {
            "order_id": order_uuid(order.order_id),
            "product_id": product_id(order.symbol),
            "user_id": "local-exchange-user",
            "order_configuration": config,
            "side": str(order.side),
            "client_order_id": meta.client_order_id if meta else order.client_order_id,
            "status": status,
            "time_in_force": "IMMEDIATE_OR_CANCEL" if order.type is OrderType.MARKET else tif,
            "created_time": _iso(order.time_ms),
            "completion_percentage": _num((filled / target * 100).quantize(Decimal("0.01"))) if target else "0",
            "filled_size": _num(filled),
            "average_filled_price": _num(average),
            "fee": "",
            "number_of_fills": str(len(order.fills)),
            "filled_value": _num(order.cum_quote),
            "pending_cancel": False,
            "size_in_quote": size_in_quote,
            "total_fees": _num(fees),
            "size_inclusive_of_fees": size_in_quote,
            "total_value_after_fees": _num(
                order.cum_quote + fees if order.side is Side.BUY else order.cum_quote - fees
            ),
            "trigger_status": "INVALID_ORDER_TYPE",
            "order_type": "MARKET" if order.type is OrderType.MARKET else "LIMIT",
            "reject_reason": "REJECT_REASON_UNSPECIFIED",
            "settled": not order.is_open,
            "product_type": "SPOT",
            "reject_message": "",
            "cancel_message": "User requested cancel" if order.status is OrderStatus.CANCELED else "",
            "order_placement_source": "RETAIL_ADVANCED",
            "outstanding_hold_amount": _num(order.locked),
            "is_liquidation": False,
            "last_fill_time": _iso(order.fills[-1].time_ms) if order.fills else None,
            "edit_history": [],
            "leverage": "",
            "margin_type": "UNKNOWN_MARGIN_TYPE",
            "retail_portfolio_id": "local-exchange-portfolio",
        }

    def _fill_json(self, t: Trade) -> dict[str, object]:
        return {
            "entry_id": f"entry-{t.trade_id}",
            "trade_id": str(t.trade_id),
            "order_id": order_uuid(t.order_id),
            "trade_time": _iso(t.time_ms),
            "trade_type": "FILL",
            "price": _num(t.price),
            "size": _num(t.qty),
            "commission": _num(self._fee_in_quote(t)),
            "product_id": product_id(t.symbol),
            "sequence_timestamp": _iso(t.time_ms),
            "liquidity_indicator": "MAKER" if t.is_maker else "TAKER",
            "size_in_quote": False,
            "user_id": "local-exchange-user",
            "side": str(t.side),
            "retail_portfolio_id": "local-exchange-portfolio",
        }


class _Unsupported(Exception):
    """An order configuration this server does not implement (stop, GTD, bracket ...)."""
