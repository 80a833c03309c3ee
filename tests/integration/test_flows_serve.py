"""`cta flows serve` for real: it starts the local Prefect server, serves the scheduled deployments (per
timeframe, refresh: ingest then features; per market, the learning loop), and a run of a deployment ingests
from the local exchange and builds the features. The server outlives the command (its runs stay visible)
until `cta down`."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.local_servers import prefect_healthy
from cta.exchange_server import LocalExchangeServer
from tests.conftest import free_port, subprocess_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def wait_for_deployment_run(api_url: str, timeout_s: float, expected: int) -> tuple[list[str], str]:
    from prefect.client.orchestration import PrefectClient

    deadline = time.monotonic() + timeout_s
    while not prefect_healthy(api_url) and time.monotonic() < deadline:
        await asyncio.sleep(1)
    async with PrefectClient(api_url) as client:
        while True:
            deployments = await client.read_deployments()
            if len(deployments) >= expected or time.monotonic() > deadline:  # serve registers them one by one
                break
            await asyncio.sleep(1)
        names = sorted(d.name for d in deployments)
        hourly = next(d for d in deployments if d.name == "refresh-1h")
        run = await client.create_flow_run_from_deployment(hourly.id)
        while time.monotonic() < deadline:
            state = (await client.read_flow_run(run.id)).state
            if state is not None and state.is_final():
                return names, state.type.value
            await asyncio.sleep(1)
        return names, "TIMEOUT"


def test_flows_serve_runs_scheduled_ingestion(tmp_path: Path, exchange_server: LocalExchangeServer) -> None:
    port = free_port()
    env = subprocess_env(
        tmp_path,
        CTA_EXCHANGE__API_URL=exchange_server.url,
        CTA_INGEST__START="2022-05-20",  # enough hours for the features' warm-up (168)
        CTA_MARKETS__TIMEFRAMES='["1h", "4h"]',
        CTA_PREFECT__SERVER_PORT=str(port),
        CTA_PREFECT__LEARN_CRON="0 0 1 1 *",  # served, but never due while the test runs
    )
    log_path = tmp_path / "serve.log"
    # started with SIGINT ignored, as a background job of a non-interactive shell is (CI): Ctrl-C must still stop
    # it (an ignored disposition is inherited through fork and exec)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        serve = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "flows", "serve"],
            env=env,
            cwd=tmp_path,
            stdout=log_path.open("w"),
            stderr=subprocess.STDOUT,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        names, final = asyncio.run(wait_for_deployment_run(f"http://127.0.0.1:{port}/api", timeout_s=240, expected=6))
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()  # not stopped by Ctrl-C within 60 s: the return code assertion below says so (-9)
            serve.wait()
    output = log_path.read_text()
    assert names == [
        "learn-binance-BTC_USDT-1h",
        "learn-binance-BTC_USDT-4h",
        "learn-binance-ETH_USDT-1h",
        "learn-binance-ETH_USDT-4h",
        "refresh-1h",
        "refresh-4h",
    ], output[-3000:]
    assert final == "COMPLETED", output[-3000:]
    assert (tmp_path / "lake" / "candles" / "exchange=binance" / "symbol=BTC_USDT" / "timeframe=1h").exists()
    assert not (tmp_path / "lake" / "candles" / "exchange=binance" / "symbol=BTC_USDT" / "timeframe=4h").exists()
    assert (tmp_path / "features").is_dir()  # the refresh built the features after ingesting
    assert serve.returncode in (0, 130), output[-3000:]
    assert prefect_healthy(f"http://127.0.0.1:{port}/api")  # the local server outlives the command ...
    subprocess.run([sys.executable, "-m", "app.cli", "down"], env=env, cwd=tmp_path, check=True, timeout=60)
    assert not prefect_healthy(f"http://127.0.0.1:{port}/api")  # ... until `cta down`
