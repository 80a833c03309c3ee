"""The dashboard on a large history: 10,000 orders and 50,000 decisions (with their fills, equity snapshots and
10,000 ledger entries) in the serving database, read through the real API v1 by the built dashboard in Debian's
Chromium (Playwright).

- first load of every page: from navigation start to the page's data on screen, timed inside the page (a fresh
  browser context each time, so nothing is cached; the token is already in the session, as after a login),
  median and worst of `repeats`;
- an order's way to the screen: an order written to the database (as the worker writes it) until its row is on
  the trades page, through the live stream, and through the polling fallback the page uses when the stream is
  down (the alternative, measured in the same run);
- the bundle: the built JavaScript and CSS, raw and gzip.

`--quick`: 1,000 orders, 5,000 decisions, 1,000 ledger entries, fewer repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cta.config import Settings
from cta.lake import Market

ROOT = Path(__file__).resolve().parents[1]
DIST = ROOT / "dashboard" / "dist"
TOKEN = "bench-operator-token-0123456789"
BTC, ETH = "binance:BTC/USDT:1h", "binance:ETH/USDT:1h"
# what shows that each page has its data on screen
READY = {
    "overview": '[data-testid="market-card"]',
    "trades": '[data-testid="order-row"]',
    "chart": '[data-testid="candle-chart"] canvas',
    "performance": '[data-testid="equity-chart"] canvas',
    "models": '[data-testid="models-page"]',
    "quality": '[data-testid="quality-table"]',
    "controls": '[data-testid="param-limits.max_position"]',
    "ledger": '[data-testid="ledger-table"] tbody tr',
}


class _Server:
    """The API (with API v1 and the built dashboard) on a free port, in a thread with its own event loop."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        from serving.api import ApiServer, build_app
        from serving.api_v1.server import ApiV1
        from serving.db import make_engine, session_factory
        from serving.metrics import WorkerMetrics

        engine = make_engine(self.database_url)
        readers, writers = session_factory(engine, read_only=True), session_factory(engine)
        markets = [Market.parse(BTC), Market.parse(ETH)]
        now = int(time.time() * 1000)

        async def candles(market: Market, limit: int) -> list[list[Any]]:
            start = now - limit * 3_600_000
            return [
                [start + i * 3_600_000, 100.0 + i % 7, 104.0 + i % 5, 97.0, 101.0 + i % 3, 5.0] for i in range(limit)
            ]

        def status() -> dict[str, Any]:
            return {"ready": True, "models": {m: {"model": "cta", "version": "3"} for m in (BTC, ETH)}}

        app = build_app(
            sessions=readers,
            metrics=WorkerMetrics(),
            status=status,
            token=TOKEN,
            control_sessions=writers,
            v1=lambda w: ApiV1(
                settings=Settings(), markets=markets, sessions=readers, write_sessions=w, status=status, candles=candles
            ),
            dashboard_dir=DIST,
        )
        server = ApiServer(app)
        self.url = await server.start("127.0.0.1", 0)
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await server.stop()
        engine.dispose()

    def __enter__(self) -> _Server:
        self._thread.start()
        self._ready.wait(30)
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@contextmanager
def _browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=os.environ.get("DASHBOARD_CHROMIUM", "/usr/bin/chromium"), args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            browser.close()


def _context(browser: Any) -> Any:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.add_init_script(f"sessionStorage.setItem('cta.token', '{TOKEN}')")
    return context


# Records, in the page, when each selector first matches (milliseconds since navigation start): Playwright's own
# waiting polls with growing intervals (up to 500 ms late), so the page is timed from inside.
PROBE = """
window.__ready = {};
const wanted = %s;
const check = () => {
  for (const [name, selector] of Object.entries(wanted)) {
    if (!(name in window.__ready) && document.querySelector(selector)) window.__ready[name] = performance.now();
  }
};
new MutationObserver(check).observe(document, {subtree: true, childList: true, attributes: true});
"""


