"""`cta`: the command line. Entry point: loads settings once, configures logging, runs a command.

Every failure ends with a one-line reason on stderr and a non-zero exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

import click
import typer
from rich.console import Console
from rich.table import Table

from cta.config import Settings, load_settings
from cta.errors import CTAError

log = logging.getLogger("cta.cli")
console = Console(width=None if sys.stdout.isatty() else 160)

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="CTA: ingest, validate, build features, train, backtest-gate and trade crypto.",
)
exchange_app = typer.Typer(no_args_is_help=True, help="The local Binance-compatible exchange server.")
lake_app = typer.Typer(no_args_is_help=True, help="The candle lake.")
flows_app = typer.Typer(no_args_is_help=True, help="Prefect flows and scheduled deployments.")
features_app = typer.Typer(no_args_is_help=True, help="Features: the registry, the feature tables, Feast.")
config_app = typer.Typer(no_args_is_help=True, help="Configuration.")
ledger_app = typer.Typer(no_args_is_help=True, help="The hash-chained ledger of promotions, decisions, orders, fills.")
models_app = typer.Typer(no_args_is_help=True, help="Models in the MLflow registry: verdicts, champion, rollback.")
app.add_typer(exchange_app, name="exchange")
app.add_typer(lake_app, name="lake")
app.add_typer(flows_app, name="flows")
app.add_typer(features_app, name="features")
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")
app.add_typer(ledger_app, name="ledger")

SymbolOpt = Annotated[list[str] | None, typer.Option("--symbol", "-s", help="Symbol, e.g. BTC/USDT (repeatable).")]
CandidateOpt = Annotated[
    list[str] | None, typer.Option("--candidate", "-c", help="Family: logistic, gbm, keras, ppo (repeatable).")
]
TimeframeOpt = Annotated[list[str] | None, typer.Option("--timeframe", "-t", help="Timeframe, e.g. 1h (repeatable).")]


@app.callback()
def _setup(
    ctx: typer.Context,
    profile: Annotated[
        str | None,
        typer.Option("--profile", "-p", envvar="CTA_PROFILE", help="Config profile: default, production, ..."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    from cta.logs import configure_logging
    from cta.runtime_env import apply_offline_env

    if profile:
        os.environ["CTA_PROFILE"] = profile  # flows load settings from the same environment
    overrides = {"logging": {"level": "DEBUG"}} if verbose else None
    settings = load_settings(profile, overrides=overrides)
    apply_offline_env(settings.paths.data_dir)
    configure_logging(settings.logging, settings.paths.logs_dir, settings.secrets.values())
    ctx.obj = settings


def _settings(ctx: typer.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


# --- exchange ------------------------------------------------------------------------------------
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
    """Run the local Binance-compatible exchange, replaying real candles (Ctrl-C stops it)."""
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
    # The same loader as at start-up: an invalid option is refused naming the field (local_exchange.*).
    settings = load_settings(overrides={"local_exchange": {**updates, "faults": faults}})
    secrets = settings.secrets
    serve_forever(
        settings.local_exchange,
        api_key=secrets.api_key.get_secret_value() if secrets.api_key else None,
        api_secret=secrets.api_secret.get_secret_value() if secrets.api_secret else None,
    )


# --- ingest / validate / lake --------------------------------------------------------------------
@app.command()
def ingest(
    ctx: typer.Context,
    symbol: SymbolOpt = None,
    timeframe: TimeframeOpt = None,
    start: Annotated[str | None, typer.Option(help="Backfill start (ISO-8601 UTC); default from config.")] = None,
    end: Annotated[str | None, typer.Option(help="Backfill end, exclusive; default: newest closed candle.")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Backfill or resume candles from the configured venue into the lake (a Prefect flow run)."""
    from flows.ingest import ingest_flow

    reports = asyncio.run(
        ingest_flow(symbols=symbol, timeframes=timeframe, start=start, end=end, show_progress=progress)
    )
    _print_ingest(reports)


def _print_ingest(reports: list[dict[str, Any]]) -> None:
    table = Table(title="ingestion")
    for column in ("market", "fetched", "added", "unchanged", "quarantined", "gaps"):
        table.add_column(column, justify="left" if column == "market" else "right")
    for r in reports:
        table.add_row(
            r["market"],
            str(r["fetched"]),
            str(r["added"]),
            str(r["unchanged"]),
            str(r["quarantined"]),
            str(len(r["gaps"])),
        )
    console.print(table)


