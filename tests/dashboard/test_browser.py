"""The dashboard end to end in a real browser (Debian's Chromium, driven by Playwright) against a REAL backend: the
worker `cta serve` runs (serving_runtime), paper-trading on the local exchange over HTTP a champion the project
trained (the logistic family, on the bundled real BTC/USDT candles, through the lake, the feature table and Feast),
its API serving the built dashboard from the same origin. Nothing is mocked.

Viewer and operator log in; orders appear without a reload; the viewer cannot change anything; the operator
halts (no new order follows, the ledger has the entry), changes `limits.max_position` (the next decision's target
respects it), and a value out of bounds is refused naming the field. Every page is photographed
(`DASHBOARD_SCREENSHOTS` names the folder; docs/dashboard holds the current ones)."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from benchmarks.bench_dashboard import READY
from cta.config import Settings, load_settings
from cta.lake import Market
from tests.conftest import CONFIG_DIR
from tests.exchange_fixtures import running_exchange

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "dashboard" / "dist"
CHROMIUM = os.environ.get("DASHBOARD_CHROMIUM", "/usr/bin/chromium")
OPERATOR = "e2e-operator-token-3b1f0c9a7d"
VIEWER = "e2e-viewer-token-9e2d4c1b8a"
BTC = Market("binance", "BTC/USDT", "1h")
HOUR_MS = 3_600_000
REPLAY_START_MS = 1_654_041_600_000  # 2022-06-01: the exchange's replay clock starts here
LAKE_HOURS = 3_000  # the candles before it: what ingestion would have stored, to train on
PAGES = ("overview", "trades", "chart", "performance", "models", "quality", "controls", "ledger")


def settings_for(tmp: Path, url: str) -> Settings:
    base: dict[str, Any] = {
        "paths": {"data_dir": str(tmp / "data"), "logs_dir": str(tmp / "logs")},
        "exchange": {"api_url": url, "market_time": "replay"},
        "markets": {"symbols": ["BTC/USDT"], "timeframes": ["1h"]},
        "lake": {"uri": str(tmp / "lake")},
        "validation": {"results_dir": str(tmp / "validation"), "quarantine_uri": str(tmp / "quarantine")},
        # no dead zone: every hour is labelled up or down, so the champion takes a side and trades while we watch
        "features": {"feast_dir": str(tmp / "feast"), "table_dir": str(tmp / "features"), "dead_zone_bps": 0},
        # costs as the venue charges them to a maker at zero fee: the champion's threshold policy then takes positions
        # instead of waiting for an edge that pays a taker's fee (it is trained on a few months of hours)
        "costs": {"taker_fee_rate": 0.0, "maker_fee_rate": 0.0, "slippage_bps": 0.0},
        "training": {
            "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
            "artifact_root": str(tmp / "mlruns"),
            "candidates": ["logistic"],
        },
        "serving": {
            "database_url": f"sqlite:///{tmp / 'serving.db'}",
            "api_port": 0,
            "poll_interval_s": 0.2,
            "dashboard_dir": str(DIST),
            "risk": {"stale_after_bars": 1000},
        },
    }
    env = {"CTA_API_TOKEN": OPERATOR, "CTA_VIEWER_TOKEN": VIEWER}
    return load_settings(env=env, config_dir=CONFIG_DIR, overrides=base)


def train_champion(settings: Settings) -> str:
    """What the pipeline does for one market, without the gate: lake -> feature table (GX gate) -> Feast ->
    the logistic family trained and registered -> promoted to champion."""
    from mlflow import MlflowClient

    from cta.candles import normalize_candles
    from cta.components import make_lake
    from cta.exchange_server.settings import BUNDLED_CANDLES_DIR
    from cta.registry import configure_mlflow, promote, promotion_lock, registered_model_name
    from features.feast_store import feature_store_for
    from features.registry import registry_version, select
    from features.table import FeatureTable
    from flows.features import build_market_features, materialize_online
    from training.train import market_dataset, prepare, train_candidate

    with gzip.open(BUNDLED_CANDLES_DIR / "binance_BTCUSDT_1h.csv.gz", "rt") as f:
        frame = pd.read_csv(f).rename(columns={"timestamp": "ts"})
    start = REPLAY_START_MS - LAKE_HOURS * HOUR_MS
    lake = make_lake(settings)
    lake.upsert(BTC, normalize_candles(frame[(frame["ts"] >= start) & (frame["ts"] < REPLAY_START_MS)]))
    table = FeatureTable(settings.features.table_dir)
    build_market_features.fn(lake, table, BTC, settings)
    materialize_online.fn(settings, table, [BTC])
    configure_mlflow(settings)
    data, _ = prepare(market_dataset(settings, feature_store_for(settings.features), lake, BTC), settings)
    outcome = train_candidate("logistic", data, settings, registry_version(select(settings.features.names)))
    name = registered_model_name(BTC)
    promote(
        MlflowClient(), name, outcome.version, expected_champion=None, reason="e2e", lock=promotion_lock(settings, name)
    )
    return outcome.version


class Backend:
    """`serving_runtime` and the worker's loop in a thread of their own (their own event loop)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url: str | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="e2e-worker", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # noqa: BLE001 (reported by start/stop)
            self.error = error
            self._ready.set()

    async def _main(self) -> None:
        from app.serve import serving_runtime

        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with serving_runtime(self.settings, stop=self._stop) as runtime:
            self.url = runtime.api_url
            self._ready.set()
            await runtime.worker.run(self._stop)

    def start(self, timeout_s: float = 240) -> str:
        self._thread.start()
        if not self._ready.wait(timeout_s) or self.url is None:
            raise RuntimeError(f"the worker did not start: {self.error!r}")
        return self.url

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)