def first_loads(browser: Any, url: str, repeats: int, *, warm: bool) -> list[dict[str, Any]]:
    """Each page opened by its address, timed from navigation start to its data on screen. Cold: a new browser
    context each time (nothing cached: the scripts are downloaded and compiled again). Warm: a context that has
    opened the dashboard once (its scripts in the HTTP cache, as for a returning user; no data is cached)."""
    import json

    rows = []
    shared = None
    if warm:
        shared = _context(browser)
        shared.add_init_script(PROBE % json.dumps(READY))
        first = shared.new_page()
        first.goto(f"{url}/#/overview")
        first.locator(READY["overview"]).first.wait_for(timeout=30_000)
        first.close()
    for name, selector in READY.items():
        times = []
        for _ in range(repeats):
            context = shared or _context(browser)
            if shared is None:
                context.add_init_script(PROBE % json.dumps({name: selector}))
            page = context.new_page()
            page.goto(f"{url}/#/{name}")
            page.locator(selector).first.wait_for(timeout=30_000)
            times.append(page.evaluate(f"window.__ready[{json.dumps(name)}]") / 1000)
            page.close()
            if shared is None:
                context.close()
        rows.append(
            {
                "case": f"first load ({'warm' if warm else 'cold'}): {name}",
                "median_ms": statistics.median(times) * 1000,
                "max_ms": max(times) * 1000,
                "repeats": repeats,
                "under_1s": max(times) < 1.0,
            }
        )
    if shared is not None:
        shared.close()
    return rows


def _write_order(database_url: str, n: int) -> int:
    from serving.db import make_engine, session_factory
    from serving.repository import record_intent

    engine = make_engine(database_url)
    try:
        with session_factory(engine).begin() as session:
            order = record_intent(
                session,
                client_order_id=f"cta-bench-{n:06d}-{time.time_ns() % 1_000_000}",
                market=BTC,
                symbol="BTC/USDT",
                side="buy",
                order_type="market",
                amount=0.01,
                candle_ts=int(datetime.now(UTC).timestamp() * 1000) // 3_600_000 * 3_600_000,
            )
            session.flush()
            return int(order.id)
    finally:
        engine.dispose()


def order_to_screen(browser: Any, url: str, database_url: str, repeats: int, *, stream: bool) -> dict[str, Any]:
    context = _context(browser)
    page = context.new_page()
    if not stream:
        page.route("**/api/v1/stream", lambda route: route.abort())
    page.goto(f"{url}/#/trades")
    page.locator(READY["trades"]).first.wait_for(timeout=30_000)
    if stream:
        page.locator('[data-testid="live-indicator"][data-state="live"]').wait_for(timeout=15_000)
    times = []
    for n in range(repeats):
        order_id = _write_order(database_url, n)
        written = time.perf_counter()
        page.locator(f'[data-testid="order-row"][data-order-id="{order_id}"]').wait_for(timeout=30_000)
        times.append(time.perf_counter() - written)
        page.wait_for_timeout(300)
    context.close()
    return {
        "case": f"order written -> on screen ({'live stream' if stream else 'polling fallback, stream down'})",
        "median_ms": statistics.median(times) * 1000,
        "max_ms": max(times) * 1000,
        "repeats": repeats,
        "under_1s": max(times) < 1.0,
    }


def bundle() -> list[dict[str, Any]]:
    rows = []
    for kind in ("js", "css"):
        files = sorted((DIST / "assets").glob(f"*.{kind}"))
        raw = sum(f.stat().st_size for f in files)
        zipped = sum(len(gzip.compress(f.read_bytes(), 9)) for f in files)
        rows.append({"case": f"bundle: {kind}", "files": len(files), "raw_kib": raw / 1024, "gzip_kib": zipped / 1024})
    return rows


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from serving.db import make_engine, session_factory, upgrade
    from tests.dashboard.seed import seed_history

    if not (DIST / "index.html").is_file():
        raise SystemExit("the dashboard is not built: make dashboard")
    quick = bool(getattr(args, "quick", False))
    orders, decisions, entries = (1_000, 5_000, 1_000) if quick else (10_000, 50_000, 10_000)
    repeats = 2 if quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'serving.db'}"
        engine = make_engine(url)
        upgrade(engine)
        started = time.perf_counter()
        seeded = seed_history(
            session_factory(engine), (BTC, ETH), decisions=decisions, orders=orders, ledger_entries=entries
        )
        seeding_s = time.perf_counter() - started
        engine.dispose()
        rows: list[dict[str, Any]] = [
            {
                "case": "history",
                "orders": seeded.orders,
                "decisions": seeded.decisions,
                "fills": seeded.fills,
                "ledger_entries": entries,
                "seed_s": seeding_s,
            }
        ]
        with _Server(url) as server, _browser() as browser:
            rows += first_loads(browser, server.url, repeats, warm=False)
            rows += first_loads(browser, server.url, repeats, warm=True)
            live = order_to_screen(browser, server.url, url, repeats * 2, stream=True)
            polled = order_to_screen(browser, server.url, url, repeats, stream=False)
            live["vs_polling"] = polled["median_ms"] / live["median_ms"] if live["median_ms"] else None
            rows += [live, polled]
    return rows + bundle()
