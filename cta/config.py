"""One typed, frozen settings object: config/default.json, then config/<profile>.json, then CTA_* env.

Environment overrides use `CTA_<SECTION>__<FIELD>=value` (double underscore between levels; values are
parsed as JSON when they parse, else taken as strings), e.g. `CTA_INGEST__START=2022-01-01`.
Secrets never come from files: they are read from their own environment variables (see `Secrets`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from cta.costs import CostModel
from cta.decide import Limits
from cta.errors import ConfigError
from cta.exchange_server.settings import LocalExchangeSettings
from cta.timeframes import TIMEFRAME_MS

ENV_PREFIX = "CTA_"
SECRET_ENV_VARS: dict[str, str] = {
    "api_key": "CTA_API_KEY",
    "api_secret": "CTA_API_SECRET",
    "db_password": "CTA_DB_PASSWORD",
    "api_token": "CTA_API_TOKEN",
}
# CTA_ variables that are not settings: the profile, the config directory, the image build cache (deploy/images.py).
NOT_SETTINGS_ENV_VARS = frozenset({"CTA_PROFILE", "CTA_CONFIG_DIR", "CTA_CACHE_DIR"})
# Keys that look like secrets are refused in config files: secrets come only from the environment.
_SECRET_LIKE = ("secret", "password", "api_key", "apikey", "token", "passphrase", "private_key")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PathSettings(_Strict):
    data_dir: Path = Path("data")
    logs_dir: Path = Path("logs")


class LoggingSettings(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    file_name: str = "trading.log"
    max_bytes: Annotated[int, Field(gt=0)] = 10_000_000
    backup_count: Annotated[int, Field(ge=0)] = 5


DEFAULT_BURST_COST = 20.0  # request cost units: about 1 s of Binance's budget (ccxt: 50 ms per unit)


class ExchangeSettings(_Strict):
    """The venue CTA reads candles from (and later trades on), through ccxt."""

    id: str = "binance"
    api_url: str | None = None  # override of the venue's API base URL (the local server in dev/tests)
    # Where "now" comes from when deciding which candles have closed: the venue's clock, or the replay
    # clock of the local exchange (GET {api_url}/_cta/clock), whose market time differs from wall time.
    market_time: Literal["venue", "replay"] = "venue"
    # Share of the venue's documented request budget that ccxt's rate limiter may use (ccxt knows each
    # venue's limits and per-endpoint costs). Above 1 exceeds the venue's limits: local exchange only.
    rate_limit_share: Annotated[float, Field(gt=0, le=100)] = 0.9
    # Burst of that budget, in ccxt cost units, usable at once after a quiet spell (cta.exchange.RequestSpacer);
    # 0 spaces every request by its own cost.
    rate_limit_burst: Annotated[float, Field(ge=0, le=1000)] = DEFAULT_BURST_COST
    timeout_ms: Annotated[int, Field(gt=0)] = 10_000
    page_limit: Annotated[int, Field(gt=0, le=5000)] = 1000
    verbose: bool = False  # ccxt's request/response dump, at DEBUG on the "ccxt.verbose" logger (redacted)

    @field_validator("id")
    @classmethod
    def _known_exchange(cls, value: str) -> str:
        import ccxt

        if value not in ccxt.exchanges:
            raise ValueError(f"unknown ccxt exchange id {value!r}")
        return value


class MarketSettings(_Strict):
    symbols: Annotated[tuple[str, ...], Field(min_length=1)] = ("BTC/USDT", "ETH/USDT")
    timeframes: Annotated[tuple[str, ...], Field(min_length=1)] = ("1h",)

    @field_validator("symbols")
    @classmethod
    def _symbol_shape(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for symbol in value:
            base, sep, quote = symbol.partition("/")
            if not (sep and base and quote):
                raise ValueError(f"symbol {symbol!r} must look like BASE/QUOTE")
        return value

    @field_validator("timeframes")
    @classmethod
    def _known_timeframes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for timeframe in value:
            if timeframe not in TIMEFRAME_MS:
                raise ValueError(f"unsupported timeframe {timeframe!r} (known: {', '.join(TIMEFRAME_MS)})")
        return value


def parse_utc_ms(value: str | int) -> int:
    """ISO-8601 date/datetime (UTC if no zone) or epoch ms -> epoch ms."""
    if isinstance(value, int):
        return value
    text = value.strip()
    if text.isdigit():
        return int(text)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


class IngestSettings(_Strict):
    start: str | int = "2022-01-01"  # ISO-8601 (UTC if no zone) or epoch ms
    end: str | int | None = None  # exclusive; None = up to the newest closed candle
    concurrency: Annotated[int, Field(ge=1, le=32)] = 4  # markets ingested at once
    pages_in_flight: Annotated[int, Field(ge=1, le=32)] = 4  # concurrent page requests per market
    max_retries: Annotated[int, Field(ge=0)] = 5
    backoff_base_s: Annotated[float, Field(gt=0)] = 0.5
    backoff_max_s: Annotated[float, Field(gt=0)] = 30.0
    write_every_rows: Annotated[int, Field(gt=0)] = 50_000

    @field_validator("start", "end")
    @classmethod
    def _parse_time(cls, value: str | int | None) -> str | int | None:
        if value is not None:
            try:
                parse_utc_ms(value)
            except ValueError as e:
                raise ValueError(f"not an ISO-8601 date/time or epoch ms: {value!r}") from e
        return value

    @property
    def start_ms(self) -> int:
        return parse_utc_ms(self.start)

    @property
    def end_ms(self) -> int | None:
        return None if self.end is None else parse_utc_ms(self.end)


class LakeSettings(_Strict):
    uri: str = "data/lake"  # a local directory, or s3://bucket/prefix
    s3_endpoint_url: str | None = None  # e.g. a MinIO/moto endpoint; None = AWS
    s3_region: str = "us-east-1"


class ValidationSettings(_Strict):
    on_invalid: Literal["fail", "quarantine"] = "fail"
    quarantine_uri: str = "data/quarantine"
    results_dir: Path = Path("data/validation")


class FeatureSettings(_Strict):
    """The feature stage. Names are checked against the feature registry when the stage starts."""

    names: tuple[str, ...] | None = None  # None = every registered feature
    table_dir: Path = Path("data/features")  # Parquet feature tables (Feast's offline source)
    feast_dir: Path = Path("data/feast")  # Feast registry and SQLite online store
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = "127.0.0.1:6379"  # Feast's Redis connection string (production)
    ttl_days: Annotated[int, Field(gt=0)] = 7
    label_horizon: Annotated[int, Field(ge=1)] = 4  # bars ahead for the forward-return label
    dead_zone_bps: Annotated[float, Field(ge=0)] = 10.0  # |forward return| below this is class 0


class TrainingSettings(_Strict):
    """Training: splits, walk-forward folds, candidates and budgets (small by default)."""

    candidates: tuple[Literal["logistic", "gbm", "keras", "ppo"], ...] = ("logistic", "gbm", "keras", "ppo")
    validation_fraction: Annotated[float, Field(gt=0, lt=0.5)] = 0.15
    out_of_sample_fraction: Annotated[float, Field(gt=0, lt=0.5)] = 0.2  # reserved for the backtest gate
    folds: Annotated[int, Field(ge=2, le=20)] = 4
    min_train_rows: Annotated[int, Field(ge=50)] = 500
    seed: int = 7
    tracking_uri: str = "sqlite:///data/mlflow/mlflow.db"
    artifact_root: str = "data/mlflow/artifacts"
    # `cta up` (and the demo) serve the MLflow UI over a local tracking store on 127.0.0.1:ui_port.
    ui_port: Annotated[int, Field(gt=0, lt=65536)] = 5000
    keras_window: Annotated[int, Field(ge=2, le=256)] = 16
    keras_epochs: Annotated[int, Field(ge=1)] = 5
    ppo_iterations: Annotated[int, Field(ge=1)] = 2
    ppo_window: Annotated[int, Field(ge=1, le=256)] = 8
    ray_dir: Path | None = Path("data/ray")  # Ray's session files and RLlib's logs (None: a temp dir)


class GateSettings(_Strict):
    """Thresholds a candidate's out-of-sample backtest must meet to become the champion."""

    min_sharpe: float = 0.5  # annualised
    max_drawdown: Annotated[float, Field(gt=0, le=1)] = 0.25
    min_trades: Annotated[int, Field(ge=0)] = 10
    # Benchmarks the candidate must beat after costs: "flat" (total return > 0) and/or "buy_and_hold"
    # (higher Sharpe than holding the market over the same bars, with the same costs).
    must_beat: tuple[Literal["flat", "buy_and_hold"], ...] = ("flat", "buy_and_hold")
    champion_margin: Annotated[float, Field(ge=0)] = 0.1  # Sharpe points above the champion's, same window
    # Luck guard: the probability that the true Sharpe exceeds the best expected from luck among the
    # candidates tried (deflated Sharpe ratio, Bailey & Lopez de Prado 2014).
    min_deflated_sharpe: Annotated[float, Field(ge=0, lt=1)] = 0.95


