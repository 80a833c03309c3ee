"""Hostile and careless use of the logs, the CLI's errors, the API's auth guard, live start-up and the kill switch.

- Secrets are redacted everywhere a record is written: the message, its args, the traceback, the stack, in every
  handler (CTA's console and file, a foreign handler on a non-propagating logger), and in the CLI's `error:` line.
- A failure is one `error:` line on the console; its traceback is in the log file (and on screen with -v).
- The auth guard answers 401, never 500, to a non-UTF-8, repeated or over-long Authorization header.
- Live mode refuses (with the reason) before start-up reconciliation touches the exchange with a bad key.
- A kill-switch reason passes ONE check (the CLI and the API), and user text reaches the logs escaped.
- The sweep: recognisable values for every secret, a short real session at DEBUG, then every file the run wrote
  (logs, SQLite databases incl. Prefect's, the lake) and stdout/stderr are grepped for them.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from sqlalchemy import func, select

from app.serve import UnsafeLiveSettings, serving_runtime
from cta.config import LoggingSettings, Settings, load_settings
from cta.exchange_server import LocalExchangeServer
from cta.lake import CandleLake, Market
from cta.logs import configure_logging
from cta.storage import LocalStorage
from serving.api import ApiServer, build_app
from serving.control import trading_state
from serving.db import make_engine, session_factory, upgrade
from serving.metrics import WorkerMetrics
from serving.models import LedgerEntry
from tests.conftest import CONFIG_DIR, free_port, subprocess_env
from tests.exchange_fixtures import EXCHANGE_API_KEY, running_exchange
from tests.factories import BUNDLED, real_candles

CTA = [sys.executable, "-m", "app.cli"]
TOKEN = "TKN-recognisable-api-token-7f3a9c"
API_KEY = "KEY-recognisable-exchange-key-51d2"
API_SECRET = "SEC-recognisable-exchange-secret-a8e4"
DB_PASSWORD = "PWD-recognisable-db-password-c07b"
SECRETS = [TOKEN, API_KEY, API_SECRET, DB_PASSWORD]
SECRET_ENV = {
    "CTA_API_TOKEN": TOKEN,
    "CTA_API_KEY": API_KEY,
    "CTA_API_SECRET": API_SECRET,
    "CTA_DB_PASSWORD": DB_PASSWORD,
}
REASON_RULE = "reason must be a non-empty string of at most 1000 characters"  # the one check's message
MAX_ERROR_LINES = 8  # Prefect's INFO lines (temporary server, flow run start) + the one `error:` line


# ----- helpers ----------------------------------------------------------------------------------------------------


@pytest.fixture
def logs_at(tmp_path: Path) -> Iterator[Any]:
    """`logs_at(level, secrets)` configures CTA's logging into tmp_path/logs and returns the log file; the
    configuration is replaced by a quiet one afterwards."""

    def configure(level: Literal["DEBUG", "INFO"] = "INFO", secrets: list[str] | None = None) -> Path:
        return configure_logging(LoggingSettings(level=level), tmp_path / "logs", secrets or SECRETS)

    yield configure
    configure_logging(LoggingSettings(level="WARNING"), tmp_path / "after")


def flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()


def run_cta(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CTA, *args],
        env=subprocess_env(tmp_path, **(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """A failed command's stderr: short, no traceback, exactly one `error:` line (containing `fragments`)."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) <= MAX_ERROR_LINES, result.stderr[-3000:]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def raw_request(port: int, head: bytes) -> tuple[int, bytes]:
    """Send raw request bytes (headers a client library would refuse) and return (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(head)
        response = b""
        while chunk := connection.recv(65536):
            response += chunk
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def api_app(tmp_path: Path, status: Any = None) -> tuple[Any, Any]:
    engine = make_engine(f"sqlite:///{tmp_path / 'serving.db'}")
    upgrade(engine)
    app = build_app(
        sessions=session_factory(engine, read_only=True),
        control_sessions=session_factory(engine),
        metrics=WorkerMetrics(),
        status=status or (lambda: {"ready": True}),
        token=TOKEN,
    )
    return app, engine


async def _with_api(app: Any, requests: list[bytes]) -> list[tuple[int, bytes]]:
    server = ApiServer(app)
    url = await server.start("127.0.0.1", 0)
    port = int(url.rsplit(":", 1)[1])
    try:
        return [await asyncio.to_thread(raw_request, port, head) for head in requests]
    finally:
        await server.stop()


def get(path: str, authorization: bytes | None) -> bytes:
    auth = b"" if authorization is None else b"Authorization: " + authorization + b"\r\n"
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n" + auth + b"\r\n"


# ----- 2. secrets in exception text ------------------------------------------------------------------------------


def test_a_secret_in_an_exception_is_redacted_in_every_handler(logs_at: Any, capfd: pytest.CaptureFixture[str]) -> None:
    log_file = logs_at("DEBUG")
    foreign = io.StringIO()  # a library's own handler on a logger that does not propagate (uvicorn's, Prefect's)
    foreign_handler = logging.StreamHandler(foreign)
    foreign_handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    uvicorn = logging.getLogger("uvicorn.error.adversarial")
    uvicorn.addHandler(foreign_handler)
    uvicorn.propagate = False
    try:
        for logger in (logging.getLogger("cta.adversarial"), uvicorn):
            try:
                raise RuntimeError(f"connect failed with key={API_KEY} and token {TOKEN}")
            except RuntimeError as error:
                logger.exception("request failed: %s", error)
                logger.error("with args %r", {"password": DB_PASSWORD}, stack_info=True)
                logger.warning("wrapped", exc_info=ValueError(f"secret {API_SECRET}"))
    finally:
        uvicorn.removeHandler(foreign_handler)
    flush_logs()
    outputs = {"file": log_file.read_text(), "stderr": capfd.readouterr().err, "foreign": foreign.getvalue()}
    for where, text in outputs.items():
        assert "Traceback" in text and "request failed" in text, where
        for secret in SECRETS:
            assert secret not in text, (where, secret)


def test_a_secret_in_an_exception_inside_a_request_handler_is_redacted(
    tmp_path: Path, logs_at: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    log_file = logs_at("DEBUG")

    def broken_status() -> dict[str, Any]:
        raise RuntimeError(f"status backend refused Bearer {TOKEN}")

    app, engine = api_app(tmp_path, status=broken_status)
    long_header = b"Bearer " + TOKEN.encode() + b"x" * 9000  # over aiohttp's 8190-byte line limit
    results = asyncio.run(_with_api(app, [get("/readyz", None), get("/api/positions", long_header)]))
    engine.dispose()
    assert [status for status, _ in results] == [503, 400]
    assert TOKEN.encode() not in results[0][1]
    flush_logs()
    text, err = log_file.read_text(), capfd.readouterr().err
    assert "status callback failed" in text and "Traceback" in text
    assert "refused a malformed request" in text
    for output in (text, err):
        assert TOKEN not in output and TOKEN[:12] not in output


def test_a_secret_in_a_cli_error_is_redacted_on_screen_and_in_the_log(tmp_path: Path) -> None:
    env = {**SECRET_ENV, "CTA_SERVING__DATABASE_URL": f"sqlite:///{tmp_path / 'serving.db'}"}
    pasted = f"pasted the token {TOKEN}\x07"  # refused (a control character), and the message quotes it
    for args in (["kill-switch", "halt", "--reason", pasted], ["-v", "kill-switch", "halt", "--reason", pasted]):
        result = run_cta(tmp_path, *args, env=env)
        assert result.returncode == 1
        assert "error: reason must be" in result.stderr
        log = (tmp_path / "logs" / "trading.log").read_text()
        for output in (result.stdout, result.stderr, log):
            assert TOKEN not in output
    assert "Traceback" in log and "Traceback" in result.stderr  # -v shows it, redacted


# ----- 4. the auth guard on hostile headers ----------------------------------------------------------------------


def test_a_non_utf8_repeated_or_over_long_authorization_is_401_without_a_traceback(
    tmp_path: Path, logs_at: Any
) -> None:
    log_file = logs_at("INFO")
    app, engine = api_app(tmp_path)
    good = b"Bearer " + TOKEN.encode()
    requests = [
        get("/api/positions", b"Bearer \xff\xfe"),
        get("/api/positions", good + b"\xff"),
        get("/api/state", b"Bearer " + b"a" * 2_000),
        get("/api/positions", good + b"\r\nAuthorization: " + good),  # two headers: ambiguous
        get("/api/positions", good),
    ]
    results = asyncio.run(_with_api(app, requests))
    engine.dispose()
    assert [status for status, _ in results] == [401, 401, 401, 401, 200]
    flush_logs()
    assert "Traceback" not in log_file.read_text()


# ----- 6. one-line errors ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prefect_api(prefect_harness: None) -> str:
    """The test session's Prefect server, for `cta` subprocesses (no temporary server per command)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url
    return str(url)


