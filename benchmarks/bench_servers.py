"""What the production stack costs and saves, measured with the real servers on this machine.

1. **A command's start.** `cta --help` (the CLI's own import), then `cta ingest` on an up-to-date lake (so the
   command is nearly all overhead): wall time and time to "Beginning flow run" on its stderr, with the data
   dir's persistent local Prefect server already up, against `prefect.local_server = "ephemeral"` (Prefect's
   temporary server per command: what every command did before).
2. **One market's loop, ingest -> promote.** Through the servers, as deployed: a Prefect server on PostgreSQL,
   an MLflow tracking server on PostgreSQL with artifacts in S3 (moto) served through it, the deployments
   registered on a work pool and run by a `cta flows worker` (refresh-1h, then the learning loop), timed from
   the trigger to the learn run's completion; against the embedded path `make demo` takes (`cta pipeline`
   in-process, SQLite MLflow store, local Prefect server), same market, candidates and data.

Every process is a real `cta` subprocess; the local exchange replays the bundled candles in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CTA = [sys.executable, "-m", "app.cli"]
CANDIDATES = '["logistic", "gbm"]'


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_http(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f}s")


def base_env(root: Path, exchange_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CTA_", "PREFECT_"))}
    env.update(
        {
            "CTA_CONFIG_DIR": str(REPO / "config"),
            "CTA_PATHS__DATA_DIR": str(root / "data"),
            "CTA_PATHS__LOGS_DIR": str(root / "logs"),
            "CTA_LAKE__URI": str(root / "lake"),
            "CTA_VALIDATION__QUARANTINE_URI": str(root / "quarantine"),
            "CTA_VALIDATION__RESULTS_DIR": str(root / "validation"),
            "CTA_FEATURES__TABLE_DIR": str(root / "features"),
            "CTA_FEATURES__FEAST_DIR": str(root / "feast"),
            "CTA_EXCHANGE__API_URL": exchange_url,
            "CTA_MARKETS__SYMBOLS": '["BTC/USDT"]',
            "CTA_INGEST__START": "2022-03-01",
            "CTA_PREFECT__SERVER_PORT": str(free_port()),
            "CTA_PREFECT__LEARN_CRON": "0 0 1 1 *",
            "CTA_TRAINING__UI_PORT": str(free_port()),
            "CTA_TRAINING__CANDIDATES": CANDIDATES,
            **extra,
        }
    )
    return env


def cta(*args: str, env: dict[str, str], cwd: Path) -> None:
    result = subprocess.run([*CTA, *args], env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"cta {' '.join(args)} failed:\n{result.stderr[-3000:]}")


def timed_command(args: list[str], env: dict[str, str], cwd: Path, marker: str | None = None) -> tuple[float, float]:
    """Wall time of `cta args`, and the time until `marker` appeared on its stderr (nan if never)."""
    started = time.monotonic()
    process = subprocess.Popen(
        [*CTA, *args], env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    first = float("nan")
    assert process.stderr is not None
    for line in process.stderr:
        if marker and marker in line and math.isnan(first):
            first = time.monotonic() - started
    if process.wait() != 0:
        raise RuntimeError(f"cta {' '.join(args)} failed")
    return time.monotonic() - started, first


@contextmanager
def exchange(root: Path) -> Iterator[str]:
    port = free_port()
    env = {**base_env(root, ""), "CTA_LOCAL_EXCHANGE__PORT": str(port)}
    log = (root / "exchange.log").open("w")
    process = subprocess.Popen([*CTA, "exchange", "serve"], env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/api/v3/ping")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    import psycopg2

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test")
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextmanager
def background(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def command_start(root: Path, exchange_url: str, repeats: int) -> list[dict[str, Any]]:
    persistent = base_env(root, exchange_url)
    ephemeral = {**persistent, "CTA_PREFECT__LOCAL_SERVER": "ephemeral"}
    cta("ingest", "--no-progress", env=persistent, cwd=root)  # the lake is now up to date; the server is up
    rows: list[dict[str, Any]] = []
    helps = [timed_command(["--help"], persistent, root)[0] for _ in range(repeats)]
    rows.append({"case": "cta --help (the CLI's import)", "median_s": statistics.median(helps), "runs": repeats})
    measured: dict[str, list[tuple[float, float]]] = {}
    for name, env in (("persistent local server (warm)", persistent), ("ephemeral server per command", ephemeral)):
        measured[name] = [
            timed_command(["ingest", "--no-progress"], env, root, "Beginning flow run") for _ in range(repeats)
        ]
    for name, runs in measured.items():
        rows.append(
            {
                "case": f"cta ingest, up to date: {name}",
                "median_s": statistics.median(r[0] for r in runs),
                "to_flow_start_s": statistics.median(r[1] for r in runs),
                "runs": repeats,
            }
        )
    base = rows[-1]
    rows[-2]["vs_ephemeral"] = f"{base['median_s'] / rows[-2]['median_s']:.1f}x faster"
    cta("down", env=persistent, cwd=root)
    return rows


async def run_and_wait(api_url: str, deployment: str, parameters: dict[str, Any]) -> str:
    from prefect.client.orchestration import PrefectClient

    async with PrefectClient(api_url) as client:
        found = await client.read_deployment_by_name(deployment)
        run = await client.create_flow_run_from_deployment(found.id, parameters=parameters)
        while True:
            state = (await client.read_flow_run(run.id)).state
            if state is not None and state.is_final():
                return state.type.value
            await asyncio.sleep(0.5)


def loop_through_servers(root: Path, exchange_url: str) -> float:
    prefect_port, mlflow_port, moto_port = free_port(), free_port(), free_port()
    moto_env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    moto_url = f"http://127.0.0.1:{moto_port}"
    with (
        postgres_database("cta_bench_prefect") as prefect_db,
        postgres_database("cta_bench_mlflow") as mlflow_db,
        background(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)], moto_env, root, root / "m"
        ),
    ):
        wait_http(moto_url)
        import boto3

        boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="bench",
                     aws_secret_access_key="bench").create_bucket(Bucket="cta-mlflow")  # fmt: skip
        mlflow_env = {
            **moto_env,
            "MLFLOW_S3_ENDPOINT_URL": moto_url,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        mlflow_cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(mlflow_port)]
        mlflow_cmd += ["--backend-store-uri", f"postgresql+psycopg2://postgres@127.0.0.1:5432/{mlflow_db}"]
        mlflow_cmd += ["--artifacts-destination", "s3://cta-mlflow/artifacts", "--serve-artifacts", "--workers", "1"]
        env = base_env(
            root,
            exchange_url,
            CTA_PREFECT__API_URL=f"http://127.0.0.1:{prefect_port}/api",
            CTA_PREFECT__DATABASE_URL=f"postgresql+asyncpg://postgres@127.0.0.1:5432/{prefect_db}",
            CTA_TRAINING__TRACKING_URI=f"http://127.0.0.1:{mlflow_port}",
        )
        with background(mlflow_cmd, mlflow_env, root, root / "mlflow.log"):
            wait_http(f"http://127.0.0.1:{mlflow_port}/health")
            cta("up", env=env, cwd=root)
            try:
                cta("flows", "deploy", env=env, cwd=root)
                with background([*CTA, "flows", "worker"], env, root, root / "worker.log"):
                    api = f"http://127.0.0.1:{prefect_port}/api"
                    started = time.monotonic()
                    refreshed = asyncio.run(run_and_wait(api, "refresh/refresh-1h", {}))
                    learned = asyncio.run(
                        run_and_wait(api, "learn/learn-binance-BTC_USDT-1h", {"candidates": ["logistic", "gbm"]})
                    )
                    elapsed = time.monotonic() - started
                if (refreshed, learned) != ("COMPLETED", "COMPLETED"):
                    raise RuntimeError(f"loop through the servers: refresh {refreshed}, learn {learned}")
            finally:
                cta("down", env=env, cwd=root)
    return elapsed


def loop_embedded(root: Path, exchange_url: str) -> float:
    env = base_env(root, exchange_url)
    cta("up", env=env, cwd=root)  # the demo's path: the local server is up (its start is a one-off)
    try:
        started = time.monotonic()
        cta("pipeline", "-s", "BTC/USDT", "-c", "logistic", "-c", "gbm", env=env, cwd=root)
        return time.monotonic() - started
    finally:
        cta("down", env=env, cwd=root)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    repeats = 2 if args.quick else 3
    with tempfile.TemporaryDirectory(prefix="cta-bench-servers-") as tmp:
        root = Path(tmp)
        with exchange(root) as exchange_url:
            (root / "start").mkdir()
            rows = command_start(root / "start", exchange_url, repeats)
            (root / "servers").mkdir()
            (root / "embedded").mkdir()
            servers = loop_through_servers(root / "servers", exchange_url)
            embedded = loop_embedded(root / "embedded", exchange_url)
    rows.append(
        {
            "case": "loop ingest->promote, 1 market, logistic+gbm: Prefect(PG)+worker, MLflow server(PG, S3)",
            "median_s": servers,
            "vs_embedded": f"{servers / embedded:.2f}x",
        }
    )
    rows.append({"case": "loop ingest->promote, same: embedded (cta pipeline, SQLite MLflow)", "median_s": embedded})
    return rows
