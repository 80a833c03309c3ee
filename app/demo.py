"""The demo's composition root: the local exchange, and the paper-trading session that ends the demo.

The local exchange's replay clock stands still while the pipeline runs (ingestion sees the market up to the replay
start; the minutes of training do not skip weeks of candles). Then `paper_session` trades the champions on a new
paper account (the demo profile's database; a previous demo's account is kept beside it, renamed), from the first
candle after everything the lake holds (so never on a candle the champion could have been trained on), on the
replay clock moved one candle at a time as soon as the worker has handled the last one: the worker's real loop,
its risk checks (a candle is never stale), its paper broker's fills at the next open, as fast as it decides. The
session lasts `serving.max_bars` candles; while a market's champion has not had an order filled yet it goes on, up
to twice as many (or the end of the bundled candles), and the output says so. No order is invented: a champion
that does not trade shows none."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from cta.config import Settings, with_overrides
from cta.errors import CTAError

if TYPE_CHECKING:  # types only: the CLI starts without importing the exchange server or the worker
    from sqlalchemy.orm import Session, sessionmaker

    from cta.clock import ReplayClock
    from cta.exchange_server.runner import LocalExchangeServer
    from serving.worker import Worker

log = logging.getLogger(__name__)

PACE_S = 0.01  # how often the pacer looks whether the worker has handled the newest candle
STALL_S = 2.0  # a candle the exchange does not have (a gap in the data): the clock moves on after this long
EXTEND_FACTOR = 2  # a session without a fill in some market goes on up to this many times serving.max_bars


@contextlib.contextmanager
def local_exchange_for(settings: Settings, say: Callable[[str], None]) -> Iterator[LocalExchangeServer | None]:
    """Start the local exchange for the demo, its replay clock standing still at local_exchange.start until
    `paper_session` moves it; yield it. An exchange already answering at exchange.api_url is used as it is
    (yields None: its own clock runs)."""
    url = settings.exchange.api_url
    parsed = urlparse(url or "")
    if not url or parsed.hostname not in ("127.0.0.1", "localhost"):
        raise CTAError("the demo runs against the local exchange: set exchange.api_url to http://127.0.0.1:PORT")
    port = parsed.port or 80
    if _listening(parsed.hostname or "127.0.0.1", port):
        say(f"using the exchange already listening at {url} (its own replay clock paces the demo)")
        yield None
        return
    from cta.exchange_server.runner import LocalExchangeServer

    secrets = settings.secrets
    server = LocalExchangeServer(
        settings.local_exchange.model_copy(update={"port": port, "speed": 0.0}),
        api_key=secrets.api_key.get_secret_value() if secrets.api_key else None,
        api_secret=secrets.api_secret.get_secret_value() if secrets.api_secret else None,
    )
    address = server.start()
    say(
        f"local exchange replaying real Binance candles at {address}; its replay clock stands at "
        f"{iso(server.clock.now_ms())} while the pipeline runs"
    )
    try:
        yield server
    finally:
        server.stop()


def _listening(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def iso(ms: int | None) -> str:
    return "" if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


@dataclass
class PaperSession:
    """What the demo's paper trading did: the worker's summary per market, the orders with their fills."""

    rows: list[dict[str, Any]]
    orders: list[dict[str, Any]]
    database: str
    candles: int  # candles per market the session was planned for (serving.max_bars, or what the data had left)
    first_ms: int | None = None  # the first and last candle traded (open times)
    last_ms: int | None = None
    extended: bool = False  # went on past `candles` because a champion had no fill yet
    archived: Path | None = None  # where the previous demo's paper account was moved
    notes: list[str] = field(default_factory=list)


def new_paper_account(settings: Settings) -> Path | None:
    """Give this demo a new paper account: when the serving database (a SQLite file) holds a previous session's
    decisions, move it (with its WAL files) to `<name>-<UTC time>.db` beside it, kept with its ledger. Returns where
    it went (None: nothing to move)."""
    import sqlite3

    from sqlalchemy.engine import make_url

    url = make_url(settings.serving.database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        raise CTAError(
            "the demo trades a new paper account each run: serving.database_url must be a SQLite file "
            f"(the demo profile's is sqlite:///data/serving/demo.db), not {url.render_as_string(hide_password=True)}"
        )
    path = Path(url.database)
    if not path.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(path)) as db:
            decided = db.execute("SELECT count(*) FROM decisions").fetchone()[0]
    except sqlite3.Error:  # no table yet, or not a database: leave it to the worker's migrations to say
        return None
    if not decided:
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.stem}-{stamp}{path.suffix}")
    for suffix in ("", "-wal", "-shm", "-journal"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.rename(f"{target}{suffix}")
    return target


def _data_end_ms(server: LocalExchangeServer, settings: Settings) -> int:
    """The close of the last candle the exchange replays, over the configured markets (the earliest)."""
    from cta.components import configured_markets

    ends = []
    for market in configured_markets(settings):
        series = server.service.store.series(market.symbol, market.timeframe)
        if series is None:
            raise CTAError(f"the local exchange has no candles for {market}")
        ends.append(int(series.ts[-1]) + int(series.tf_ms))
    return min(ends)


def _lake_end_ms(settings: Settings) -> int | None:
    """The close of the newest candle the lake holds, over the configured markets (the latest)."""
    from cta.components import configured_markets, make_lake
    from cta.timeframes import timeframe_ms

    lake = make_lake(settings)
    ends = [
        last + timeframe_ms(m.timeframe) for m in configured_markets(settings) if (last := lake.last_ts(m)) is not None
    ]
    return max(ends) if ends else None


async def paper_session(
    settings: Settings, server: LocalExchangeServer | None, say: Callable[[str], None]
) -> PaperSession:
    """Paper-trade each market's champion with the real worker (`app.serve.serving_runtime`) on a new paper account:
    `serving.max_bars` candles (48 when unset), longer while a market with a champion has no fill yet (up to
    EXTEND_FACTOR times). With `server` (the demo's own exchange) the replay clock starts after the lake's newest
    candle and moves one candle at a time once the worker has handled the last; without it, the exchange's clock
    runs as it does."""
    from cta.components import configured_markets
    from cta.timeframes import timeframe_ms

    archived = new_paper_account(settings)
    wanted = settings.serving.max_bars or 48
    bar_ms = max(timeframe_ms(m.timeframe) for m in configured_markets(settings))
    notes: list[str] = []
    candles, cap = wanted, wanted * EXTEND_FACTOR
    clock = server.clock if server is not None else None
    if server is not None and clock is not None:
        start = max(clock.now_ms(), _lake_end_ms(settings) or 0)
        start -= start % bar_ms
        left = (_data_end_ms(server, settings) - start) // bar_ms
        if left < 1:
            raise CTAError(
                f"no candles left to paper-trade: the lake already holds candles up to {iso(start)}, where the "
                "bundled candles end (`make clean` starts the demo's data over)"
            )
        if left < wanted:
            notes.append(f"only {left} candles of the bundled data are left after the lake's newest")
        candles, cap = min(wanted, left), min(cap, left)
        clock.set(start, speed=0.0)
    session = with_overrides(settings, {"serving": {"max_bars": cap if clock is not None else candles}})
    paced = "moved one candle at a time as soon as the worker has handled the last" if clock else "of that exchange"
    say(
        f"paper trading each market's champion for {candles} candles on the replay clock ({paced}), "
        + (f"up to {cap} while a champion has no fill yet, " if clock is not None and cap > candles else "")
        + (f"from {iso(clock.now_ms())} UTC " if clock is not None else "")
        + f"on a new paper account ({_database_name(settings)}) ..."
    )
    if archived is not None:
        say(f"  the previous demo's paper account is kept at {archived}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    ran = await _run_worker(session, clock, bar_ms, candles, stop)
    rows, orders = ran["rows"], ran["orders"]
    if not orders and any(r["model"] != "none" for r in rows):
        notes.append("the champions sent no order in these candles (nothing is invented: see the decisions)")
    return PaperSession(
        rows,
        orders,
        _database_name(settings),
        candles,
        ran["first_ms"],
        ran["last_ms"],
        ran["extended"],
        archived,
        notes,
    )


async def _run_worker(
    settings: Settings, clock: ReplayClock | None, bar_ms: int, candles: int, stop: asyncio.Event
) -> dict[str, Any]:
    from app.serve import serving_runtime, summarize

    async with serving_runtime(settings, stop=stop) as runtime:
        pacer = None
        outcome = {"extended": False}
        if clock is not None:
            pacer = asyncio.create_task(
                _pace(
                    clock,
                    runtime.worker,
                    sessions=runtime.sessions,
                    bar_ms=bar_ms,
                    candles=candles,
                    stop=stop,
                    outcome=outcome,
                )
            )
        try:
            await runtime.worker.run(stop)
        finally:
            if pacer is not None:
                pacer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pacer
        rows = summarize(runtime)
        states = runtime.worker.states.values()
        return {
            "rows": rows,
            "orders": session_orders(runtime.sessions),
            "extended": outcome["extended"],
            "first_ms": min((r["since"] for r in rows if r.get("since") is not None), default=None),
            "last_ms": max((s.last_ts for s in states if s.bars and s.last_ts is not None), default=None),
        }


async def _pace(
    clock: ReplayClock,
    worker: Worker,
    *,
    sessions: sessionmaker[Session],
    bar_ms: int,
    candles: int,
    stop: asyncio.Event,
    outcome: dict[str, bool],
) -> None:
    """Move the replay clock to the next candle's close each time every market has handled the newest closed
    candle (or after STALL_S: a candle missing from the data); stop the worker once every market has handled
    `candles` candles and every market with a champion has had a fill (the worker itself stops at its max_bars)."""
    moved = time.monotonic()
    states = worker.states.values()
    while not stop.is_set():
        await asyncio.sleep(PACE_S)
        newest = (clock.now_ms() // bar_ms) * bar_ms - bar_ms  # open of the newest closed candle
        handled = all(s.last_ts is not None and s.last_ts >= newest for s in states)
        if not handled and time.monotonic() - moved < STALL_S:
            continue
        if all(s.bars >= candles for s in states):
            waiting = _waiting(worker, sessions)
            if not waiting:
                stop.set()
                return
            if not outcome["extended"]:
                log.info("paper trading goes on: %s", "; ".join(waiting))
            outcome["extended"] = True
        clock.set(newest + 2 * bar_ms + 1000, speed=0.0)  # the next candle closed a second ago
        moved = time.monotonic()


def _waiting(worker: Worker, sessions: sessionmaker[Session]) -> list[str]:
    """Why the session should go on: a market with a champion serving and no fill yet on this paper account, or an
    order still waiting for its fill at the next candle's open."""
    from sqlalchemy import select

    from serving.models import Fill
    from serving.repository import open_orders

    with sessions() as session:
        filled = set(session.scalars(select(Fill.market).distinct()))
        pending = {order.market for order in open_orders(session)}
    return [
        f"{market}: {'an order waits for the next open' if market in pending else 'no fill yet'}"
        for market in worker.states
        if market in pending or (worker.models.model(market) is not None and market not in filled)
    ]


def session_orders(sessions: sessionmaker[Session]) -> list[dict[str, Any]]:
    """Every order of the paper account, oldest first, with what filled it."""
    from sqlalchemy import func, select

    from serving.models import Fill, Order

    with sessions() as session:
        per_order = select(Fill.order_id, func.min(Fill.ts), func.count(Fill.id)).group_by(Fill.order_id)
        filled = {order_id: (int(first), int(count)) for order_id, first, count in session.execute(per_order)}
        return [
            {
                "market": o.market,
                "candle_ts": o.candle_ts,
                "side": o.side,
                "amount": o.amount,
                "status": o.status,
                "filled": o.filled,
                "price": o.average_price,
                "fee": o.fee_cost,
                "fee_currency": o.fee_currency,
                "fills": filled.get(o.id, (None, 0))[1],
                "filled_ts": filled.get(o.id, (None, 0))[0],
                "client_order_id": o.client_order_id,
            }
            for o in session.scalars(select(Order).order_by(Order.candle_ts, Order.id))
        ]


def _database_name(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(settings.serving.database_url)
    if url.get_backend_name() == "sqlite":
        return url.database or ""
    return url.render_as_string(hide_password=True)