class BacktestSettings(_Strict):
    """The backtest every candidate gets on its reserved out-of-sample bars before promotion."""

    initial_cash: Annotated[float, Field(gt=0)] = 10_000.0
    sizing: Literal["all_in", "fixed_fraction"] = "all_in"
    fraction: Annotated[float, Field(gt=0, le=1)] = 0.5  # share of equity per unit of target (fixed_fraction)
    engine: Literal["fast", "backtrader"] = "fast"  # the gate's engine; both agree (tested)
    reports: bool = True  # equity/drawdown PNG and a Markdown report in each backtest's MLflow run
    gate: GateSettings = GateSettings()

    @property
    def position_fraction(self) -> float:
        return 1.0 if self.sizing == "all_in" else self.fraction


class RiskSettings(_Strict):
    """Limits the serving worker checks before every order (quote currency amounts)."""

    max_order_notional: Annotated[float, Field(gt=0)] = 20_000.0
    max_position_notional: Annotated[float, Field(gt=0)] = 20_000.0
    daily_loss_limit: Annotated[float, Field(gt=0, le=1)] = 0.05  # share of the day's opening equity
    max_drawdown_halt: Annotated[float, Field(gt=0, le=1)] = 0.25  # from the equity peak: HALTED
    stale_after_bars: Annotated[float, Field(gt=0)] = 1.0  # no new entries on older candles/features


