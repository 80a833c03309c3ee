"""Property-based: hostile requests against the real worker API (serving.api over HTTP on 127.0.0.1, a real SQLite
database). Any method, path (every route, unknown ones, percent-encoded junk), query, Authorization header (the
token, near misses, arbitrary bytes) and body (JSON of any shape, raw bytes):

- never a 5xx (no 500 from a handler, no 503: the database is up and the worker ready);
- never the token in a response (aiohttp's 400 page for a header it cannot parse quotes that header: a request
  that carries the token may get its own bytes back, never more);
- without the right token, nothing succeeds but the open probes (/healthz, /readyz).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.api import ApiServer, build_app
from serving.db import make_engine, session_factory, upgrade
from serving.metrics import WorkerMetrics

TOKEN = "FUZZ-token-3b9d27e1c4a5"
GOOD = b"Bearer " + TOKEN.encode()


def app_routes() -> list[str]:
    """Every route of the app as built (a route added later is fuzzed too)."""
    app = build_app(sessions=None, metrics=WorkerMetrics(), status=dict, token=TOKEN)  # type: ignore[arg-type]
    return sorted({resource.canonical for resource in app.router.resources()})


ROUTES = app_routes()
# What the open probes answer: the only success a request without the token may get.
OPEN_BODIES = [{"status": "ok"}, {"status": "ready"}]


@pytest.fixture(scope="module")
def api_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The API on a free port, served by an event loop in a background thread for the whole module."""
    database: Path = tmp_path_factory.mktemp("fuzz") / "serving.db"
    engine = make_engine(f"sqlite:///{database}")
    upgrade(engine)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> ApiServer:
        app = build_app(
            sessions=session_factory(engine, read_only=True),
            control_sessions=session_factory(engine),
            metrics=WorkerMetrics(),
            status=lambda: {"ready": True, "models": {}},
            token=TOKEN,
        )
        server = ApiServer(app)
        await server.start("127.0.0.1", 0)
        return server

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    assert server.url is not None
    try:
        yield int(server.url.rsplit(":", 1)[1])
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        engine.dispose()


def send(port: int, request: bytes) -> tuple[int, bytes]:
    """Raw bytes in (what a client library would refuse to send), (status, whole response) out."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        response = b""
        while chunk := connection.recv(65536):
            response += chunk
    status_line = response.partition(b"\r\n")[0]
    return int(status_line.split()[1]), response


header_bytes = st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
authorization = st.one_of(
    st.none(),
    st.just(GOOD),
    st.sampled_from([GOOD + b" ", GOOD[:-1], b"bearer " + TOKEN.encode(), TOKEN.encode(), b"Bearer", b""]),
    st.builds(lambda junk: GOOD + junk, header_bytes),
    st.builds(lambda junk: b"Bearer " + junk, header_bytes),
    header_bytes,
)
path_text = st.text(max_size=40).map(lambda t: quote(t, safe="/?&=%"))
paths = st.one_of(
    st.sampled_from(ROUTES),
    st.builds(lambda route, junk: route + junk, st.sampled_from(ROUTES), path_text),
    st.builds(lambda t: "/" + t, path_text),
)
query_value = st.one_of(
    st.sampled_from(
        [
            "1",
            "0",
            "1000",
            "1001",
            "-1",
            "99999999999999999999",
            "1e3",
            "abc",
            "OPEN,FILLED",
            "open",
            "nope",
            "binance:BTC/USDT:1h",
        ]
    ),
    st.text(max_size=20),
    st.binary(max_size=12).map(lambda raw: quote(raw, safe="")),  # any bytes, invalid UTF-8 included
)
QUERY_KEYS = ["limit", "status", "market", "seq", "size", "from", "to", "x"]
queries = st.dictionaries(st.sampled_from(QUERY_KEYS), query_value, max_size=3)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)
kill_bodies = st.fixed_dictionaries(
    {},
    optional={
        "state": st.sampled_from(["HALTED", "REDUCING", "RUNNING", "halted", "PAUSED", ""]) | json_values,
        "reason": st.text(max_size=60) | json_values,
        "cancel_open": st.booleans() | json_values,
    },
)
bodies = st.one_of(
    st.none(),
    kill_bodies.map(lambda body: json.dumps(body).encode()),
    json_values.map(lambda body: json.dumps(body).encode()),
    st.binary(max_size=200),
    st.sampled_from(  # lone surrogates, huge numbers, deep nesting: valid JSON that Python code trips on
        [
            b'{"state": "HALTED", "reason": "\\ud800 lone surrogate"}',
            b'{"state": "\\udfff", "reason": "x"}',
            b'{"state": "HALTED", "reason": "x", "cancel_open": 1e999}',
            b"[" * 5000 + b"]" * 5000,
            b'{"state": "HALTED", "reason": "' + b"r" * 100_000 + b'"}',
        ]
    ),
)
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "FOO"])


def build_request(method: str, path: str, query: dict[str, str], auth: bytes | None, body: bytes | None) -> bytes:
    target = path if path.startswith("/") else "/" + path
    if query:
        target += ("&" if "?" in target else "?") + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
    head = f"{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n".encode()
    if auth is not None:
        head += b"Authorization: " + auth + b"\r\n"
    if body is not None:
        head += b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n"
    return head + b"\r\n" + (body or b"")


def response_json(response: bytes) -> Any:
    try:
        return json.loads(response.partition(b"\r\n\r\n")[2])
    except ValueError:
        return None


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=methods, path=paths, query=queries, auth=authorization, body=bodies)
def test_hostile_requests_never_fail_leak_or_pass_without_the_token(
    api_port: int, method: str, path: str, query: dict[str, str], auth: bytes | None, body: bytes | None
) -> None:
    status, response = send(api_port, build_request(method, path, query, auth, body))
    assert status < 500, response[:2000]
    request = build_request(method, path, query, auth, body)
    if TOKEN.encode() not in request:
        assert TOKEN.encode() not in response
    else:  # aiohttp's page for a header it cannot parse quotes the line: the client's own bytes, nothing else
        assert TOKEN.encode() not in response or status == 400
    right_token = auth is not None and auth.strip(b" \t") == GOOD  # HTTP drops whitespace around a value
    if not right_token and 200 <= status < 300:
        assert response_json(response) in OPEN_BODIES or method == "HEAD", response[:2000]


def test_the_fuzzed_routes_include_every_kind() -> None:
    """The routes come from the app itself: the open probes, the views and the kill switch among them."""
    assert {"/healthz", "/readyz", "/metrics", "/api/orders", "/api/kill-switch"} <= set(ROUTES)
