"""CcxtBroker: market orders on a ccxt exchange with write-ahead intents; an order is never sent twice.

The path of one OrderRequest:
1. Intent. The row (PENDING_SUBMIT, deterministic client order id) and an "order" ledger entry commit together,
   before anything leaves the process. A request whose row already exists is not sent again: the stored outcome is
   returned (after a lookup when the row's fate is open).
2. Send. `create_order(symbol, "market", side, amount, params={"newClientOrderId": cid, "recvWindow": ...})`, exactly
   once, on the raw ccxt client: no retry at any layer.
3. Clean answer. ACKNOWLEDGED (with the exchange's id) commits; then each fill commits with its position move and a
   "fill" ledger entry (trades read from the exchange when the answer lacks them, deduplicated by trade id); then the
   exchange's status (FILLED, OPEN, ...) commits, only once every fill it implies is stored.
4. Definite rejection (the exchange answered no: insufficient funds, invalid order, bad request): REJECTED with the
   reason, never retried. "Duplicate order" is not a rejection: the order exists, so it takes path 5.
5. Ambiguous outcome (timeout, network error, 5xx, dropped answer, an answer that cannot be read, any other error
   once the request may have left): UNKNOWN commits, then lookups by client order id (the order itself, the open
   orders, the recent orders). Found: as in 3. Not found: REJECTED ("not found after lookup") only once the request
   can no longer execute. A venue that enforces recvWindow (Binance does; so does the local exchange) refuses a
   request whose timestamp is more than recvWindow old, so "not found" is final `recv_window_ms + clock_margin_ms`
   after the failure; before that the broker waits and looks again. If a lookup itself fails, the row stays UNKNOWN
   and `reconcile()` resolves it later. Reconciliation treats a PENDING_SUBMIT/UNKNOWN row the same way, with the
   grace period `unknown_grace_ms` counted from the intent.

Reads (lookups, trades, balances) go through the venue's `read`, which retries temporary errors (the adapter is the
one layer that retries); `create_order` never does. `cancel_order` does go through `read`: cancelling by exchange id is
idempotent (a repeat answers "unknown order", which is then looked up). `submit`, `reconcile`, `holdings` and
`cancel_open_orders` are serialised by a lock: the broker is one worker's, and the database is not shared with another
broker using the same prefix.

Balances: `holdings()` answers from a `BalanceView` instead of a `fetch_balance` per call (4 cost units in ccxt's
model of Binance, about 220 ms of request budget, and the worker asks before every order and after every candle).
The view is the balance `reconcile()` fetched, moved by every fill this broker records after a clean answer, and
fetched again when it is older than `balance_max_age_s` (deposits, withdrawals, trades by anyone else on the
account), after any order whose outcome was not a clean fill (rejected, ambiguous, partial, open), after a
reconciliation that changed the books or left orders in flight, and after cancelling orders (which releases locked
funds).

Crash drills: with the environment variable CTA_DRILL_CRASH_AT set to "before_send" (intent committed, nothing
sent), "after_send" (create_order returned or raised, nothing recorded), "after_ack" (ACKNOWLEDGED committed, no
fill) or "during_fill" (the first fill committed, the final status not), the process SIGKILLs itself at that point,
for the orders `drill_crash_when` selects (all when None). Read once at construction; unset, it costs one comparison.
Only the drill driver (tests/serving/drill_driver.py) sets it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol, TypeVar

import ccxt
from sqlalchemy.orm import Session, sessionmaker

from cta.clock import Clock
from cta.lake import Market
from serving import ledger
from serving.models import Order
from serving.orders import (
    CLIENT_ID_PREFIX,
    IllegalTransition,
    OrderStatus,
    apply_exchange_update,
    client_order_id,
    get_order,
    is_live,
    record_intent,
    transition,
)
from serving.reconcile import (
    UNRESOLVABLE,
    DbOrder,
    ExchangeOrder,
    ExchangeTrade,
    apply_plan,
    is_ours,
    load_snapshot,
    order_from_ccxt,
    orders_needing_trades,
    plan_reconciliation,
    sort_trades,
    split_symbol,
    store_exchange_state,
    store_fill,
    trade_from_ccxt,
    trades_complete,
)
from serving.types import Holdings, OrderOutcome, OrderRequest, ReconcileReport

log = logging.getLogger(__name__)
T = TypeVar("T")

DRILL_CRASH_ENV = "CTA_DRILL_CRASH_AT"
NOT_FOUND_AFTER_LOOKUP = "not found after lookup"
CCXT_BALANCE_KEYS = frozenset({"info", "free", "used", "total", "timestamp", "datetime"})  # not assets


class CrashPoint(StrEnum):
    """Where a drill kills the process (see the module docstring)."""

    BEFORE_SEND = "before_send"
    AFTER_SEND = "after_send"
    AFTER_ACK = "after_ack"
    DURING_FILL = "during_fill"


def drill_crash_point(environ: Mapping[str, str]) -> CrashPoint | None:
    """The crash point CTA_DRILL_CRASH_AT names, None when unset; ValueError for an unknown name."""
    raw = environ.get(DRILL_CRASH_ENV, "").strip()
    if not raw:
        return None
    try:
        return CrashPoint(raw)
    except ValueError:
        raise ValueError(f"{DRILL_CRASH_ENV}={raw!r}: use one of {', '.join(p.value for p in CrashPoint)}") from None


def is_definite_rejection(error: BaseException) -> bool:
    """Whether the exchange (or ccxt, before sending) refused the order so that it cannot exist.

    ccxt's ExchangeError family is an answer: the order was refused. Its OperationFailed family (network, timeout,
    5xx, rate limit, unreadable answer) and every non-ccxt error say nothing about whether the order executed. A
    duplicate client order id means the order exists.
    """
    if isinstance(error, ccxt.DuplicateOrderId) or "duplicate" in str(error).lower():
        return False
    return isinstance(error, ccxt.ExchangeError)


class TradingVenue(Protocol):
    """What the broker needs from the exchange adapter (`cta.exchange.ExchangeAdapter` is one)."""

    @property
    def client(self) -> Any:
        """The async ccxt exchange (signed), for create_order."""
        ...

    async def read(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """A read, retried on temporary errors."""
        ...

    async def close(self) -> None: ...


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
            str(asset): _balance(balance, str(asset), "free")
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


class CcxtBroker:
    """Implements `serving.types.Broker` on a ccxt exchange; one market per base asset."""

    name = "ccxt"

    def __init__(
        self,
        venue: TradingVenue,
        sessions: sessionmaker[Session],
        prefix: str,
        clock: Clock,
        markets: Sequence[Market],
        *,
        recv_window_ms: int = 5_000,
        clock_margin_ms: int = 1_000,
        unknown_grace_ms: int | None = None,
        recent_orders_limit: int = 500,
        balance_max_age_s: float = 60.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        environ: Mapping[str, str] | None = None,
        drill_crash_when: Callable[[OrderRequest], bool] | None = None,
    ) -> None:
        if not CLIENT_ID_PREFIX.match(prefix):
            raise ValueError(f"client order id prefix {prefix!r} must be 1-8 letters or digits")
        bases = [split_symbol(m.symbol)[0] for m in markets]
        if len(set(bases)) != len(bases):
            raise ValueError(f"one market per base asset (balances are per asset): {[str(m) for m in markets]}")
        if recv_window_ms <= 0 or clock_margin_ms < 0:
            raise ValueError("recv_window_ms must be > 0 and clock_margin_ms >= 0")
        if not balance_max_age_s >= 0:
            raise ValueError(f"balance_max_age_s must be >= 0 (0: fetch on every call), got {balance_max_age_s}")
        self._venue = venue
        self._client = venue.client
        self._sessions = sessions
        self.prefix = prefix
        self._clock = clock
        self._markets = tuple(markets)
        self._recv_window_ms = recv_window_ms
        self._final_after_ms = recv_window_ms + clock_margin_ms
        self._grace_ms = unknown_grace_ms if unknown_grace_ms is not None else recv_window_ms + 2 * clock_margin_ms
        self._recent_orders_limit = recent_orders_limit
        self._balances = BalanceView(max_age_ms=balance_max_age_s * 1000)
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._crash_at = drill_crash_point(os.environ if environ is None else environ)
        self._crash_when = drill_crash_when

    # ----- Broker ------------------------------------------------------------------------------------------------

    async def start(self) -> ReconcileReport:
        """Load the markets (so no order waits for them) and reconcile, before any new order."""
        await self._venue.read("load_markets", self._client.load_markets)
        return await self.reconcile()

    async def close(self) -> None:
        await self._venue.close()

    async def holdings(self, market: Market) -> Holdings:
        """Free base units and free quote cash, from the balance view (fetched only when it is missing or too old)."""
        async with self._lock:
            if not self._balances.fresh(self._clock.now_ms()):
                taken_ms = self._clock.now_ms()
                balance = await self._venue.read("fetch_balance", self._client.fetch_balance)
                self._balances.take(balance, taken_ms)
            return self._balances.holdings(market.symbol)

    async def submit(self, request: OrderRequest) -> OrderOutcome:
        """Place `request` as a market order (see the module docstring). Never raises for what the exchange does."""
        if request.amount <= 0:
            raise ValueError(f"order amount must be > 0, got {request.amount}")
        async with self._lock:
            try:
                outcome = await self._submit(request)
            except BaseException:
                self._balances.invalidate()
                raise
            if outcome.status is not OrderStatus.FILLED:
                self._balances.invalidate()  # partial, open, rejected or unknown: ask the exchange
            return outcome

    async def reconcile(self) -> ReconcileReport:
        """Bring the database to the exchange's state for every market (see `serving.reconcile`)."""
        async with self._lock:
            taken_ms = self._clock.now_ms()
            balance = await self._venue.read("fetch_balance", self._client.fetch_balance)
            self._balances.invalidate()
            report = ReconcileReport()
            for market in self._markets:
                report.merge(await self._reconcile_market(market, balance))
            if not _orders_moved(report):
                # no order of ours moved or is in flight, so no fill can have come after the fetch: the balance is
                # still the account's (a position correction only sets our books to this very balance)
                self._balances.take(balance, taken_ms)
            return report

    async def cancel_open_orders(self) -> list[str]:
        """Cancel every open order of ours at the exchange (the kill switch's cancel_open); the client order ids of
        the orders cancelled.

        Only orders whose client order id has this broker's prefix are touched. Each cancellation is recorded through
        the order state machine (CANCELLED, with whatever filled before, fills included); an order that filled in
        between is recorded as what the exchange says it is. A failure (listing or cancelling) is logged and skipped:
        the kill switch must not crash, and what is left is cancelled by the next call or recorded by `reconcile()`.
        """
        cancelled: list[str] = []
        async with self._lock:
            try:
                for market in self._markets:
                    cancelled.extend(await self._cancel_market(market.symbol))
            finally:
                self._balances.invalidate()  # cancelled orders release locked funds
        if cancelled:
            log.warning("cancelled %d open order(s): %s", len(cancelled), ", ".join(cancelled))
        return cancelled

    # ----- submit ------------------------------------------------------------------------------------------------

    async def _submit(self, request: OrderRequest) -> OrderOutcome:
        market = str(request.market)
        cid = client_order_id(self.prefix, market, request.candle_ts, request.seq)
        now = self._clock.now_ms()
        with self._sessions.begin() as session:
            existing = get_order(session, cid)
            order = record_intent(session, **_intent_facts(request, cid))  # OrderConflict if the id means another order
            if existing is None:
                self._log_intent(session, order, request, now)
        if existing is not None:
            log.info("order %s already recorded as %s: not sent again", cid, existing.status)
            if existing.status in UNRESOLVABLE:
                self._balances.invalidate()  # the fetched balance may already hold its fills: never add them twice
                created_ms = int(existing.created_at.timestamp() * 1000)
                return await self._resolve(request, cid, final_at_ms=created_ms + self._grace_ms)
            return self._outcome(cid)
        self._drill(CrashPoint.BEFORE_SEND, request)
        sent_at = time.perf_counter()
        return dataclasses.replace(await self._send(request, cid), sent_at=sent_at)

    async def _send(self, request: OrderRequest, cid: str) -> OrderOutcome:
        """create_order, once; then record the answer, or classify the failure."""
        params = {"newClientOrderId": cid, "recvWindow": self._recv_window_ms}
        try:
            answer = await self._client.create_order(
                request.market.symbol, "market", request.side, request.amount, None, params
            )
        except Exception as error:  # noqa: BLE001 - every failure is classified: definite rejection or ambiguous
            failed_ms = self._clock.now_ms()
            self._drill(CrashPoint.AFTER_SEND, request)
            return await self._after_failure(request, cid, error, failed_ms)
        self._drill(CrashPoint.AFTER_SEND, request)
        try:
            view = order_from_ccxt(answer)
        except Exception as error:  # noqa: BLE001 - an unreadable answer to a sent order is ambiguous
            return await self._after_failure(request, cid, error, self._clock.now_ms())
        return await self._record(request, cid, view)

    @staticmethod
    def _log_intent(session: Session, order: Order, request: OrderRequest, now_ms: int) -> None:
        """Stamp a new intent with the broker's clock (the grace period counts from it) and write its ledger entry."""
        order.created_at = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
        ledger.append(
            session,
            "order",
            {
                "event": "intent",
                "client_order_id": order.client_order_id,
                "market": str(request.market),
                "side": request.side,
                "type": "market",
                "amount": request.amount,
                "target": request.target,
                "candle_ts": request.candle_ts,
                "reference_price": request.reference_price,
                "decision_id": request.decision_id,
            },
            now_ms,
        )

    async def _after_failure(
        self, request: OrderRequest, cid: str, error: BaseException, failed_ms: int
    ) -> OrderOutcome:
        reason = f"{type(error).__name__}: {error}"
        self._balances.invalidate()  # whatever happened, the balance is read again rather than guessed
        if is_definite_rejection(error):
            log.warning("order %s rejected: %s", cid, reason)
            self._mark(cid, OrderStatus.REJECTED, reason, "rejected")
            return self._outcome(cid)
        log.warning("order %s outcome unknown (%s): looking it up", cid, reason)
        self._mark(cid, OrderStatus.UNKNOWN, reason, "unknown")
        return await self._resolve(request, cid, final_at_ms=failed_ms + self._final_after_ms)

    def _mark(self, cid: str, status: OrderStatus, reason: str, event: str) -> None:
        """Move the row to REJECTED or UNKNOWN with the reason, and say so in the ledger."""
        with self._sessions.begin() as session:
            order = _row(session, cid)
            previous = order.status
            apply_exchange_update(session, order, status=status, error=reason)
            ledger.append(
                session,
                "order",
                {"event": event, "client_order_id": cid, "from": previous, "to": order.status, "reason": reason},
                self._clock.now_ms(),
            )

    async def _resolve(self, request: OrderRequest, cid: str, *, final_at_ms: int) -> OrderOutcome:
        """Look the order up until it is found or `final_at_ms` has passed (then it cannot execute any more)."""
        symbol = request.market.symbol
        while True:
            try:
                view = await self._lookup(symbol, cid)
            except Exception as error:  # noqa: BLE001 - a failed lookup leaves the row for reconciliation
                log.warning(
                    "order %s: lookup failed (%s: %s); left for reconciliation", cid, type(error).__name__, error
                )
                return self._outcome(cid, detail=f"lookup failed: {error}")
            if view is not None:
                return await self._record(request, cid, view)
            now = self._clock.now_ms()
            if now >= final_at_ms:
                log.warning("order %s: %s; REJECTED", cid, NOT_FOUND_AFTER_LOOKUP)
                self._mark(cid, OrderStatus.REJECTED, NOT_FOUND_AFTER_LOOKUP, "not_found")
                return self._outcome(cid)
            await self._sleep((final_at_ms - now) / 1000)

    async def _lookup(self, symbol: str, cid: str) -> ExchangeOrder | None:
        """The order with client id `cid`: by id, else among the open orders, else among the recent orders."""
        found = await self._fetch_by_client_id(symbol, cid)
        if found is not None:
            return found
        for what, call in (
            ("fetch_open_orders", lambda: self._client.fetch_open_orders(symbol)),
            ("fetch_orders", lambda: self._client.fetch_orders(symbol, None, self._recent_orders_limit)),
        ):
            for raw in await self._venue.read(f"{what} {symbol}", call):
                if raw.get("clientOrderId") == cid:
                    return order_from_ccxt(raw)
        return None

    async def _fetch_by_client_id(self, symbol: str, cid: str) -> ExchangeOrder | None:
        async def fetch() -> dict[str, Any] | None:
            try:
                found: dict[str, Any] = await self._client.fetch_order(None, symbol, {"origClientOrderId": cid})
            except ccxt.OrderNotFound:
                return None
            return found

        raw = await self._venue.read(f"fetch_order {cid}", fetch)
        return None if raw is None else order_from_ccxt(raw)

    async def _record(
        self, request: OrderRequest | None, cid: str, view: ExchangeOrder, source: str = "submit"
    ) -> OrderOutcome:
        """Store what the exchange says about a sent order: acknowledgement, fills, then its status. `request` is
        the order being submitted (for the crash drills), None when recording something else (a cancellation)."""
        now = self._clock.now_ms()
        with self._sessions.begin() as session:
            order = _row(session, cid)
            if order.status in UNRESOLVABLE:
                store_exchange_state(session, order, view, status=OrderStatus.ACKNOWLEDGED, ts_ms=now, source=source)
        self._drill(CrashPoint.AFTER_ACK, request)
        trades: Sequence[ExchangeTrade] = view.trades
        if view.filled > 0 and not trades_complete(view, trades):
            try:
                trades = await self._order_trades(view)
            except Exception as error:  # noqa: BLE001 - the fills are read again by reconciliation
                log.warning("order %s: trades unreadable (%s); left for reconciliation", cid, error)
                return self._outcome(cid, detail=f"fills pending: {error}")
        for trade in sort_trades(trades):
            with self._sessions.begin() as session:
                order = _row(session, cid)
                symbol, side = order.symbol, order.side
                stored = store_fill(session, order, trade, ts_ms=self._clock.now_ms(), source=source)
            if stored:
                self._balances.apply_fill(symbol, side, trade)
                self._drill(CrashPoint.DURING_FILL, request)
        if not trades_complete(view, trades):
            return self._outcome(cid, detail="fills pending")
        with self._sessions.begin() as session:
            order = _row(session, cid)
            if _reachable(order.status, view.status):
                store_exchange_state(
                    session, order, view, status=view.status, ts_ms=self._clock.now_ms(), source=source
                )
            else:
                log.error("order %s is %s here, the exchange says %s", cid, order.status, view.status)
        return self._outcome(cid)

    async def _order_trades(self, view: ExchangeOrder) -> list[ExchangeTrade]:
        raw = await self._venue.read(
            f"fetch_order_trades {view.exchange_order_id}",
            lambda: self._client.fetch_order_trades(view.exchange_order_id, view.symbol),
        )
        return [trade_from_ccxt(t, order_id=view.exchange_order_id, default_ts=view.ts) for t in raw]

    def _outcome(self, cid: str, detail: str = "") -> OrderOutcome:
        with self._sessions() as session:
            order = _row(session, cid)
            return OrderOutcome(
                client_order_id=cid,
                status=OrderStatus(order.status),
                filled=order.filled,
                average_price=order.average_price,
                exchange_order_id=order.exchange_order_id,
                detail=detail or order.last_error or "",
            )

    def _drill(self, point: CrashPoint, request: OrderRequest | None) -> None:
        if request is None:
            return
        if self._crash_at is point and (self._crash_when is None or self._crash_when(request)):
            log.critical("drill: SIGKILL at %s", point)
            os.kill(os.getpid(), signal.SIGKILL)

    # ----- cancel ------------------------------------------------------------------------------------------------

    async def _cancel_market(self, symbol: str) -> list[str]:
        """Cancel our open orders on `symbol` and record each; the client order ids cancelled."""
        try:
            listed = await self._venue.read(
                f"fetch_open_orders {symbol}", lambda: self._client.fetch_open_orders(symbol)
            )
        except Exception as error:  # noqa: BLE001 - the kill switch never crashes; the next call tries again
            log.warning("cancel: open orders of %s unreadable (%s: %s)", symbol, type(error).__name__, error)
            return []
        cancelled: list[str] = []
        for view in _parse_orders(listed):
            cid = view.client_order_id
            if not is_ours(cid, self.prefix) or not is_live(view.status):
                continue  # never touch an order that is not ours
            try:
                answer = await self._cancel_order(view)
                if answer is None:  # unknown to the exchange as an open order: it filled or was cancelled meanwhile
                    answer = await self._fetch_by_client_id(symbol, cid)
            except Exception as error:  # noqa: BLE001 - left open; the next call or reconciliation deals with it
                log.warning("cancel: order %s not cancelled (%s: %s)", cid, type(error).__name__, error)
                continue
            if answer is None:
                log.warning("cancel: order %s vanished from the exchange; left for reconciliation", cid)
                continue
            if answer.status is OrderStatus.CANCELLED:
                cancelled.append(cid)
            await self._record_cancel(cid, answer)
        return cancelled

    async def _cancel_order(self, view: ExchangeOrder) -> ExchangeOrder | None:
        """Cancel one order by exchange id: its state after the cancel, None when the exchange says it is not open.

        The answer names the order by the cancel request's client id (Binance), so ours is put back."""

        async def cancel() -> dict[str, Any] | None:
            try:
                answer: dict[str, Any] = await self._client.cancel_order(view.exchange_order_id, view.symbol)
            except ccxt.OrderNotFound:
                return None
            return answer

        raw = await self._venue.read(f"cancel_order {view.client_order_id}", cancel)
        return None if raw is None else dataclasses.replace(order_from_ccxt(raw), client_order_id=view.client_order_id)

    async def _record_cancel(self, cid: str, view: ExchangeOrder) -> None:
        """Record the exchange's state of an order after a cancel (fills first); a row that does not exist yet is
        adopted by the next reconciliation."""
        with self._sessions() as session:
            known = get_order(session, cid) is not None
        if not known:
            log.warning("cancel: order %s has no row here; reconciliation will adopt it", cid)
            return
        try:
            await self._record(None, cid, view, source="kill_switch")
        except Exception as error:  # noqa: BLE001 - the exchange state stands; reconciliation records it
            log.warning(
                "cancel: recording %s failed (%s: %s); left for reconciliation", cid, type(error).__name__, error
            )

    # ----- reconcile ---------------------------------------------------------------------------------------------

    async def _reconcile_market(self, market: Market, balance: Mapping[str, Any]) -> ReconcileReport:
        symbol, key = market.symbol, str(market)
        base, quote = split_symbol(symbol)
        listed = [
            *await self._venue.read(
                f"fetch_orders {symbol}", lambda: self._client.fetch_orders(symbol, None, self._recent_orders_limit)
            ),
            *await self._venue.read(f"fetch_open_orders {symbol}", lambda: self._client.fetch_open_orders(symbol)),
        ]
        ours = {
            view.client_order_id: view for view in _parse_orders(listed) if is_ours(view.client_order_id, self.prefix)
        }
        with self._sessions() as session:
            snapshot = load_snapshot(session, key, self.prefix, ours.keys())
        absent: set[str] = set()
        for row in snapshot.orders:
            if not is_live(row.status) or row.client_order_id in ours:
                continue
            try:
                found = await self._fetch_by_client_id(symbol, row.client_order_id)
            except Exception as error:  # noqa: BLE001 - the row stays unresolved until a later pass
                log.warning("reconcile: lookup of %s failed (%s)", row.client_order_id, error)
                continue
            if found is None:
                absent.add(row.client_order_id)
            else:
                ours[found.client_order_id] = found
        trades = await self._trades_for(snapshot.orders, ours)
        plan = plan_reconciliation(
            market=key,
            prefix=self.prefix,
            db_orders=snapshot.orders,
            exchange_orders=list(ours.values()),
            absent=absent,
            trades=trades,
            known_trade_ids=snapshot.known_trade_ids,
            position=snapshot.position,
            balance_units=_balance(balance, base, "total"),
            base=base,
            quote=quote,
            now_ms=self._clock.now_ms(),
            grace_ms=self._grace_ms,
        )
        if plan.empty:
            return ReconcileReport(unresolved_orders=list(plan.unresolved))
        with self._sessions.begin() as session:
            return apply_plan(session, plan, ts_ms=self._clock.now_ms())

    async def _trades_for(
        self, rows: Sequence[DbOrder], ours: Mapping[str, ExchangeOrder]
    ) -> dict[str, list[ExchangeTrade]]:
        """The trades of every order whose fills the database lacks; an order whose trades cannot be read is left
        out (the plan then leaves it unresolved)."""
        by_exchange_id = {view.exchange_order_id: view for view in ours.values()}
        trades: dict[str, list[ExchangeTrade]] = {}
        for exchange_id in orders_needing_trades({row.client_order_id: row for row in rows}, ours.values()):
            view = by_exchange_id[exchange_id]
            if trades_complete(view, view.trades):
                trades[exchange_id] = list(view.trades)
                continue
            try:
                trades[exchange_id] = await self._order_trades(view)
            except Exception as error:  # noqa: BLE001 - left for a later pass
                log.warning("reconcile: trades of %s unreadable (%s)", view.client_order_id, error)
        return trades