class ServingSettings(_Strict):
    """The serving worker: broker, database, model polling, API."""

    broker: Literal["paper", "ccxt"] = "paper"
    database_url: str = "sqlite:///data/serving/cta.db"
    client_order_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9]{1,8}$")] = "cta"
    poll_interval_s: Annotated[float, Field(gt=0)] = 1.0  # how often to look for newly closed candles
    model_poll_s: Annotated[float, Field(gt=0)] = 30.0  # how often to check the champion alias
    max_model_age_days: Annotated[float, Field(gt=0)] = 30.0  # older champion: no new entries
    reconcile_every_s: Annotated[float, Field(gt=0)] = 300.0
    # While its database or model registry is unreachable (at start-up, or the database lost while trading) the
    # worker is not ready and checks again after a growing delay: this, doubling up to dependency_retry_max_s.
    dependency_retry_s: Annotated[float, Field(gt=0)] = 0.5
    dependency_retry_max_s: Annotated[float, Field(gt=0)] = 30.0
    # ccxt broker: the balance it sizes orders from is fetched again when older than this (its own fills move
    # it in between); 0 fetches before every order.
    balance_max_age_s: Annotated[float, Field(ge=0)] = 60.0
    # Share of equity left unused when sizing an order a venue fills later at a price not yet known
    # (the paper broker sizes at the fill, like the backtest, and needs none).
    cash_buffer: Annotated[float, Field(ge=0, lt=0.5)] = 0.02
    max_bars: Annotated[int, Field(ge=1)] | None = None  # stop after this many bars per market (demo)
    api_host: str = "127.0.0.1"
    api_port: Annotated[int, Field(ge=0, lt=65536)] = 8780
    risk: RiskSettings = RiskSettings()


_CRON_FIELD = re.compile(r"[0-9A-Za-z*/,\-]+")


class PrefectSettings(_Strict):
    """Where flow runs are recorded. With `api_url` unset, every command uses one local Prefect server
    (started on first use on 127.0.0.1:`server_port`, kept running, stopped by `cta down`), so every run is
    in the UI it serves; "ephemeral" gives each command Prefect's own temporary server instead (nothing kept).
    With `api_url` set to a local address that does not answer, `cta up` starts the server there."""

    api_url: str | None = None
    server_port: Annotated[int, Field(gt=0, lt=65536)] = 4200
    local_server: Literal["persistent", "ephemeral"] = "persistent"
    # The database of a server CTA starts: None = SQLite under data_dir/prefect; production: PostgreSQL
    # (postgresql+asyncpg://user@host:5432/db).
    database_url: str | None = None
    # The work pool `cta flows deploy` registers the deployments on, served by `cta flows worker`.
    work_pool: str = "cta"
    # Seconds after each candle close at which scheduled ingestion runs (the venue needs a moment).
    schedule_offset_s: Annotated[int, Field(ge=0)] = 10
    # When each market's learning loop (features -> train -> backtest -> gate -> promote) runs: cron, UTC.
    learn_cron: str = "0 3 * * *"

    @field_validator("learn_cron")
    @classmethod
    def _cron_shape(cls, value: str) -> str:
        fields = value.split()
        if len(fields) != 5 or not all(_CRON_FIELD.fullmatch(f) for f in fields):
            raise ValueError("a cron expression of 5 fields: minute hour day-of-month month day-of-week (UTC)")
        return value


