"""The whole stack, for real: build the images (runtime, flows) on a private Docker daemon, bring compose.yaml up with
the host override (deploy/compose.host.yaml), wait for every service's health, then

1. the one-shot `deploy` has registered the deployments on the work pool `cta`;
2. a `refresh-<tf>` (ingest, then features) run, triggered through the Prefect API, fills the S3 lake from the
   exchange container; the Prefect worker container runs it;
3. a learn run for BTC/USDT 1h with candidates ["logistic"] (2 folds, a lax gate, no costs: the mechanics, not the
   thresholds), triggered through the Prefect API, trains, backtests, gates and promotes on the worker container;
4. the MLflow server's REST API shows the champion version and its artifacts, which are objects in S3 (moto);
5. the trader container loads the champion and trades it on paper against the exchange container (its API);

then tears it all down (`docker-compose down -v`): no container left, the daemon stopped.

What runs where: the CTA processes and the MLflow and Prefect servers run in containers from the images built here.
PostgreSQL, Redis and S3 are the machine's own (PostgreSQL 127.0.0.1:5432 and Redis 127.0.0.1:6379, started by this
kind of machine; moto's S3 server started here), because no registry is reachable to pull their images; the
override turns the compose services postgres/redis/minio into stand-ins whose health is those services' reachability.
Fresh databases and a Redis db index are used per run and dropped/flushed after.

Needs root (apt-get, dockerd) and the machine's PostgreSQL and Redis; the timings go to benchmarks/results/stack.json.
STACK_TEST_KEEP=1 leaves the stack (and daemon) up after the test, for debugging.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from deploy import compose_host, images
from tests.factories import LAX_GATE

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parent.parent.parent
SYMBOL, TIMEFRAME = "BTC/USDT", "1h"
MARKET = f"binance:{SYMBOL}:{TIMEFRAME}"
MODEL_NAME = "cta.binance.BTC_USDT.1h"
LEARN_DEPLOYMENT = "learn-binance-BTC_USDT-1h"
LONG_RUNNING = (
    "postgres",
    "redis",
    "minio",
    "mlflow",
    "prefect-server",
    "prefect-worker",
    "exchange",
    "trader",
    "dashboard",
)
REDIS_DB = 14
# The data the champion learns from: fixed (not "up to the replay clock's now"), so the model is the same on every run.
# With it, zero costs (below) and seed 7, logistic's validation policy trades (threshold 0: long when the score is
# positive), so the trader places orders within seconds; on other windows it may well learn to stay flat.
INGEST_WINDOW = {"start": "2021-01-01", "end": "2022-09-01"}
NO_COSTS = {"taker_fee_rate": 0.0, "maker_fee_rate": 0.0, "slippage_bps": 0.0}
KEEP = os.environ.get("STACK_TEST_KEEP") == "1"
TIMINGS: dict[str, Any] = {"seconds": {}}
STARTED = time.monotonic()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_json(url: str, body: Any = None, token: str | None = None, timeout: float = 30) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 2.0) -> Any:
    """Poll `check` until it returns something truthy; its value. AssertionError naming `what` on timeout."""
    deadline, last_error = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (OSError, urllib.error.URLError, ValueError, KeyError) as error:
            last_error = error
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what} (last error: {last_error})")


@contextlib.contextmanager
def timed(name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        TIMINGS["seconds"][name] = round(time.monotonic() - started, 1)


# ----- the machine's services ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docker() -> Iterator[images.Docker]:
    """The private daemon (started, or reused if it answers); stopped at the end if this test started it."""
    with timed("packages"):
        TIMINGS["apt_installed"] = images.ensure_packages()
    with timed("dockerd_start"):
        daemon = images.ensure_dockerd()
    TIMINGS["storage_driver"] = daemon.storage_driver
    TIMINGS["dockerd_reused"] = not daemon.started_here
    yield daemon.docker
    if daemon.started_here and not KEEP:
        images.stop_dockerd(daemon)
        assert not daemon.docker.ping(), "the private dockerd is still answering"


# Secrets in the environment of the build (as on a developer's machine): none may reach an image (issue 15, item 5).
BUILD_CANARIES = {
    name: f"canary-{name.lower()}-{secrets.token_hex(8)}"
    for name in ("CTA_API_KEY", "CTA_API_SECRET", "CTA_API_TOKEN", "CTA_DB_PASSWORD", "CTA_LEDGER_SIGNING_KEY")
}


@pytest.fixture(scope="module")
def built(docker: images.Docker) -> Iterator[dict[str, str]]:
    timings = images.Timings()
    saved = {name: os.environ.get(name) for name in BUILD_CANARIES}
    os.environ.update(BUILD_CANARIES)
    try:
        tags = images.build_all(docker, base="debootstrap", tag="stacktest", timings=timings)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    TIMINGS["images"] = timings.as_dict()
    yield tags


@pytest.fixture(scope="module")
def postgres_databases() -> Iterator[dict[str, str]]:
    """Fresh databases on the machine's PostgreSQL (127.0.0.1:5432, trust auth, user postgres); dropped after."""
    import psycopg2

    try:
        admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=5)
    except psycopg2.OperationalError as error:
        pytest.fail(f"needs the machine's PostgreSQL on 127.0.0.1:5432 (user postgres, trust): {error}")
    admin.autocommit = True
    run = secrets.token_hex(4)
    names = {role: f"cta_stack_{run}_{role}" for role in ("mlflow", "prefect", "serving")}
    with admin.cursor() as cursor:
        for name in names.values():
            cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield names
    finally:
        if not KEEP:
            with admin.cursor() as cursor:
                for name in names.values():
                    cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="module")