def api(url: str, path: str, token: str = VIEWER, body: Any = None, method: str = "GET") -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_for(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def newest_decision_id(url: str) -> int:
    _, page = api(url, "/api/v1/decisions?limit=1")
    return int(page["items"][0]["id"]) if page["items"] else 0


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not (DIST / "index.html").is_file():
        pytest.fail("the dashboard is not built: run `make dashboard` (make test does)")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: run `make browser` (make test does)")
    tmp = tmp_path_factory.mktemp("e2e")
    # the replay clock: one market hour every 2.5 s, so orders come while the test watches
    with running_exchange(speed=1_440.0, start="2022-06-01T00:00:00Z") as exchange:
        settings = settings_for(tmp, exchange.url)
        train_champion(settings)
        worker = Backend(settings)
        url = worker.start()
        try:
            wait_for(lambda: api(url, "/api/v1/orders?limit=1")[1]["total"] > 0, 180, "the champion's first order")
            yield url
        finally:
            worker.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def screenshots_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("DASHBOARD_SCREENSHOTS") or tmp_path_factory.getbasetemp() / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def logged_in(browser: Any, url: str, token: str) -> Any:
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(url + "/")
    page.get_by_test_id("token-input").fill(token)
    page.get_by_test_id("login-button").click()
    page.get_by_test_id("role-badge").wait_for()
    return page


def test_a_bad_token_is_refused_at_login(backend: str, browser: Any) -> None:
    page = browser.new_page()
    page.goto(backend + "/")
    page.get_by_test_id("token-input").fill("not-the-token")
    page.get_by_test_id("login-button").click()
    page.get_by_test_id("login-error").wait_for()
    assert page.get_by_test_id("role-badge").count() == 0
    page.close()


def test_the_viewer_sees_orders_arrive_live_and_cannot_change_anything(
    backend: str, browser: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    page = logged_in(browser, backend, VIEWER)
    assert page.get_by_test_id("role-badge").inner_text().strip() == "viewer"
    page.locator('[data-testid="live-indicator"][data-state="live"]').wait_for(timeout=15_000)
    page.get_by_test_id("nav-trades").click()
    rows = page.get_by_test_id("order-row")
    rows.first.wait_for()
    seen = rows.count()
    newest = int(rows.first.get_attribute("data-order-id") or 0)
    # no reload from here: the stream brings the next order
    wait_for(
        lambda: int(page.get_by_test_id("order-row").first.get_attribute("data-order-id") or 0) > newest,
        120,
        "a new order to appear without a reload",
    )
    assert page.get_by_test_id("order-row").count() >= seen
    page.get_by_test_id("order-row").first.click()
    details = page.get_by_test_id("order-details").first
    details.wait_for()
    assert "logistic" in details.inner_text().lower() or "cta-" in details.inner_text().lower()

    page.get_by_test_id("nav-controls").click()
    page.get_by_test_id("operator-only").wait_for()
    assert page.get_by_test_id("halt-button").is_disabled()
    assert page.get_by_test_id("param-limits.max_position").is_disabled()
    code, answer = api(backend, "/api/v1/control", VIEWER, {"state": "HALTED", "reason": "viewer tries"}, "POST")
    assert code == 403 and "operator" in answer["error"]

    folder = screenshots_dir(tmp_path_factory)
    for name in PAGES:
        page.get_by_test_id(f"nav-{name}").click()
        page.locator(READY[name]).first.wait_for(timeout=30_000)
        page.wait_for_timeout(800)  # charts draw just after their data arrives
        page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
    page.close()


def test_the_operator_changes_max_position_and_the_next_decision_uses_it(backend: str, browser: Any) -> None:
    page = logged_in(browser, backend, OPERATOR)
    assert page.get_by_test_id("role-badge").inner_text().strip() == "operator"
    page.get_by_test_id("nav-controls").click()
    field = page.get_by_test_id("param-limits.max_position")
    field.wait_for()
    _, before = api(backend, "/api/v1/parameters")

    field.fill("1.5")  # out of bounds: the server refuses it, naming the field
    page.get_by_test_id("param-reason").fill("too much")
    page.get_by_test_id("param-apply").click()
    error = page.get_by_test_id("param-error")
    error.wait_for()
    assert "limits.max_position" in error.inner_text()
    assert api(backend, "/api/v1/parameters")[1]["version"] == before["version"]  # nothing changed

    field.fill("0.1")
    assert "0.1" in page.get_by_test_id("param-diff").inner_text()
    page.get_by_test_id("param-reason").fill("e2e: smaller positions")
    page.get_by_test_id("param-apply").click()
    page.get_by_test_id("param-saved").wait_for()
    _, after = api(backend, "/api/v1/parameters")
    assert after["values"]["limits"]["max_position"] == 0.1 and after["version"] == before["version"] + 1
    changed_at = newest_decision_id(backend)

    def next_decisions() -> list[dict[str, Any]]:
        _, page_ = api(backend, "/api/v1/decisions?limit=20")
        return [d for d in page_["items"] if d["id"] > changed_at + 1]  # one decision may have been under way

    decisions = wait_for(next_decisions, 60, "decisions after the change")
    assert all(abs(d["target"]) <= 0.1 + 1e-12 for d in decisions), decisions
    _, ledger = api(backend, "/api/v1/ledger?kind=parameters&limit=5")
    entry = ledger["items"][0]["payload"]
    assert entry["by"] == "operator (api)" and entry["reason"] == "e2e: smaller positions"
    assert entry["changes"][0] == {
        "field": "limits.max_position",
        "old": before["values"]["limits"]["max_position"],
        "new": 0.1,
    }
    page.close()


def test_the_operator_halts_no_order_follows_and_the_ledger_says_so(backend: str, browser: Any) -> None:
    page = logged_in(browser, backend, OPERATOR)
    page.get_by_test_id("nav-controls").click()
    page.get_by_test_id("control-reason").fill("e2e: exchange incident drill")
    page.get_by_test_id("halt-button").click()
    page.locator('[data-testid="trading-state"]', has_text="HALTED").wait_for(timeout=10_000)
    _, orders = api(backend, "/api/v1/orders?limit=1")
    last_order = orders["items"][0]["id"] if orders["items"] else 0
    halted_at = newest_decision_id(backend)
    wait_for(lambda: newest_decision_id(backend) >= halted_at + 4, 60, "four decisions while halted")
    _, orders = api(backend, "/api/v1/orders?limit=5")
    assert all(o["id"] <= last_order for o in orders["items"]), "an order was sent while HALTED"

    page.get_by_test_id("nav-ledger").click()
    table = page.get_by_test_id("ledger-table")
    table.wait_for()
    page.locator('[data-testid="ledger-table"]', has_text="e2e: exchange incident drill").wait_for(timeout=10_000)
    assert "verified" in page.get_by_test_id("ledger-status").inner_text().lower()

    page.get_by_test_id("nav-controls").click()
    page.get_by_test_id("control-reason").fill("e2e: drill over")
    page.get_by_test_id("resume-button").click()
    page.locator('[data-testid="trading-state"]', has_text="RUNNING").wait_for(timeout=10_000)
    page.close()
