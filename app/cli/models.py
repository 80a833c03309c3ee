"""CLI commands for the learning side: features, training, the whole pipeline, and the model registry
(list, show, operator promotion and rollback)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli import render
from app.cli.root import (
    CandidateOpt,
    SymbolOpt,
    TimeframeOpt,
    cli,
    console,
    features_app,
    flow_settings,
    models_app,
    settings_of,
)
from cta.config import Settings
from cta.errors import CTAError
from cta.logs import printable

if TYPE_CHECKING:
    from cta.lake import Market


@features_app.command("list")
def features_list() -> None:
    """The feature registry: name, warm-up bars, bounds, description."""
    from rich.table import Table

    from features.registry import FEATURES, registry_version

    table = Table(title=f"feature registry (version {registry_version()})")
    for column in ("name", "warm-up", "bounds", "description"):
        table.add_column(column)
    for spec in FEATURES:
        bounds = "" if spec.lower is None and spec.upper is None else f"[{spec.lower}, {spec.upper}]"
        table.add_row(spec.name, str(spec.warmup), bounds, spec.description)
    console.print(table)


@features_app.command("build")
def features_build(ctx: typer.Context, symbol: SymbolOpt = None, timeframe: TimeframeOpt = None) -> None:
    """Compute, gate and write the feature tables, then materialise Feast's online store (a flow run)."""
    settings = flow_settings(ctx)  # first: Prefect must be imported after its server is chosen
    from flows.features import features_flow

    render.print_features(features_flow(settings, symbols=symbol, timeframes=timeframe))


@cli.command()
def train(
    ctx: typer.Context,
    symbol: SymbolOpt = None,
    timeframe: TimeframeOpt = None,
    candidate: CandidateOpt = None,
) -> None:
    """Train the candidate families on point-in-time features; log and register them in MLflow."""
    settings = flow_settings(ctx)  # first: Prefect must be imported after its server is chosen
    from flows.train import train_flow

    render.print_training(train_flow(settings, symbols=symbol, timeframes=timeframe, candidates=candidate))


@cli.command()
def pipeline(
    ctx: typer.Context,
    symbol: SymbolOpt = None,
    timeframe: TimeframeOpt = None,
    candidate: CandidateOpt = None,
) -> None:
    """The whole pipeline as one Prefect flow: ingest → validate → features → train → backtest → gate →
    promote. Prints the verdict of every candidate."""
    settings = flow_settings(ctx)  # first: Prefect must be imported after its server is chosen
    from flows.pipeline import pipeline_flow

    result = asyncio.run(pipeline_flow(settings, symbols=symbol, timeframes=timeframe, candidates=candidate))
    render.print_verdicts(result["verdicts"])


@cli.command()
def report(
    ctx: typer.Context,
    symbol: SymbolOpt = None,
    timeframe: TimeframeOpt = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for report.md and its PNGs (default: <data_dir>/reports/<time>)."),
    ] = None,
) -> None:
    """Per market: every candidate of the newest gate after costs beside buy-and-hold and flat, deflated Sharpe
    and trial count, verdicts and reasons; the champion's live record against its backtest. Markdown and PNG."""
    from datetime import UTC, datetime

    from app.report import build_report
    from cta.components import configured_markets

    settings = settings_of(ctx)
    folder = out or settings.paths.data_dir / "reports" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    with _registry_errors(settings):
        try:
            path = build_report(settings, configured_markets(settings, symbol, timeframe), folder)
        except OSError as e:
            raise CTAError(f"the report cannot be written to {folder}: {e.strerror or e}") from e
    console.print(path.read_text(), markup=False, highlight=False)
    console.print(f"[bold]report:[/] {path}")


def _one_market(settings: Settings, symbols: list[str] | None, timeframes: list[str] | None) -> Market:
    from cta.components import configured_markets

    markets = configured_markets(settings, symbols, timeframes)
    if len(markets) != 1:
        raise CTAError(f"choose one market with --symbol and --timeframe (configured: {', '.join(map(str, markets))})")
    return markets[0]


def _registry(settings: Settings) -> Any:
    from mlflow import MlflowClient

    from cta.registry import configure_mlflow

    configure_mlflow(settings)
    return MlflowClient()


