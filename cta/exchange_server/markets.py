"""Trading rules (Binance filters) shared by exchangeInfo and order validation."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from cta.exchange_server import api_errors
from cta.exchange_server.candle_store import base_quote, market_id


@dataclass(frozen=True)
class SymbolRules:
    """PRICE_FILTER, LOT_SIZE and NOTIONAL values applied to every symbol."""

    tick_size: Decimal = Decimal("0.01")
    min_price: Decimal = Decimal("0.01")
    max_price: Decimal = Decimal("1000000")
    step_size: Decimal = Decimal("0.00001")
    min_qty: Decimal = Decimal("0.00001")
    max_qty: Decimal = Decimal("9000")
    min_notional: Decimal = Decimal("5")

    def check_price(self, price: Decimal) -> None:
        if price < self.min_price or price > self.max_price or price % self.tick_size != 0:
            raise api_errors.filter_failure("PRICE_FILTER")

    def check_quantity(self, qty: Decimal) -> None:
        if qty < self.min_qty or qty > self.max_qty or qty % self.step_size != 0:
            raise api_errors.filter_failure("LOT_SIZE")

    def check_notional(self, qty: Decimal, price: Decimal) -> None:
        if qty * price < self.min_notional:
            raise api_errors.filter_failure("NOTIONAL")

    def floor_quantity(self, qty: Decimal) -> Decimal:
        """Round down to a multiple of the step size."""
        return (qty // self.step_size) * self.step_size


DEFAULT_RULES = SymbolRules()
ORDER_TYPES: tuple[str, ...] = ("LIMIT", "LIMIT_MAKER", "MARKET")
ASSET_PRECISION = 8


def _fmt(value: Decimal) -> str:
    return f"{value:.8f}"


def symbol_info(symbol: str, rules: SymbolRules = DEFAULT_RULES) -> dict[str, object]:
    """One entry of exchangeInfo['symbols'] in Binance's spot shape."""
    base, quote = base_quote(symbol)
    return {
        "symbol": market_id(symbol),
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": ASSET_PRECISION,
        "quoteAsset": quote,
        "quotePrecision": ASSET_PRECISION,
        "quoteAssetPrecision": ASSET_PRECISION,
        "baseCommissionPrecision": ASSET_PRECISION,
        "quoteCommissionPrecision": ASSET_PRECISION,
        "orderTypes": list(ORDER_TYPES),
        "icebergAllowed": False,
        "ocoAllowed": False,
        "otoAllowed": False,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": False,
        "amendAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": _fmt(rules.min_price),
                "maxPrice": _fmt(rules.max_price),
                "tickSize": _fmt(rules.tick_size),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": _fmt(rules.min_qty),
                "maxQty": _fmt(rules.max_qty),
                "stepSize": _fmt(rules.step_size),
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": _fmt(rules.min_notional),
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def exchange_info(symbols: list[str], server_time_ms: int, weight_limit: int) -> dict[str, object]:
    """GET /api/v3/exchangeInfo body."""
    return {
        "timezone": "UTC",
        "serverTime": server_time_ms,
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": weight_limit,
            },
        ],
        "exchangeFilters": [],
        "symbols": [symbol_info(s) for s in symbols],
    }
