"""`cta serve`: assemble the worker from the settings (database, exchange, Feast, registry, broker,
metrics, API), check that live trading is safe (the settings before anything starts, the exchange's verdict on
the key before reconciliation uses it, the models once loaded), run until stopped or `serving.max_bars`, and
summarise what happened.

`serve`, `serving_runtime` and `make_broker` take an optional `checkpoint` (`serving.types.OrderCheckpoint`) that the
broker calls at each crash point of an order; the command line never passes one (the crash drills in tests/serving
do).

Dependencies: the API (`/healthz`, `/readyz`) starts first; the worker then waits for its database and its model
registry (`wait_for_dependencies`: not ready, one log line per check naming what is down and why, checked again
after a growing, bounded delay) instead of crashing, and starts (migrations, reconciliation, models) once both
answer. It is ready once it trades: started, and a model serving every market. A database lost while trading
stops the worker's loop; `serve` then starts it again the same way (waiting, then the start-up reconciliation and
the state restored from the database, as after a crash), so an outage never kills the process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from cta.components import configured_markets, make_exchange, make_lake
from cta.config import Settings
from cta.errors import CTAError, ExchangeError, TemporaryExchangeError
from cta.exchange import ExchangeAdapter
from cta.execution import Execution
from cta.lake import Market
from serving.db import database_problem, make_engine, session_factory, upgrade
from serving.ledger_anchor import Sealer
from serving.models import Decision, EquitySnapshot, Fill
from serving.models_manager import ModelManager
from serving.paper import PaperBroker
from serving.types import Broker, OrderCheckpoint, no_checkpoint
from serving.worker import Worker

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parent.parent  # relative paths in the settings that name project files

MAX_CLOCK_OFFSET_MS = 1_000
DB_CONNECT_TIMEOUT_S = 10  # a PostgreSQL server that accepts connections but never answers is "down" after this


class UnsafeLiveSettings(CTAError):
    """Live trading refused to start."""


class ServingStopped(CTAError):
    """Stopped (SIGINT/SIGTERM) while waiting for the worker's dependencies: nothing was started."""


@dataclass
class Readiness:
    """What `/readyz` answers: not ready while waiting for the dependencies (with what is down), then the
    worker's own status (`worker_status`)."""

    waiting: list[str] = field(default_factory=lambda: ["starting"])
    worker: Worker | None = None

    def status(self) -> dict[str, Any]:
        if self.worker is None:
            return {"ready": False, "reasons": list(self.waiting), "models": {}}
        return worker_status(self.worker)


def retry_delay(settings: Settings, attempt: int) -> float:
    """The wait before check `attempt + 1`: serving.dependency_retry_s doubling per attempt, at most
    serving.dependency_retry_max_s."""
    serving = settings.serving
    return float(min(serving.dependency_retry_max_s, serving.dependency_retry_s * 2 ** min(attempt, 30)))


async def wait_for_dependencies(
    settings: Settings,
    checks: Mapping[str, Callable[[], str | None]],
    readiness: Readiness,
    stop: asyncio.Event | None = None,
) -> bool:
    """Run every check (what -> why it is down, or None) until all pass; between rounds log which are down and
    wait `retry_delay` (growing, bounded). False when `stop` was set while waiting."""
    attempt, started = 0, time.monotonic()
    while True:
        problems = {what: await asyncio.to_thread(check) for what, check in checks.items()}
        down = [f"{what} is unavailable: {problem}" for what, problem in problems.items() if problem is not None]
        if not down:
            if attempt:
                log.info(
                    "dependencies reachable after %.1f s (%d checks): %s",
                    time.monotonic() - started,
                    attempt + 1,
                    ", ".join(checks),
                )
            return True
        readiness.waiting = down
        delay = retry_delay(settings, attempt)
        attempt += 1
        log.warning("not ready: %s; check #%d in %.1f s", "; ".join(down), attempt + 1, delay)
        if stop is None:
            await asyncio.sleep(delay)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        if stop.is_set():
            return False