@app.command()
def validate(ctx: typer.Context, symbol: SymbolOpt = None, timeframe: TimeframeOpt = None) -> None:
    """Re-check stored candles: the "candles" suite, manifest hashes, and gaps."""
    validate_lake(_settings(ctx), symbol, timeframe)


def validate_lake(settings: Settings, symbols: list[str] | None = None, timeframes: list[str] | None = None) -> None:
    from cta.clock import SystemClock
    from cta.components import make_lake
    from cta.validation import find_gaps, validate_candles

    lake = make_lake(settings)
    markets = [
        m
        for m in lake.markets()
        if (not symbols or m.symbol in symbols) and (not timeframes or m.timeframe in timeframes)
    ]
    if not markets:
        raise CTAError(f"no stored candles match in {lake.uri}; run `cta ingest` first")
    table = Table(title=f"validation of {lake.uri}")
    for column in ("market", "rows", "suite", "hashes", "gaps (missing)"):
        table.add_column(column)
    failed = False
    now_ms = SystemClock().now_ms()
    for market in markets:
        candles = lake.read(market)
        report = validate_candles(candles, market.timeframe, now_ms, settings.validation.results_dir)
        problems = lake.verify(market)
        gaps = find_gaps(candles["ts"], market.timeframe)
        failed |= (not report.success) or bool(problems)
        table.add_row(
            str(market),
            str(len(candles)),
            "passed" if report.success else report.summary(),
            "ok" if not problems else "; ".join(problems),
            f"{len(gaps)} ({sum(n for _, n in gaps)})",
        )
    console.print(table)
    if failed:
        raise CTAError(
            f"validation failed (details above; GX results under {settings.validation.results_dir / 'candles'})"
        )


@lake_app.command("show")
def lake_show(ctx: typer.Context) -> None:
    """Summarise the lake: markets, partitions, rows, first/last candle."""
    print_lake_summary(_settings(ctx))


def print_lake_summary(settings: Settings) -> None:
    from cta.components import make_lake
    from cta.lake import summarize

    lake = make_lake(settings)
    summary = summarize(lake.manifests())
    table = Table(title=f"candle lake: {lake.uri}")
    for column in summary.columns:
        table.add_column(str(column))
    for row in summary.itertuples(index=False):
        table.add_row(*(str(v) for v in row))
    console.print(table if len(summary) else f"candle lake {lake.uri} is empty")


# --- features ------------------------------------------------------------------------------------
@features_app.command("list")
def features_list() -> None:
    """The feature registry: name, warm-up bars, bounds, description."""
    from features.registry import FEATURES, registry_version

    table = Table(title=f"feature registry (version {registry_version()})")
    for column in ("name", "warm-up", "bounds", "description"):
        table.add_column(column)
    for spec in FEATURES:
        bounds = "" if spec.lower is None and spec.upper is None else f"[{spec.lower}, {spec.upper}]"
        table.add_row(spec.name, str(spec.warmup), bounds, spec.description)
    console.print(table)


@features_app.command("build")
def features_build(symbol: SymbolOpt = None, timeframe: TimeframeOpt = None) -> None:
    """Compute, gate and write the feature tables, then materialise Feast's online store (a flow run)."""
    from flows.features import features_flow

    _print_features(features_flow(symbols=symbol, timeframes=timeframe))


def _print_features(result: dict[str, Any]) -> None:
    table = Table(title=f"features (registry {result['registry_version']}, online store {result['online_store']})")
    for column in ("market", "status", "rows"):
        table.add_column(column)
    for item in result["markets"]:
        table.add_row(item["market"], item["status"], str(item["rows"]))
    console.print(table)


# --- training ------------------------------------------------------------------------------------
@app.command()
def train(
    symbol: SymbolOpt = None,
    timeframe: TimeframeOpt = None,
    candidate: CandidateOpt = None,
) -> None:
    """Train the candidate families on point-in-time features; log and register them in MLflow."""
    from flows.train import train_flow

    _print_training(train_flow(symbols=symbol, timeframes=timeframe, candidates=candidate))


def _print_training(rows: list[dict[str, Any]]) -> None:
    table = Table(title="training (MLflow)")
    for column in ("market", "family", "version", "balanced acc", "AUC", "IC", "validation net", "error"):
        table.add_column(column)

    def fmt(value: Any) -> str:
        return "" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    for row in rows:
        table.add_row(
            row["market"],
            row["family"],
            fmt(row.get("version")),
            fmt(row.get("balanced_accuracy_mean")),
            fmt(row.get("auc_mean")),
            fmt(row.get("ic_mean")),
            fmt(row.get("validation_net_return")),
            fmt(row.get("error")),
        )
    console.print(table)