def redis_db() -> Iterator[int]:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB, socket_connect_timeout=5)
    try:
        client.flushdb()
    except redis.exceptions.ConnectionError as error:
        pytest.fail(f"needs the machine's Redis on 127.0.0.1:6379: {error}")
    yield REDIS_DB
    if not KEEP:
        client.flushdb()


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    """moto's S3 on the host (127.0.0.1, a free port): the stack's object store in this test."""
    port = free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("moto", lambda: urllib.request.urlopen(url, timeout=2).status == 200, 30, 0.3)
        yield url
    finally:
        if not KEEP:
            process.terminate()
            process.wait(timeout=10)


# ----- the stack ------------------------------------------------------------------------------------------------


@dataclass
class Stack:
    docker: images.Docker
    project: str
    env_file: Path
    compose_file: Path
    env: dict[str, str]
    ports: dict[str, int]
    token: str
    s3_url: str
    started: dict[str, float] = field(default_factory=dict)

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        """docker-compose on compose.yaml + deploy/compose.host.yaml, rendered into one file by
        deploy.compose_host (v1 cannot drop compose.yaml's `ports:` in an override; host networking refuses them)."""
        cmd = ["docker-compose", "--project-name", self.project, "--project-directory", str(REPO)]
        cmd += ["--env-file", str(self.env_file), "-f", str(self.compose_file), *args]
        result = subprocess.run(
            cmd, env=self.docker.env(), capture_output=True, text=True, timeout=timeout, check=False, cwd="/"
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stderr[-6000:]}")
        return result

    def logs(self, *services: str, tail: int = 80) -> str:
        return self.compose("logs", "--no-color", f"--tail={tail}", *services, check=False).stdout

    def container_ids(self, all_: bool = False) -> list[str]:
        args = ["ps", "-q", *(["-a"] if all_ else []), "--filter", f"label=com.docker.compose.project={self.project}"]
        return self.docker(*args).split()

    def health(self) -> dict[str, str]:
        """service -> health status (or state, for containers without a healthcheck)."""
        out: dict[str, str] = {}
        for cid in self.container_ids(all_=True):
            fmt = (
                '{{index .Config.Labels "com.docker.compose.service"}} '
                "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}:{{.State.ExitCode}}{{end}}"
            )
            service, status = self.docker("inspect", "--format", fmt, cid).split()
            out[service] = status
        return out

    @property
    def prefect(self) -> str:
        return f"http://127.0.0.1:{self.ports['PREFECT_PORT']}/api"

    @property
    def mlflow(self) -> str:
        return f"http://127.0.0.1:{self.ports['MLFLOW_PORT']}"

    @property
    def trader(self) -> str:
        return f"http://127.0.0.1:{self.ports['TRADER_PORT']}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.ports['DASHBOARD_PORT']}"


