"""API v1 handlers (the dashboard's backend), registered from the route table (`serving.api_v1.routes`).

Every query and body is checked by its pydantic model before a handler runs: an unknown field, a value of the
wrong type or out of bounds is a 400 naming the field, and nothing is changed. Reads run in threads on read-only
sessions; changes (kill switch, parameters, markets, rollback) go through the same functions the CLI uses, each
with its ledger entry. Who made a change is the role of the token that asked ("operator (api)").

`/api/v1/stream` is a server-sent-event stream fed by one poller per process (`StreamHub`): it reads what is new
in the trading database (decisions, orders, fills, equity, the kill switch, the parameters) every
STREAM_POLL_S and hands it to every open stream, so N browsers cost one set of queries, and a worker in
another process (or a restarted one) is seen just the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cta.config import Settings
from cta.lake import Market
from cta.timeframes import timeframe_ms
from serving import control, parameters
from serving.api_v1 import schemas as s
from serving.api_v1 import views
from serving.api_v1.routes import ROUTES, Route, openapi_document
from serving.api_v1.sources import QualitySource, RegistrySource
from serving.control import TradingState
from serving.models import Decision, EquitySnapshot, Fill, Order, ParameterState
from serving.orders import OrderStatus

log = logging.getLogger(__name__)

STREAM_POLL_S = 0.2
VERIFY_EVERY_S = 30.0  # the ledger's full verification, shared by every caller for this long
HEARTBEAT_S = 10.0
STREAM_BATCH = 200  # rows per kind per poll
STREAM_QUEUE = 1000  # events a slow client may fall behind before its stream is closed (it reconnects)

ROLE_KEY = web.RequestKey("role", str)  # the role of the request's token (set by the API's guard)
MAX_BODY_KEY = web.AppKey("max_body", int)  # the largest request body the application accepts

StatusFn = Callable[[], Mapping[str, Any]]
CandlesFn = Callable[[Market, int], Awaitable[list[list[Any]]]]
OnTradingState = Callable[[TradingState, str, bool], Awaitable[None]]


class RequestError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


def error_response(status: int, message: str, field: str | None = None) -> web.Response:
    return web.json_response(s.ErrorOut(error=message, field=field).model_dump(), status=status)


def _model_response(value: BaseModel) -> web.Response:
    return web.Response(body=value.model_dump_json().encode(), content_type="application/json")


def _first_error(error: ValidationError, where: str) -> RequestError:
    first = error.errors()[0]
    dotted = ".".join(str(part) for part in first["loc"]) or where
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] == "json_invalid":
        return RequestError(400, f"{where}: not valid JSON")
    return RequestError(400, f"{dotted}: {message}", dotted)


def parse_query(model: type[BaseModel], request: web.Request) -> Any:
    raw: dict[str, str] = {}
    for name in request.query:
        values = request.query.getall(name)
        if len(values) != 1:
            raise RequestError(400, f"{name}: given {len(values)} times", name)
        raw[name] = values[0]
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise _first_error(error, "query") from None


async def parse_body(model: type[BaseModel], request: web.Request) -> Any:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise RequestError(413, f"body: larger than {request.app[MAX_BODY_KEY]} bytes") from None
    if request.content_type != "application/json":
        raise RequestError(415, "body: send JSON (Content-Type: application/json)")
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        raise _first_error(error, "body") from None


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


# ----- the stream ---------------------------------------------------------------------------------------------------


@dataclass
class _Cursor:
    decision: int = 0
    order: int = 0
    fill: int = 0
    equity: int = 0
    order_seen: float = 0.0  # newest orders.updated_at seen (epoch s): status changes
    control: str | None = None
    parameters: int = -1


@dataclass
class StreamHub:
    """One poller for every open stream of this process."""

    sessions: sessionmaker[Session]
    queues: set[asyncio.Queue[s.StreamEvent | None]] = field(default_factory=set)
    cursor: _Cursor | None = None
    task: asyncio.Task[None] | None = None
    closing: bool = False

    def subscribe(self) -> asyncio.Queue[s.StreamEvent | None]:
        queue: asyncio.Queue[s.StreamEvent | None] = asyncio.Queue(STREAM_QUEUE)
        self.queues.add(queue)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name="api-stream")
        return queue

    def unsubscribe(self, queue: asyncio.Queue[s.StreamEvent | None]) -> None:
        self.queues.discard(queue)

    async def close(self) -> None:
        self.closing = True
        for queue in list(self.queues):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task

    async def _run(self) -> None:
        while self.queues and not self.closing:
            try:
                events = await asyncio.to_thread(self._poll)
            except Exception:  # a database hiccup: the streams stay open, the next poll tries again
                log.warning("stream poll failed", exc_info=True)
                events = []
            for event in events:
                for queue in list(self.queues):
                    try:
                        queue.put_nowait(event)
                    except asyncio.QueueFull:  # a client that does not read: drop it (it reconnects)
                        self.queues.discard(queue)
                        with contextlib.suppress(asyncio.QueueEmpty):
                            queue.get_nowait()
                        queue.put_nowait(None)
            await asyncio.sleep(STREAM_POLL_S)
        self.task = None

    def _poll(self) -> list[s.StreamEvent]:
        now = _now_iso()
        with self.sessions() as session:
            if self.cursor is None:  # start from now: the pages load the history, the stream brings what is new
                self.cursor = _Cursor(
                    decision=int(session.scalar(select(func.max(Decision.id))) or 0),
                    order=int(session.scalar(select(func.max(Order.id))) or 0),
                    fill=int(session.scalar(select(func.max(Fill.id))) or 0),
                    equity=int(session.scalar(select(func.max(EquitySnapshot.id))) or 0),
                    order_seen=time.time(),
                    control=str(control.read_trading_state(session)),
                    parameters=int(session.scalar(select(ParameterState.version)) or 0),
                )
                return []
            return self._new(session, self.cursor, now)

    def _new(self, session: Session, cursor: _Cursor, now: str) -> list[s.StreamEvent]:
        out: list[s.StreamEvent] = []
        for row in session.scalars(
            select(Decision).where(Decision.id > cursor.decision).order_by(Decision.id).limit(STREAM_BATCH)
        ):
            cursor.decision = row.id
            out.append(
                s.StreamEvent(
                    kind="decision",
                    id=row.id,
                    market=row.market,
                    data=views.decision_out(row).model_dump(),
                    server_time=now,
                )
            )
        changed = list(
            session.scalars(
                select(Order)
                .where((Order.id > cursor.order) | (Order.updated_at > datetime.fromtimestamp(cursor.order_seen, UTC)))
                .order_by(Order.id)
                .limit(STREAM_BATCH)
            )
        )
        for order in changed:
            cursor.order = max(cursor.order, order.id)
            if order.updated_at is not None:
                cursor.order_seen = max(cursor.order_seen, order.updated_at.timestamp())
            out.append(
                s.StreamEvent(
                    kind="order",
                    id=order.id,
                    market=order.market,
                    data={"status": order.status, "side": order.side, "amount": order.amount, "filled": order.filled},
                    server_time=now,
                )
            )
        for fill in session.scalars(select(Fill).where(Fill.id > cursor.fill).order_by(Fill.id).limit(STREAM_BATCH)):
            cursor.fill = fill.id
            out.append(
                s.StreamEvent(
                    kind="fill", id=fill.id, market=fill.market, data=views.fill_out(fill).model_dump(), server_time=now
                )
            )
        for snap in session.scalars(
            select(EquitySnapshot)
            .where(EquitySnapshot.id > cursor.equity)
            .order_by(EquitySnapshot.id)
            .limit(STREAM_BATCH)
        ):
            cursor.equity = snap.id
            out.append(
                s.StreamEvent(
                    kind="equity",
                    id=snap.id,
                    market=snap.market,
                    data={"time": views.iso_ms(snap.ts), "equity": snap.equity, "price": snap.price},
                    server_time=now,
                )
            )
        state = control.read_trading_state(session)
        if str(state) != cursor.control:
            cursor.control = str(state)
            out.append(s.StreamEvent(kind="state", data=views.control_out(state).model_dump(), server_time=now))
        version = int(session.scalar(select(ParameterState.version)) or 0)
        if version != cursor.parameters:
            cursor.parameters = version
            out.append(s.StreamEvent(kind="parameters", data={"version": version}, server_time=now))
        return out


# ----- the handlers -------------------------------------------------------------------------------------------------


class ApiV1:
    """The handlers of API v1; `add_routes` registers them on an application."""

    def __init__(
        self,
        *,
        settings: Settings,
        markets: Sequence[Market],
        sessions: sessionmaker[Session],
        write_sessions: Callable[[], sessionmaker[Session]],
        status: StatusFn,
        candles: CandlesFn | None = None,
        registry: RegistrySource | None = None,
        quality: QualitySource | None = None,
        on_trading_state: OnTradingState | None = None,
        now_ms: Callable[[], int] | None = None,
    ) -> None:
        self.settings = settings
        self.markets = {str(m): m for m in markets}
        self.sessions = sessions
        self.write_sessions = write_sessions
        self.status = status
        self.candles = candles
        self.registry = registry
        self.quality_source = quality
        self.on_trading_state = on_trading_state
        self.now_ms = now_ms or (lambda: int(time.time() * 1000))
        self.hub = StreamHub(sessions)
        self._verify_lock = asyncio.Lock()
        self._verified: tuple[float, s.LedgerVerifyOut | None] = (0.0, None)
        self._openapi = json.dumps(openapi_document()).encode()

    # --- helpers --------------------------------------------------------------------------------------------------

    def _market(self, key: str | None, *, required: bool = False) -> Market | None:
        if key is None:
            if required:
                raise RequestError(400, "market: required", "market")
            return None
        if key not in self.markets:
            raise RequestError(404, f"market: unknown market {key!r}; known: {', '.join(self.markets)}", "market")
        return self.markets[key]

    async def _read(self, work: Callable[[Session], Any]) -> Any:
        def run() -> Any:
            with self.sessions() as session:
                return work(session)

        return await asyncio.to_thread(run)

    @staticmethod
    def _by(request: web.Request) -> str:
        return f"{request.get(ROLE_KEY, 'operator')} (api)"

    # --- reads ----------------------------------------------------------------------------------------------------

    async def me(self, request: web.Request) -> BaseModel:
        role = request.get(ROLE_KEY, "viewer")
        return s.MeOut(role=role, can_operate=role == "operator", markets=list(self.markets))

    async def overview(self, _request: web.Request) -> BaseModel:
        status = dict(self.status())
        models: Mapping[str, Any] = status.get("models", {})
        states: Mapping[str, Any] = status.get("markets", {})
        now = int(status.get("now_ms") or self.now_ms())

        def build(session: Session) -> s.OverviewOut:
            current = parameters.read(session, self.settings)
            snapshot = control.read_trading_state(session)
            return s.OverviewOut(
                mode=self.settings.mode,
                venue=self.settings.exchange.id,
                broker=self.settings.serving.broker,
                trading=views.control_out(snapshot),
                ready=bool(status.get("ready")),
                reasons=[str(r) for r in status.get("reasons", [])],
                markets=[
                    views.market_overview(
                        session,
                        market,
                        now_ms=now,
                        enabled=key not in current.disabled_markets,
                        model=models.get(key, {}),
                        state=states.get(key, {}),
                    )
                    for key, market in self.markets.items()
                ],
                server_time=_now_iso(),
                market_time=views.iso_ms(now),
            )

        return await self._read(build)  # type: ignore[no-any-return]

    async def orders(self, request: web.Request) -> BaseModel:
        q: s.OrderQuery = parse_query(s.OrderQuery, request)
        self._market(q.market)
        statuses = None
        if q.status:
            statuses = [p.strip().upper() for p in q.status.split(",") if p.strip()]
            unknown = sorted(set(statuses) - {st.value for st in OrderStatus})
            if unknown:
                raise RequestError(
                    400,
                    f"status: unknown {', '.join(unknown)}; use {', '.join(st.value for st in OrderStatus)}",
                    "status",
                )
        return await self._read(lambda session: views.orders_page(session, q, statuses))  # type: ignore[no-any-return]

    async def order(self, request: web.Request) -> BaseModel:
        try:
            order_id = int(request.match_info["order_id"])
        except ValueError:
            raise RequestError(400, "order_id: must be an integer", "order_id") from None
        found = await self._read(lambda session: views.one_order(session, order_id))
        if found is None:
            raise RequestError(404, f"order_id: no order {order_id}", "order_id")
        return found  # type: ignore[no-any-return]

    async def fills(self, request: web.Request) -> BaseModel:
        q: s.PageQuery = parse_query(s.PageQuery, request)
        self._market(q.market)
        return await self._read(lambda session: views.fills_page(session, q))  # type: ignore[no-any-return]

    async def decisions(self, request: web.Request) -> BaseModel:
        q: s.DecisionQuery = parse_query(s.DecisionQuery, request)
        self._market(q.market)
        return await self._read(lambda session: views.decisions_page(session, q))  # type: ignore[no-any-return]

    async def chart(self, request: web.Request) -> BaseModel:
        q: s.ChartQuery = parse_query(s.ChartQuery, request)
        market = self._market(q.market, required=True)
        assert market is not None
        bar_ms = timeframe_ms(market.timeframe)
        rows: list[list[Any]] = []
        source = "none"
        if self.candles is not None:
            try:
                rows = await self.candles(market, q.limit)
                source = "exchange"
            except Exception as error:  # noqa: BLE001 (the chart says where its candles could not come from)
                source = f"exchange unavailable: {type(error).__name__}"
        since = int(rows[0][0]) if rows else self.now_ms() - q.limit * bar_ms
        targets, fills = await self._read(lambda session: views.chart_marks(session, str(market), since))
        return s.ChartOut(
            market=str(market), candles=views.candles_out(rows), targets=targets, fills=fills, source=source
        )

    async def performance(self, request: web.Request) -> BaseModel:
        q: s.PerformanceQuery = parse_query(s.PerformanceQuery, request)
        market = self._market(q.market)
        bar_ms = timeframe_ms(market.timeframe if market else next(iter(self.markets.values())).timeframe)
        keys = list(self.markets)
        return await self._read(lambda session: views.performance(session, q.market, q.limit, bar_ms, keys))  # type: ignore[no-any-return]

    async def models(self, _request: web.Request) -> BaseModel:
        if self.registry is None:
            return s.ModelsOut(markets=[])
        return await asyncio.to_thread(self.registry.models)

    async def quality(self, _request: web.Request) -> BaseModel:
        if self.quality_source is None:
            return s.QualityOut(markets=[], validations=[], quarantine=[], problem="not available in this process")
        return await asyncio.to_thread(self.quality_source.quality)

    async def control(self, _request: web.Request) -> BaseModel:
        return await self._read(lambda session: views.control_out(control.read_trading_state(session)))  # type: ignore[no-any-return]

    async def parameters(self, _request: web.Request) -> BaseModel:
        return await self._read(lambda session: views.parameters_out(parameters.read(session, self.settings)))  # type: ignore[no-any-return]

    async def ledger(self, request: web.Request) -> BaseModel:
        q: s.LedgerQuery = parse_query(s.LedgerQuery, request)
        return await self._read(lambda session: views.ledger_page(session, q))  # type: ignore[no-any-return]

    async def ledger_verify(self, _request: web.Request) -> BaseModel:
        """The whole chain and tree checked (O(entries)): at most once per VERIFY_EVERY_S, whoever asks."""
        async with self._verify_lock:
            at, report = self._verified
            if report is None or time.monotonic() - at > VERIFY_EVERY_S:
                report = await self._read(views.ledger_verification)
                self._verified = (time.monotonic(), report)
        return report

    # --- changes (operator) ---------------------------------------------------------------------------------------

    async def set_control(self, request: web.Request) -> BaseModel:
        body: s.ControlIn = await parse_body(s.ControlIn, request)
        try:
            reason = control.checked_reason(body.reason)
        except control.InvalidReason as error:
            raise RequestError(400, f"reason: {error}", "reason") from None
        snapshot = await asyncio.to_thread(
            control.set_trading_state, self.write_sessions(), body.state, reason, self._by(request), body.cancel_open
        )
        notified: bool | None = None
        if self.on_trading_state is not None:
            try:
                await self.on_trading_state(snapshot.state, snapshot.reason, snapshot.cancel_open)
                notified = True
            except Exception:
                log.exception("on_trading_state callback failed")
                notified = False
        return s.ControlChangeOut(**views.control_out(snapshot).model_dump(), worker_notified=notified)

    def _change(
        self,
        request: web.Request,
        changes: Mapping[str, Any],
        reason: str,
        version: int | None,
        disable: Mapping[str, bool],
    ) -> s.ParametersChangedOut:
        try:
            after, diff, seq = parameters.change(
                self.write_sessions(),
                self.settings,
                changes,
                reason=reason,
                by=self._by(request),
                version=version,
                disable=disable,
                known_markets=tuple(self.markets),
            )
        except parameters.StaleEdit as error:
            raise RequestError(409, str(error), error.field) from None
        except parameters.ParameterError as error:
            raise RequestError(400, str(error), error.field) from None
        except control.InvalidReason as error:
            raise RequestError(400, f"reason: {error}", "reason") from None
        if diff:
            log.warning(
                "trading parameters changed by %s: %s",
                self._by(request),
                "; ".join(f"{name} {old!r} -> {new!r}" for name, old, new in diff),
            )
        return s.ParametersChangedOut(
            parameters=views.parameters_out(after),
            changes=[s.ParameterChange(field=name, old=old, new=new) for name, old, new in diff],
            ledger_seq=seq,
        )

    async def set_parameters(self, request: web.Request) -> BaseModel:
        body: s.ParametersIn = await parse_body(s.ParametersIn, request)
        return await asyncio.to_thread(self._change, request, body.changes, body.reason, body.version, {})

    async def set_market_enabled(self, request: web.Request) -> BaseModel:
        body: s.MarketEnabledIn = await parse_body(s.MarketEnabledIn, request)
        self._market(body.market)
        return await asyncio.to_thread(self._change, request, {}, body.reason, None, {body.market: not body.enabled})

    async def rollback(self, request: web.Request) -> BaseModel:
        body: s.RollbackIn = await parse_body(s.RollbackIn, request)
        self._market(body.market)
        try:
            reason = control.checked_reason(body.reason)
        except control.InvalidReason as error:
            raise RequestError(400, f"reason: {error}", "reason") from None
        if self.registry is None:
            raise RequestError(503, "the model registry is not available in this process")
        try:
            description = await asyncio.to_thread(self.registry.rollback, body.market)
        except LookupError as error:
            raise RequestError(503, str(error)) from None
        except Exception as error:  # noqa: BLE001 (PromotionError and registry failures: said, not a 500)
            raise RequestError(409, f"rollback refused: {str(error)[:300]}") from None
        log.warning("%s: rollback by %s: %s (%s)", body.market, self._by(request), description, reason)
        return s.RollbackOut(market=body.market, description=description)

    # --- the stream -----------------------------------------------------------------------------------------------

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        queue = self.hub.subscribe()

        async def send(event: s.StreamEvent) -> None:
            head = f"event: {event.kind}\n" + (f"id: {event.id}\n" if event.id is not None else "")
            await response.write(f"{head}data: {event.model_dump_json()}\n\n".encode())

        try:
            await send(s.StreamEvent(kind="hello", data={"retry_ms": 1000}, server_time=_now_iso()))
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    event = s.StreamEvent(kind="heartbeat", server_time=_now_iso())
                if event is None:
                    break
                await send(event)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.hub.unsubscribe(queue)
        return response

    async def openapi(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._openapi, content_type="application/json")


def _handler(api: ApiV1, route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    method = getattr(api, route.name)

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            result = await method(request)
        except RequestError as error:
            return error_response(error.status, str(error), error.field)
        if isinstance(result, web.StreamResponse):
            return result
        return _model_response(result)

    return handle


def route_access() -> dict[tuple[str, str], str]:
    """(method, path) -> the role it needs ("public", "viewer" or "operator")."""
    return {(route.method, route.full_path): route.access for route in ROUTES}


def add_routes(app: web.Application, api: ApiV1) -> None:
    for route in ROUTES:
        app.router.add_route(route.method, route.full_path, _handler(api, route))

    async def close_streams(_app: web.Application) -> None:
        await api.hub.close()

    app.on_shutdown.append(close_streams)
