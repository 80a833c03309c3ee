"""CLI commands for trading: the worker and the kill switch (the ledger's commands are in `app.cli.ledger`)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from app.cli import render
from app.cli.root import cli, console, settings_of, with_serving
from cta.config import Settings
from cta.errors import CTAError
from cta.logs import printable


@cli.command()
def serve(
    ctx: typer.Context,
    bars: Annotated[int | None, typer.Option("--bars", help="Stop after this many candles per market.")] = None,
) -> None:
    """Trade the champion of each configured market on every newly closed candle (paper by default).
    Ctrl-C stops; state is reconciled at the next start."""
    from app.serve import serve as run_serving

    settings = settings_of(ctx)
    if bars is not None:
        settings = with_serving(settings, max_bars=bars)
    render.print_serving(asyncio.run(run_serving(settings)))


@cli.command("dashboard")
def dashboard(ctx: typer.Context) -> None:
    """Serve the dashboard and its API over the paper/live account without trading (the demo's account after
    `make demo`): http://serving.api_host:serving.api_port/, token from CTA_VIEWER_TOKEN or CTA_API_TOKEN."""
    from app.serve import serve_dashboard

    asyncio.run(serve_dashboard(settings_of(ctx)))


def serving_sessions(settings: Settings, read_only: bool = False) -> Any:
    """Sessions on the serving database (migrated to the newest schema first)."""
    from app.serve import database_url
    from serving.db import make_engine, session_factory, upgrade

    engine = make_engine(database_url(settings))
    upgrade(engine)
    return session_factory(engine, read_only=read_only)


@cli.command("kill-switch")
def kill_switch(
    ctx: typer.Context,
    state: Annotated[str, typer.Argument(help="halt (no orders), reduce (exits only) or resume.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the ledger).")],
    cancel_open: Annotated[bool, typer.Option("--cancel-open", help="With halt: also cancel open orders.")] = False,
) -> None:
    """Set the persisted trading state; a running worker obeys it at its next candle, a restarted one too."""
    from serving.control import TradingState, checked_reason, set_trading_state

    states = {"halt": TradingState.HALTED, "reduce": TradingState.REDUCING, "resume": TradingState.RUNNING}
    if state not in states:
        raise CTAError(f"kill-switch state must be one of {', '.join(states)}, not {printable(state)!r}")
    reason = checked_reason(reason)  # the API's check: refused before the database is opened
    sessions = serving_sessions(settings_of(ctx))
    snapshot = set_trading_state(sessions, states[state], reason, "cli", cancel_open=cancel_open)
    console.print(f"trading state: {snapshot.state} ({snapshot.reason})", markup=False)