# --- pipeline and models ------------------------------------------------------------------------
@app.command()
def pipeline(
    symbol: SymbolOpt = None,
    timeframe: TimeframeOpt = None,
    candidate: CandidateOpt = None,
) -> None:
    """The whole pipeline as one Prefect flow: ingest → validate → features → train → backtest → gate →
    promote. Prints the verdict of every candidate."""
    from flows.pipeline import pipeline_flow

    result = asyncio.run(pipeline_flow(symbols=symbol, timeframes=timeframe, candidates=candidate))
    _print_verdicts(result["verdicts"])


def _print_verdicts(rows: list[dict[str, Any]]) -> None:
    table = Table(title="backtest gate (out-of-sample)")
    for column in ("market", "candidate", "family", "Sharpe", "max DD", "return", "trades", "verdict", "reasons"):
        table.add_column(column, overflow="fold")
    styles = {"champion": "bold green", "passed": "green", "rejected": "red", "failed": "red", "stale": "yellow"}
    for row in rows:
        verdict = row["verdict"]
        table.add_row(
            row["market"],
            f"v{row['version']}",
            row["family"],
            _num(row.get("sharpe"), "{:.2f}"),
            _num(row.get("max_drawdown"), "{:.1%}"),
            _num(row.get("total_return"), "{:+.1%}"),
            str(row.get("trades", "")),
            f"[{styles.get(verdict, '')}]{verdict}[/]",
            row.get("reasons", ""),
        )
    console.print(table)


def _num(value: Any, pattern: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return pattern.format(value)


def _one_market(settings: Settings, symbols: list[str] | None, timeframes: list[str] | None) -> Any:
    from cta.components import configured_markets

    markets = configured_markets(settings, symbols, timeframes)
    if len(markets) != 1:
        raise CTAError(f"choose one market with --symbol and --timeframe (configured: {', '.join(map(str, markets))})")
    return markets[0]


def _registry(settings: Settings) -> Any:
    from mlflow import MlflowClient

    from training.tracking import configure_mlflow

    configure_mlflow(settings)
    return MlflowClient()


@models_app.command("list")
def models_list(ctx: typer.Context, symbol: SymbolOpt = None, timeframe: TimeframeOpt = None) -> None:
    """Every registered version per market, newest first: family, aliases, verdict, out-of-sample numbers."""
    from backtests.promotion import versions
    from cta.components import configured_markets
    from training.tracking import registered_model_name

    settings = _settings(ctx)
    client = _registry(settings)
    for market in configured_markets(settings, symbol, timeframe):
        name = registered_model_name(market)
        found = versions(client, name)
        aliases: dict[str, list[str]] = {}
        if found:
            for alias, version in client.get_registered_model(name).aliases.items():
                aliases.setdefault(str(version), []).append(alias)
        table = Table(title=f"{name}" + ("" if found else " (no versions yet)"))
        for column in ("version", "family", "aliases", "verdict", "OOS Sharpe", "OOS max DD", "reasons"):
            table.add_column(column, overflow="fold")
        for version in found:
            tags = version.tags
            table.add_row(
                str(version.version),
                tags.get("family", ""),
                ", ".join(aliases.get(str(version.version), [])),
                tags.get("verdict", "not gated"),
                tags.get("oos_sharpe", ""),
                tags.get("oos_max_drawdown", ""),
                tags.get("verdict_reasons", ""),
            )
        console.print(table)


@models_app.command("show")
def models_show(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="A version number, or an alias: champion, previous.")] = "champion",
    symbol: SymbolOpt = None,
    timeframe: TimeframeOpt = None,
) -> None:
    """One version: its tags (verdict, reasons, metrics, lineage) and where its runs are."""
    from mlflow.exceptions import MlflowException

    from training.tracking import registered_model_name

    settings = _settings(ctx)
    name = registered_model_name(_one_market(settings, symbol, timeframe))
    client = _registry(settings)
    try:
        found = (
            client.get_model_version(name, version)
            if version.isdigit()
            else client.get_model_version_by_alias(name, version)
        )
    except MlflowException:
        raise CTAError(f"{name} has no version or alias {version!r}") from None
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

    from backtests.promotion import champion, promote, registry_lock
    from training.tracking import registered_model_name

    settings = _settings(ctx)
    name = registered_model_name(_one_market(settings, symbol, timeframe))
    client = _registry(settings)
    try:
        client.get_model_version(name, version)
    except MlflowException:
        raise CTAError(f"{name} has no version {version!r}") from None
    current = champion(client, name)
    lock = registry_lock(settings.training.tracking_uri, settings.paths.data_dir / "locks", name)
    move = promote(
        client,
        name,
        version,
        expected_champion=None if current is None else str(current.version),
        reason=f"manual: {reason}",
        lock=lock,
    )
    if move.outcome != "champion":
        raise CTAError(f"not promoted: {move.detail}")
    console.print(f"{name}: v{version} is the champion (previous: {'v' + move.previous if move.previous else 'none'})")


