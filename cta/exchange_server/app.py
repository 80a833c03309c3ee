"""The aiohttp application: routing, signing checks, request weight, faults and admin endpoints.

Paths are the venue's own, under the server's base URL: `/api/v3/...` (and `/sapi/v1/...`) as on
api.binance.com, which is what `cta.ccxt_factory.build_ccxt(api_url=...)` produces (`exchange.api_url`
replaces the venue's base URL). For compatibility with older clients, a path whose first segment is a host
name (`/api.binance.com/api/v3/...`) is served as the same path without it.

The Coinbase Advanced Trade dialect (`/api/v3/brokerage/...`, `/v2/...`: `cta.exchange_server.coinbase`) is
served by the same app over the same state: candles, replay clock, account and matching engine, request
budget (each Coinbase request weighs 1) and faults; its private endpoints check an ES256 JWT
(`cta.exchange_server.coinbase_auth`) instead of Binance's HMAC.

Admin endpoints (no auth, no weight, not counted; bind to 127.0.0.1):
- GET  /_cta/clock                 -> {"now_ms", "now_iso", "speed"}
- POST /_cta/clock  {"now_ms"?, "now"? (ISO), "advance_ms"?, "speed"?}
- GET  /_cta/faults                -> armed one-shot faults
- POST /_cta/faults {"kind", "path"?, "count"?, "method"?}; DELETE /_cta/faults clears them
- GET  /_cta/state                 -> balances, open orders, trade count, request counts per path

Request counts are kept per known route only; every other path and method is counted under one key
(OTHER), so junk requests cannot grow the server's memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn
from urllib.parse import parse_qs, parse_qsl

from aiohttp import web

from cta.clock import Clock, ReplayClock, SystemClock
from cta.exchange_server.api_errors import ApiError
from cta.exchange_server.auth import Credentials, verify_signed_request
from cta.exchange_server.candle_store import CandleStore
from cta.exchange_server.coinbase import CoinbaseApi, CoinbaseError, CoinbaseRequest
from cta.exchange_server.coinbase_auth import CoinbaseKey, JwtRejected, verify_jwt
from cta.exchange_server.faults import FaultInjector, FaultKind, FaultPlan, normalize_path
from cta.exchange_server.handlers import Handler, SpotApi
from cta.exchange_server.matching import EngineConfig, MatchingEngine
from cta.exchange_server.rate_limit import WeightLimiter, request_weight
from cta.exchange_server.settings import LocalExchangeSettings, parse_start_ms

logger = logging.getLogger(__name__)

ADMIN_PREFIX = "/_cta/"
OTHER = "<other>"  # the one counter key for paths (and methods) that are not routes
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
INTERNAL_ERROR_BODY = {
    "code": -1001,
    "msg": "Internal error; unable to process your request. Please try your request again.",
}


@dataclass(frozen=True)
class Route:
    handler: Handler
    signed: bool


class ExchangeService:
    """All server state; `build_app()` wraps it in an aiohttp Application.

    Endpoint logic runs under one lock, so the runner's thread-safe helpers (request counts, state
    snapshot) may read it from other threads.
    """

    def __init__(
        self,
        settings: LocalExchangeSettings,
        store: CandleStore,
        clock: ReplayClock,
        *,
        credentials: Credentials | None = None,
        wall: Clock | None = None,
        coinbase_key: CoinbaseKey | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.wall: Clock = wall or SystemClock()
        self.credentials = credentials
        self.engine = MatchingEngine(
            store,
            settings.initial_balances,
            EngineConfig.from_rates(settings.taker_fee_rate, settings.maker_fee_rate, settings.fill_participation),
        )
        self.limiter = WeightLimiter(settings.weight_limit_per_minute, self.wall)
        self.faults = FaultInjector(settings.faults)
        self.api = SpotApi(
            store, self.engine, settings.weight_limit_per_minute, self.wall, settings.withdrawals_enabled
        )
        self.coinbase_key = coinbase_key
        self.coinbase = CoinbaseApi(store, self.engine, self.wall, can_transfer=settings.withdrawals_enabled)
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._method_counts: Counter[tuple[str, str]] = Counter()
        self._routes = self._build_routes()
        self._paths = frozenset(path for _, path in self._routes)

    def _build_routes(self) -> dict[tuple[str, str], Route]:
        api = self.api
        public: dict[tuple[str, str], Handler] = {
            ("GET", "/api/v3/ping"): api.ping,
            ("GET", "/api/v3/time"): api.server_time,
            ("GET", "/api/v3/exchangeInfo"): api.exchange_info,
            ("GET", "/api/v3/klines"): api.klines,
            ("GET", "/api/v3/ticker/price"): api.ticker_price,
            ("GET", "/fapi/v1/exchangeInfo"): api.futures_exchange_info,
            ("GET", "/dapi/v1/exchangeInfo"): api.futures_exchange_info,
        }
        signed: dict[tuple[str, str], Handler] = {
            ("GET", "/api/v3/account"): api.account,
            ("POST", "/api/v3/order"): api.new_order,
            ("GET", "/api/v3/order"): api.get_order,
            ("DELETE", "/api/v3/order"): api.cancel_order,
            ("GET", "/api/v3/openOrders"): api.open_orders,
            ("DELETE", "/api/v3/openOrders"): api.cancel_open_orders,
            ("GET", "/api/v3/allOrders"): api.all_orders,
            ("GET", "/api/v3/myTrades"): api.my_trades,
            ("GET", "/sapi/v1/account/apiRestrictions"): api.api_restrictions,
            # What ccxt's load_markets asks for when not told to skip currencies and margin pairs.
            ("GET", "/sapi/v1/capital/config/getall"): api.empty_list,
            ("GET", "/sapi/v1/margin/allPairs"): api.empty_list,
            ("GET", "/sapi/v1/margin/isolated/allPairs"): api.empty_list,
        }
        routes = {k: Route(h, signed=False) for k, h in public.items()}
        routes.update({k: Route(h, signed=True) for k, h in signed.items()})
        return routes

    # ----- thread-safe views ---------------------------------------------------------------------

    def _count_keys(self, method: str, path: str) -> tuple[str, tuple[str, str]]:
        """The counter keys of a request: its path and (method, path) if they are a route, else OTHER. A Coinbase
        path counts under its route template (every order id under .../historical/{order_id})."""
        if self.coinbase.handles(path):
            route, template, _ = self.coinbase.match(method, path)
            if template is None:
                return OTHER, (OTHER, OTHER)
            return template, ((method, template) if route is not None else (OTHER, template))
        path_key = path if path in self._paths else OTHER
        method_key = (method, path) if (method, path) in self._routes else (OTHER, path_key)
        return path_key, method_key

    def request_count(self, path: str, method: str | None = None) -> int:
        """Requests received for `path` (host prefix optional), admin endpoints excluded; only `method` if given.
        Paths and methods that are not routes are counted together: ask for OTHER."""
        path_key, method_key = self._count_keys((method or "").upper(), normalize_path(path))
        with self._lock:
            if method is None:
                return self._counts[path_key]
            return self._method_counts[method_key]

    def snapshot(self) -> dict[str, Any]:
        """What GET /_cta/state answers."""
        with self._lock:
            now = self.clock.now_ms()
            self.engine.advance(now)
            balances = {a: {"free": f"{f:.8f}", "locked": f"{lk:.8f}"} for a, (f, lk) in self.engine.balances().items()}
            return {
                "now_ms": now,
                "balances": balances,
                "open_orders": len(self.engine.open_orders()),
                "trades": len(self.engine.trades()),
                "request_counts": dict(sorted(self._counts.items())),
                "weight_used_1m": self.limiter.used(),
                "armed_faults": self.faults.armed(),
            }

    def clock_state(self) -> dict[str, Any]:
        now = self.clock.now_ms()
        return {
            "now_ms": now,
            "now_iso": datetime.fromtimestamp(now / 1000, tz=UTC).isoformat().replace("+00:00", "Z"),
            "speed": self.clock.speed,
        }

    # ----- aiohttp ------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    def _count(self, method: str, path: str) -> None:
        """One more request on `path` (bounded keys: see `_count_keys`), whichever dialect answers it."""
        path_key, method_key = self._count_keys(method, path)
        with self._lock:
            self._counts[path_key] += 1
            self._method_counts[method_key] += 1

    async def _planned_fault(self, method: str, path: str) -> FaultPlan:
        """The fault planned for this request, its latency (and a timeout's wait) already served."""
        plan = self.faults.plan(method, path)
        if plan.latency_s > 0:
            await asyncio.sleep(plan.latency_s)
        if plan.kind is FaultKind.TIMEOUT:
            await asyncio.sleep(self.faults.settings.timeout_s)
        return plan

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = normalize_path(request.path)
        if path.startswith(ADMIN_PREFIX):
            return await self._admin(request, path)
        if self.coinbase.handles(path):
            return await self._dispatch_coinbase(request, path)
        method = request.method
        self._count(method, path)
        raw_query = request.rel_url.raw_query_string
        raw_body = await request.text() if request.can_read_body else ""
        try:
            params = _parse_params(raw_query, raw_body)
        except ApiError as exc:
            return self._json(exc.body(), exc.status)

        plan = await self._planned_fault(method, path)
        if plan.kind is FaultKind.ERROR:
            return web.Response(
                status=503, text="Service Unavailable.", headers={WEIGHT_HEADER: str(self.limiter.used())}
            )
        if plan.kind is FaultKind.INTERNAL_ERROR:
            return self._json(INTERNAL_ERROR_BODY, 503)

        decision = self.limiter.consume(request_weight(method, path, params))
        if not decision.allowed or plan.kind is FaultKind.RATE_LIMIT:
            retry_after = decision.retry_after_s or self.limiter.retry_after_s(self.wall.now_ms())
            body = {
                "code": -1003,
                "msg": f"Too much request weight used; current limit is {self.limiter.limit} request weight "
                "per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.",
            }
            return self._json(body, 429, used=decision.used, extra={"Retry-After": str(retry_after)})

        route = self._routes.get((method, path))
        if route is None:
            known = any(p == path for _, p in self._routes)
            status = 405 if known else 404
            return self._json({"code": -1, "msg": f"Unsupported endpoint: {method} {path}"}, status, decision.used)
        try:
            with self._lock:
                now = self.clock.now_ms()
                self.engine.advance(now)
                if route.signed:
                    verify_signed_request(
                        credentials=self.credentials,
                        api_key=request.headers.get("X-MBX-APIKEY"),
                        raw_query=raw_query,
                        raw_body=raw_body,
                        params=params,
                        wall_now_ms=self.wall.now_ms(),
                        max_recv_window_ms=self.settings.max_recv_window_ms,
                    )
                payload = route.handler(params, now)
            status = 200
        except ApiError as exc:
            payload, status = exc.body(), exc.status
        if plan.kind is FaultKind.DROP_AFTER_EXECUTE:
            logger.info("fault: dropping the connection after %s %s (status %d)", method, path, status)
            _drop_connection(request)
        return self._json(payload, status, decision.used)

    async def _dispatch_coinbase(self, request: web.Request, path: str) -> web.StreamResponse:
        """The Coinbase dialect: same counters, faults, budget, lock and clock; Coinbase's shapes and JWT."""
        method = request.method
        self._count(method, path)
        raw_body = await request.text() if request.can_read_body else ""
        plan = await self._planned_fault(method, path)
        if plan.kind is FaultKind.ERROR:
            return web.Response(status=503, text="Service Unavailable.")
        if plan.kind is FaultKind.INTERNAL_ERROR:
            return self._json(CoinbaseError(500, "INTERNAL", "Internal server error").body(), 500)
        decision = self.limiter.consume(1)
        if not decision.allowed or plan.kind is FaultKind.RATE_LIMIT:
            retry_after = decision.retry_after_s or self.limiter.retry_after_s(self.wall.now_ms())
            body = {"errors": [{"id": "rate_limit_exceeded", "message": "Too many requests"}]}
            return self._json(body, 429, used=decision.used, extra={"Retry-After": str(retry_after)})
        route, template, path_params = self.coinbase.match(method, path)
        if route is None:
            status = 405 if template is not None else 404
            return self._json(
                CoinbaseError(status, "NOT_FOUND", f"Unsupported endpoint: {method} {path}").body(), status
            )
        try:
            json_body: object = {}
            if method == "POST" and raw_body.strip():
                try:
                    json_body = json.loads(raw_body)
                except ValueError:
                    raise CoinbaseError(400, "INVALID_ARGUMENT", "the request body is not JSON") from None
            if not isinstance(json_body, dict):
                raise CoinbaseError(400, "INVALID_ARGUMENT", "the request body must be a JSON object")
            query = parse_qs(request.rel_url.raw_query_string, keep_blank_values=True)
            cb_request = CoinbaseRequest(query=query, body=json_body, path_params=path_params)
            if route.signed:
                try:
                    verify_jwt(
                        request.headers.get("Authorization"),
                        self.coinbase_key,
                        method=method,
                        host=request.host,
                        path=request.path,
                        now_s=self.wall.now_ms() / 1000,
                    )
                except JwtRejected as exc:
                    raise CoinbaseError(401, "unauthorized", "Unauthorized", str(exc)) from None
            with self._lock:
                now = self.clock.now_ms()
                self.engine.advance(now)
                payload = route.handler(cb_request, now)
            status = 200
        except CoinbaseError as exc:
            payload, status = exc.body(), exc.status
        except ApiError as exc:  # an engine rejection outside order creation
            payload, status = CoinbaseError(400, "INVALID_ARGUMENT", exc.msg).body(), 400
        if plan.kind is FaultKind.DROP_AFTER_EXECUTE:
            logger.info("fault: dropping the connection after %s %s (status %d)", method, path, status)
            _drop_connection(request)
        return self._json(payload, status, decision.used)

    def _json(
        self, payload: object, status: int, used: int | None = None, extra: dict[str, str] | None = None
    ) -> web.Response:
        headers = {WEIGHT_HEADER: str(self.limiter.used() if used is None else used)}
        headers.update(extra or {})
        return web.json_response(payload, status=status, headers=headers)

    async def _admin(self, request: web.Request, path: str) -> web.StreamResponse:
        try:
            body: dict[str, Any] = {}
            if request.method == "POST" and request.can_read_body:
                raw = await request.json()
                if not isinstance(raw, dict):
                    raise ValueError("the body must be a JSON object")
                body = raw
            if path == "/_cta/clock" and request.method == "GET":
                return web.json_response(self.clock_state())
            if path == "/_cta/clock" and request.method == "POST":
                self._set_clock(body)
                return web.json_response(self.clock_state())
            if path == "/_cta/faults" and request.method == "GET":
                return web.json_response({"armed": self.faults.armed()})
            if path == "/_cta/faults" and request.method == "POST":
                self.faults.arm(
                    FaultKind(body["kind"]),
                    body.get("path"),
                    int(body.get("count", 1)),
                    body.get("method"),
                )
                return web.json_response({"armed": self.faults.armed()})
            if path == "/_cta/faults" and request.method == "DELETE":
                self.faults.clear()
                return web.json_response({"armed": []})
            if path == "/_cta/state" and request.method == "GET":
                return web.json_response(self.snapshot())
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)
        return web.json_response({"error": f"unknown admin endpoint {request.method} {path}"}, status=404)

    def _set_clock(self, body: dict[str, Any]) -> None:
        unknown = set(body) - {"now_ms", "now", "advance_ms", "speed"}
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}")
        speed = None if body.get("speed") is None else float(body["speed"])
        if body.get("now_ms") is not None:
            target = int(body["now_ms"])
        elif body.get("now") is not None:
            target = parse_start_ms(str(body["now"]))
        else:
            target = self.clock.now_ms()
        target += int(body.get("advance_ms") or 0)
        self.clock.set(target, speed)
        logger.info("replay clock set to %s", self.clock_state())


def _parse_params(raw_query: str, raw_body: str) -> dict[str, str]:
    """Query and form-body parameters together; -1101 if one name appears twice."""
    params: dict[str, str] = {}
    for raw in (raw_query, raw_body):
        for key, value in parse_qsl(raw, keep_blank_values=True):
            if key in params:
                raise ApiError(-1101, "Duplicate values for a parameter detected.")
            params[key] = value
    return params


def _drop_connection(request: web.Request) -> NoReturn:
    """Abort the TCP connection, then end the handler without a response (aiohttp treats the
    cancellation like a client that went away and logs nothing)."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    raise asyncio.CancelledError
