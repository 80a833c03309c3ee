"""CLI commands for operating CTA: scheduled flows on a Prefect server, the effective configuration,
and the demo (the main job on embedded defaults)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from typing import Annotated

import typer

from app.cli import render
from app.cli.root import cli, config_app, console, flows_app, settings_of, use_prefect
from cta.config import Settings, with_overrides
from cta.errors import CTAError


@flows_app.command("serve")
def flows_serve(ctx: typer.Context) -> None:
    """Serve the scheduled deployments in this process: per timeframe, refresh (ingest, then features) after
    each candle closes; per market, the learning loop (features -> train -> backtest -> gate -> promote) on
    prefect.learn_cron. Uses the local Prefect server (started if needed) unless prefect.api_url / PREFECT_API_URL
    names another. Ctrl-C stops. For separate worker processes, see `cta flows deploy` and `cta flows worker`."""
    settings = settings_of(ctx)
    # Ctrl-C must stop serving even when the command was started where SIGINT is ignored (a background job of
    # a non-interactive shell, e.g. CI's): Python then never installs its KeyboardInterrupt handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    api_url = require_prefect_server(settings)
    console.print(f"Prefect UI: {api_url.removesuffix('/api')}  (Ctrl-C stops serving)")
    from prefect import serve

    from flows.deployments import all_deployments

    serve(*all_deployments(settings))


@flows_app.command("deploy")
def flows_deploy(ctx: typer.Context) -> None:
    """Register the scheduled deployments on the work pool prefect.work_pool (created if missing) of the Prefect
    server, for `cta flows worker` processes to run; then exit. Registering again updates them."""
    from flows.deployments import register

    settings = settings_of(ctx)
    api_url = require_prefect_server(settings)
    names = register(settings)
    console.print(f"{len(names)} deployments on work pool {settings.prefect.work_pool!r}: {', '.join(names)}")
    console.print(f"Prefect UI: {api_url.removesuffix('/api')}/deployments ; start workers with `cta flows worker`")


@flows_app.command("worker")
def flows_worker(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="Flow runs this worker runs at once.")] = 1,
) -> None:
    """A Prefect worker on the work pool prefect.work_pool: it runs each scheduled or on-demand flow run of the
    registered deployments in a process of its own (with heartbeats, so a run whose process dies is marked
    Crashed). Start as many as you like, on any machine that reaches the Prefect server."""
    settings = settings_of(ctx)
    api_url = require_prefect_server(settings)
    env = {**os.environ, "PREFECT_API_URL": api_url}  # with the heartbeat frequency set by apply_offline_env
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", settings.prefect.work_pool]
    command += ["--type", "process", "--limit", str(limit)]
    console.print(f"Prefect worker on pool {settings.prefect.work_pool!r} of {api_url}")
    sys.stdout.flush()
    os.execve(sys.executable, command, env)  # noqa: S606  the worker replaces this process (signals reach it)


def require_prefect_server(settings: Settings) -> str:
    """The API of a real Prefect server (schedules and work pools need one; Prefect's temporary one won't do)."""
    from app.local_servers import prefect_api_url

    api_url = prefect_api_url(with_overrides(settings, {"prefect": {"local_server": "persistent"}}))
    if api_url is None:  # pragma: no cover - a persistent server always has a URL
        raise CTAError("no Prefect server")
    return api_url


@cli.command()
def up(ctx: typer.Context) -> None:
    """Start (or find running) the local Prefect server and MLflow UI, and print where to look. They keep
    running after this command; `cta down` stops them."""
    from app.local_servers import mlflow_ui

    settings = settings_of(ctx)
    prefect_url = require_prefect_server(settings).removesuffix("/api")
    console.print(f"Prefect UI (runs, deployments, work pool): {prefect_url}")
    console.print(f"MLflow UI (models, backtests, verdicts):   {mlflow_ui(settings)}")


@cli.command()
def down(ctx: typer.Context) -> None:
    """Stop the local Prefect server and MLflow UI that this data dir's commands started."""
    from app.local_servers import mlflow_home, prefect_home, stop

    settings = settings_of(ctx)
    for home in (prefect_home(settings), mlflow_home(settings)):
        server = stop(home)
        if server is not None:
            console.print(f"stopped {server.name} (pid {server.pid}, {server.url})")
        else:
            console.print(f"no server recorded under {home}")


