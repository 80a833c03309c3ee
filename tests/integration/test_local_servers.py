"""The one persistent local Prefect server (and MLflow UI) of the embedded default: started on first use, reused
by every later command, stopped by `cta down`; the demo's runs are in the UI it serves."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from app.local_servers import healthy, prefect_healthy
from cta.exchange_server import LocalExchangeServer
from tests.conftest import free_port, run_cta, subprocess_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def persistent_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return subprocess_env(
        tmp_path,
        CTA_PREFECT__LOCAL_SERVER="persistent",
        CTA_PREFECT__SERVER_PORT=str(free_port()),
        CTA_TRAINING__UI_PORT=str(free_port()),
        **extra,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def flow_runs(api_url: str) -> list[Any]:
    from prefect.client.orchestration import PrefectClient

    async with PrefectClient(api_url) as client:
        return list(await client.read_flow_runs())


def test_one_server_started_on_first_use_reused_and_stopped_by_down(
    tmp_path: Path, exchange_server: LocalExchangeServer
) -> None:
    env = persistent_env(tmp_path, CTA_EXCHANGE__API_URL=exchange_server.url, CTA_INGEST__START="2022-05-30")
    api_url = f"http://127.0.0.1:{env['CTA_PREFECT__SERVER_PORT']}/api"
    state = tmp_path / "data" / "prefect" / "server.json"
    try:
        run_cta("ingest", "-s", "BTC/USDT", "--no-progress", env=env, cwd=tmp_path)  # first use: starts the server
        first = json.loads(state.read_text())
        assert prefect_healthy(api_url) and alive(first["pid"])
        run_cta("ingest", "-s", "ETH/USDT", "--no-progress", env=env, cwd=tmp_path)  # reuses it
        assert json.loads(state.read_text())["pid"] == first["pid"]
        runs = asyncio.run(flow_runs(api_url))
        assert len([r for r in runs if r.state and r.state.is_completed()]) == 2  # both commands' runs, one server
        up = run_cta("up", env=env, cwd=tmp_path)
        mlflow_url = f"http://127.0.0.1:{env['CTA_TRAINING__UI_PORT']}"
        assert api_url.removesuffix("/api") in up.stdout and mlflow_url in up.stdout
        assert healthy(f"{mlflow_url}/health")
        mlflow_pid = json.loads((tmp_path / "data" / "mlflow" / "server.json").read_text())["pid"]
    finally:
        down = run_cta("down", env=env, cwd=tmp_path)
    assert "stopped Prefect server" in down.stdout and "stopped MLflow UI" in down.stdout
    assert not prefect_healthy(api_url) and not alive(first["pid"]) and not alive(mlflow_pid)
    assert not state.exists()


def test_an_occupied_port_is_refused_not_silently_shared(tmp_path: Path) -> None:
    """A Prefect server this data dir did not start must not receive its runs (the demo/UI mismatch)."""
    env = persistent_env(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    run_cta("up", env={**env, "CTA_PATHS__DATA_DIR": str(other / "data")}, cwd=other)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "app.cli", "up"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 1
        assert "already answers, but not for a server this data dir started" in result.stderr
    finally:
        run_cta("down", env={**env, "CTA_PATHS__DATA_DIR": str(other / "data")}, cwd=other)


def test_the_demo_ends_with_both_uis_running_and_its_runs_visible_there(tmp_path: Path) -> None:
    exchange_port = free_port()
    env = persistent_env(
        tmp_path,
        CTA_EXCHANGE__API_URL=f"http://127.0.0.1:{exchange_port}",
        CTA_MARKETS__SYMBOLS='["BTC/USDT"]',
        CTA_TRAINING__CANDIDATES='["logistic"]',
        CTA_SERVING__MAX_BARS="3",
    )
    prefect_url = f"http://127.0.0.1:{env['CTA_PREFECT__SERVER_PORT']}"
    mlflow_url = f"http://127.0.0.1:{env['CTA_TRAINING__UI_PORT']}"
    try:
        demo = run_cta("--profile", "demo", "demo", env=env, cwd=tmp_path, timeout=600)
        assert f"{prefect_url}/runs" in demo.stdout and mlflow_url in demo.stdout
        # the UI the demo points at lists the demo's runs: the pipeline and its subflows
        runs = asyncio.run(flow_runs(f"{prefect_url}/api"))
        assert len({r.flow_id for r in runs}) >= 4, [r.name for r in runs]  # pipeline, ingest, features, train
        assert all(r.state is not None and r.state.is_completed() for r in runs), [(r.name, r.state) for r in runs]
        with urllib.request.urlopen(f"{mlflow_url}/api/2.0/mlflow/registered-models/search", timeout=10) as r:
            models = json.load(r).get("registered_models", [])
        assert [m["name"] for m in models] != []
    finally:
        run_cta("down", env=env, cwd=tmp_path)
    assert not prefect_healthy(f"{prefect_url}/api") and not healthy(f"{mlflow_url}/health")