@models_app.command("rollback")
def models_rollback(ctx: typer.Context, symbol: SymbolOpt = None, timeframe: TimeframeOpt = None) -> None:
    """Give the champion alias back to the previous champion."""
    from backtests.promotion import registry_lock, rollback
    from training.tracking import registered_model_name

    settings = _settings(ctx)
    name = registered_model_name(_one_market(settings, symbol, timeframe))
    lock = registry_lock(settings.training.tracking_uri, settings.paths.data_dir / "locks", name)
    move = rollback(_registry(settings), name, lock=lock)
    console.print(f"{name}: rolled back from v{move.previous} to v{move.version}")


# --- serving -------------------------------------------------------------------------------------
@app.command()
def serve(
    ctx: typer.Context,
    bars: Annotated[int | None, typer.Option("--bars", help="Stop after this many candles per market.")] = None,
) -> None:
    """Trade the champion of each configured market on every newly closed candle (paper by default).
    Ctrl-C stops; state is reconciled at the next start."""
    from serving.app import serve as run_serving

    settings = _settings(ctx)
    if bars is not None:
        settings = settings.model_copy(update={"serving": settings.serving.model_copy(update={"max_bars": bars})})
    _print_serving(asyncio.run(run_serving(settings)))


def _print_serving(rows: list[dict[str, Any]]) -> None:
    table = Table(title="paper trading" if rows else "serving")
    for column in ("market", "model", "bars", "decisions", "orders", "fills", "PnL", "buy & hold", "note"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row["market"],
            row["model"],
            str(row["bars"]),
            str(row["decisions"]),
            str(row["orders"]),
            str(row["fills"]),
            f"{row['pnl']:+.2%}",
            f"{row['buy_and_hold']:+.2%}",
            row["note"],
        )
    console.print(table)


def _serving_sessions(settings: Settings, read_only: bool = False) -> Any:
    """Sessions on the serving database (migrated to the newest schema first)."""
    from serving.app import database_url
    from serving.db import make_engine, session_factory, upgrade

    engine = make_engine(database_url(settings))
    upgrade(engine)
    return session_factory(engine, read_only=read_only)


@app.command("kill-switch")
def kill_switch(
    ctx: typer.Context,
    state: Annotated[str, typer.Argument(help="halt (no orders), reduce (exits only) or resume.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the ledger).")],
    cancel_open: Annotated[bool, typer.Option("--cancel-open", help="With halt: also cancel open orders.")] = False,
) -> None:
    """Set the persisted trading state; a running worker obeys it at its next candle, a restarted one too."""
    from serving.control import set_trading_state
    from serving.orders import TradingState

    states = {"halt": TradingState.HALTED, "reduce": TradingState.REDUCING, "resume": TradingState.RUNNING}
    if state not in states:
        raise CTAError(f"kill-switch state must be one of {', '.join(states)}, not {state!r}")
    sessions = _serving_sessions(_settings(ctx))
    snapshot = set_trading_state(sessions, states[state], reason, "cli", cancel_open=cancel_open)
    console.print(f"trading state: {snapshot.state} ({snapshot.reason})")


@ledger_app.command("verify")
def ledger_verify(ctx: typer.Context) -> None:
    """Check the ledger's hash chain: an edited, deleted or reordered entry fails (exit code 1)."""
    from serving.ledger import verify

    with _serving_sessions(_settings(ctx), read_only=True)() as session:
        report = verify(session)
    if not report.ok:
        raise CTAError(f"ledger broken at entry {report.first_bad_seq}: {report.problem}")
    console.print(f"ledger ok: {report.entries} entries, hash chain intact")


