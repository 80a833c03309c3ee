"""Binance-style API errors: an HTTP status plus a JSON body {"code": ..., "msg": ...}.

The codes are the ones ccxt's `binance` class maps to its exception types when the exchange URL is
not a real binance.com host (the common 'exact' table): -1021 InvalidNonce, -1022 and -2015
AuthenticationError, -1121 BadSymbol, -2010 InvalidOrder (InsufficientFunds by message), -2011 and
-2013 OrderNotFound, -1013 'Filter failure: LOT_SIZE/PRICE_FILTER' InvalidOrder, -1003 on HTTP 429
DDoSProtection.
"""

from __future__ import annotations


class ApiError(Exception):
    """An error answer. Raised by handlers and the matching engine, rendered by the app."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status

    def body(self) -> dict[str, object]:
        return {"code": self.code, "msg": self.msg}


def missing_param(name: str) -> ApiError:
    return ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def illegal_param(name: str) -> ApiError:
    return ApiError(-1100, f"Illegal characters found in parameter '{name}'.")


def invalid_symbol() -> ApiError:
    return ApiError(-1121, "Invalid symbol.")


def invalid_interval() -> ApiError:
    return ApiError(-1120, "Invalid interval.")


def invalid_api_key() -> ApiError:
    return ApiError(-2015, "Invalid API-key, IP, or permissions for action.", status=401)


def bad_signature() -> ApiError:
    return ApiError(-1022, "Signature for this request is not valid.")


def filter_failure(filter_name: str) -> ApiError:
    return ApiError(-1013, f"Filter failure: {filter_name}")


def insufficient_balance() -> ApiError:
    return ApiError(-2010, "Account has insufficient balance for requested action.")


def duplicate_order() -> ApiError:
    return ApiError(-2010, "Duplicate order sent.")


def market_closed() -> ApiError:
    return ApiError(-1013, "Market is closed.")


def order_does_not_exist() -> ApiError:
    return ApiError(-2013, "Order does not exist.")


def unknown_order() -> ApiError:
    return ApiError(-2011, "Unknown order sent.")