def database_url(settings: Settings) -> str:
    """The configured URL, with the password from CTA_DB_PASSWORD (never from a file)."""
    url = make_url(settings.serving.database_url)
    if settings.secrets.db_password is not None and url.get_backend_name() != "sqlite":
        url = url.set(password=settings.secrets.db_password.get_secret_value())
    return url.render_as_string(hide_password=False)


def live_settings_problems(settings: Settings) -> list[str]:
    """The reasons live trading must not start that the settings alone show (empty in paper mode)."""
    if settings.mode != "live":
        return []
    problems: list[str] = []
    if settings.serving.broker != "ccxt":
        problems.append("live mode needs serving.broker = ccxt")
    if settings.secrets.api_key is None or settings.secrets.api_secret is None:
        problems.append("live mode needs CTA_API_KEY and CTA_API_SECRET in the environment")
    return problems


async def live_exchange_problems(settings: Settings, exchange: ExchangeAdapter) -> list[str]:
    """The reasons the exchange gives (empty in paper mode): the clock offset, a key it rejects, a key that may
    withdraw. Asked before anything else uses the key (no reconciliation with a key that will be refused)."""
    if settings.mode != "live":
        return []
    problems: list[str] = []
    offset = await exchange.clock_offset_ms()
    if abs(offset) > MAX_CLOCK_OFFSET_MS:
        problems.append(f"the exchange's clock is {offset:+.0f} ms off this host's (limit {MAX_CLOCK_OFFSET_MS} ms)")
    try:
        await exchange.check_credentials()
        restrictions = await exchange.api_restrictions()
    except TemporaryExchangeError:
        raise  # unreachable or rate limited: not a verdict on the key
    except ExchangeError as error:
        problems.append(f"the exchange rejected the API key ({error})")
        return problems
    if restrictions is not None and restrictions.get("enableWithdrawals"):
        problems.append("the API key may withdraw funds: use a trade-only key")
    return problems


def live_model_problems(settings: Settings, models: ModelManager) -> list[str]:
    """Markets without a champion to trade (empty in paper mode)."""
    if settings.mode != "live":
        return []
    return [
        f"{market}: no champion model ({slot.problem or 'not loaded'})"
        for market, slot in models.slots.items()
        if slot.current is None
    ]


async def live_safety_problems(settings: Settings, exchange: ExchangeAdapter, models: ModelManager) -> list[str]:
    """Every reason live trading must not start (empty in paper mode). `serving_runtime` asks the same
    questions in start-up order: the settings first, then the exchange (before reconciliation), then the models."""
    problems = live_settings_problems(settings)
    if problems:
        return problems
    return await live_exchange_problems(settings, exchange) + live_model_problems(settings, models)


def refuse_live(problems: list[str]) -> None:
    """Raise UnsafeLiveSettings naming every problem, if any."""
    if problems:
        raise UnsafeLiveSettings("live trading refused: " + "; ".join(problems))


def make_broker(
    settings: Settings,
    sessions: sessionmaker[Session],
    exchange: ExchangeAdapter,
    markets: list[Market],
    checkpoint: OrderCheckpoint = no_checkpoint,
) -> Broker:
    """The configured broker: paper (orders fill in this database) or ccxt (orders on the exchange, which calls
    `checkpoint` at each crash point of an order)."""
    execution = Execution.from_settings(settings.costs, settings.backtest)
    prefix = settings.serving.client_order_prefix
    if settings.serving.broker == "paper":
        return PaperBroker(sessions, execution, prefix, lambda: int(time.time() * 1000))
    from cta.clock import SystemClock
    from serving.ccxt_broker import CcxtBroker

    return CcxtBroker(
        exchange,
        sessions,
        prefix,
        SystemClock(),
        markets,
        balance_max_age_s=settings.serving.balance_max_age_s,
        checkpoint=checkpoint,
    )


