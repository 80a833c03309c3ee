"""Run the local exchange: in a background thread (tests, demo) or in the foreground (CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from aiohttp import web

from cta.clock import ReplayClock
from cta.exchange_server.app import ExchangeService
from cta.exchange_server.auth import Credentials
from cta.exchange_server.candle_store import CandleStore
from cta.exchange_server.coinbase_auth import CoinbaseKey
from cta.exchange_server.faults import FaultKind
from cta.exchange_server.settings import FaultSettings, LocalExchangeSettings

logger = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 0.5
START_TIMEOUT_S = 30.0


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def coinbase_key_from(api_key: str | None, api_secret: str | None) -> CoinbaseKey | None:
    """The Coinbase dialect's key when the credentials are a CDP key (a key name and an EC private key PEM)."""
    if not api_key or not api_secret or not api_secret.lstrip().startswith("-----BEGIN"):
        return None
    try:
        return CoinbaseKey.from_private_pem(api_key, api_secret)
    except ValueError as exc:
        logger.warning("the API secret looks like a PEM key but is not a CDP (EC P-256) key: %s", exc)
        return None


def build_service(
    settings: LocalExchangeSettings,
    api_key: str | None = None,
    api_secret: str | None = None,
    clock: ReplayClock | None = None,
    coinbase_key: CoinbaseKey | None = None,
) -> ExchangeService:
    """Load the candles and build the service; the replay clock starts at settings.start (or the end of
    the data) unless a clock is given. The Coinbase dialect checks JWTs against `coinbase_key`, or, when the
    secret is a CDP private key PEM, against the key made of `api_key` (its name) and that secret."""
    store = CandleStore.load_dir(settings.resolved_data_dir())
    if clock is None:
        start = settings.start_ms()
        clock = ReplayClock(store.last_close_ms if start is None else start, speed=settings.speed)
    credentials = Credentials(api_key, api_secret) if api_key and api_secret else None
    return ExchangeService(
        settings,
        store,
        clock,
        credentials=credentials,
        coinbase_key=coinbase_key or coinbase_key_from(api_key, api_secret),
    )


def describe(service: ExchangeService) -> str:
    """One line per served series, for the startup log."""
    lines = []
    for s in service.store.all_series():
        first, last = int(s.ts[0]), int(s.ts[-1]) + s.tf_ms
        lines.append(f"  {s.symbol} {s.timeframe}: {len(s)} candles, {_iso(first)} .. {_iso(last)}")
    return "\n".join(lines)


def coverage_warnings(
    store: CandleStore,
    replay_start_ms: int,
    history_start_ms: int | None = None,
    markets: Iterable[tuple[str, str]] | None = None,
) -> list[str]:
    """What the candle files leave out of the replay window, one line per (symbol, timeframe); [] if covered.

    The window runs from `history_start_ms` (where clients start their backfill, e.g. ingest.start; None = only
    the replay start matters) to the replay start. `markets` are the (symbol, timeframe) pairs clients will ask
    for (None = every series the files hold): a pair without a file, a series that ends before the replay start
    (the replay clock would show no new candle, and orders no price) or begins after the window's start is named.
    """
    start = replay_start_ms if history_start_ms is None else min(history_start_ms, replay_start_ms)
    wanted = sorted(set(markets)) if markets is not None else [(s.symbol, s.timeframe) for s in store.all_series()]
    problems = []
    for symbol, timeframe in wanted:
        series = store.series(symbol, timeframe)
        if series is None:
            held = ", ".join(store.timeframes(symbol)) or "none"
            problems.append(f"{symbol} {timeframe}: no candle file (timeframes held for {symbol}: {held})")
            continue
        first, last = int(series.ts[0]), int(series.ts[-1]) + series.tf_ms
        if first > start or last < replay_start_ms:
            problems.append(f"{symbol} {timeframe}: files hold {_iso(first)} .. {_iso(last)}")
    return problems