UNREACHABLE = {"CTA_EXCHANGE__API_URL": f"http://127.0.0.1:{free_port()}", "CTA_INGEST__MAX_RETRIES": "0"}


@pytest.mark.parametrize(
    ("args", "extra", "fragment"),
    [
        (["ingest", "-s", "DOGE/USDT", "--start", "2022-05-28", "--no-progress"], {}, "unknown symbol"),
        (["ingest", "--start", "2022-05-10", "--end", "2022-05-01", "--no-progress"], {}, "must be before"),
        (["ingest", "-s", "BTC/USDT", "--start", "2022-05-28", "--no-progress"], UNREACHABLE, "unreachable"),
    ],
    ids=["unknown-symbol", "start-after-end", "unreachable-exchange"],
)
def test_flow_failures_are_one_line_with_the_traceback_in_the_log_file(
    tmp_path: Path,
    exchange_server: LocalExchangeServer,
    prefect_api: str,
    args: list[str],
    extra: dict[str, str],
    fragment: str,
) -> None:
    env = {"PREFECT_API_URL": prefect_api, "CTA_EXCHANGE__API_URL": exchange_server.url, **extra}
    result = run_cta(tmp_path, *args, env=env)
    assert_one_line_error(result, fragment)
    if fragment != "must be before":  # refused by the settings, before any flow or traceback
        assert "Traceback" in (tmp_path / "logs" / "trading.log").read_text()
    if fragment == "unknown symbol":
        verbose = run_cta(tmp_path, "-v", *args, env=env)
        assert verbose.returncode == 1 and "Traceback" in verbose.stderr  # -v: on screen too