@pytest.fixture(scope="module")
def stack(
    docker: images.Docker,
    built: dict[str, str],
    postgres_databases: dict[str, str],
    redis_db: int,
    moto_server: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    ports = {
        name: free_port()
        for name in (
            "MLFLOW_PORT",
            "PREFECT_PORT",
            "TRADER_PORT",
            "DASHBOARD_PORT",
            "EXCHANGE_PORT",
            "WORKER_HEALTH_PORT",
        )
    }
    token = secrets.token_urlsafe(24)
    env = {
        **{k: str(v) for k, v in ports.items()},
        "S3_PORT": moto_server.rsplit(":", 1)[1],
        "REDIS_DB": str(redis_db),
        "MLFLOW_DB": postgres_databases["mlflow"],
        "PREFECT_DB": postgres_databases["prefect"],
        "SERVING_DB": postgres_databases["serving"],
        "POSTGRES_USER": "postgres",
        "POSTGRES_PASSWORD": secrets.token_hex(8),  # trust auth on this machine: sent, not checked
        "S3_ACCESS_KEY": "testing",
        "S3_SECRET_KEY": "testing",
        "CTA_API_TOKEN": token,
        "CTA_RUNTIME_IMAGE": built["runtime"],
        "CTA_FLOWS_IMAGE": built["flows"],
        "CTA_TRADER_IMAGE": built["runtime"],
        "CTA_SYMBOLS": json.dumps([SYMBOL]),
        "CTA_TIMEFRAMES": json.dumps([TIMEFRAME]),
        "CTA_INGEST_START": INGEST_WINDOW["start"],
        "CTA_REPLAY_SPEED": "1800",  # a 1h candle closes every 2 s: the bundled candles last 32 min from `up`
        "CTA_MODEL_POLL_S": "3",
    }
    workdir = tmp_path_factory.mktemp("stack")
    env_file = workdir / "stack.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    compose_file = compose_host.render(workdir / "compose.rendered.yaml", env_file)
    project = f"ctastack{secrets.token_hex(3)}"
    running = Stack(docker, project, env_file, compose_file, env, ports, token, moto_server)
    try:
        yield running
    finally:
        if not KEEP:
            with timed("down"):
                running.compose("down", "-v", "--remove-orphans", "--timeout", "20", timeout=300, check=False)
            left = running.container_ids(all_=True)
            volumes = docker("volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={project}").split()
            TIMINGS["containers_left"], TIMINGS["volumes_left"] = len(left), len(volumes)
        from benchmarks.stack import write

        TIMINGS["seconds"]["test_total"] = round(time.monotonic() - STARTED, 1)
        TIMINGS["cache_dir"] = str(images.cache_dir())
        write(TIMINGS)


# ----- Prefect's REST API ---------------------------------------------------------------------------------------


def deployments(stack: Stack) -> dict[str, dict[str, Any]]:
    found = http_json(f"{stack.prefect}/deployments/filter", {"limit": 200})
    flows = {f["id"]: f["name"] for f in http_json(f"{stack.prefect}/flows/filter", {"limit": 200})}
    return {f"{flows[d['flow_id']]}/{d['name']}": d for d in found}


def run_deployment(stack: Stack, deployment: dict[str, Any], parameters: dict[str, Any], timeout_s: float) -> str:
    """Create a flow run of `deployment` (the worker picks it up from the pool) and wait for it to finish."""
    run = http_json(f"{stack.prefect}/deployments/{deployment['id']}/create_flow_run", {"parameters": parameters})

    def finished() -> dict[str, Any] | None:
        state = http_json(f"{stack.prefect}/flow_runs/{run['id']}")
        return state if state["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    try:
        final = wait_for(f"flow run {run['name']} of {deployment['name']}", finished, timeout_s, 3)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{flow_run_logs(stack, run['id'])}\n{stack.logs('prefect-worker')}") from None
    assert final["state_type"] == "COMPLETED", f"{final['state_name']}\n{flow_run_logs(stack, run['id'])}"
    assert final["work_pool_name"] == "cta"
    return str(run["id"])


def flow_run_logs(stack: Stack, flow_run_id: str) -> str:
    body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200, "sort": "TIMESTAMP_ASC"}
    with contextlib.suppress(OSError, urllib.error.URLError):
        return "\n".join(f"{row['level']} {row['message']}" for row in http_json(f"{stack.prefect}/logs/filter", body))
    return "(no logs)"


# ----- the test -------------------------------------------------------------------------------------------------


SECRET_FILE_NAMES = {".env", ".netrc", ".pgpass", "id_rsa", "id_ed25519", "credentials", ".terraformrc"}


def test_the_images_carry_no_secrets(docker: images.Docker, built: dict[str, str]) -> None:
    """No secret of the build's environment in either image's metadata (config, history) and none in the runtime
    image's files, nor a file of a kind that holds secrets (.env, keys, credentials). The flows image's files are
    not read (4 GB: a minute and a half): what it takes from the build context is what the runtime image takes."""
    canaries = [value.encode() for value in BUILD_CANARIES.values()]
    for tag in built.values():
        metadata = docker("image", "inspect", tag) + docker("history", "--no-trunc", tag)
        assert not [c for c in canaries if c.decode() in metadata], f"{tag}: a build secret in its metadata"
    started = time.monotonic()
    found, scanned = layer_findings(docker, built["runtime"], canaries)
    TIMINGS["seconds"]["secret_scan_runtime"] = round(time.monotonic() - started, 1)
    assert scanned > 10_000, f"only {scanned} files read from {built['runtime']}'s layers"
    assert found == [], f"{built['runtime']}: {found}"


def layer_findings(docker: images.Docker, tag: str, canaries: list[bytes]) -> tuple[list[str], int]:
    """(files that hold a canary or are named like a secret, files read) over every layer of `docker save`."""
    import tarfile

    found: list[str] = []
    scanned = 0
    process = subprocess.Popen([docker.client, "save", tag], stdout=subprocess.PIPE, env=docker.env())
    assert process.stdout is not None
    with tarfile.open(fileobj=process.stdout, mode="r|") as archive:
        for member in archive:
            layer = archive.extractfile(member) if member.isfile() else None
            if layer is None or not (member.name.endswith("layer.tar") or member.name.startswith("blobs/")):
                continue
            try:
                with tarfile.open(fileobj=layer, mode="r|") as files:
                    for entry in files:
                        name = entry.name.rsplit("/", 1)[-1]
                        if entry.isfile() and name in SECRET_FILE_NAMES:
                            found.append(f"{entry.name} (a secret's kind of file)")
                        handle = files.extractfile(entry) if entry.isfile() and entry.size < 4_000_000 else None
                        if handle is not None:
                            scanned += 1
                            data = handle.read()
                            found += [f"{entry.name} holds {c.decode()[:24]}..." for c in canaries if c in data]
            except tarfile.ReadError:  # the manifest and config blobs are JSON, not layers
                continue
    assert process.wait(timeout=600) == 0
    return found, scanned


def test_the_stack_learns_a_champion_and_trades_it_on_paper(stack: Stack) -> None:
    try:
        check_the_stack(stack)
    except BaseException:
        print(f"----- health: {stack.health()}\n{stack.logs(tail=150)}")  # shown with the failure
        raise


def check_the_stack(stack: Stack) -> None:
    # up: compose starts each service once its dependencies are healthy (or, for the one-shots, done)
    with timed("up"):
        stack.compose("up", "-d", "--no-build", timeout=900)
    with timed("up_to_healthy"):

        def all_healthy() -> bool:
            health = stack.health()
            return all(health.get(s) == "healthy" for s in LONG_RUNNING)

        try:
            wait_for("every service healthy", all_healthy, 300)
        except AssertionError as error:
            raise AssertionError(f"{error}: {stack.health()}") from None
    TIMINGS["seconds"]["up_total"] = round(TIMINGS["seconds"]["up"] + TIMINGS["seconds"]["up_to_healthy"], 1)
    health = stack.health()
    assert health["deploy"] == "exited:0" and health["s3-init"] == "exited:0", health

    # 1. the deployments are registered on the work pool, and a worker of the pool is online
    registered = deployments(stack)
    assert f"learn/{LEARN_DEPLOYMENT}" in registered, sorted(registered)
    refresh = [d for name, d in registered.items() if name.endswith((f"/refresh-{TIMEFRAME}", f"/ingest-{TIMEFRAME}"))]
    assert len(refresh) == 1, sorted(registered)
    assert {d["work_pool_name"] for d in registered.values()} == {"cta"}

    # the worker's health endpoint answers once it polls; its first heartbeat (what makes it ONLINE in the pool) can
    # come a few seconds later (seen in CI: healthy, no worker registered yet)
    def online() -> list[dict[str, Any]]:
        workers = http_json(f"{stack.prefect}/work_pools/cta/workers/filter", {})
        return [w for w in workers if w["status"] == "ONLINE"]

    wait_for("a worker of pool cta ONLINE", online, 90)

    # 2. candles into the S3 lake (and features), on the worker container
    refresh_settings = refresh[0]["parameters"]["settings"]
    refresh_settings["ingest"] |= INGEST_WINDOW
    with timed("refresh_run"):
        refresh_run = run_deployment(stack, refresh[0], {"settings": refresh_settings}, timeout_s=600)
    worker_log = stack.logs("prefect-worker", tail=500)
    assert refresh_run in worker_log, "the flow run was not run by the worker container"
    import boto3

    s3 = boto3.client("s3", endpoint_url=stack.s3_url, aws_access_key_id="testing", aws_secret_access_key="testing")
    lake = s3.list_objects_v2(Bucket="cta-lake", Prefix="candles/").get("Contents", [])
    assert any(o["Key"].endswith(".parquet") for o in lake), [o["Key"] for o in lake]

    # 3. the learning loop, one market, one candidate, tiny budgets, a lax gate and no costs: the mechanics, not the
    # thresholds (the same settings object a user would pass from the Prefect UI)
    learn = registered[f"learn/{LEARN_DEPLOYMENT}"]
    settings = learn["parameters"]["settings"]
    settings["ingest"] |= INGEST_WINDOW
    settings["backtest"]["gate"] = LAX_GATE
    settings["training"]["folds"] = 2
    settings["costs"] = NO_COSTS
    with timed("learn_run"):
        learn_run = run_deployment(
            stack, learn, {"settings": settings, "market_id": MARKET, "candidates": ["logistic"]}, timeout_s=900
        )
    assert learn_run in stack.logs("prefect-worker", tail=1000)

    # 4. the champion through the MLflow server's REST API; its artifacts, served by the server, are objects in S3
    query = urllib.parse.urlencode({"name": MODEL_NAME, "alias": "champion"})
    champion = http_json(f"{stack.mlflow}/api/2.0/mlflow/registered-models/alias?{query}")["model_version"]
    assert champion["version"] == "1" and champion["status"] == "READY", champion
    assert champion["source"].startswith("models:/"), champion
    model_id = champion["source"].removeprefix("models:/")
    model = http_json(f"{stack.mlflow}/api/2.0/mlflow/logged-models/{model_id}")["model"]["info"]
    artifact_uri = model["artifact_uri"]
    assert artifact_uri.startswith("mlflow-artifacts:/"), artifact_uri
    path = artifact_uri.removeprefix("mlflow-artifacts:").strip("/")
    files = http_json(f"{stack.mlflow}/api/2.0/mlflow-artifacts/artifacts?path={urllib.parse.quote(path)}")["files"]
    assert {"MLmodel", "python_model.pkl"} <= {f["path"] for f in files}, files
    with urllib.request.urlopen(f"{stack.mlflow}/api/2.0/mlflow-artifacts/artifacts/{path}/MLmodel", timeout=30) as r:
        assert b"python_function" in r.read()
    s3.head_object(Bucket="cta-mlflow", Key=f"{path}/MLmodel")  # the server wrote it to S3 (moto)
    tags = {t["key"]: t["value"] for t in champion.get("tags", [])}
    backtest = http_json(f"{stack.mlflow}/api/2.0/mlflow/artifacts/list?run_id={tags['backtest_run_id']}")
    TIMINGS["backtest_run_artifacts"] = sorted(f["path"] for f in backtest.get("files", []))
    assert TIMINGS["backtest_run_artifacts"], "the backtest run holds its report"

    # 5. the trader picks the champion up and trades it on paper against the exchange container
    def champion_loaded() -> bool:
        models = http_json(f"{stack.trader}/api/champion", token=stack.token)["models"]
        return bool(models.get(MARKET, {}).get("version") == champion["version"])

    with timed("trader_loads_champion"):
        wait_for("the trader to load the champion", champion_loaded, 180)

    def filled_orders() -> list[dict[str, Any]]:
        orders = http_json(f"{stack.trader}/api/orders?status=FILLED", token=stack.token)["orders"]
        return [o for o in orders if o["market"] == MARKET]

    with timed("trader_first_fill"):
        try:
            orders = wait_for("a filled paper order", filled_orders, 300, 3)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{stack.logs('trader', tail=100)}") from None
    assert orders[0]["symbol"] == SYMBOL and orders[0]["filled"] > 0, orders[0]
    equity = http_json(f"{stack.trader}/api/equity?market={urllib.parse.quote(MARKET)}", token=stack.token)["equity"]
    assert equity, "no equity snapshots"
    ready = http_json(f"{stack.trader}/readyz")
    assert ready == {"status": "ready"}, ready
    metrics = urllib.request.Request(f"{stack.trader}/metrics", headers={"Authorization": f"Bearer {stack.token}"})
    with urllib.request.urlopen(metrics, timeout=10) as response:
        assert b"cta_" in response.read()
    # the dashboard is in the trader's image, served from the API's origin, and API v1 answers behind it; the
    # dashboard's own container serves the same over the trader's database (the orders the trader wrote)
    for origin in (stack.trader, stack.dashboard):
        with urllib.request.urlopen(f"{origin}/", timeout=10) as response:
            assert b'<div id="root">' in response.read()
        overview = http_json(f"{origin}/api/v1/overview", token=stack.token)
        assert overview["markets"][0]["orders"] >= 1, (origin, overview)
    page = http_json(f"{stack.dashboard}/api/v1/orders?limit=50", token=stack.token)
    assert {o["client_order_id"] for o in page["items"]} & {o["client_order_id"] for o in orders}, page
    TIMINGS["trader_orders_filled"] = len(orders)
