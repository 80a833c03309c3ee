"""The `cta` command tree: the root command (settings built once, logging, offline environment), its
command groups, the options shared by several commands, and the console they print to."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

from cta.config import Settings, load_settings

console = Console(width=None if sys.stdout.isatty() else 160)

cli = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="CTA: ingest, validate, build features, train, backtest-gate and trade crypto.",
)
exchange_app = typer.Typer(no_args_is_help=True, help="The local Binance-compatible exchange server.")
lake_app = typer.Typer(no_args_is_help=True, help="The candle lake.")
flows_app = typer.Typer(no_args_is_help=True, help="Prefect flows and scheduled deployments.")
features_app = typer.Typer(no_args_is_help=True, help="Features: the registry, the feature tables, Feast.")
config_app = typer.Typer(no_args_is_help=True, help="Configuration.")
ledger_app = typer.Typer(
    no_args_is_help=True,
    help="The ledger of promotions, decisions, orders, fills: a Merkle log, signed checkpoints, proofs.",
)
models_app = typer.Typer(no_args_is_help=True, help="Models in the MLflow registry: verdicts, champion, rollback.")
cli.add_typer(exchange_app, name="exchange")
cli.add_typer(lake_app, name="lake")
cli.add_typer(flows_app, name="flows")
cli.add_typer(features_app, name="features")
cli.add_typer(config_app, name="config")
cli.add_typer(models_app, name="models")
cli.add_typer(ledger_app, name="ledger")

SymbolOpt = Annotated[list[str] | None, typer.Option("--symbol", "-s", help="Symbol, e.g. BTC/USDT (repeatable).")]
CandidateOpt = Annotated[
    list[str] | None, typer.Option("--candidate", "-c", help="Family: logistic, gbm, keras, ppo (repeatable).")
]
TimeframeOpt = Annotated[list[str] | None, typer.Option("--timeframe", "-t", help="Timeframe, e.g. 1h (repeatable).")]


@cli.callback()
def _setup(
    ctx: typer.Context,
    profile: Annotated[
        str | None,
        typer.Option("--profile", "-p", envvar="CTA_PROFILE", help="Config profile: default, production, ..."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Build the settings once (files, profile, CTA_* environment, CLI options); every command and the
    flows it runs use this object."""
    ctx.obj = entry_point_settings(profile, verbose)


def entry_point_settings(profile: str | None, verbose: bool = False) -> Settings:
    """What a `cta` process does first: build the settings (files, profile, CTA_* environment, secrets,
    --verbose), then set the offline process environment and configure logging from them."""
    from app.runtime_env import apply_offline_env
    from cta.logs import configure_logging

    overrides = {"logging": {"level": "DEBUG"}} if verbose else None
    settings = load_settings(profile, overrides=overrides)
    apply_offline_env(settings.paths.data_dir)
    configure_logging(settings.logging, settings.paths.logs_dir, settings.secrets.values())
    settings.log_warnings()  # e.g. the promotion gate switched off: a WARNING in the log and on stderr
    return settings


def use_prefect(settings: Settings) -> str | None:
    """Point this process's flow runs at the Prefect server the settings name (the data dir's local server,
    started on first use, by default); its API URL, or None for Prefect's temporary server ("ephemeral")."""
    from app.local_servers import prefect_api_url

    return prefect_api_url(settings)


def settings_of(ctx: typer.Context) -> Settings:
    """The settings the root command built."""
    settings: Settings = ctx.obj
    return settings


def flow_settings(ctx: typer.Context) -> Settings:
    """The settings, for a command that runs flows: with this process's flow runs pointed at the Prefect
    server (`use_prefect`)."""
    settings = settings_of(ctx)
    use_prefect(settings)
    return settings


def with_serving(settings: Settings, **updates: object) -> Settings:
    """`settings` with some `serving.*` fields replaced (e.g. max_bars from --bars)."""
    from cta.config import with_overrides

    return with_overrides(settings, {"serving": dict(updates)})