def corrupt_lake(tmp_path: Path) -> Path:
    """A lake with one market whose data file is then overwritten with garbage; the file's path."""
    lake = CandleLake(LocalStorage(tmp_path / "lake"))
    lake.upsert(Market("binance", "BTC/USDT", "1h"), real_candles(rows=48))
    (data_file,) = (tmp_path / "lake").rglob("*.parquet")
    data_file.write_bytes(b"PAR1 this is not a parquet file at all \x00\xff" * 10)
    return data_file


def test_a_corrupt_lake_file_is_one_line(tmp_path: Path, prefect_api: str) -> None:
    corrupt_lake(tmp_path)
    env = {"PREFECT_API_URL": prefect_api}
    for args in (["validate"], ["features", "build", "-s", "BTC/USDT", "-t", "1h"]):
        result = run_cta(tmp_path, *args, env=env)
        assert_one_line_error(result)


def test_a_truncated_gzip_candle_file_is_one_line_naming_the_file(tmp_path: Path) -> None:
    data = tmp_path / "candles"
    data.mkdir()
    truncated = (BUNDLED / "binance_BTCUSDT_1h.csv.gz").read_bytes()[:5_000]
    (data / "binance_BTCUSDT_1h.csv.gz").write_bytes(truncated)
    result = run_cta(tmp_path, "exchange", "serve", "--data-dir", str(data), "--port", str(free_port()), timeout=60)
    assert_one_line_error(result, "binance_BTCUSDT_1h.csv.gz")


BOOM = """
from app.cli import cli, main

@cli.command("boom")
def boom() -> None:
    raise ValueError("first line\\nsecond line\\n" + "more " * 100)

main()
"""