class Secrets(BaseModel):
    """Secrets, read only from the environment. Held as SecretStr: printing shows '**********'."""

    model_config = ConfigDict(frozen=True)

    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None
    db_password: SecretStr | None = None
    api_token: SecretStr | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Secrets:
        return cls.model_validate({field: env[var] for field, var in SECRET_ENV_VARS.items() if env.get(var)})

    def values(self) -> list[str]:
        """The raw secret values (for log redaction only)."""
        out: list[str] = []
        for name in SECRET_ENV_VARS:
            secret = getattr(self, name)
            if secret is not None and secret.get_secret_value():
                out.append(secret.get_secret_value())
        return out


class Settings(_Strict):
    profile: str = "default"
    mode: Literal["paper", "live"] = "paper"
    paths: PathSettings = PathSettings()
    logging: LoggingSettings = LoggingSettings()
    exchange: ExchangeSettings = ExchangeSettings()
    markets: MarketSettings = MarketSettings()
    ingest: IngestSettings = IngestSettings()
    lake: LakeSettings = LakeSettings()
    validation: ValidationSettings = ValidationSettings()
    features: FeatureSettings = FeatureSettings()
    costs: CostModel = CostModel()
    limits: Limits = Limits()
    training: TrainingSettings = TrainingSettings()
    backtest: BacktestSettings = BacktestSettings()
    serving: ServingSettings = ServingSettings()
    prefect: PrefectSettings = PrefectSettings()
    local_exchange: LocalExchangeSettings = LocalExchangeSettings()
    secrets: Secrets = Field(default_factory=Secrets, exclude=True, repr=False)

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of every non-secret setting (logged with each run)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def public_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def default_config_dir() -> Path:
    """`config/` of the checkout (CTA_CONFIG_DIR overrides)."""
    override = os.environ.get("CTA_CONFIG_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / "config"


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """CTA_SECTION__FIELD=value -> {"section": {"field": value}} (secrets and meta vars excluded)."""
    skip = {*SECRET_ENV_VARS.values(), *NOT_SETTINGS_ENV_VARS}
    out: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name in skip:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def _refuse_secrets_in_files(data: Mapping[str, Any], source: str, prefix: str = "") -> None:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if any(marker in key.lower() for marker in _SECRET_LIKE) and value not in (None, ""):
            raise ConfigError(dotted, "<hidden>", f"secrets are read only from the environment, not {source}")
        if isinstance(value, Mapping):
            _refuse_secrets_in_files(value, source, prefix=f"{dotted}.")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError("profile", path.stem, f"no config file {path}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(path.name, f"line {e.lineno}", f"not valid JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(path.name, type(data).__name__, "top level must be a JSON object")
    _refuse_secrets_in_files(data, path.name)
    return data


def load_settings(
    profile: str | None = None,
    env: Mapping[str, str] | None = None,
    config_dir: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings: default.json <- <profile>.json <- CTA_* env <- explicit overrides.

    Any invalid value raises ConfigError naming the field (dotted path) and the value.
    """
    env = os.environ if env is None else env
    profile = profile or env.get("CTA_PROFILE") or "default"
    config_dir = config_dir or default_config_dir()
    data = _read_json(config_dir / "default.json")
    if profile != "default":
        data = deep_merge(data, _read_json(config_dir / f"{profile}.json"))
    env_data = env_overrides(env)
    _refuse_secrets_in_files(env_data, "CTA_<SECTION>__ variables (use the dedicated secret variables)")
    data = deep_merge(data, env_data)
    if overrides:
        data = deep_merge(data, overrides)
    data["profile"] = profile
    return _validated(data, Secrets.from_env(env))


def with_overrides(settings: Settings, overrides: Mapping[str, Any]) -> Settings:
    """`settings` with explicit overrides (e.g. from CLI options), validated like the files: an invalid
    value raises ConfigError naming the field. Secrets are kept; overrides cannot carry any."""
    _refuse_secrets_in_files(overrides, "overrides (use the dedicated secret variables)")
    return _validated(deep_merge(settings.model_dump(mode="json"), overrides), settings.secrets)


def differing_fields(a: Settings, b: Settings) -> list[str]:
    """The dotted paths of the settings whose values differ between `a` and `b` (secrets excluded: they
    never leave the process), e.g. ["logging.level", "backtest.gate.min_sharpe"]."""

    def walk(x: Any, y: Any, path: str) -> list[str]:
        if isinstance(x, dict) and isinstance(y, dict):
            return [d for key in sorted(x.keys() | y.keys()) for d in walk(x.get(key), y.get(key), f"{path}{key}.")]
        return [] if x == y else [path.rstrip(".")]

    return walk(a.model_dump(mode="json"), b.model_dump(mode="json"), "")


def _validated(data: Mapping[str, Any], secrets: Secrets) -> Settings:
    try:
        return Settings.model_validate({**data, "secrets": secrets})
    except ValidationError as e:
        error = e.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        raise ConfigError(field, error.get("input"), error["msg"]) from None