@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """Print the effective configuration (secrets only as set/unset, passwords in URLs masked), its hash, whether
    the promotion gate is on, and any warnings."""
    settings = settings_of(ctx)
    secrets = {
        name: ("set" if getattr(settings.secrets, name) else "unset") for name in type(settings.secrets).model_fields
    }
    gate = settings.backtest.gate
    shown = {
        "config_hash": settings.config_hash(),
        "settings": settings.shown_dict(),
        "secrets": secrets,
        "gate": {"status": "off" if gate.is_off else "on", "checks_off": list(gate.checks_off())},
        "warnings": settings.warnings(),
    }
    console.print_json(json.dumps(shown))


@cli.command()
def demo(ctx: typer.Context) -> None:
    """The main job on embedded defaults: the local exchange replaying real candles, the whole pipeline
    (ingest → validate → features → train → backtest → gate → promote) as one Prefect flow, then the
    worker paper-trading each market's champion on a new paper account for `serving.max_bars` candles (longer
    while a champion has no fill yet), on the replay clock moved candle by candle; it ends with the orders and
    fills per market and where to look."""
    settings = settings_of(ctx)
    prefect_api = use_prefect(settings)  # first: Prefect must be imported after its server is chosen
    from app.demo import local_exchange_for, paper_session
    from app.local_servers import mlflow_ui
    from cta.components import make_lake
    from cta.lake import summarize
    from flows.pipeline import pipeline_flow

    with local_exchange_for(settings, console.print) as exchange:
        result = asyncio.run(pipeline_flow(settings))
        render.print_ingest(result["ingest"])
        lake = make_lake(settings)
        render.print_lake_summary(lake.uri, summarize(lake.manifests()))
        render.print_features(result["features"])
        render.print_training(result["training"])
        if settings.backtest.gate.is_off:
            console.print(
                "[bold red]the promotion gate is OFF[/] (every threshold refuses nothing): see `cta config show`"
            )
        render.print_gate(settings.backtest.gate, settings.profile)
        render.print_verdicts(result["verdicts"])
        session = asyncio.run(paper_session(settings, exchange, console.print))
        render.print_serving(session.rows)
        render.print_paper_orders(session.orders)
    render.print_trading_summary(session)
    profile = "" if settings.profile == "default" else f"--profile {settings.profile} "
    console.print("\n[bold]Where to look[/bold] (the UIs keep running; `cta down` stops them):")
    console.print(
        f"  Orders and fills: {session.database} (tables orders, fills, decisions); `cta {profile}ledger verify` "
        "checks their hash-chained ledger",
        highlight=False,
    )
    if prefect_api:
        runs = f"{prefect_api.removesuffix('/api')}/runs"
        console.print(f"  Runs (Prefect UI): {runs}  (this demo's flow runs, their subflows and tasks)")
    console.print(
        f"  Models (MLflow UI): {mlflow_ui(settings)}  (candidates, backtest reports and equity plots, verdicts); "
        "`cta models list`"
    )
    console.print(
        f"  Dashboard: `export CTA_API_TOKEN=$(openssl rand -hex 16); cta {profile}dashboard`, then open "
        f"http://{settings.serving.api_host}:{settings.serving.api_port}/ and log in with that token (overview, "
        "trades with their decisions, chart, performance, models, data quality, controls, ledger); "
        f"`cta {profile}serve` shows the same while it trades",
        highlight=False,
    )
    console.print(
        f"  Trading: `cta {profile}serve` runs the worker on this paper account with its API (GET /healthz, /readyz, "
        "/metrics, /api/positions, /api/orders, /api/equity, /api/champion; token from CTA_API_TOKEN; address "
        "serving.api_host:serving.api_port, logged at start); `cta kill-switch halt --reason ...`"
    )
    console.print(
        f"  Report: `cta {profile}report` (per market: the gate's candidates after costs beside buy-and-hold and "
        "flat, verdicts and reasons; the champion live against its backtest), Markdown and PNG"
    )
    console.print("  Schedules: `cta flows serve`, or `cta flows deploy` + `cta flows worker` (same Prefect server)")