@contextlib.contextmanager
def _registry_errors(settings: Settings) -> Iterator[None]:
    """A registry that cannot be read (a damaged tracking database, a server that fails) is one CTAError naming
    it, not an unexpected error; CTA's own errors pass unchanged."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    from cta.config import mask_url_password

    try:
        yield
    except (MlflowException, SQLAlchemyError) as e:
        cause = str(getattr(e, "orig", None) or e).strip().splitlines()
        uri = mask_url_password(settings.training.tracking_uri)
        raise CTAError(
            f"the model registry {uri} cannot be read ({type(e).__name__}: {cause[0] if cause else ''})"
        ) from e


def _loadable(client: Any, name: str, version: str) -> None:
    """Load VERSION's artifact as the worker will (before an operator move gives it the champion alias), or
    CTAError: a version whose files are missing, truncated or garbage is never made champion by hand."""
    from serving.models_manager import load_version

    try:
        load_version(client, name, version)
    except Exception as e:  # any failure to load: the artifact is unusable
        from app.cli import one_line

        raise CTAError(
            f"{name} v{version} cannot be loaded ({type(e).__name__}: {one_line(str(e), 300)}): not moved"
        ) from e


@models_app.command("list")
def models_list(ctx: typer.Context, symbol: SymbolOpt = None, timeframe: TimeframeOpt = None) -> None:
    """Every registered version per market, newest first: family, aliases, verdict, out-of-sample numbers."""
    from cta.components import configured_markets
    from cta.registry import registered_model_name, version_rows

    settings = settings_of(ctx)
    with _registry_errors(settings):
        client = _registry(settings)
        for market in configured_markets(settings, symbol, timeframe):
            name = registered_model_name(market)
            render.print_versions(name, version_rows(client, name))


@models_app.command("show")
def models_show(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="A version number, or an alias: champion, previous.")] = "champion",
    symbol: SymbolOpt = None,
    timeframe: TimeframeOpt = None,
) -> None:
    """One version: its tags (verdict, reasons, metrics, lineage) and where its runs are."""
    from cta.registry import find_version, registered_model_name

    settings = settings_of(ctx)
    name = registered_model_name(_one_market(settings, symbol, timeframe))
    with _registry_errors(settings):
        found = find_version(_registry(settings), name, version)
    console.print_json(
        json.dumps(
            {
                "model": name,
                "version": str(found.version),
                "aliases": list(found.aliases),
                "uri": f"models:/{name}/{found.version}",
                "training_run_id": found.run_id,
                "tags": dict(sorted(found.tags.items())),
            }
        )
    )


@models_app.command("promote")
def models_promote(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="The version to make champion.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded on the version).")],
    symbol: SymbolOpt = None,
    timeframe: TimeframeOpt = None,
) -> None:
    """Operator override: make VERSION the champion without the gate (recorded as a manual promotion;
    the current champion stays available to `rollback`)."""
    from mlflow.exceptions import MlflowException

    from cta.registry import champion, promote, promotion_lock, registered_model_name

    settings = settings_of(ctx)
    name = registered_model_name(_one_market(settings, symbol, timeframe))
    with _registry_errors(settings):
        client = _registry(settings)
        try:
            client.get_model_version(name, version)
        except MlflowException:
            raise CTAError(f"{name} has no version {printable(version)!r}") from None
        _loadable(client, name, version)
        current = champion(client, name)
        move = promote(
            client,
            name,
            version,
            expected_champion=None if current is None else str(current.version),
            reason=f"manual: {reason}",
            lock=promotion_lock(settings, name),
        )
    if move.outcome != "champion":
        raise CTAError(f"not promoted: {move.detail}")
    console.print(f"{name}: v{version} is the champion (previous: {'v' + move.previous if move.previous else 'none'})")


@models_app.command("rollback")
def models_rollback(ctx: typer.Context, symbol: SymbolOpt = None, timeframe: TimeframeOpt = None) -> None:
    """Give the champion alias back to the previous champion."""
    from mlflow.exceptions import MlflowException

    from cta.registry import alias_state, promotion_lock, registered_model_name, rollback

    settings = settings_of(ctx)
    name = registered_model_name(_one_market(settings, symbol, timeframe))
    with _registry_errors(settings):
        client = _registry(settings)
        try:
            state, _ = alias_state(client, name)
        except MlflowException:
            raise CTAError(f"{name}: no registered model, so no previous champion to roll back to") from None
        if len(state.history) >= 2:  # else rollback refuses, saying why
            _loadable(client, name, state.history[-2])
        move = rollback(client, name, lock=promotion_lock(settings, name))
    console.print(f"{name}: rolled back from v{move.previous} to v{move.version}")
