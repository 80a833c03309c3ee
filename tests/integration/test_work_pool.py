"""The production way of running the scheduled flows: a Prefect server on PostgreSQL, the deployments
registered on a work pool (`cta flows deploy`), and separate Prefect worker processes (`cta flows worker`) that
run each flow run in a process of their own. Checked for real: a run triggered on demand completes through the
worker, with its subflows and tasks recorded; a worker killed mid-run leaves its run marked Crashed (no heartbeat)
and the next run works."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from app.local_servers import prefect_healthy
from cta.exchange_server import LocalExchangeServer
from flows.deployments import ZOMBIE_AFTER_S
from tests.conftest import free_port, postgres_database, run_cta, subprocess_env

pytestmark = [pytest.mark.integration, pytest.mark.production, pytest.mark.slow]


def start_worker(env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """`cta flows worker` in a process group of its own (so the test can kill it with its flow-run children)."""
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "flows", "worker"],
        env=env,
        cwd=cwd,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill_all(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker and every process under it (its flow runs), as when its container or machine dies:
    nothing gets to say goodbye to the server."""
    import psutil

    for child in [*psutil.Process(process.pid).children(recursive=True), psutil.Process(process.pid)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    process.wait(timeout=60)


def kill_group(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    process.wait(timeout=60)


async def run_deployment(api_url: str, name: str, parameters: dict[str, Any] | None = None) -> Any:
    from prefect.client.orchestration import PrefectClient

    async with PrefectClient(api_url) as client:
        deployment = await client.read_deployment_by_name(name)
        return await client.create_flow_run_from_deployment(deployment.id, parameters=parameters or {})


async def wait_for_state(api_url: str, run_id: Any, wanted: set[str], timeout_s: float) -> str:
    """The run's state type once it is one of `wanted` (or the last seen at the deadline), with its message."""
    from prefect.client.orchestration import PrefectClient

    deadline = time.monotonic() + timeout_s
    async with PrefectClient(api_url) as client:
        state = "NONE"
        while time.monotonic() < deadline:
            run = await client.read_flow_run(run_id)
            state = run.state.type.value if run.state else "NONE"
            if state in wanted:
                return state if state != "CRASHED" else f"{state}: {run.state.message if run.state else ''}"
            await asyncio.sleep(1)
        return state


async def children(api_url: str, run_id: Any) -> tuple[list[str], list[str]]:
    """The names of the subflow runs of `run_id`, and of its task runs (subflows included) that completed."""
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    async with PrefectClient(api_url) as client:
        subflows = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id]))
        )
        flows = {f.id: f.name for f in await client.read_flows()}
        ids = [run_id, *(s.id for s in subflows)]
        tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": ids}))
    return sorted(flows[s.flow_id] for s in subflows), sorted(
        t.name for t in tasks if t.state is not None and t.state.is_completed()
    )


@pytest.fixture
def stack(tmp_path: Path, exchange_server: LocalExchangeServer) -> Iterator[tuple[dict[str, str], str, str]]:
    """A Prefect server on a fresh PostgreSQL database, started by `cta up` (production-style config:
    prefect.api_url names a local address, prefect.database_url the database); `cta down` at the end."""
    port = free_port()
    with postgres_database("cta_prefect") as database:
        env = subprocess_env(
            tmp_path,
            CTA_PREFECT__API_URL=f"http://127.0.0.1:{port}/api",
            CTA_PREFECT__DATABASE_URL=f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}",
            CTA_PREFECT__WORK_POOL="cta-test",
            CTA_PREFECT__LEARN_CRON="0 0 1 1 *",  # registered, never due while the test runs
            CTA_EXCHANGE__API_URL=exchange_server.url,
            CTA_INGEST__START="2022-03-01",
            CTA_MARKETS__SYMBOLS='["BTC/USDT"]',
            CTA_TRAINING__UI_PORT=str(free_port()),
        )
        try:
            run_cta("up", env=env, cwd=tmp_path)
            yield env, f"http://127.0.0.1:{port}/api", database
        finally:
            run_cta("down", env=env, cwd=tmp_path)
    assert not prefect_healthy(f"http://127.0.0.1:{port}/api")


def test_deployments_run_through_a_worker_on_a_postgres_backed_server(
    stack: tuple[dict[str, str], str, str], tmp_path: Path
) -> None:
    env, api_url, database = stack
    with psycopg2.connect(host="127.0.0.1", user="postgres", dbname=database) as connection, connection.cursor() as c:
        c.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'flow_run'")
        assert c.fetchone() == (1,)  # the server keeps its state in PostgreSQL ...
    assert not (tmp_path / "data" / "prefect" / "server.db").exists()  # ... not in SQLite

    out = run_cta("flows", "deploy", env=env, cwd=tmp_path).stdout
    assert "refresh/refresh-1h" in out and "learn/learn-binance-BTC_USDT-1h" in out and "'cta-test'" in out
    worker_log = tmp_path / "worker.log"
    worker = start_worker(env, tmp_path, worker_log)
    try:
        run = asyncio.run(run_deployment(api_url, "refresh/refresh-1h"))
        final = asyncio.run(wait_for_state(api_url, run.id, {"COMPLETED", "FAILED", "CRASHED"}, 240))
        assert final == "COMPLETED", worker_log.read_text()[-4000:]
        subflows, tasks = asyncio.run(children(api_url, run.id))
        assert subflows == ["features", "ingest"]  # ingest, then the features of what it brought
        assert "ingest binance:BTC/USDT:1h" in tasks and "features binance:BTC/USDT:1h" in tasks
        assert (tmp_path / "features").is_dir()
        assert "ProcessWorker" in worker_log.read_text()  # run by the worker, not by this process

        # a worker killed with its flow-run process mid-run: the run is marked Crashed, not left Running forever
        learn = asyncio.run(run_deployment(api_url, "learn/learn-binance-BTC_USDT-1h", {"candidates": ["logistic"]}))
        assert asyncio.run(wait_for_state(api_url, learn.id, {"RUNNING"}, 120)) == "RUNNING"
        time.sleep(5)  # the flow-run process has sent its first heartbeat
        kill_all(worker)
        ends = {"CRASHED", "COMPLETED", "FAILED"}
        final = asyncio.run(wait_for_state(api_url, learn.id, ends, ZOMBIE_AFTER_S + 90))
        # marked by the automation `cta flows deploy` installs, from the missing heartbeats
        assert final.startswith("CRASHED: no heartbeat for"), f"{final}\n{worker_log.read_text()[-4000:]}"
        # and the next run works, on a new worker
        worker = start_worker(env, tmp_path, worker_log)
        again = asyncio.run(run_deployment(api_url, "refresh/refresh-1h"))
        assert asyncio.run(wait_for_state(api_url, again.id, {"COMPLETED", "FAILED", "CRASHED"}, 240)) == "COMPLETED"
    finally:
        kill_group(worker, signal.SIGTERM)
