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

Checkpoints: the broker calls its `checkpoint` (a `serving.types.OrderCheckpoint`, a no-op by default) at the four
`CrashPoint`s of an order's path: "before_send" (intent committed, nothing sent), "after_send" (create_order returned
or raised, nothing recorded), "after_ack" (ACKNOWLEDGED committed, no fill) and "during_fill" (a fill committed, the
final status not). The crash drills (tests/serving) install one that kills the process there.

Parts: `serving.ccxt_orders` (lookups, recording the venue's answers), `serving.ccxt_reconcile` (a reconciliation
pass), `serving.ccxt_cancel` (the kill switch's cancellations), `serving.balances` (the balance view).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from cta.clock import Clock
from cta.lake import Market
from serving import ledger
from serving.balances import BalanceView
from serving.ccxt_cancel import cancel_market
from serving.ccxt_orders import TradingVenue, VenueOrders
from serving.ccxt_reconcile import orders_moved, reconcile_market
from serving.client_ids import check_prefix, client_order_id
from serving.exchange_reports import is_definite_rejection, order_from_ccxt, split_symbol
from serving.models import Order
from serving.orders import UNRESOLVABLE, OrderStatus
from serving.repository import get_order, insert_intent, intent_facts, order_recorded, record_intent
from serving.types import (
    CrashPoint,
    Holdings,
    OrderCheckpoint,
    OrderOutcome,
    OrderRequest,
    ReconcileReport,
    no_checkpoint,
)

log = logging.getLogger(__name__)

NOT_FOUND_AFTER_LOOKUP = "not found after lookup"


class CcxtBroker:
    """Implements `serving.types.Broker` on a ccxt exchange; one market per base asset."""

    name = "ccxt"
    sizes_at_fill = False  # a market order of `amount`, sized from the reference price

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
        checkpoint: OrderCheckpoint = no_checkpoint,
    ) -> None:
        check_prefix(prefix)
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
        self._balances = BalanceView(max_age_ms=balance_max_age_s * 1000)
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._checkpoint = checkpoint
        self._orders = VenueOrders(
            venue, sessions, clock, self._balances, checkpoint, recent_orders_limit=recent_orders_limit
        )

    # ----- Broker ------------------------------------------------------------------------------------------------

    async def start(self) -> ReconcileReport:
        """Load the markets (so no order waits for them) and reconcile, before any new order."""
        await self._venue.read("load_markets", self._client.load_markets)
        return await self.reconcile()

    async def close(self) -> None:
        await self._venue.close()

    def on_candle_open(self, market: Market, candle_ts: int, open_price: float) -> None:
        """Nothing to do: the exchange fills a market order when it arrives."""

    def venue_amount(self, market: Market, amount: float, price: float) -> float:
        """`amount` cut to the market's amount precision (as ccxt would send it); 0.0 when that is below the market's
        minimum amount or its minimum notional at `price` (from the markets loaded at start)."""
        from ccxt.base.errors import InvalidOrder  # ccxt is loaded: the client is a ccxt exchange

        if not self._client.markets or market.symbol not in self._client.markets:
            return amount  # markets not loaded (start() loads them): the venue decides
        try:
            cut = float(self._client.amount_to_precision(market.symbol, amount))
        except InvalidOrder:  # below the precision's smallest step
            return 0.0
        limits = self._client.market(market.symbol).get("limits") or {}
        min_amount = (limits.get("amount") or {}).get("min") or 0.0
        min_cost = (limits.get("cost") or {}).get("min") or 0.0
        return 0.0 if cut <= 0.0 or cut < float(min_amount) or cut * price < float(min_cost) else cut

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
        """Bring the database to the exchange's state for every market (see `serving.ccxt_reconcile`)."""
        async with self._lock:
            taken_ms = self._clock.now_ms()
            balance = await self._venue.read("fetch_balance", self._client.fetch_balance)
            self._balances.invalidate()
            report = ReconcileReport()
            for market in self._markets:
                report.merge(
                    await reconcile_market(self._orders, market, balance, prefix=self.prefix, grace_ms=self._grace_ms)
                )
            if not orders_moved(report):
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
                    cancelled.extend(await cancel_market(self._orders, market.symbol, self.prefix))
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
        existing: Order | None = None
        with self._sessions.begin() as session:
            if order_recorded(session, cid):  # a retry of a stored intent (restart, reconciliation): as it was
                existing = get_order(session, cid)
                record_intent(session, **intent_facts(request, cid))  # OrderConflict if the id means another order
            else:  # the decision path: one plain INSERT of the intent and its ledger entry, committed before sending
                created = datetime.fromtimestamp(now / 1000, tz=UTC)  # the grace period counts from it
                insert_intent(session, **intent_facts(request, cid), created_at=created)
                self._log_intent(session, request, cid, now)
        if existing is not None:
            log.info("order %s already recorded as %s: not sent again", cid, existing.status)
            if existing.status in UNRESOLVABLE:
                self._balances.invalidate()  # the fetched balance may already hold its fills: never add them twice
                created_ms = int(existing.created_at.timestamp() * 1000)
                return await self._resolve(request, cid, final_at_ms=created_ms + self._grace_ms)
            return self._orders.outcome(cid)
        self._checkpoint(CrashPoint.BEFORE_SEND, request)
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
            self._checkpoint(CrashPoint.AFTER_SEND, request)
            return await self._after_failure(request, cid, error, failed_ms)
        self._checkpoint(CrashPoint.AFTER_SEND, request)
        try:
            view = order_from_ccxt(answer)
        except Exception as error:  # noqa: BLE001 - an unreadable answer to a sent order is ambiguous
            return await self._after_failure(request, cid, error, self._clock.now_ms())
        return await self._orders.record(request, cid, view)

    @staticmethod
    def _log_intent(session: Session, request: OrderRequest, cid: str, now_ms: int) -> None:
        """A new intent's ledger entry."""
        ledger.append(
            session,
            "order",
            {
                "event": "intent",
                "client_order_id": cid,
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
            self._orders.mark(cid, OrderStatus.REJECTED, reason, "rejected")
            return self._orders.outcome(cid)
        log.warning("order %s outcome unknown (%s): looking it up", cid, reason)
        self._orders.mark(cid, OrderStatus.UNKNOWN, reason, "unknown")
        return await self._resolve(request, cid, final_at_ms=failed_ms + self._final_after_ms)

    async def _resolve(self, request: OrderRequest, cid: str, *, final_at_ms: int) -> OrderOutcome:
        """Look the order up until it is found or `final_at_ms` has passed (then it cannot execute any more)."""
        symbol = request.market.symbol
        while True:
            try:
                view = await self._orders.lookup(symbol, cid)
            except Exception as error:  # noqa: BLE001 - a failed lookup leaves the row for reconciliation
                log.warning(
                    "order %s: lookup failed (%s: %s); left for reconciliation", cid, type(error).__name__, error
                )
                return self._orders.outcome(cid, detail=f"lookup failed: {error}")
            if view is not None:
                return await self._orders.record(request, cid, view)
            now = self._clock.now_ms()
            if now >= final_at_ms:
                log.warning("order %s: %s; REJECTED", cid, NOT_FOUND_AFTER_LOOKUP)
                self._orders.mark(cid, OrderStatus.REJECTED, NOT_FOUND_AFTER_LOOKUP, "not_found")
                return self._orders.outcome(cid)
            await self._sleep((final_at_ms - now) / 1000)
