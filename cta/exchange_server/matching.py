"""The simulated spot account: balances, orders and fills against replayed candles.

Pure and deterministic: every method that depends on time takes `now_ms` (replay time). Amounts are
Decimals; commissions are rounded half-up to 8 decimals and, as on Binance, charged in the asset
received (a buy pays in base, a sell in quote).

Execution model:
- MARKET fills at once, fully, at the open of the tape candle containing now (else the last close),
  taker fee.
- LIMIT that is marketable at that price fills the same way (taker). Otherwise it rests with its
  cost locked and fills at its own price (maker fee) on candles that close after it was placed and
  trade through it (low <= buy price, high >= sell price), at most `fill_participation` x candle
  volume per candle, so large orders fill partially over several candles.
- `advance(now_ms)` processes the candles closed since the last call; call it before each request.
- An order placed with `fee_in_quote` (the Coinbase dialect) pays its commission in the quote asset on
  both sides, as Coinbase charges it: a buy locks price x size plus the highest fee rate, and a market buy by
  quote size spends at most that size, fees included.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from enum import StrEnum

from cta.exchange_server import api_errors
from cta.exchange_server.api_errors import ApiError
from cta.exchange_server.candle_store import CandleStore, base_quote
from cta.exchange_server.markets import DEFAULT_RULES, SymbolRules

ZERO = Decimal(0)
EIGHT_DP = Decimal("0.00000001")
_CLIENT_ID = re.compile(r"^[a-zA-Z0-9_\-]{1,36}$")


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    LIMIT_MAKER = "LIMIT_MAKER"


class TimeInForce(StrEnum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"


class OrderStatus(StrEnum):
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"


def to_decimal(value: float) -> Decimal:
    """A float as the Decimal of its shortest repr (28923.63 -> Decimal('28923.63'))."""
    return Decimal(repr(float(value)))


def parse_decimal(name: str, raw: str) -> Decimal:
    """A positive decimal request parameter; -1100 if it is not one."""
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise api_errors.illegal_param(name) from None
    if not value.is_finite() or value <= 0:
        raise api_errors.illegal_param(name)
    return value


@dataclass(frozen=True)
class Trade:
    """One fill of one order (Binance myTrades row)."""

    trade_id: int
    order_id: int
    symbol: str
    side: Side
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    time_ms: int
    is_maker: bool


@dataclass
class Order:
    order_id: int
    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce | None
    price: Decimal
    orig_qty: Decimal
    orig_quote_qty: Decimal
    time_ms: int
    update_ms: int
    matched_until_ms: int
    status: OrderStatus = OrderStatus.NEW
    executed_qty: Decimal = ZERO
    cum_quote: Decimal = ZERO
    locked: Decimal = ZERO
    fills: list[Trade] = field(default_factory=list)
    fee_in_quote: bool = False

    @property
    def is_open(self) -> bool:
        return self.status in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed_qty


@dataclass(frozen=True)
class OrderRequest:
    """A validated-shape POST /api/v3/order; values are checked by MatchingEngine.place."""

    symbol: str
    side: Side
    type: OrderType
    quantity: Decimal | None = None
    quote_order_qty: Decimal | None = None
    price: Decimal | None = None
    time_in_force: TimeInForce | None = None
    client_order_id: str | None = None
    fee_in_quote: bool = False  # commission charged in the quote asset on both sides (Coinbase)


@dataclass(frozen=True)
class EngineConfig:
    taker_fee_rate: Decimal = Decimal("0.001")
    maker_fee_rate: Decimal = Decimal("0.001")
    fill_participation: Decimal = Decimal("0.1")
    rules: SymbolRules = DEFAULT_RULES

    @classmethod
    def from_rates(cls, taker: float, maker: float, participation: float) -> EngineConfig:
        return cls(to_decimal(taker), to_decimal(maker), to_decimal(participation))


class MatchingEngine:
    """One account trading every symbol of a CandleStore. Not thread-safe: callers serialise access."""

    def __init__(
        self,
        store: CandleStore,
        initial_balances: Mapping[str, float | Decimal],
        config: EngineConfig | None = None,
    ) -> None:
        self._store = store
        self._config = config or EngineConfig()
        self._free: dict[str, Decimal] = {}
        self._locked: dict[str, Decimal] = {}
        for sym in store.symbols:
            for asset in base_quote(sym):
                self._free.setdefault(asset, ZERO)
                self._locked.setdefault(asset, ZERO)
        for asset, amount in initial_balances.items():
            self._free[asset] = amount if isinstance(amount, Decimal) else to_decimal(amount)
            self._locked.setdefault(asset, ZERO)
        self._orders: dict[int, Order] = {}
        self._by_client_id: dict[str, int] = {}
        self._trades: list[Trade] = []
        self._next_order_id = 1
        self._next_trade_id = 1

    @property
    def config(self) -> EngineConfig:
        return self._config

    # ----- queries -------------------------------------------------------------------------------

    def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        """asset -> (free, locked), sorted by asset."""
        return {a: (self._free[a], self._locked.get(a, ZERO)) for a in sorted(self._free)}

    def get_order(self, symbol: str, order_id: int | None = None, client_order_id: str | None = None) -> Order:
        """By id or client id; -2013 if unknown or of another symbol."""
        order = self._find(order_id, client_order_id)
        if order is None or order.symbol != symbol:
            raise api_errors.order_does_not_exist()
        return order

    def order_by_id(self, order_id: int) -> Order | None:
        """Any symbol's order by its id (the Coinbase dialect looks orders up without a symbol)."""
        return self._orders.get(order_id)

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        return [o for o in self._orders.values() if o.is_open and (symbol is None or o.symbol == symbol)]

    def all_orders(self, symbol: str) -> list[Order]:
        return [o for o in self._orders.values() if o.symbol == symbol]

    def trades(self, symbol: str | None = None) -> list[Trade]:
        """Every fill so far (of `symbol` if given), oldest first (= ascending trade id)."""
        return [t for t in self._trades if symbol is None or t.symbol == symbol]

    # ----- commands ------------------------------------------------------------------------------

    def place(self, req: OrderRequest, now_ms: int) -> Order:
        """Validate, lock funds and execute what is executable now. Raises ApiError on rejection."""
        if req.symbol not in self._store.symbols:
            raise api_errors.invalid_symbol()
        client_id = req.client_order_id
        if client_id is not None:
            if not _CLIENT_ID.match(client_id):
                raise api_errors.illegal_param("newClientOrderId")
            if client_id in self._by_client_id:
                raise api_errors.duplicate_order()
        rules = self._config.rules
        price_now = self._store.price_at(req.symbol, now_ms)
        if req.type is OrderType.MARKET:
            return self._place_market(req, now_ms, price_now, rules)
        return self._place_limit(req, now_ms, price_now, rules)

    def cancel(self, symbol: str, order_id: int | None, client_order_id: str | None, now_ms: int) -> Order:
        """Cancel an open order and release its locked funds; -2011 if unknown or not open."""
        order = self._find(order_id, client_order_id)
        if order is None or order.symbol != symbol or not order.is_open:
            raise api_errors.unknown_order()
        self._unlock(order, order.locked)
        order.status = OrderStatus.CANCELED
        order.update_ms = now_ms
        return order

    def advance(self, now_ms: int) -> list[Trade]:
        """Fill resting orders on the tape candles that closed up to `now_ms`; returns the new trades."""
        participation = self._config.fill_participation
        rules = self._config.rules
        events: list[tuple[int, int, Decimal]] = []
        for order in self._orders.values():
            if not order.is_open or now_ms <= order.matched_until_ms:
                continue
            remaining = order.remaining
            for bar in self._store.bars_closed_between(order.symbol, order.matched_until_ms, now_ms):
                if remaining <= 0:
                    break
                crossed = (
                    to_decimal(bar.low) <= order.price
                    if order.side is Side.BUY
                    else to_decimal(bar.high) >= order.price
                )
                if not crossed:
                    continue
                qty = min(remaining, rules.floor_quantity(to_decimal(bar.volume) * participation))
                if qty > 0:
                    events.append((bar.close_ms, order.order_id, qty))
                    remaining -= qty
            order.matched_until_ms = now_ms
        events.sort(key=lambda e: (e[0], e[1]))
        new_trades = []
        for close_ms, order_id, qty in events:
            order = self._orders[order_id]
            new_trades.append(self._fill(order, qty, order.price, is_maker=True, time_ms=close_ms - 1))
        return new_trades

    # ----- internals -----------------------------------------------------------------------------

    def _find(self, order_id: int | None, client_order_id: str | None) -> Order | None:
        if order_id is not None:
            return self._orders.get(order_id)
        if client_order_id is not None:
            oid = self._by_client_id.get(client_order_id)
            return None if oid is None else self._orders.get(oid)
        return None

    def _place_market(self, req: OrderRequest, now_ms: int, price_now: float | None, rules: SymbolRules) -> Order:
        if req.price is not None:
            raise ApiError(-1106, "Parameter 'price' sent when not required.")
        if req.quantity is not None and req.quote_order_qty is not None:
            raise ApiError(-1106, "Parameter 'quoteOrderQty' sent when not required.")
        if req.quantity is None and req.quote_order_qty is None:
            raise ApiError(-1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!")
        if price_now is None:
            raise api_errors.market_closed()
        price = to_decimal(price_now)
        quote_budget = req.quote_order_qty or ZERO
        fee_factor = self._buy_fee_factor(req.side, req.fee_in_quote, self._config.taker_fee_rate)
        qty = req.quantity if req.quantity is not None else rules.floor_quantity(quote_budget / (price * fee_factor))
        rules.check_quantity(qty)
        rules.check_notional(qty, price)
        base, quote = base_quote(req.symbol)
        if req.side is Side.BUY and qty * price * fee_factor > self._free[quote]:
            raise api_errors.insufficient_balance()
        if req.side is Side.SELL and qty > self._free[base]:
            raise api_errors.insufficient_balance()
        order = self._new_order(req, now_ms, price=ZERO, qty=qty, quote_qty=req.quote_order_qty or ZERO, tif=None)
        self._fill(order, qty, price, is_maker=False, time_ms=now_ms)
        return order

    def _place_limit(self, req: OrderRequest, now_ms: int, price_now: float | None, rules: SymbolRules) -> Order:
        if req.price is None:
            raise api_errors.missing_param("price")
        if req.quantity is None:
            raise api_errors.missing_param("quantity")
        if req.quote_order_qty is not None:
            raise ApiError(-1106, "Parameter 'quoteOrderQty' sent when not required.")
        tif = req.time_in_force
        if req.type is OrderType.LIMIT and tif is None:
            raise api_errors.missing_param("timeInForce")
        if req.type is OrderType.LIMIT_MAKER and tif is not None:
            raise ApiError(-1106, "Parameter 'timeInForce' sent when not required.")
        price, qty = req.price, req.quantity
        rules.check_price(price)
        rules.check_quantity(qty)
        rules.check_notional(qty, price)
        if price_now is None:
            raise api_errors.market_closed()
        market_price = to_decimal(price_now)
        marketable = price >= market_price if req.side is Side.BUY else price <= market_price
        if marketable and req.type is OrderType.LIMIT_MAKER:
            raise ApiError(-2010, "Order would immediately match and take.")
        base, quote = base_quote(req.symbol)
        fee_factor = self._buy_fee_factor(req.side, req.fee_in_quote, self._max_fee_rate())
        lock_asset, lock_amount = (quote, qty * price * fee_factor) if req.side is Side.BUY else (base, qty)
        if lock_amount > self._free[lock_asset]:
            raise api_errors.insufficient_balance()
        order = self._new_order(req, now_ms, price=price, qty=qty, quote_qty=ZERO, tif=tif)
        self._free[lock_asset] -= lock_amount
        self._locked[lock_asset] += lock_amount
        order.locked = lock_amount
        if marketable:
            self._fill(order, qty, market_price, is_maker=False, time_ms=now_ms)
        elif tif in (TimeInForce.IOC, TimeInForce.FOK):
            self._unlock(order, order.locked)
            order.status = OrderStatus.EXPIRED
        return order

    def _new_order(
        self,
        req: OrderRequest,
        now_ms: int,
        *,
        price: Decimal,
        qty: Decimal,
        quote_qty: Decimal,
        tif: TimeInForce | None,
    ) -> Order:
        order_id = self._next_order_id
        self._next_order_id += 1
        client_id = req.client_order_id or f"cta-{order_id:012d}"
        order = Order(
            order_id=order_id,
            client_order_id=client_id,
            symbol=req.symbol,
            side=req.side,
            type=req.type,
            time_in_force=tif,
            price=price,
            orig_qty=qty,
            orig_quote_qty=quote_qty,
            time_ms=now_ms,
            update_ms=now_ms,
            matched_until_ms=now_ms,
            fee_in_quote=req.fee_in_quote,
        )
        self._orders[order_id] = order
        self._by_client_id[client_id] = order_id
        return order

    def _max_fee_rate(self) -> Decimal:
        return max(self._config.maker_fee_rate, self._config.taker_fee_rate)

    @staticmethod
    def _buy_fee_factor(side: Side, fee_in_quote: bool, rate: Decimal) -> Decimal:
        """What a buy paying its fee in quote costs per unit of notional (1 otherwise)."""
        return 1 + rate if side is Side.BUY and fee_in_quote else Decimal(1)

    def _unlock(self, order: Order, amount: Decimal) -> None:
        base, quote = base_quote(order.symbol)
        asset = quote if order.side is Side.BUY else base
        self._locked[asset] -= amount
        self._free[asset] += amount
        order.locked -= amount

    def _fill(self, order: Order, qty: Decimal, price: Decimal, *, is_maker: bool, time_ms: int) -> Trade:
        base, quote = base_quote(order.symbol)
        rate = self._config.maker_fee_rate if is_maker else self._config.taker_fee_rate
        quote_qty = qty * price
        if order.type is not OrderType.MARKET:
            factor = self._buy_fee_factor(order.side, order.fee_in_quote, self._max_fee_rate())
            self._unlock(order, min(order.locked, qty * order.price * factor) if order.side is Side.BUY else qty)
        if order.side is Side.BUY and order.fee_in_quote:
            commission = (quote_qty * rate).quantize(EIGHT_DP, rounding=ROUND_HALF_UP)
            commission_asset = quote
            self._free[quote] -= quote_qty + commission
            self._free[base] += qty
        elif order.side is Side.BUY:
            commission = (qty * rate).quantize(EIGHT_DP, rounding=ROUND_HALF_UP)
            commission_asset = base
            self._free[quote] -= quote_qty
            self._free[base] += qty - commission
        else:
            commission = (quote_qty * rate).quantize(EIGHT_DP, rounding=ROUND_HALF_UP)
            commission_asset = quote
            self._free[base] -= qty
            self._free[quote] += quote_qty - commission
        trade = Trade(
            trade_id=self._next_trade_id,
            order_id=order.order_id,
            symbol=order.symbol,
            side=order.side,
            price=price,
            qty=qty,
            quote_qty=quote_qty,
            commission=commission,
            commission_asset=commission_asset,
            time_ms=time_ms,
            is_maker=is_maker,
        )
        self._next_trade_id += 1
        self._trades.append(trade)
        order.fills.append(trade)
        order.executed_qty += qty
        order.cum_quote += quote_qty
        order.update_ms = time_ms
        order.status = OrderStatus.FILLED if order.remaining <= 0 else OrderStatus.PARTIALLY_FILLED
        return trade