# --- flows ---------------------------------------------------------------------------------------
@flows_app.command("serve")
def flows_serve(ctx: typer.Context) -> None:
    """Serve the scheduled deployments (ingest per timeframe). Starts a local Prefect server unless
    prefect.api_url / PREFECT_API_URL points at one. Ctrl-C stops."""
    from cta.prefect_server import prefect_healthy, start_prefect_server

    settings = _settings(ctx)
    # Ctrl-C must stop serving even when the command was started where SIGINT is ignored (a background job of
    # a non-interactive shell, e.g. CI's): Python then never installs its KeyboardInterrupt handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    api_url = os.environ.get("PREFECT_API_URL") or settings.prefect.api_url
    server = None
    if not api_url or not prefect_healthy(api_url):
        if api_url and urlparse(api_url).hostname not in ("127.0.0.1", "localhost"):
            raise CTAError(f"Prefect API at {api_url} is not reachable")
        server, api_url = start_prefect_server(settings.prefect.server_port, settings.paths.data_dir / "prefect")
    os.environ["PREFECT_API_URL"] = api_url
    console.print(f"Prefect UI: {api_url.removesuffix('/api')}  (Ctrl-C stops serving)")
    try:
        from prefect import serve

        from flows.deployments import ingest_deployments

        serve(*ingest_deployments(settings.markets.timeframes, settings.prefect.schedule_offset_s))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)


# --- config --------------------------------------------------------------------------------------
@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """Print the effective configuration (secrets only as set/unset) and its hash."""
    settings = _settings(ctx)
    secrets = {
        name: ("set" if getattr(settings.secrets, name) else "unset") for name in type(settings.secrets).model_fields
    }
    console.print_json(
        json.dumps({"config_hash": settings.config_hash(), "settings": settings.public_dict(), "secrets": secrets})
    )


# --- demo ----------------------------------------------------------------------------------------
@app.command()
def demo(ctx: typer.Context) -> None:
    """The main job on embedded defaults: the local exchange replaying real candles, the whole pipeline
    (ingest → validate → features → train → backtest → gate → promote) as one Prefect flow, then the
    worker paper-trading each market's champion on the replay clock for `serving.max_bars` candles."""
    settings = _settings(ctx)
    from flows.pipeline import pipeline_flow
    from serving.app import serve as run_serving

    with local_exchange_for(settings):
        result = asyncio.run(pipeline_flow())
        _print_ingest(result["ingest"])
        print_lake_summary(settings)
        _print_features(result["features"])
        _print_training(result["training"])
        _print_verdicts(result["verdicts"])
        if settings.serving.max_bars is None:
            settings = settings.model_copy(update={"serving": settings.serving.model_copy(update={"max_bars": 48})})
        console.print(f"paper trading the champions for {settings.serving.max_bars} candles on the replay clock ...")
        _print_serving(asyncio.run(run_serving(settings)))
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


@contextlib.contextmanager
def local_exchange_for(settings: Settings) -> Iterator[None]:
    """Start the local exchange for the demo unless one already answers at exchange.api_url."""
    url = settings.exchange.api_url
    parsed = urlparse(url or "")
    if not url or parsed.hostname not in ("127.0.0.1", "localhost"):
        raise CTAError("the demo runs against the local exchange: set exchange.api_url to http://127.0.0.1:PORT")
    port = parsed.port or 80
    if _listening(parsed.hostname or "127.0.0.1", port):
        console.print(f"using the exchange already listening at {url}")
        yield
        return
    from cta.exchange_server.runner import LocalExchangeServer

    secrets = settings.secrets
    server = LocalExchangeServer(
        settings.local_exchange.model_copy(update={"port": port}),
        api_key=secrets.api_key.get_secret_value() if secrets.api_key else None,
        api_secret=secrets.api_secret.get_secret_value() if secrets.api_secret else None,
    )
    console.print(f"local exchange replaying real Binance candles at {server.start()}")
    try:
        yield
    finally:
        server.stop()


def _listening(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def main() -> None:
    """Console entry point: one-line errors, non-zero exits."""
    try:
        app(standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except CTAError as e:
        log.debug("command failed", exc_info=True)
        typer.echo(f"error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except BaseExceptionGroup as group:  # e.g. Ctrl-C inside Prefect's serve task group
        if group.subgroup(KeyboardInterrupt) is None:
            raise
        sys.exit(130)
    except Exception as e:
        log.exception("unexpected failure")
        typer.echo(f"error: unexpected {type(e).__name__}: {e} (traceback in logs/)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