@dataclass
class Runtime:
    worker: Worker
    sessions: sessionmaker[Session]
    api_url: str | None
    started_ms: int
    first_close: dict[str, float] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def serving_runtime(
    settings: Settings, *, checkpoint: OrderCheckpoint = no_checkpoint, stop: asyncio.Event | None = None
) -> AsyncIterator[Runtime]:
    """Everything `cta serve` runs, started in order and stopped in reverse: the API first (not ready), then,
    once the database and the model registry answer (`wait_for_dependencies`), the worker. Raises ServingStopped
    when `stop` is set before they do."""
    from mlflow import MlflowClient

    from cta.registry import configure_mlflow, promotion_lock, registered_model_name, registry_problem
    from features.feast_store import feature_store_for
    from features.registry import feature_names
    from serving.api import ApiServer
    from serving.champion_watch import ChampionWatch
    from serving.metrics import WorkerMetrics

    refuse_live(live_settings_problems(settings))  # before anything starts
    url = database_url(settings)
    postgres = make_url(url).get_backend_name() == "postgresql"
    engine = make_engine(url, connect_args={"connect_timeout": DB_CONNECT_TIMEOUT_S} if postgres else None)
    sessions, readers = session_factory(engine), session_factory(engine, read_only=True)
    markets = configured_markets(settings)
    tracking_uri = configure_mlflow(settings)
    metrics = WorkerMetrics()
    readiness = Readiness()
    connected: dict[str, Any] = {}  # what the dashboard's API reads once the worker has it: exchange, store
    api = ApiServer(api_app(settings, markets, sessions, readers, readiness, connected, metrics))
    api_url = await api.start(settings.serving.api_host, settings.serving.api_port)
    try:
        checks = {
            f"the serving database {engine.url.render_as_string(hide_password=True)}": lambda: database_problem(engine),
            f"the model registry {tracking_uri}": lambda: registry_problem(tracking_uri),
        }
        if not await wait_for_dependencies(settings, checks, readiness, stop):
            raise ServingStopped("stopped while waiting for the database and the model registry")
        readiness.waiting = ["starting: migrations, reconciliation, models"]
        await asyncio.to_thread(upgrade, engine)
        store = feature_store_for(settings.features)
        store.apply()
        models = ModelManager(
            MlflowClient(),
            {str(m): registered_model_name(m) for m in markets},
            poll_s=settings.serving.model_poll_s,
            probe=lambda: registry_problem(tracking_uri),
        )
        connected["store"] = store
        async with make_exchange(settings) as exchange:
            refuse_live(await live_exchange_problems(settings, exchange))  # before the broker uses the key
            connected["exchange"] = exchange
            for market in markets:
                await exchange.check_market(market.symbol, market.timeframe)
            broker = make_broker(settings, sessions, exchange, markets, checkpoint)

            async def fetch(market: Market, since: int, limit: int) -> list[list[Any]]:
                return await exchange.fetch_ohlcv(market.symbol, market.timeframe, since, limit)

            worker = Worker(
                settings,
                markets=markets,
                sessions=sessions,
                broker=broker,
                models=models,
                store=store,
                fetch_candles=fetch,
                now_ms=exchange.fetch_time,
                metrics=metrics,
                sealer=Sealer.from_settings(settings.ledger, settings.secrets),
                lake=make_lake(settings),
                watch=ChampionWatch(
                    settings.serving.monitor,
                    sessions,
                    models,
                    lambda name: promotion_lock(settings, name),
                    columns=list(settings.features.names) if settings.features.names else feature_names(),
                    metrics=metrics,
                ),
            )
            try:
                await worker.start()
                for market in markets:
                    await models.refresh(str(market))
                refuse_live(live_model_problems(settings, models))
                readiness.worker = worker
                yield Runtime(worker, sessions, api_url, await exchange.fetch_time())
            finally:
                connected.clear()
                await broker.close()
    finally:
        await api.stop()
        engine.dispose()


# a message, not a token
NO_DASHBOARD_TOKEN = "the dashboard needs a token: set CTA_VIEWER_TOKEN (read only) and/or CTA_API_TOKEN (operator)"  # noqa: S105