def test_an_unexpected_multi_line_error_is_one_line_naming_the_log_file(tmp_path: Path) -> None:
    """An error CTA did not foresee (not a CTAError): still one line, and the traceback is in the log file the
    line names; with -v it is on screen too."""
    result = subprocess.run(
        [sys.executable, "-c", BOOM, "boom"],
        env=subprocess_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    line = assert_one_line_error(result, "unexpected ValueError: first line second line more", "(details: logs")
    assert line.endswith("trading.log)")
    assert "Traceback" in (tmp_path / "logs" / "trading.log").read_text()
    verbose = subprocess.run(
        [sys.executable, "-c", BOOM, "-v", "boom"],
        env=subprocess_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr


# ----- 8. live mode: the refusal comes before reconciliation -----------------------------------------------------


def live_settings(tmp_path: Path, url: str, env: dict[str, str]) -> Settings:
    overrides: dict[str, Any] = {
        "mode": "live",
        "paths": {"data_dir": str(tmp_path / "data"), "logs_dir": str(tmp_path / "logs")},
        "exchange": {"api_url": url, "market_time": "replay"},
        "markets": {"symbols": ["BTC/USDT"], "timeframes": ["1h"]},
        "features": {"feast_dir": str(tmp_path / "feast"), "table_dir": str(tmp_path / "features")},
        "training": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifact_root": str(tmp_path / "mlruns")},
        "serving": {"database_url": f"sqlite:///{tmp_path / 'serving.db'}", "broker": "ccxt", "api_port": 0},
    }
    return load_settings(env=env, config_dir=CONFIG_DIR, overrides=overrides)


async def _start(settings: Settings) -> None:
    async with serving_runtime(settings):
        raise AssertionError("live trading started")


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({}, "live mode needs CTA_API_KEY and CTA_API_SECRET"),
        ({"CTA_API_KEY": "wrong-key", "CTA_API_SECRET": "wrong-secret"}, "the exchange rejected the API key"),
        ({"CTA_API_KEY": EXCHANGE_API_KEY, "CTA_API_SECRET": "wrong-secret"}, "the exchange rejected the API key"),
    ],
)
def test_live_mode_refuses_with_the_reason_before_reconciling(tmp_path: Path, env: dict[str, str], reason: str) -> None:
    with running_exchange() as exchange:
        with pytest.raises(UnsafeLiveSettings, match=reason):
            asyncio.run(_start(live_settings(tmp_path, exchange.url, env)))
        for path in ("/api/v3/openOrders", "/api/v3/allOrders", "/api/v3/myTrades", "/api/v3/order"):
            assert exchange.request_count(path, "GET") == 0, path  # reconciliation never ran


# ----- 9. the kill switch's input ---------------------------------------------------------------------------------


def test_the_cli_and_the_api_refuse_the_same_kill_switch_reasons(tmp_path: Path, logs_at: Any) -> None:
    log_file = logs_at("INFO")
    database = tmp_path / "serving.db"
    env = {"CTA_SERVING__DATABASE_URL": f"sqlite:///{database}"}
    refused = [
        "",
        "   ",
        "x" * 5_000,
        "ok\nFAKE 2026 WARNING trading state set to RUNNING",
        "esc \x1b[31m",
        "\u202eRTL",
    ]
    for reason in refused[::2]:
        result = run_cta(tmp_path, "kill-switch", "halt", "--reason", reason, env=env)
        assert result.returncode == 1, reason
        assert_one_line_error(result, REASON_RULE)

    app, engine = api_app(tmp_path)
    auth = b"Bearer " + TOKEN.encode()

    def post(reason: str) -> bytes:
        import json

        body = json.dumps({"state": "HALTED", "reason": reason}).encode()
        head = b"POST /api/kill-switch HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: " + auth
        return head + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body

    requests = [post(reason) for reason in refused] + [post("operator: exchange incident")]
    *results, ok = asyncio.run(_with_api(app, requests))
    assert all(status == 400 and REASON_RULE.encode() in body for status, body in results)
    assert ok[0] == 200
    sessions = session_factory(engine)
    assert trading_state(sessions).reason == "operator: exchange incident"
    with sessions() as session:
        assert session.scalar(select(func.count(LedgerEntry.seq))) == 1  # the refused ones wrote nothing
    engine.dispose()
    flush_logs()
    assert not [line for line in log_file.read_text().splitlines() if line.startswith("FAKE")]


