"""CLI commands for market data: the local exchange, ingestion, the lake audit and the lake summary."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli import render
from app.cli.root import SymbolOpt, TimeframeOpt, cli, exchange_app, flow_settings, lake_app, settings_of
from cta.config import with_overrides
from cta.errors import CTAError


@exchange_app.command("serve")
def exchange_serve(
    ctx: typer.Context,
    data_dir: Annotated[Path | None, typer.Option(help="Directory of candle files (default: bundled).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (0 = any free port).")] = None,
    speed: Annotated[float | None, typer.Option(help="Market seconds per wall second (0 = frozen).")] = None,
    start: Annotated[str | None, typer.Option(help="Replay start, ISO-8601 UTC or epoch ms.")] = None,
    latency_ms: Annotated[int | None, typer.Option(help="Fault: added latency per request.")] = None,
    error_rate: Annotated[float | None, typer.Option(help="Fault: share of requests answered 503.")] = None,
    timeout_rate: Annotated[float | None, typer.Option(help="Fault: share of requests that hang.")] = None,
    drop_rate: Annotated[float | None, typer.Option(help="Fault: share of orders executed but unanswered.")] = None,
) -> None:
    """Run the local exchange (Binance and Coinbase dialects), replaying real candles (Ctrl-C stops it)."""
    from cta.exchange_server.runner import serve_forever

    updates = {
        k: str(v) if isinstance(v, Path) else v
        for k, v in {"data_dir": data_dir, "port": port, "speed": speed, "start": start}.items()
        if v is not None
    }
    faults = {
        k: v
        for k, v in {
            "latency_ms": latency_ms,
            "error_rate": error_rate,
            "timeout_rate": timeout_rate,
            "drop_after_execute_rate": drop_rate,
        }.items()
        if v is not None
    }
    # Validated like the files: an invalid option is refused naming the field (local_exchange.*).
    settings = with_overrides(settings_of(ctx), {"local_exchange": {**updates, "faults": faults}})
    secrets = settings.secrets
    serve_forever(
        settings.local_exchange,
        api_key=secrets.api_key.get_secret_value() if secrets.api_key else None,
        api_secret=secrets.api_secret.get_secret_value() if secrets.api_secret else None,
        # The replay window clients will ask for: the configured markets, from ingest.start to the replay start.
        history_start_ms=settings.ingest.start_ms,
        markets=[(s, tf) for s in settings.markets.symbols for tf in settings.markets.timeframes],
    )


@cli.command()
def ingest(
    ctx: typer.Context,
    symbol: SymbolOpt = None,
    timeframe: TimeframeOpt = None,
    start: Annotated[str | None, typer.Option(help="Backfill start (ISO-8601 UTC); default from config.")] = None,
    end: Annotated[str | None, typer.Option(help="Backfill end, exclusive; default: newest closed candle.")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Backfill or resume candles from the configured venue into the lake (a Prefect flow run)."""
    settings = flow_settings(ctx)  # first: Prefect must be imported after its server is chosen
    from flows.ingest import ingest_flow

    window: dict[str, Any] = {k: v for k, v in {"start": start, "end": end}.items() if v is not None}
    if window:
        settings = with_overrides(settings, {"ingest": window})
    reports = asyncio.run(ingest_flow(settings, symbols=symbol, timeframes=timeframe, show_progress=progress))
    render.print_ingest(reports)


@cli.command()
def validate(ctx: typer.Context, symbol: SymbolOpt = None, timeframe: TimeframeOpt = None) -> None:
    """Re-check stored candles: the "candles" suite, manifest hashes, and gaps."""
    from cta.clock import SystemClock
    from cta.components import make_lake
    from cta.lake_audit import audit_lake

    settings = settings_of(ctx)
    lake = make_lake(settings)
    audits = audit_lake(
        lake,
        SystemClock().now_ms(),
        settings.validation.results_dir,
        symbol,
        timeframe,
        max_close_jump=settings.validation.max_close_jump,
    )
    render.print_audit(lake.uri, audits)
    if not all(a.passed for a in audits):
        raise CTAError(
            f"validation failed (details above; GX results under {settings.validation.results_dir / 'candles'})"
        )


@lake_app.command("show")
def lake_show(ctx: typer.Context) -> None:
    """Summarise the lake: markets, partitions, rows, first/last candle, and each market's status: every
    partition is checked against its manifest (the same check every reader of the lake makes)."""
    from cta.components import make_lake
    from cta.lake import summarize_status

    lake = make_lake(settings_of(ctx))
    statuses = lake.partition_status()
    render.print_lake_summary(lake.uri, summarize_status(statuses))
    corrupt = [s for s in statuses if s.problem]
    if corrupt:
        first = corrupt[0]
        raise CTAError(
            f"{len(corrupt)} corrupt lake partition(s), e.g. {first.market} {first.month}: {first.problem}; "
            "nothing will read them (see the status column)"
        )
