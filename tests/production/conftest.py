"""Fixtures of the production profile's MLflow set-up: a tracking server (`python -m mlflow server`) on a fresh
PostgreSQL database, serving artifacts it keeps in an S3 bucket on moto, and the proxies the fault tests put in
front of PostgreSQL and the tracking server to take them away and bring them back.

- `postgres_admin_url`: the machine's PostgreSQL (skips when none answers).
- `fresh_database(admin_url, purpose)`: a new database for one run (unique name), dropped afterwards.
- `MlflowServer`: one `mlflow server` subprocess (start on a port, wait for /health, stop); only this process gets
  the S3 endpoint and credentials: clients get the tracking URL and nothing else.
- `mlflow_stack` (module scope): database + bucket + a started server, all torn down after the module.
- `TcpProxy`: a TCP relay (e.g. in front of 127.0.0.1:5432) that can stop listening, cutting every connection.
- `HttpFaultProxy`: an HTTP relay in front of the tracking server that can drop chosen requests or go down.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, ClientTimeout, web

from tests.conftest import free_port, postgres_database

POSTGRES_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"  # trust auth, as tests.conftest's
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
# What no client of the tracking server may need: the tests remove these from the client side.
STORAGE_ENV_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "MLFLOW_S3_ENDPOINT_URL",
)
SERVER_START_TIMEOUT_S = 90.0


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """The machine's PostgreSQL (user postgres, database test); a production test fails (never skips) when it
    does not answer: the production profile needs it."""
    from serving.db import database_available, make_engine

    engine = make_engine(POSTGRES_ADMIN_URL)
    try:
        if database_available(engine):
            return POSTGRES_ADMIN_URL
    finally:
        engine.dispose()
    pytest.fail("no PostgreSQL on 127.0.0.1:5432 (start it: see docs/setup.md)")


@contextlib.contextmanager
def fresh_database(admin_url: str, purpose: str) -> Iterator[str]:
    """A new, empty database `cta_<purpose>_<random>` (tests.conftest.postgres_database); yields its URL (the
    admin URL's user and server); dropped after, with whatever still holds a connection to it."""
    from sqlalchemy.engine import make_url

    with postgres_database(f"cta_{purpose}") as name:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client on moto with explicit test credentials (never from the environment)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


@dataclass
class MlflowServer:
    """`python -m mlflow server` with a PostgreSQL backend store and artifacts served from S3 (moto)."""

    backend_uri: str
    artifacts_destination: str  # s3://bucket/prefix
    s3_endpoint: str
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The server's environment: the only process that gets the S3 endpoint and credentials."""
        base = {k: v for k, v in os.environ.items() if k not in STORAGE_ENV_VARS and not k.startswith("CTA_")}
        return {
            **base,
            **S3_CREDENTIALS,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
        }

    def start(self, wait: bool = True) -> MlflowServer:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("the MLflow server is already running")
        command = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            self.backend_uri,
            "--artifacts-destination",
            self.artifacts_destination,
            "--serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(command, env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if wait:
            self.wait_healthy()
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def wait_healthy(self, timeout_s: float = SERVER_START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.healthy():
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"the MLflow server exited: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the MLflow server did not answer /health in {timeout_s:.0f} s: {self.log_tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; a no-op when not running."""
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def log_tail(self, chars: int = 3000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-chars:]


@dataclass
class MlflowStack:
    server: MlflowServer
    database_url: str
    s3_endpoint: str
    bucket: str
    prefix: str

    def objects(self) -> list[str]:
        """Every object key the server wrote to the bucket (under its prefix)."""
        client = s3_client(self.s3_endpoint)
        keys: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return keys


@contextlib.contextmanager
def mlflow_stack_for(postgres_admin_url: str, moto_s3: str, work: Path, purpose: str) -> Iterator[MlflowStack]:
    """A fresh database, a fresh bucket, and a started server on them; stopped and dropped afterwards."""
    bucket = f"cta-mlflow-{uuid.uuid4().hex[:10]}"
    s3_client(moto_s3).create_bucket(Bucket=bucket)
    with fresh_database(postgres_admin_url, purpose) as database_url:
        server = MlflowServer(database_url, f"s3://{bucket}/artifacts", moto_s3, work / f"mlflow-server-{purpose}.log")
        try:
            server.start()
            yield MlflowStack(server, database_url, moto_s3, bucket, "artifacts")
        finally:
            server.stop()


@pytest.fixture(scope="module")
def mlflow_stack(
    postgres_admin_url: str, moto_s3: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowStack]:
    """One tracking server per test module: PostgreSQL backend (a fresh database), artifacts in a fresh moto
    bucket served through the server."""
    work = tmp_path_factory.mktemp("mlflow-stack")
    with mlflow_stack_for(postgres_admin_url, moto_s3, work, "mlflow") as stack:
        yield stack


@pytest.fixture
def no_storage_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """This process as a client of the tracking server: no S3 endpoint, no AWS credentials (not even a file
    boto3 could find), so any direct storage access would fail."""
    for name in STORAGE_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


class _LoopThread:
    """An asyncio event loop in a daemon thread, for servers the (synchronous) tests drive."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Any, timeout_s: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class TcpProxy:
    """A TCP relay on 127.0.0.1:`port` to `upstream`. `up()` listens; `down()` stops listening and cuts every
    relayed connection (what clients see when the server behind it goes away)."""

    def __init__(self, upstream_host: str, upstream_port: int, port: int | None = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = port or free_port()
        self._loops = _LoopThread()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            return
        self.connections += 1
        self._writers |= {client_writer, upstream_writer}
        try:
            await asyncio.gather(self._pipe(client_reader, upstream_writer), self._pipe(upstream_reader, client_writer))
        finally:
            self._writers -= {client_writer, upstream_writer}

    async def _up(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port, reuse_address=True)

    async def _down(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def up(self) -> None:
        self._loops.run(self._up())

    def down(self) -> None:
        self._loops.run(self._down())

    def close(self) -> None:
        self.down()
        self._loops.close()


@dataclass
class Fault:
    """Requests matching `method` and a path containing `path_part`: from the `nth` match on, `count` of them
    are dropped (the connection is cut, the request never reaches the server); with `then_down` the proxy also
    goes down at the first drop (the server "dies" there) until `HttpFaultProxy.up()`."""

    method: str
    path_part: str
    nth: int = 1
    count: int = 1
    then_down: bool = False
    seen: int = 0
    dropped: int = 0


class HttpFaultProxy:
    """An HTTP relay in front of the tracking server: every request is forwarded unless a `Fault` drops it.
    `requests` records (method, path, outcome) for every request it saw."""

    def __init__(self, upstream: str, port: int | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = port or free_port()
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, str]] = []
        self.is_down = False
        self._loops = _LoopThread()
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _fault_for(self, request: web.Request) -> Fault | None:
        for fault in self.faults:
            if request.method == fault.method and fault.path_part in request.path:
                fault.seen += 1
                if fault.seen >= fault.nth and fault.dropped < fault.count:
                    fault.dropped += 1
                    return fault
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fault = None if self.is_down else self._fault_for(request)
        if self.is_down or fault is not None:
            self.requests.append((request.method, request.path, "dropped"))
            if fault is not None and fault.then_down:
                self.is_down = True
                asyncio.get_running_loop().create_task(self._stop_listening())
            if request.transport is not None:
                request.transport.abort()
            raise ConnectionResetError("dropped by the fault proxy")
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in {"host", "content-length"}}
        async with self._session.request(
            request.method, f"{self.upstream}{request.path_qs}", data=body, headers=headers
        ) as answer:
            payload = await answer.read()
            self.requests.append((request.method, request.path, str(answer.status)))
            skip = {"content-length", "transfer-encoding", "connection"}
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in skip}
            return web.Response(status=answer.status, body=payload, headers=kept)

    async def _start_listening(self) -> None:
        if self._session is None:
            self._session = ClientSession(timeout=ClientTimeout(total=120), auto_decompress=False)
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True).start()
        self._runner = runner

    async def _stop_listening(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def up(self) -> None:
        """Listen (again) and forward."""
        self.is_down = False
        self._loops.run(self._start_listening())

    def down(self) -> None:
        """Stop listening: connections are refused, as when the server is not running."""
        self.is_down = True
        self._loops.run(self._stop_listening())

    def close(self) -> None:
        async def shutdown() -> None:
            await self._stop_listening()
            if self._session is not None:
                await self._session.close()

        self._loops.run(shutdown())
        self._loops.close()