def test_user_text_reaches_the_logs_escaped(logs_at: Any, capfd: pytest.CaptureFixture[str]) -> None:
    """Text a user controls (a symbol, a path, an exception message quoting input) cannot forge a log line or
    drive the terminal, in the file and on the console."""
    log_file = logs_at("INFO")
    forged = "BTC/USDT\n2026-01-01 00:00:00,000 ERROR   cta.fake: FORGED\x1b[2J\u202e"
    logging.getLogger("cta.adversarial").warning("unknown symbol %s", forged)
    try:
        raise ValueError(forged)
    except ValueError:
        logging.getLogger("cta.adversarial").exception("failed")
    flush_logs()
    for text in (log_file.read_text(), capfd.readouterr().err):
        lines = text.splitlines()
        assert lines and all(line[:4].isdigit() or line[:1] == " " for line in lines), text
        assert "\x1b" not in text and "\u202e" not in text and "FORGED\\x1b[2J\\u202e" in text


# ----- the secrets sweep ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_no_secret_reaches_any_file_or_output_of_a_real_session(tmp_path: Path) -> None:
    """Every secret the settings know, set to a recognisable value; a real session at DEBUG with ccxt's verbose
    request log: ingest a few days, the kill switch, the worker API with good, bad, over-long and non-UTF-8
    tokens. Then every file under tmp_path (logs, the serving and Prefect SQLite databases, the lake) and every
    stdout/stderr must not contain any of the values."""
    env = {
        **SECRET_ENV,
        "PREFECT_HOME": str(tmp_path / "prefect"),  # Prefect's database for this run, under tmp_path
        "CTA_SERVING__DATABASE_URL": f"sqlite:///{tmp_path / 'serving.db'}",
        "CTA_EXCHANGE__VERBOSE": "true",
    }
    outputs: list[str] = []
    with running_exchange() as exchange:
        env["CTA_EXCHANGE__API_URL"] = exchange.url
        ingest = run_cta(tmp_path, "-v", "ingest", "-s", "BTC/USDT", "--start", "2022-05-29", "--no-progress", env=env)
        assert ingest.returncode == 0, ingest.stderr[-3000:]
        outputs += [ingest.stdout, ingest.stderr]
        bad = run_cta(tmp_path, "-v", "ingest", "-s", "DOGE/USDT", "--start", "2022-05-29", env=env)
        assert bad.returncode == 1
        outputs += [bad.stdout, bad.stderr]
    for args in (["kill-switch", "halt", "--reason", "sweep"], ["config", "show"], ["ledger", "verify"]):
        result = run_cta(tmp_path, "-v", *args, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        outputs += [result.stdout, result.stderr]

    settings = load_settings(env={**env, "CTA_LOGGING__LEVEL": "DEBUG"}, config_dir=CONFIG_DIR)
    configure_logging(settings.logging, tmp_path / "logs" / "api", settings.secrets.values())
    try:
        app, engine = api_app(tmp_path)
        good = b"Bearer " + TOKEN.encode()
        requests = [
            get("/api/state", good),
            get("/api/state", b"Bearer wrong"),
            get("/api/state", b"Bearer \xff\xfe" + TOKEN.encode()),
            get("/api/state", good + b"y" * 3_000),
            get("/api/state", good + b"z" * 9_000),
            get("/metrics", good),
        ]
        statuses = [status for status, _ in asyncio.run(_with_api(app, requests))]
        engine.dispose()
        assert statuses == [200, 401, 401, 401, 400, 200]
    finally:
        configure_logging(LoggingSettings(level="WARNING"), tmp_path / "after")

    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.stat().st_size]
    assert any(p.name == "prefect.db" for p in files) and any(p.suffix == ".log" for p in files)
    for secret in SECRETS:
        for output in outputs:
            assert secret not in output
        for path in files:
            assert secret.encode() not in path.read_bytes(), (secret, path)
    assert os.environ.get("CTA_API_TOKEN") is None  # the sweep did not leak into the test process
