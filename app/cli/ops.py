"""CLI commands for operating CTA: scheduled flows on a Prefect server, the effective configuration,
and the demo (the main job on embedded defaults)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from urllib.parse import urlparse

import typer

from app.cli import render
from app.cli.root import cli, config_app, console, flows_app, settings_of, with_serving
from cta.errors import CTAError


@flows_app.command("serve")
def flows_serve(ctx: typer.Context) -> None:
    """Serve the scheduled deployments: ingestion per timeframe, and each market's learning loop (features ->
    train -> backtest -> gate -> promote) on prefect.learn_cron. Starts a local Prefect server unless
    prefect.api_url / PREFECT_API_URL points at one. Ctrl-C stops."""
    from app.prefect_server import prefect_healthy, start_prefect_server

    settings = settings_of(ctx)
    # Ctrl-C must stop serving even when the command was started where SIGINT is ignored (a background job of
    # a non-interactive shell, e.g. CI's): Python then never installs its KeyboardInterrupt handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    api_url = os.environ.get("PREFECT_API_URL") or settings.prefect.api_url
    server = None
    if not api_url or not prefect_healthy(api_url):
        if api_url and urlparse(api_url).hostname not in ("127.0.0.1", "localhost"):
            raise CTAError(f"Prefect API at {api_url} is not reachable")
        server, api_url = start_prefect_server(settings.prefect.server_port, settings.paths.data_dir / "prefect")
    os.environ["PREFECT_API_URL"] = api_url  # Prefect's client reads its server from the environment
    console.print(f"Prefect UI: {api_url.removesuffix('/api')}  (Ctrl-C stops serving)")
    try:
        from prefect import serve

        from flows.deployments import all_deployments

        serve(*all_deployments(settings))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)


@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """Print the effective configuration (secrets only as set/unset) and its hash."""
    settings = settings_of(ctx)
    secrets = {
        name: ("set" if getattr(settings.secrets, name) else "unset") for name in type(settings.secrets).model_fields
    }
    console.print_json(
        json.dumps({"config_hash": settings.config_hash(), "settings": settings.public_dict(), "secrets": secrets})
    )


@cli.command()
def demo(ctx: typer.Context) -> None:
    """The main job on embedded defaults: the local exchange replaying real candles, the whole pipeline
    (ingest → validate → features → train → backtest → gate → promote) as one Prefect flow, then the
    worker paper-trading each market's champion on the replay clock for `serving.max_bars` candles."""
    from app.demo import local_exchange_for
    from app.serve import serve as run_serving
    from cta.components import make_lake
    from cta.lake import summarize
    from flows.pipeline import pipeline_flow

    settings = settings_of(ctx)
    with local_exchange_for(settings, console.print):
        result = asyncio.run(pipeline_flow(settings))
        render.print_ingest(result["ingest"])
        lake = make_lake(settings)
        render.print_lake_summary(lake.uri, summarize(lake.manifests()))
        render.print_features(result["features"])
        render.print_training(result["training"])
        render.print_verdicts(result["verdicts"])
        if settings.serving.max_bars is None:
            settings = with_serving(settings, max_bars=48)
        console.print(f"paper trading the champions for {settings.serving.max_bars} candles on the replay clock ...")
        render.print_serving(asyncio.run(run_serving(settings)))
    console.print(
        f"Models: `.venv/bin/mlflow ui --backend-store-uri {settings.training.tracking_uri}` "
        "then http://127.0.0.1:5000 (each backtest run holds its equity plot and report); `cta models list`"
    )
    console.print(
        f"Runs: `cta flows serve` starts the Prefect server; UI at http://127.0.0.1:{settings.prefect.server_port}"
    )
    console.print(
        "Trading: `cta serve` runs the worker with its API (GET /healthz, /readyz, /metrics, /api/positions, "
        "/api/orders, /api/equity, /api/champion; token from CTA_API_TOKEN) on 127.0.0.1:8780; "
        "`cta ledger verify`; `cta kill-switch halt --reason ...`"
    )
