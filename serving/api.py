"""The serving worker's HTTP API (aiohttp): health, readiness, metrics, read-only views and the kill switch.

`/healthz` and `/readyz` are open (orchestrators probe them); every other route, unknown paths included, needs
`Authorization: Bearer <CTA_API_TOKEN>`, compared in constant time. Without a configured token those routes
answer 503: there is no default token. A missing, repeated, over-long (MAX_AUTHORIZATION_CHARS) or non-UTF-8
Authorization header is a 401, never a 500. The token and the Authorization header are never logged.

Reads go through the caller's read-only sessions (`session_factory(engine, read_only=True)`), so the API never
holds the worker's write lock; the kill switch writes through `serving.control` with writing sessions. The
database is synchronous, so every query runs in a thread and the event loop the worker shares stays free.
JSON numbers are floats (identifiers stay integers), times are ISO-8601 UTC strings.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from sqlalchemy import Engine, select
from sqlalchemy.engine.base import OptionEngine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from cta.logs import printable
from serving import control
from serving.api_v1.server import MAX_BODY_KEY, ROLE_KEY, ApiV1, add_routes, route_access
from serving.api_v1.views import control_out
from serving.api_v1.views import iso as iso_utc
from serving.api_v1.views import iso_ms as iso_from_ms
from serving.control import TradingState
from serving.db import session_factory
from serving.metrics import METRICS_CONTENT_TYPE, WorkerMetrics
from serving.models import EquitySnapshot, Order, Position
from serving.orders import OrderStatus

log = logging.getLogger(__name__)

StatusFn = Callable[[], Mapping[str, Any]]
OnTradingState = Callable[[TradingState, str, bool], Awaitable[None]]

PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
NO_TOKEN_MESSAGE = "API token not configured: set CTA_API_TOKEN (operator) and/or CTA_VIEWER_TOKEN (viewer)"  # noqa: S105 (a message, not a token)
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_REASON_CHARS = control.MAX_REASON_CHARS
# An Authorization header longer than this (or than the expected one) is refused before it is compared.
MAX_AUTHORIZATION_CHARS = 512
KILL_SWITCH_BY = "api"
FORBIDDEN_MESSAGE = "forbidden: the viewer token may read, not change; use the operator token (CTA_API_TOKEN)"
MAX_BODY_BYTES = 64 * 1024  # a request body above this is refused (413) before it is parsed
DASHBOARD_MISSING = "the dashboard is not built: `make dashboard` builds it (make demo and make test do)"
# The dashboard page's headers: scripts only from this origin, no framing, no sniffing.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
# The access log line: no headers, so never the Authorization header.
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs'


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _json_default(value: Any) -> Any:
    """What `json.dumps` cannot write itself: datetimes as ISO UTC, enums by value, the rest as text."""
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, Enum):
        return value.value
    return str(value)


_dumps = functools.partial(json.dumps, default=_json_default)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def _bad_request(message: str) -> web.Response:
    return _json({"error": message}, status=400)


def position_json(row: Position) -> dict[str, Any]:
    return {
        "market": row.market,
        "units": float(row.units),
        "average_price": _float(row.average_price),
        "realized_pnl": float(row.realized_pnl),
        "updated_at": iso_utc(row.updated_at),
    }


def order_json(row: Order) -> dict[str, Any]:
    return {
        "id": row.id,
        "client_order_id": row.client_order_id,
        "exchange_order_id": row.exchange_order_id,
        "market": row.market,
        "symbol": row.symbol,
        "side": row.side,
        "type": row.type,
        "status": row.status,
        "amount": float(row.amount),
        "limit_price": _float(row.limit_price),
        "filled": float(row.filled),
        "average_price": _float(row.average_price),
        "fee_cost": float(row.fee_cost),
        "fee_currency": row.fee_currency,
        "decision_id": row.decision_id,
        "candle_time": iso_from_ms(row.candle_ts),
        "created_at": iso_utc(row.created_at),
        "updated_at": iso_utc(row.updated_at),
        "last_error": row.last_error,
    }


def equity_json(row: EquitySnapshot) -> dict[str, Any]:
    return {
        "time": iso_from_ms(row.ts),
        "market": row.market,
        "cash": float(row.cash),
        "position_value": float(row.position_value),
        "equity": float(row.equity),
    }


def control_json(snapshot: control.ControlSnapshot) -> dict[str, Any]:
    return control_out(snapshot).model_dump()


def writing_sessions(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    """Writing sessions (`serving.db.session_factory`) on the engine behind read-only `sessions`.

    A read-only session factory binds an engine copy with execution options; overriding them does not undo
    PostgreSQL's READ ONLY (SQLAlchemy applies both), so this goes back to the engine they were made from.
    Pass `control_sessions` to `build_app` to avoid relying on that.
    """
    bind = sessions.kw.get("bind")
    if not isinstance(bind, Engine):
        raise TypeError("pass control_sessions: the read sessions are not bound to an engine")
    while isinstance(bind, OptionEngine):
        bind = bind._proxied  # the engine `execution_options()` was called on (SQLAlchemy keeps no public link)
    return session_factory(bind)


def _limit(request: web.Request) -> int:
    """The `limit` query parameter (default DEFAULT_LIMIT, 1..MAX_LIMIT); ValueError when malformed."""
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    limit = int(raw)
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
    return limit


def _statuses(raw: str | None) -> list[str] | None:
    """The `status` query parameter: one status or a comma-separated list; ValueError on an unknown one."""
    if raw is None or not raw.strip():
        return None
    wanted = [part.strip().upper() for part in raw.split(",") if part.strip()]
    unknown = sorted(set(wanted) - {status.value for status in OrderStatus})
    if unknown:
        raise ValueError(f"unknown status {', '.join(unknown)}; use one of {', '.join(s.value for s in OrderStatus)}")
    return wanted


class _Api:
    """The handlers, holding what `build_app` was given."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        control_sessions: sessionmaker[Session] | None,
        metrics: WorkerMetrics,
        status: StatusFn,
        tokens: Mapping[str, str | None],
        on_trading_state: OnTradingState | None,
        cors_origins: Sequence[str] = (),
    ) -> None:
        self.sessions = sessions
        self.control_sessions = control_sessions
        self.metrics = metrics
        self.status = status
        # role -> the Authorization header that proves it; roles without a token cannot be used
        self._expected = {role: f"Bearer {token}".encode() for role, token in tokens.items() if token}
        self.on_trading_state = on_trading_state
        self.cors_origins = frozenset(cors_origins)
        self.access = {**route_access(), ("POST", "/api/kill-switch"): "operator"}

    def writers(self) -> sessionmaker[Session]:
        if self.control_sessions is None:
            self.control_sessions = writing_sessions(self.sessions)
        return self.control_sessions

    # ----- middleware ---------------------------------------------------------------------------------

    def _access(self, request: web.Request) -> str:
        """ "public", "viewer" or "operator": what the request's route needs. Unknown /api paths and /metrics need a
        token (an unknown path says nothing without one); the dashboard's files are public."""
        if request.path in PUBLIC_PATHS:
            return "public"
        resource = request.match_info.route.resource
        canonical = resource.canonical if resource is not None else request.path
        needed = self.access.get((request.method, canonical))
        if needed is not None:
            return needed
        if request.path.startswith("/api") or request.path.startswith("/metrics"):
            return "viewer"
        return "public"

    def _cors(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin is not None and origin in self.cors_origins and not response.prepared:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"

    @web.middleware
    async def guard(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
        """Authenticate every non-public path and check its role; turn database failures into 503 instead of a
        traceback page; CORS only for the configured origins."""
        if request.method == "OPTIONS" and request.headers.get("Origin") in self.cors_origins:
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Origin": request.headers["Origin"],
                    "Access-Control-Allow-Methods": "GET, POST, PUT",
                    "Access-Control-Allow-Headers": "Authorization, Content-Type",
                    "Access-Control-Max-Age": "600",
                    "Vary": "Origin",
                },
            )
        needed = self._access(request)
        if needed != "public":
            if not self._expected:
                return _json({"error": NO_TOKEN_MESSAGE}, status=503)
            role = self._role(request)
            if role is None:
                self.metrics.error("api_unauthorized")
                return _json({"error": "unauthorized"}, status=401)
            if needed == "operator" and role != "operator":
                self.metrics.error("api_forbidden")
                return _json({"error": FORBIDDEN_MESSAGE}, status=403)
            request[ROLE_KEY] = role
        try:
            response = await handler(request)
        except SQLAlchemyError as error:
            where = printable(f"{request.method} {request.path}"[:200])
            log.error("API %s: database error %s", where, type(error).__name__)
            self.metrics.error("api_database")
            response = _json({"error": "database unavailable"}, status=503)
        self._cors(request, response)
        return response

    def _role(self, request: web.Request) -> str | None:
        """The role whose token the one Authorization header holds; None when it is missing, repeated, longer than
        MAX_AUTHORIZATION_CHARS, not UTF-8 or matches no token: all refused. Every token is compared (in constant
        time), so the answer's timing does not say which one was close."""
        values = request.headers.getall("Authorization", [])
        longest = max((len(v) for v in self._expected.values()), default=0)
        if len(values) != 1 or len(values[0]) > max(MAX_AUTHORIZATION_CHARS, longest):
            return None
        try:
            supplied = values[0].encode("utf-8")  # aiohttp keeps undecodable bytes as surrogates: not UTF-8
        except UnicodeEncodeError:
            return None
        found = None
        for role, expected in self._expected.items():
            if hmac.compare_digest(supplied, expected):
                found = role
        return found

    # ----- open ---------------------------------------------------------------------------------------

    async def healthz(self, _request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(self, _request: web.Request) -> web.Response:
        try:
            status = self.status()
        except Exception:  # a broken status callback means not ready, never a crashed probe
            log.exception("status callback failed")
            return _json({"status": "not ready", "reasons": ["status unavailable"]}, status=503)
        if status.get("ready"):
            return _json({"status": "ready"})
        reasons: Sequence[Any] = status.get("reasons") or []
        return _json({"status": "not ready", "reasons": [str(reason) for reason in reasons]}, status=503)

    # ----- protected ----------------------------------------------------------------------------------

    async def metrics_page(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    def _read_positions(self) -> list[dict[str, Any]]:
        with self.sessions() as session:
            return [position_json(row) for row in session.scalars(select(Position).order_by(Position.market))]

    async def positions(self, _request: web.Request) -> web.Response:
        return _json({"positions": await asyncio.to_thread(self._read_positions)})

    def _read_orders(self, limit: int, statuses: list[str] | None, market: str | None) -> list[dict[str, Any]]:
        query = select(Order).order_by(Order.id.desc()).limit(limit)
        if statuses is not None:
            query = query.where(Order.status.in_(statuses))
        if market is not None:
            query = query.where(Order.market == market)
        with self.sessions() as session:
            return [order_json(row) for row in session.scalars(query)]

    async def orders(self, request: web.Request) -> web.Response:
        """Newest orders first: `?limit=` (default 100, at most 1000), `?status=OPEN,FILLED`, `?market=`."""
        try:
            limit, statuses = _limit(request), _statuses(request.query.get("status"))
        except ValueError as error:
            return _bad_request(str(error))
        rows = await asyncio.to_thread(self._read_orders, limit, statuses, request.query.get("market"))
        return _json({"orders": rows})

    def _read_equity(self, limit: int, market: str | None) -> list[dict[str, Any]]:
        query = select(EquitySnapshot).order_by(EquitySnapshot.ts.desc(), EquitySnapshot.id.desc()).limit(limit)
        if market is not None:
            query = query.where(EquitySnapshot.market == market)
        with self.sessions() as session:
            return [equity_json(row) for row in reversed(session.scalars(query).all())]

    async def equity(self, request: web.Request) -> web.Response:
        """The newest `limit` equity snapshots, oldest first (a chart's order); `?market=` for one market."""
        try:
            limit = _limit(request)
        except ValueError as error:
            return _bad_request(str(error))
        rows = await asyncio.to_thread(self._read_equity, limit, request.query.get("market"))
        return _json({"equity": rows})

    async def champion(self, _request: web.Request) -> web.Response:
        return _json({"models": self.status().get("models", {})})

    async def state(self, _request: web.Request) -> web.Response:
        snapshot = await asyncio.to_thread(control.trading_state, self.sessions)
        return _json(control_json(snapshot))

    async def kill_switch(self, request: web.Request) -> web.Response:
        """POST {"state": "HALTED"|"REDUCING"|"RUNNING", "reason": str, "cancel_open": bool}: persist, then notify."""
        try:
            body = await request.json()
        except ValueError:
            return _bad_request("body must be JSON")
        if not isinstance(body, dict):
            return _bad_request("body must be a JSON object")
        try:
            new_state = TradingState(str(body.get("state", "")).upper())
        except ValueError:
            return _bad_request(f"state must be one of {', '.join(s.value for s in TradingState)}")
        cancel_open = body.get("cancel_open", False)
        try:
            reason = control.checked_reason(body.get("reason"))
        except control.InvalidReason as error:
            return _bad_request(str(error))
        if not isinstance(cancel_open, bool):
            return _bad_request("cancel_open must be true or false")
        snapshot = await asyncio.to_thread(
            control.set_trading_state, self.writers(), new_state, reason, KILL_SWITCH_BY, cancel_open
        )
        self.metrics.state(snapshot.state)
        notified = await self._notify(snapshot)
        return _json({**control_json(snapshot), "worker_notified": notified})

    async def _notify(self, snapshot: control.ControlSnapshot) -> bool | None:
        """Tell the worker now (it would also read the persisted state later); None when nobody listens."""
        if self.on_trading_state is None:
            return None
        try:
            await self.on_trading_state(snapshot.state, snapshot.reason, snapshot.cancel_open)
        except Exception:  # the state is persisted either way; report, don't fail the request
            log.exception("on_trading_state callback failed")
            self.metrics.error("api_callback")
            return False
        return True


def build_app(
    *,
    sessions: sessionmaker[Session],
    metrics: WorkerMetrics,
    status: StatusFn,
    token: str | None = None,
    viewer_token: str | None = None,
    on_trading_state: OnTradingState | None = None,
    control_sessions: sessionmaker[Session] | None = None,
    v1: Callable[[Callable[[], sessionmaker[Session]]], ApiV1] | None = None,
    dashboard_dir: Path | None = None,
    cors_origins: Sequence[str] = (),
) -> web.Application:
    """The API application.

    `sessions` are read-only sessions for the views; `control_sessions` write the kill switch (by default,
    writing sessions on the engine behind `sessions`). `status()` returns at least {"ready": bool} and may add
    "reasons" (why not ready) and "models" (shown by /api/champion). `token` is the operator's token (reads and
    changes), `viewer_token` the viewer's (reads only); with neither, every protected route answers 503.
    `on_trading_state(state, reason, cancel_open)` is awaited after the kill switch is persisted. `v1(writers)`
    builds the dashboard's API v1 (`serving.api_v1`), given the writing sessions; `dashboard_dir` holds the
    dashboard's built files, served at `/` from the same origin.
    """
    api = _Api(
        sessions=sessions,
        control_sessions=control_sessions,
        metrics=metrics,
        status=status,
        tokens={"operator": token, "viewer": viewer_token},
        on_trading_state=on_trading_state,
        cors_origins=cors_origins,
    )
    app = web.Application(middlewares=[api.guard], client_max_size=MAX_BODY_BYTES)
    app[MAX_BODY_KEY] = MAX_BODY_BYTES
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/readyz", api.readyz)
    app.router.add_get("/metrics", api.metrics_page)
    app.router.add_get("/api/positions", api.positions)
    app.router.add_get("/api/orders", api.orders)
    app.router.add_get("/api/equity", api.equity)
    app.router.add_get("/api/champion", api.champion)
    app.router.add_get("/api/state", api.state)
    app.router.add_post("/api/kill-switch", api.kill_switch)
    add_ledger_routes(app, sessions)
    if v1 is not None:
        add_routes(app, v1(api.writers))
    add_dashboard(app, dashboard_dir)
    return app


# ----- the dashboard's files ------------------------------------------------------------------------------------------


def add_dashboard(app: web.Application, directory: Path | None) -> None:
    """Serve the dashboard's built files: `/` is its page, `/assets/` its scripts and styles (public: they hold
    no data; every datum comes from /api/v1 with a token). Without the files, `/` says how to build them."""
    index = directory / "index.html" if directory is not None else None

    async def page(_request: web.Request) -> web.StreamResponse:
        if index is None or not index.is_file():
            return _json({"error": DASHBOARD_MISSING}, status=404)
        return web.FileResponse(index, headers={**PAGE_HEADERS, "Cache-Control": "no-cache"})

    app.router.add_get("/", page)
    if directory is not None and (directory / "assets").is_dir():
        app.router.add_static("/assets/", directory / "assets", append_version=False)
        app.on_response_prepare.append(_asset_headers)
    if directory is not None and directory.is_dir():
        for path in sorted(directory.iterdir()):
            if path.is_file() and path.name != "index.html":

                async def one(_request: web.Request, path: Path = path) -> web.StreamResponse:
                    return web.FileResponse(path, headers={"X-Content-Type-Options": "nosniff"})

                app.router.add_get(f"/{path.name}", one)


async def _asset_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith("/assets/"):
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"  # Vite names files by content


class _ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server logger for the API: a request the HTTP parser refuses (an over-long or malformed header, a
    bad request line) is the client's fault, so it is one line naming the error, without the bytes the client
    sent (a header may hold a token) and without a traceback; anything else keeps its traceback."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self.logger.warning("API: refused a malformed request (%s %s)", type(exc_info).__name__, exc_info.code)
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)


class ApiServer:
    """Runs an application on a TCP port inside the current event loop: `await start(host, port)`, `await stop()`."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    async def start(self, host: str, port: int) -> str:
        """Listen on `host`:`port` (0 picks a free port) and return the base URL."""
        if self._runner is not None:
            raise RuntimeError("API server already started")
        runner = web.AppRunner(
            self.app, access_log_format=ACCESS_LOG_FORMAT, logger=_ServerLog(logging.getLogger("aiohttp.server"))
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"http://{shown}:{bound_port}"
        log.info("API listening on %s", self.url)
        return self.url

    async def stop(self) -> None:
        """Stop listening and finish the open requests; a no-op when not started."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
            self.url = None


# ----- the ledger's Merkle log: read-only (viewer) routes -------------------------------------------------------


class _LedgerRoutes:
    """`GET /api/ledger/checkpoint` (the latest signed checkpoint), `/api/ledger/proof/inclusion?seq=N[&size=M]`
    and `/api/ledger/proof/consistency?from=M[&to=N]`: proofs against signed checkpoints, as JSON bundles that
    `serving.ledger_log.verify_bundle` (or any RFC 9162 verifier) checks with the log's public key alone."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def _read_checkpoint(self) -> dict[str, Any] | None:
        from serving.ledger_log import latest_checkpoint

        with self.sessions() as session:
            row = latest_checkpoint(session)
            if row is None:
                return None
            return {"size": row.size, "root": row.root_hash, "ts": iso_from_ms(row.ts), "checkpoint": row.note}

    async def checkpoint(self, _request: web.Request) -> web.Response:
        body = await asyncio.to_thread(self._read_checkpoint)
        return _json(body) if body is not None else _json({"error": "no checkpoint yet"}, status=404)

    async def _bundle(self, build: Callable[[Session], dict[str, Any]]) -> web.Response:
        from serving.ledger_log import ProofError

        def read() -> dict[str, Any]:
            with self.sessions() as session:
                return build(session)

        try:
            return _json(await asyncio.to_thread(read))
        except (ProofError, ValueError) as error:
            return _json({"error": str(error)}, status=404)

    async def inclusion(self, request: web.Request) -> web.Response:
        from serving.ledger_log import proof_bundle_inclusion

        try:
            seq = int(request.query["seq"])
            size = int(request.query["size"]) if "size" in request.query else None
        except (KeyError, ValueError):
            return _bad_request("seq (and optionally size) must be integers")
        return await self._bundle(lambda session: proof_bundle_inclusion(session, seq, size))

    async def consistency(self, request: web.Request) -> web.Response:
        from serving.ledger_log import proof_bundle_consistency

        try:
            old = int(request.query["from"])
            new = int(request.query["to"]) if "to" in request.query else None
        except (KeyError, ValueError):
            return _bad_request("from (and optionally to) must be integers")
        return await self._bundle(lambda session: proof_bundle_consistency(session, old, new))


def add_ledger_routes(app: web.Application, sessions: sessionmaker[Session]) -> None:
    """Register the ledger's read-only routes (behind the same bearer-token guard as every /api route)."""
    routes = _LedgerRoutes(sessions)
    app.router.add_get("/api/ledger/checkpoint", routes.checkpoint)
    app.router.add_get("/api/ledger/proof/inclusion", routes.inclusion)
    app.router.add_get("/api/ledger/proof/consistency", routes.consistency)
