"""API v1 (the dashboard's backend) over a real server on 127.0.0.1 and a real database (SQLite and PostgreSQL):
roles, pagination and filters, parameters changed live (validated, persisted, in the ledger), the stream, bad
input, CORS, the OpenAPI document and the dashboard's files."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cta.config import Settings
from cta.lake import Market
from serving import parameters
from serving.api import ApiServer, build_app
from serving.api_v1.routes import openapi_document
from serving.api_v1.server import ApiV1
from serving.metrics import WorkerMetrics
from serving.models import Decision, LedgerEntry
from tests.dashboard.seed import seed_history

pytestmark = pytest.mark.integration

OPERATOR = "operator-token-0123456789abcdef"
VIEWER = "viewer-token-0123456789abcdef"
AS_OPERATOR = {"Authorization": f"Bearer {OPERATOR}"}
AS_VIEWER = {"Authorization": f"Bearer {VIEWER}"}
BTC, ETH = "binance:BTC/USDT:1h", "binance:ETH/USDT:1h"
MARKETS = [Market.parse(BTC), Market.parse(ETH)]
ROOT = Path(__file__).resolve().parents[2]


def status() -> dict[str, Any]:
    return {
        "ready": True,
        "models": {BTC: {"model": "cta-btc", "version": "3", "problem": None}},
        "markets": {},
        "now_ms": None,
    }


def app_for(
    readers: sessionmaker[Session],
    writers: sessionmaker[Session],
    *,
    dashboard: Path | None = None,
    cors: tuple[str, ...] = (),
    candles: Any = None,
) -> web.Application:
    settings = Settings()
    return build_app(
        sessions=readers,
        metrics=WorkerMetrics(),
        status=status,
        token=OPERATOR,
        viewer_token=VIEWER,
        control_sessions=writers,
        v1=lambda w: ApiV1(
            settings=settings, markets=MARKETS, sessions=readers, write_sessions=w, status=status, candles=candles
        ),
        dashboard_dir=dashboard,
        cors_origins=cors,
    )


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[aiohttp.ClientSession]:
    server = ApiServer(app)
    url = await server.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession(base_url=url) as client:
            yield client
    finally:
        await server.stop()


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(scenario)


async def get(client: aiohttp.ClientSession, path: str, headers: dict[str, str] = AS_VIEWER) -> tuple[int, Any]:
    async with client.get(path, headers=headers) as response:
        return response.status, await response.json()


async def send(
    client: aiohttp.ClientSession, method: str, path: str, body: Any, headers: dict[str, str] = AS_OPERATOR
) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with client.request(
        method, path, data=data, headers={**headers, "Content-Type": "application/json"}
    ) as response:
        return response.status, await response.json()


# ----- reads -------------------------------------------------------------------------------------------------------


def test_pages_are_keyset_paginated_and_filtered(
    sessions: sessionmaker[Session], readers: sessionmaker[Session]
) -> None:
    seeded = seed_history(sessions, decisions=300, orders=60, ledger_entries=60)

    async def scenario() -> None:
        async with serving(app_for(readers, sessions)) as client:
            status, first = await get(client, "/api/v1/orders?limit=25")
            assert status == 200 and first["total"] == seeded.orders and len(first["items"]) == 25
            ids = [o["id"] for o in first["items"]]
            assert ids == sorted(ids, reverse=True)
            seen = list(ids)
            before = first["next_before"]
            while before is not None:
                _, page = await get(client, f"/api/v1/orders?limit=25&before={before}")
                seen += [o["id"] for o in page["items"]]
                before = page["next_before"]
            assert len(seen) == len(set(seen)) == seeded.orders
            order = first["items"][0]
            assert order["fills"] and order["fills"][0]["order_id"] == order["id"]
            assert order["decision"]["model_version"] == "3" and len(order["decision"]["feature_hash"]) == 16
            assert order["ledger_seq"] is not None
            _, sells = await get(client, f"/api/v1/orders?side=sell&market={ETH}&status=FILLED,OPEN")
            assert sells["items"] and all(o["side"] == "sell" and o["market"] == ETH for o in sells["items"])
            _, decisions = await get(client, f"/api/v1/decisions?market={BTC}&orders_only=true&limit=5")
            assert all(d["delta"] != 0 and d["market"] == BTC for d in decisions["items"])
            _, fills = await get(client, "/api/v1/fills?limit=3")
            assert fills["total"] == seeded.fills and len(fills["items"]) == 3
            _, ledger = await get(client, "/api/v1/ledger?kind=order&limit=10")
            assert ledger["total"] == 60 and ledger["items"][0]["kind"] == "order"
            _, verified = await get(client, "/api/v1/ledger/verify")
            assert verified["ok"] and verified["entries"] == 60
            _, one = await get(client, f"/api/v1/orders/{order['id']}")
            assert one == order

    run(scenario())


def test_overview_and_performance_from_the_snapshots(
    sessions: sessionmaker[Session], readers: sessionmaker[Session]
) -> None:
    seed_history(sessions, decisions=96, orders=10)

    async def scenario() -> None:
        async with serving(app_for(readers, sessions)) as client:
            status_code, overview = await get(client, "/api/v1/overview")
            assert status_code == 200
            assert overview["mode"] == "paper" and overview["trading"]["state"] == "RUNNING"
            cards = {m["market"]: m for m in overview["markets"]}
            assert set(cards) == {BTC, ETH}
            btc = cards[BTC]
            assert btc["champion"]["version"] == "3" and btc["enabled"] and btc["equity"] > 0
            assert btc["return_since_start"] == pytest.approx(btc["equity"] / btc["start_equity"] - 1)
            assert btc["buy_hold_since_start"] is not None and btc["last_decision"] is not None
            _, perf = await get(client, f"/api/v1/performance?market={BTC}")
            assert perf["snapshots"] == 48 and perf["sharpe"] is not None
            assert all(p["drawdown"] <= 0 for p in perf["equity"]) and perf["daily"]
            _, together = await get(client, "/api/v1/performance")
            assert together["market"] is None and together["snapshots"] == 48
            assert together["equity"][-1]["equity"] == pytest.approx(
                cards[BTC]["equity"] + cards[ETH]["equity"], rel=1e-9
            )

    run(scenario())


def test_the_chart_has_candles_fills_and_targets(
    sessions: sessionmaker[Session], readers: sessionmaker[Session]
) -> None:
    seeded = seed_history(sessions, decisions=40, orders=6)
    candles = [[seeded.last_ts - i * 3_600_000, 1.0, 2.0, 0.5, 1.5, 10.0] for i in range(30, -1, -1)]

    async def fetch(market: Market, limit: int) -> list[list[Any]]:
        assert str(market) == BTC
        return candles[-limit:]

    async def scenario() -> None:
        async with serving(app_for(readers, sessions, candles=fetch)) as client:
            _, chart = await get(client, f"/api/v1/chart?market={BTC}&limit=20")
            assert len(chart["candles"]) == 20 and chart["source"] == "exchange"
            assert chart["candles"][0]["time"] == candles[-20][0] // 1000
            assert chart["targets"] and all(t["time"] >= chart["candles"][0]["time"] for t in chart["targets"])

    run(scenario())


# ----- roles and bad input -------------------------------------------------------------------------------------------


def test_roles_the_viewer_reads_and_is_refused_every_change(
    sessions: sessionmaker[Session], readers: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario() -> None:
        async with serving(app_for(readers, sessions)) as client:
            markets = [BTC, ETH]
            assert (await get(client, "/api/v1/me"))[1] == {"role": "viewer", "can_operate": False, "markets": markets}
            assert (await get(client, "/api/v1/me", AS_OPERATOR))[1] == {
                "role": "operator",
                "can_operate": True,
                "markets": markets,
            }
            for method, path, body in [
                ("POST", "/api/v1/control", {"state": "HALTED", "reason": "x"}),
                ("PUT", "/api/v1/parameters", {"changes": {"limits.max_position": 0.5}, "reason": "x"}),
                ("PUT", "/api/v1/markets/enabled", {"market": BTC, "enabled": False, "reason": "x"}),
                ("POST", "/api/v1/models/rollback", {"market": BTC, "reason": "x"}),
                ("POST", "/api/kill-switch", {"state": "HALTED", "reason": "x"}),
            ]:
                code, answer = await send(client, method, path, body, AS_VIEWER)
                assert code == 403 and "operator" in answer["error"], path
            for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": VIEWER}):
                code, _ = await get(client, "/api/v1/overview", headers)
                assert code == 401
            assert (await get(client, "/api/v1/control"))[1]["state"] == "RUNNING"  # nothing changed

    run(scenario())
    logged = caplog.text
    assert OPERATOR not in logged and VIEWER not in logged


def test_bad_input_is_refused_naming_the_field_and_changes_nothing(
    sessions: sessionmaker[Session], readers: sessionmaker[Session]
) -> None:
    async def scenario() -> None:
        async with serving(app_for(readers, sessions)) as client:
            cases = [
                ("GET", "/api/v1/orders?limit=0", None, 400, "limit"),
                ("GET", "/api/v1/orders?limit=abc", None, 400, "limit"),
                ("GET", "/api/v1/orders?status=DONE", None, 400, "status"),
                ("GET", "/api/v1/orders?colour=red", None, 400, "colour"),
                ("GET", "/api/v1/orders?market=kraken:XRP/EUR:1h", None, 404, "market"),
                ("GET", "/api/v1/chart", None, 400, "market"),
                ("GET", "/api/v1/orders/abc", None, 400, "order_id"),
                ("GET", "/api/v1/orders/999999", None, 404, "order_id"),
                (
                    "PUT",
                    "/api/v1/parameters",
                    {"changes": {"limits.max_position": 1.5}, "reason": "r"},
                    400,
                    "limits.max_position",
                ),
                (
                    "PUT",
                    "/api/v1/parameters",
                    {"changes": {"risk.daily_loss_limit": -1}, "reason": "r"},
                    400,
                    "risk.daily_loss_limit",
                ),
                (
                    "PUT",
                    "/api/v1/parameters",
                    {"changes": {"limits.max_position": "lots"}, "reason": "r"},
                    400,
                    "limits.max_position",
                ),
                (
                    "PUT",
                    "/api/v1/parameters",
                    {"changes": {"limits.leverage": 3}, "reason": "r"},
                    400,
                    "limits.leverage",
                ),
                ("PUT", "/api/v1/parameters", {"changes": {"limits.max_position": 0.5}}, 400, "reason"),
                (
                    "PUT",
                    "/api/v1/parameters",
                    {"changes": {"limits.max_position": 0.5}, "reason": "a\x07b"},
                    400,
                    "reason",
                ),
                ("PUT", "/api/v1/parameters", b"{not json", 400, None),
                (
                    "PUT",
                    "/api/v1/markets/enabled",
                    {"market": "x:Y/Z:1h", "enabled": False, "reason": "r"},
                    404,
                    "market",
                ),
                ("POST", "/api/v1/control", {"state": "PAUSED", "reason": "r"}, 400, "state"),
                ("POST", "/api/v1/control", {"state": "HALTED", "reason": "r", "extra": 1}, 400, "extra"),
            ]
            for method, path, body, code, field in cases:
                if method == "GET":
                    got, answer = await get(client, path)
                else:
                    got, answer = await send(client, method, path, body)
                assert got == code, (path, body, answer)
                assert answer["error"], (path, body)
                if field is not None:
                    assert answer["field"] == field and field in answer["error"], (path, body, answer)
            big = json.dumps({"changes": {}, "reason": "x" * 100_000}).encode()
            code, answer = await send(client, "PUT", "/api/v1/parameters", big)
            assert code == 413 and "larger than" in answer["error"]
            _, now = await get(client, "/api/v1/parameters")
            assert now["version"] == 0 and now["values"] == now["defaults"]
            assert (await get(client, "/api/v1/control"))[1]["state"] == "RUNNING"

    run(scenario())
    with sessions() as session:
        assert session.scalar(select(LedgerEntry).where(LedgerEntry.kind == "parameters")) is None


# ----- changes ------------------------------------------------------------------------------------------------------


def test_a_parameter_change_is_validated_persisted_versioned_and_in_the_ledger(
    sessions: sessionmaker[Session], readers: sessionmaker[Session]
) -> None:
    async def scenario() -> None:
        async with serving(app_for(readers, sessions)) as client:
            _, before = await get(client, "/api/v1/parameters")
            assert before["values"]["limits"]["max_position"] == 1.0
            assert "Limits" in json.dumps(before["parameter_schema"])
            body = {"changes": {"limits.max_position": 0.4, "risk.max_order_notional": 5000}, "reason": "calmer"}
            code, changed = await send(client, "PUT", "/api/v1/parameters", {**body, "version": 0})
            assert code == 200, changed
            assert {(c["field"], c["old"], c["new"]) for c in changed["changes"]} == {
                ("limits.max_position", 1.0, 0.4),
                ("risk.max_order_notional", 20000.0, 5000.0),
            }
            assert changed["parameters"]["version"] == 1 and changed["ledger_seq"] == 1
            assert changed["parameters"]["updated_by"] == "operator (api)"
            code, stale = await send(client, "PUT", "/api/v1/parameters", {**body, "version": 0})
            assert code == 409 and stale["field"] == "version"
            code, same = await send(client, "PUT", "/api/v1/parameters", body)
            assert code == 200 and same["changes"] == [] and same["ledger_seq"] is None
            code, off = await send(
                client, "PUT", "/api/v1/markets/enabled", {"market": ETH, "enabled": False, "reason": "r"}
            )
            assert code == 200 and off["parameters"]["disabled_markets"] == [ETH]
            _, overview = await get(client, "/api/v1/overview")
            eth = next(m for m in overview["markets"] if m["market"] == ETH)
            assert not eth["enabled"] and any("disabled" in w for w in eth["warnings"])

    run(scenario())
    restarted = parameters.load(readers, Settings())  # what a restarted worker reads back
    assert restarted.values.limits.max_position == 0.4 and restarted.disabled_markets == (ETH,)
    applied = parameters.apply(Settings(), restarted)
    assert applied.limits.max_position == 0.4 and applied.serving.risk.max_order_notional == 5000
    with sessions() as session:
        entries = list(session.scalars(select(LedgerEntry).where(LedgerEntry.kind == "parameters")))
    assert [json.loads(e.payload)["changes"][0]["field"] for e in entries] == [
        "limits.max_position",
        f"markets.{ETH}.enabled",
    ]
    assert json.loads(entries[0].payload)["reason"] == "calmer"


def test_the_kill_switch_through_api_v1(sessions: sessionmaker[Session], readers: sessionmaker[Session]) -> None:
    async def scenario() -> None:
        async with serving(app_for(readers, sessions)) as client:
            code, answer = await send(client, "POST", "/api/v1/control", {"state": "HALTED", "reason": "incident"})
            assert code == 200 and answer["state"] == "HALTED" and answer["updated_by"] == "operator (api)"
            assert (await get(client, "/api/v1/control"))[1]["reason"] == "incident"

    run(scenario())


# ----- the stream ---------------------------------------------------------------------------------------------------


def test_the_stream_brings_new_decisions_orders_and_state(
    sessions: sessionmaker[Session], readers: sessionmaker[Session]
) -> None:
    seed_history(sessions, decisions=10, orders=2)

    async def read_events(response: aiohttp.ClientResponse, until: set[str], timeout: float) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        buffer = ""
        async with asyncio.timeout(timeout):
            while until - {e["kind"] for e in events}:
                chunk = await response.content.readany()
                buffer += chunk.decode()
                while "\n\n" in buffer:
                    block, buffer = buffer.split("\n\n", 1)
                    data = [line[6:] for line in block.splitlines() if line.startswith("data: ")]
                    events.append(json.loads(data[0]))
        return events

    async def scenario() -> None:
        async with serving(app_for(readers, sessions)) as client:
            async with client.get("/api/v1/stream", headers=AS_VIEWER) as response:
                assert response.headers["Content-Type"].startswith("text/event-stream")
                first = await read_events(response, {"hello"}, 5)
                assert first[0]["kind"] == "hello"
                await asyncio.sleep(0.5)  # the hub's first poll sets its cursor: only what is new is streamed
                with sessions.begin() as session:
                    session.add(
                        Decision(
                            market=BTC,
                            candle_ts=1,
                            model_name="m",
                            model_version="3",
                            feature_hash="f" * 16,
                            inputs="{}",
                            prediction=0.5,
                            target=0.5,
                            delta=0.5,
                            reason="order sent",
                        )
                    )
                code, _ = await send(client, "POST", "/api/v1/control", {"state": "REDUCING", "reason": "r"})
                assert code == 200
                events = await read_events(response, {"decision", "state"}, 5)
                kinds = [e["kind"] for e in events]
                assert "decision" in kinds and "state" in kinds
                assert next(e for e in events if e["kind"] == "decision")["data"]["target"] == 0.5
            async with client.get("/api/v1/stream") as response:
                assert response.status == 401

    run(scenario())


# ----- CORS, the document, the files --------------------------------------------------------------------------------


def test_cors_is_closed_unless_configured(sessions: sessionmaker[Session], readers: sessionmaker[Session]) -> None:
    async def scenario() -> None:
        for allowed in ((), ("http://dash.example:8080",)):
            async with serving(app_for(readers, sessions, cors=allowed)) as client:
                headers = {**AS_VIEWER, "Origin": "http://dash.example:8080"}
                async with client.get("/api/v1/me", headers=headers) as response:
                    assert response.headers.get("Access-Control-Allow-Origin") == (allowed[0] if allowed else None)
                async with client.get("/api/v1/me", headers={**AS_VIEWER, "Origin": "http://evil.example"}) as response:
                    assert "Access-Control-Allow-Origin" not in response.headers
                async with client.options("/api/v1/me", headers={"Origin": "http://dash.example:8080"}) as response:
                    assert (response.status == 204) == bool(allowed)

    run(scenario())


def test_the_committed_openapi_document_is_what_the_code_generates() -> None:
    committed = json.loads((ROOT / "dashboard" / "openapi.json").read_text())
    assert committed == openapi_document(), "regenerate: python -m serving.api_v1.routes > dashboard/openapi.json"
    paths = committed["paths"]
    assert paths["/api/v1/parameters"]["put"]["responses"]["403"]
    assert "before" in {p["name"] for p in paths["/api/v1/orders"]["get"]["parameters"]}


def test_the_dashboard_files_are_served_from_the_same_origin(
    sessions: sessionmaker[Session], readers: sessionmaker[Session], tmp_path: Path
) -> None:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html><div id=root></div>")
    (tmp_path / "assets" / "app-1234.js").write_text("console.log(1)")

    async def scenario() -> None:
        async with serving(app_for(readers, sessions, dashboard=tmp_path)) as client:
            async with client.get("/") as response:
                assert response.status == 200 and "root" in await response.text()
                assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
            async with client.get("/assets/app-1234.js") as response:
                assert response.status == 200 and "immutable" in response.headers["Cache-Control"]
            async with client.get("/assets/../../etc/passwd") as response:
                assert response.status in (403, 404)
            async with client.get("/api/v1/openapi.json") as response:
                assert response.status == 200  # public: it holds no data
        async with (
            serving(app_for(readers, sessions, dashboard=tmp_path / "missing")) as client,
            client.get("/") as response,
        ):
            assert response.status == 404 and "make dashboard" in (await response.json())["error"]

    run(scenario())


def test_the_dashboards_types_are_generated_from_the_committed_document(tmp_path: Path) -> None:
    """No hand-written duplicate of the API's types: dashboard/src/api/schema.d.ts is openapi-typescript's output
    for the committed document (`npm run api-types` renews it)."""
    cli = ROOT / "dashboard" / "node_modules" / ".bin" / "openapi-typescript"
    assert cli.exists(), "the dashboard's packages are not installed: make dashboard (make test does)"
    out = tmp_path / "schema.d.ts"
    subprocess.run(
        [str(cli), "openapi.json", "-o", str(out)], cwd=ROOT / "dashboard", check=True, capture_output=True, timeout=120
    )
    assert out.read_text() == (ROOT / "dashboard" / "src" / "api" / "schema.d.ts").read_text()