def warn_if_uncovered(
    service: ExchangeService,
    history_start_ms: int | None = None,
    markets: Iterable[tuple[str, str]] | None = None,
) -> list[str]:
    """Log one WARNING naming the series whose candle files do not cover the replay window; returns the lines."""
    replay_start = service.clock.now_ms()
    problems = coverage_warnings(service.store, replay_start, history_start_ms, markets)
    if problems:
        start = replay_start if history_start_ms is None else min(history_start_ms, replay_start)
        logger.warning(
            "the candle files in %s do not cover the replay window %s .. %s (%s); clients will find candles "
            "missing there:\n  %s",
            service.settings.resolved_data_dir(),
            _iso(start),
            _iso(replay_start),
            "from the backfill start, ingest.start, to the replay start, local_exchange.start"
            if history_start_ms is not None
            else "the replay start, local_exchange.start",
            "\n  ".join(problems),
        )
    return problems


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class LocalExchangeServer:
    """A Binance-compatible spot exchange on 127.0.0.1 replaying real candles, also speaking Coinbase Advanced
    Trade (`coinbase_key`: the CDP key its JWTs must be signed with).

    `start()` binds (port 0 picks a free one), serves from a background thread with its own event loop
    and returns the base URL. Use as a context manager or call `stop()`.
    """

    def __init__(
        self,
        settings: LocalExchangeSettings,
        api_key: str | None = None,
        api_secret: str | None = None,
        clock: ReplayClock | None = None,
        coinbase_key: CoinbaseKey | None = None,
    ) -> None:
        self._settings = settings
        self._service = build_service(settings, api_key, api_secret, clock, coinbase_key)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    @property
    def service(self) -> ExchangeService:
        return self._service

    @property
    def clock(self) -> ReplayClock:
        return self._service.clock

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the local exchange server is not running; call start() first")
        return self._url

    def start(self) -> str:
        """Start serving and return the base URL, e.g. 'http://127.0.0.1:54321'."""
        if self._url is not None:
            return self._url
        sock = _bind(self._settings.host, self._settings.port)
        port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=f"cta-exchange-{port}", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            future = asyncio.run_coroutine_threadsafe(self._serve(sock), loop)
            self._runner = future.result(timeout=START_TIMEOUT_S)
        except BaseException:
            sock.close()
            self._shutdown_loop()
            raise
        host = self._settings.host
        self._url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        logger.info("local exchange serving at %s (replay now %s)", self._url, _iso(self.clock.now_ms()))
        return self._url

    async def _serve(self, sock: socket.socket) -> web.AppRunner:
        runner = web.AppRunner(self._service.build_app(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        await web.SockSite(runner, sock, shutdown_timeout=SHUTDOWN_TIMEOUT_S).start()
        return runner

    def stop(self) -> None:
        """Stop serving; in-flight requests get SHUTDOWN_TIMEOUT_S to finish. Idempotent."""
        if self._loop is None:
            return
        if self._runner is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(
                    timeout=SHUTDOWN_TIMEOUT_S + 10
                )
            self._runner = None
        self._shutdown_loop()
        self._url = None
        logger.info("local exchange stopped")

    def _shutdown_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)
        loop.close()
        self._loop, self._thread = None, None

    def __enter__(self) -> LocalExchangeServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def inject_fault(
        self, kind: FaultKind | str, path: str | None = None, count: int = 1, method: str | None = None
    ) -> None:
        """Arm a one-shot fault for the next `count` requests to `path` (None = any path)."""
        self._service.faults.arm(kind, path, count, method)

    def clear_faults(self) -> None:
        self._service.faults.clear()

    def set_random_faults(self, settings: FaultSettings) -> None:
        """Replace the random faults while serving, e.g. a faulty period, then `FaultSettings()` to end it."""
        self._service.faults.configure(settings)

    def request_count(self, path: str, method: str | None = None) -> int:
        """Requests received for `path`, of `method` only if given (e.g. "POST" to count orders sent)."""
        return self._service.request_count(path, method)

    def state(self) -> dict[str, Any]:
        """Same as GET /_cta/state."""
        return self._service.snapshot()


def serve_forever(
    settings: LocalExchangeSettings,
    api_key: str | None = None,
    api_secret: str | None = None,
    *,
    history_start_ms: int | None = None,
    markets: Iterable[tuple[str, str]] | None = None,
) -> None:
    """Serve in the foreground until SIGINT or SIGTERM (the `cta exchange serve` command). Warns first when the
    candle files do not cover the replay window (`coverage_warnings`: from `history_start_ms` to the replay start,
    for `markets`)."""
    service = build_service(settings, api_key, api_secret)
    asyncio.run(_serve_until_signal(service, settings, lambda: warn_if_uncovered(service, history_start_ms, markets)))


async def _serve_until_signal(
    service: ExchangeService, settings: LocalExchangeSettings, after_start: Callable[[], object] = lambda: None
) -> None:
    sock = _bind(settings.host, settings.port)
    port = sock.getsockname()[1]
    runner = web.AppRunner(service.build_app(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    await web.SockSite(runner, sock, shutdown_timeout=SHUTDOWN_TIMEOUT_S).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    logger.info(
        "local exchange serving at http://%s:%d, replay now %s at speed %s, signed endpoints %s, Coinbase dialect %s; "
        "series:\n%s",
        settings.host,
        port,
        _iso(service.clock.now_ms()),
        settings.speed,
        "enabled" if service.credentials else "disabled (no API key/secret: every signed call answers -2015)",
        f"JWTs of key {service.coinbase_key.name}"
        if service.coinbase_key
        else "public only (no CDP key: the API secret is not an EC private key PEM)",
        describe(service),
    )
    after_start()  # e.g. the coverage warning, right under the startup lines
    try:
        await stop.wait()
    finally:
        logger.info("local exchange shutting down")
        await runner.cleanup()