def _intent_facts(request: OrderRequest, cid: str) -> dict[str, Any]:
    return {
        "client_order_id": cid,
        "market": str(request.market),
        "symbol": request.market.symbol,
        "side": request.side,
        "order_type": "market",
        "amount": request.amount,
        "candle_ts": request.candle_ts,
        "decision_id": request.decision_id,
    }


def _row(session: Session, cid: str) -> Order:
    order = get_order(session, cid)
    if order is None:
        raise LookupError(f"order {cid} has no row (its intent was never committed)")
    return order


def _reachable(current: str, new: OrderStatus) -> bool:
    """Whether the row may move to `new` (not when it is already past what a late answer says)."""
    try:
        transition(current, new)
    except IllegalTransition:
        return False
    return True


def _balance(balance: Mapping[str, Any], asset: str, kind: str) -> float:
    """`kind` ("free", "used", "total") of `asset` in a ccxt balance; 0 when the exchange lists no such asset."""
    entry = balance.get(asset) or {}
    value = entry.get(kind)
    return 0.0 if value is None else float(value)


def _orders_moved(report: ReconcileReport) -> bool:
    """Whether a reconciliation found orders of ours that moved (fills, adoptions, resolutions) or may still move."""
    return bool(
        report.new_fills
        or report.adopted_orders
        or report.resolved_orders
        or report.unresolved_orders
        or report.conflicts
    )


def _parse_orders(raw_orders: Sequence[Mapping[str, Any]]) -> list[ExchangeOrder]:
    """Parse listed orders; one ccxt cannot read is skipped with a warning (it is not ours to reason about)."""
    views = []
    for raw in raw_orders:
        try:
            views.append(order_from_ccxt(raw))
        except Exception as error:  # noqa: BLE001 - skip and report, never stop the pass
            log.warning("reconcile: cannot read order %s (%s)", raw.get("id"), error)
    return views
