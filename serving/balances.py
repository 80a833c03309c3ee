"""The ccxt broker's balance view: free balances as last fetched, moved by the fills recorded since."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from serving.exchange_reports import CCXT_BALANCE_KEYS, ExchangeTrade, balance_amount, split_symbol
from serving.types import Holdings


class BalanceView:
    """Free balance per asset as the broker last knew it: a fetched snapshot, moved by the fills recorded since.

    Market orders fill from free balances (nothing stays locked), so a clean fill moves the view exactly as it moves
    the exchange's account: the base asset by the amount, the quote asset by amount x price, the fee out of the asset
    it was charged in. Anything the broker cannot account for exactly empties the view (`invalidate`): the next read
    fetches the balance again. Times are the broker's clock (epoch ms).
    """

    def __init__(self, max_age_ms: float) -> None:
        self._max_age_ms = max_age_ms
        self._free: dict[str, float] | None = None
        self._taken_ms = 0

    def fresh(self, now_ms: int) -> bool:
        """Whether the view may be used at `now_ms` (taken, and not older than the max age)."""
        return self._free is not None and 0 <= now_ms - self._taken_ms < self._max_age_ms

    def take(self, balance: Mapping[str, Any], taken_ms: int) -> None:
        """Take the free balances of a ccxt `fetch_balance` answer, fetched at `taken_ms`."""
        self._free = {
            str(asset): balance_amount(balance, str(asset), "free")
            for asset, entry in balance.items()
            if asset not in CCXT_BALANCE_KEYS and isinstance(entry, Mapping)
        }
        self._taken_ms = taken_ms

    def invalidate(self) -> None:
        self._free = None

    def apply_fill(self, symbol: str, side: str, trade: ExchangeTrade) -> None:
        """Move the view by one fill of an order on `symbol` (a no-op when there is no view)."""
        if self._free is None:
            return
        if trade.fee_cost and not trade.fee_currency:
            self.invalidate()  # a fee in an unknown asset: only the exchange knows where it went
            return
        base, quote = split_symbol(symbol)
        signed = trade.amount if side == "buy" else -trade.amount
        free = self._free
        free[base] = free.get(base, 0.0) + signed
        free[quote] = free.get(quote, 0.0) - signed * trade.price
        if trade.fee_cost and trade.fee_currency:
            free[trade.fee_currency] = free.get(trade.fee_currency, 0.0) - trade.fee_cost

    def holdings(self, symbol: str) -> Holdings:
        """Free base units and free quote cash of `symbol`; the view must be fresh (see `fresh`)."""
        if self._free is None:
            raise LookupError("no balance view: fetch the balance first")
        base, quote = split_symbol(symbol)
        return Holdings(units=self._free.get(base, 0.0), cash=self._free.get(quote, 0.0))