async def serve_dashboard(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """The dashboard and its API over the serving database, without trading (`cta dashboard`): what a paper session
    left, or what a worker elsewhere writes into the same database. The kill switch and the parameters it changes
    are the ones a worker reads; the chart's candles come from the exchange when it answers."""
    from serving.api import ApiServer
    from serving.metrics import WorkerMetrics

    secrets = settings.secrets
    if secrets.api_token is None and secrets.viewer_token is None:
        raise CTAError(NO_DASHBOARD_TOKEN)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    from cta.registry import configure_mlflow

    engine = make_engine(database_url(settings))
    await asyncio.to_thread(upgrade, engine)
    sessions, readers = session_factory(engine), session_factory(engine, read_only=True)
    markets = configured_markets(settings)
    configure_mlflow(settings)
    readiness = Readiness(waiting=["no worker in this process (`cta dashboard`): the database as the worker left it"])
    connected: dict[str, Any] = {}
    api = ApiServer(api_app(settings, markets, sessions, readers, readiness, connected, WorkerMetrics()))
    url = await api.start(settings.serving.api_host, settings.serving.api_port)
    log.warning("dashboard at %s/ (log in with the token); Ctrl-C stops", url)
    try:
        async with make_exchange(settings) as exchange:
            connected["exchange"] = exchange
            await stop.wait()
    finally:
        await api.stop()
        engine.dispose()


def api_app(  # noqa: PLR0917 (the one assembly of the API, for `cta serve` and `cta dashboard`)
    settings: Settings,
    markets: list[Market],
    sessions: sessionmaker[Session],
    readers: sessionmaker[Session],
    readiness: Readiness,
    connected: dict[str, Any],
    metrics: Any,
) -> Any:
    """The worker's API with API v1 and the dashboard: tokens from the secrets, reads on `readers`, changes on
    `sessions`; `connected` gets the exchange and the store once they exist."""
    from serving.api import build_app

    secrets = settings.secrets
    return build_app(
        sessions=readers,
        metrics=metrics,
        status=readiness.status,
        token=secrets.api_token.get_secret_value() if secrets.api_token else None,
        viewer_token=secrets.viewer_token.get_secret_value() if secrets.viewer_token else None,
        control_sessions=sessions,
        v1=lambda writers: dashboard_api(
            settings, markets, readers=readers, writers=writers, readiness=readiness, connected=connected
        ),
        dashboard_dir=dashboard_dir(settings),
        cors_origins=settings.serving.cors_origins,
    )


def dashboard_dir(settings: Settings) -> Path | None:
    """Where the dashboard's built files are (None: not served)."""
    if not settings.serving.dashboard_dir:
        return None
    path = Path(settings.serving.dashboard_dir)
    return path if path.is_absolute() else PROJECT_ROOT / path


def dashboard_api(
    settings: Settings,
    markets: list[Market],
    *,
    readers: sessionmaker[Session],
    writers: Callable[[], sessionmaker[Session]],
    readiness: Readiness,
    connected: dict[str, Any],
) -> Any:
    """API v1 (the dashboard's backend) over this worker: its database, the model registry (rollback under the
    promotion lock), the data's quality, and the candles of the exchange the worker trades on."""
    from mlflow import MlflowClient

    from cta.registry import promotion_lock, registered_model_name, rollback
    from cta.timeframes import timeframe_ms
    from serving.api_v1.server import ApiV1
    from serving.api_v1.sources import QualitySource, RegistrySource

    names = {str(m): registered_model_name(m) for m in markets}

    def roll_back(market: str) -> str:
        name = names[market]
        move = rollback(MlflowClient(), name, lock=promotion_lock(settings, name))
        return f"{name}: champion v{move.previous} -> v{move.version} (rolled back)"

    async def candles(market: Market, limit: int) -> list[list[Any]]:
        exchange = connected.get("exchange")
        if exchange is None:
            raise CTAError("the exchange is not connected yet")
        bar = timeframe_ms(market.timeframe)
        now = (
            readiness.worker.last_now if readiness.worker and readiness.worker.last_now else await exchange.fetch_time()
        )
        rows: list[list[Any]] = await exchange.fetch_ohlcv(market.symbol, market.timeframe, now - limit * bar, limit)
        return [row for row in rows if int(row[0]) + bar <= now]

    def online_newest(market: str) -> Any:
        store = connected.get("store")
        return None if store is None else store.read_online(market)[0]

    def now_ms() -> int:
        worker = readiness.worker
        return int(worker.last_now) if worker is not None and worker.last_now else int(time.time() * 1000)

    return ApiV1(
        settings=settings,
        markets=markets,
        sessions=readers,
        write_sessions=writers,
        status=readiness.status,
        candles=candles,
        registry=RegistrySource(MlflowClient, names, {str(m): m for m in markets}, readers, roll_back),
        quality=QualitySource(settings, markets, make_lake(settings), online_newest, now_ms),
        now_ms=now_ms,
    )


def worker_status(worker: Worker) -> dict[str, Any]:
    """Ready when every market has a model serving; else the reasons (no champion, registry unavailable, ...)."""
    models, reasons = {}, []
    for market in worker.states:
        loaded = worker.models.model(market)
        problem = worker.models.problem(market)
        models[market] = {
            "model": loaded.name if loaded else None,
            "version": loaded.version if loaded else None,
            "problem": problem,
        }
        if loaded is None:
            reasons.append(f"{market}: {problem or 'no model loaded'}")
    return {
        "ready": not reasons,
        "reasons": reasons,
        "models": models,
        "markets": {k: {"last_ts": s.last_ts, "bars": s.bars} for k, s in worker.states.items()},
        "now_ms": worker.last_now,
    }


def database_lost(error: DBAPIError) -> bool:
    """Whether a database error means the database went away (connection refused, lost, timed out), not a bad
    statement or a constraint: the worker starts again once it is back instead of the process ending."""
    return bool(error.connection_invalidated) or isinstance(error, OperationalError | InterfaceError)


async def serve(settings: Settings, *, checkpoint: OrderCheckpoint = no_checkpoint) -> list[dict[str, Any]]:
    """Run the worker until SIGINT/SIGTERM or `serving.max_bars`; return the per-market summary (empty when
    stopped before the worker started).

    A database that goes away (`database_lost`: connection refused, lost, timed out) stops the
    worker, never the process: it starts again as a restarted process would (waiting for its dependencies,
    reconciliation, the last decisions restored), after a growing delay while it keeps failing. Other errors
    still end the process."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    failures = 0
    while True:
        try:
            async with serving_runtime(settings, checkpoint=checkpoint, stop=stop) as runtime:
                failures = 0
                log.info("serving %d market(s); API at %s", len(runtime.worker.states), runtime.api_url)
                await runtime.worker.run(stop)
                return summarize(runtime)
        except ServingStopped as stopped:
            log.warning("%s", stopped)
            return []
        except DBAPIError as error:
            if stop.is_set() or not database_lost(error):
                raise
            delay = retry_delay(settings, failures)
            failures += 1
            cause = str(error.orig or error).strip().splitlines()
            log.error(
                "the serving database failed (%s: %s): the worker starts again in %.1f s (reconciliation first)",
                type(error).__name__,
                cause[0] if cause else "",
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            if stop.is_set():
                return []


def summarize(runtime: Runtime) -> list[dict[str, Any]]:
    """Per market: model, bars, decisions, trades, PnL and buy-and-hold over the same bars."""
    rows: list[dict[str, Any]] = []
    worker = runtime.worker
    with runtime.sessions() as session:
        for key, state in worker.states.items():
            fills = session.scalar(select(func.count(Fill.id)).where(Fill.market == key)) or 0
            snapshots = session.execute(
                select(EquitySnapshot.ts, EquitySnapshot.equity)
                .where(EquitySnapshot.market == key)
                .order_by(EquitySnapshot.id)
            ).all()
            first_decision = session.scalar(select(func.min(Decision.candle_ts)).where(Decision.market == key))
            loaded = worker.models.model(key)
            closes = [c[4] for c in state.candles]
            processed = min(state.bars, len(closes))
            start_equity = worker.execution.initial_cash
            equity = snapshots[-1][1] if snapshots else start_equity
            hold = closes[-1] / closes[-processed] - 1.0 if processed > 1 else 0.0
            rows.append(
                {
                    "market": key,
                    "model": f"v{loaded.version}" if loaded else "none",
                    "bars": state.bars,
                    "decisions": state.decisions,
                    "orders": state.orders,
                    "fills": int(fills),
                    "pnl": equity / start_equity - 1.0,
                    "buy_and_hold": hold,
                    "skipped_candles": len(state.skipped),
                    "since": first_decision,
                    "note": worker.models.problem(key) or "",
                }
            )
    return rows
