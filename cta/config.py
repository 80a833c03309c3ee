"""One typed, frozen settings object: config/default.json, then config/<profile>.json, then CTA_* env.

Environment overrides use `CTA_<SECTION>__<FIELD>=value` (double underscore between levels; values are
parsed as JSON when they parse, else taken as strings; true/false in any case are booleans), e.g.
`CTA_INGEST__START=2022-01-01`. Secrets never come from files: they are read from their own environment
variables (see `Secrets`), and a URL with a password (database, Redis, S3) is refused in a file: it comes from
its CTA_<SECTION>__<FIELD> variable. Parsing is strict: booleans are JSON true/false (not 0/1), numbers are
finite (no NaN or Infinity), a key given twice in one file is an error, and `cta config show` masks passwords.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cta.costs import CostModel
from cta.decide import Limits
from cta.errors import ConfigError
from cta.exchange_server.settings import LocalExchangeSettings
from cta.monitor import MonitorSettings
from cta.timeframes import TIMEFRAME_MS

ENV_PREFIX = "CTA_"
SECRET_ENV_VARS: dict[str, str] = {
    "api_key": "CTA_API_KEY",
    "api_secret": "CTA_API_SECRET",
    "db_password": "CTA_DB_PASSWORD",
    "api_token": "CTA_API_TOKEN",  # the API's operator token (reads and changes)
    "viewer_token": "CTA_VIEWER_TOKEN",  # the API's viewer token (reads only)
    "ledger_signing_key": "CTA_LEDGER_SIGNING_KEY",  # the ledger log's Ed25519 key (cta.checkpoints.Signer)
    "ledger_witness_key": "CTA_LEDGER_WITNESS_KEY",  # a witness's own Ed25519 key (`cta ledger witness`)
}
# CTA_ variables that are not settings: the profile, the config directory, the image build cache (deploy/images.py).
NOT_SETTINGS_ENV_VARS = frozenset({"CTA_PROFILE", "CTA_CONFIG_DIR", "CTA_CACHE_DIR"})
# Keys that look like secrets are refused in config files: secrets come only from the environment.
_SECRET_LIKE = ("secret", "password", "api_key", "apikey", "token", "passphrase", "private_key")
# The password of a "host:port,db=N,password=..." connection string (Feast's Redis form).
_KV_PASSWORD = re.compile(r"(^|,)(\s*password\s*=)([^,]*)", re.IGNORECASE)
MASK = "***"

log = logging.getLogger(__name__)


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


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
    # The venue's testnet (ccxt's sandbox mode: Binance spot testnet, ...), the way from paper to live;
    # `api_url`, when set, then replaces the testnet's host.
    sandbox: bool = False

    @field_validator("id")
    @classmethod
    def _known_exchange(cls, value: str) -> str:
        import ccxt

        if value not in ccxt.exchanges:
            raise ValueError(f"unknown ccxt exchange id {value!r}")
        return value

    @field_validator("sandbox")
    @classmethod
    def _sandbox_exists(cls, value: bool, info: ValidationInfo) -> bool:
        venue = info.data.get("id")
        if value and venue:
            import ccxt

            if not getattr(ccxt, venue)().urls.get("test"):
                raise ValueError(f"ccxt has no sandbox (testnet) URLs for {venue!r}; set it to false")
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

    @model_validator(mode="after")
    def _start_before_end(self) -> IngestSettings:
        end_ms = self.end_ms
        if end_ms is not None and end_ms <= self.start_ms:
            raise ValueError(
                f"ingest.start ({self.start!r}) must be before ingest.end ({self.end!r}; exclusive): nothing to ingest"
            )
        return self

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


# The largest close-to-close move the "candles" suite accepts, per timeframe, as a factor of the previous
# close (3.0: at most 3x it, at least a third of it); a candle beyond it is quarantined with the reason.
# Generous on purpose, so only implausible prices (a decimal slip, a 10x close) are caught: the largest moves
# in the shared real Binance data (7 markets, 2017-2024, through March 2020, May 2021, LUNA and FTX) are
# x1.35 in an hour and x1.28 in five minutes. See docs/usage.md, "Implausible moves".
DEFAULT_MAX_CLOSE_JUMP: dict[str, float] = {
    **dict.fromkeys(("1m", "3m", "5m", "15m", "30m"), 3.0),
    **dict.fromkeys(("1h", "2h", "4h"), 4.0),
    **dict.fromkeys(("6h", "8h", "12h", "1d"), 5.0),
}


class ValidationSettings(_Strict):
    on_invalid: Literal["fail", "quarantine"] = "fail"
    quarantine_uri: str = "data/quarantine"
    results_dir: Path = Path("data/validation")
    # Timeframes left out keep their default bound (DEFAULT_MAX_CLOSE_JUMP).
    max_close_jump: dict[str, Annotated[float, Field(gt=1, allow_inf_nan=False)]] = Field(
        default_factory=lambda: dict(DEFAULT_MAX_CLOSE_JUMP)
    )

    @field_validator("max_close_jump")
    @classmethod
    def _jump_per_known_timeframe(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(TIMEFRAME_MS))
        if unknown:
            raise ValueError(f"unsupported timeframe {unknown[0]!r} (known: {', '.join(TIMEFRAME_MS)})")
        return {**DEFAULT_MAX_CLOSE_JUMP, **value}


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

    def checks_off(self) -> tuple[str, ...]:
        """The thresholds set so that they refuse no candidate (min_sharpe <= 0 demands no skill)."""
        off = {
            "min_sharpe": self.min_sharpe <= 0,
            "max_drawdown": self.max_drawdown >= 1,
            "min_trades": self.min_trades == 0,
            "must_beat": not self.must_beat,
            "min_deflated_sharpe": self.min_deflated_sharpe == 0,
        }
        return tuple(name for name, is_off in off.items() if is_off)

    @property
    def is_off(self) -> bool:
        """Every threshold off: any candidate that beats the champion (or the first one) is promoted."""
        return len(self.checks_off()) == 5


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
    # how many markets' candles the worker asks the exchange for at once (the exchange client's rate budget still
    # spaces the requests); 1 fetches one market after another
    fetch_concurrency: Annotated[int, Field(ge=1, le=64)] = 8
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
    # The dashboard's built files, served by the API from the same origin ("" serves none). Relative paths are
    # taken from the project folder.
    dashboard_dir: str = "dashboard/dist"
    # Origins allowed to call the API from a browser page they serve (CORS). Empty: same origin only.
    cors_origins: tuple[Annotated[str, Field(pattern=r"^https?://[A-Za-z0-9.\-\[\]:]+$")], ...] = ()
    risk: RiskSettings = RiskSettings()
    # the champion compared with the backtest that promoted it, between candles; a breach demotes it (cta.monitor)
    monitor: MonitorSettings = MonitorSettings()


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


class LedgerSettings(_Strict):
    """The ledger's Merkle log (serving.ledger_log): signed checkpoints, the keys that verify them, the anchors.

    The signing key is the secret CTA_LEDGER_SIGNING_KEY (`PRIVATE+KEY+<name>+<id>+<base64>`; `cta ledger keygen`
    makes one). `log_keys` are the public keys a checkpoint may be signed with: keep the old ones after a rotation
    so the checkpoints they signed still verify. A witness's own key is CTA_LEDGER_WITNESS_KEY."""

    origin: Annotated[str, Field(min_length=1, pattern=r"^[^\n]+$")] = "cta.local/ledger"
    checkpoint_every_entries: Annotated[int, Field(ge=1)] = 1000  # sign a checkpoint after this many new entries
    checkpoint_every_s: Annotated[float, Field(gt=0)] = 300.0  # ... or when the last one is this old
    log_keys: list[str] = []  # "<name>+<key id hex>+<base64>" verifier keys of the log (rotation: keep old ones)
    witness_keys: list[str] = []  # verifier keys of the witnesses whose cosignatures an anchor should carry
    anchor_dir: str | None = None  # a directory (file store) the checkpoints are published to
    anchor_s3_uri: str | None = None  # s3://bucket/prefix; Object Lock retention when the bucket has it on
    anchor_s3_endpoint_url: str | None = None
    anchor_retention_days: Annotated[int, Field(ge=1)] = 3650
    anchor_git: str | None = None  # a local git repository: one commit per checkpoint (made if missing or empty)
    witness_state: str = "data/ledger/witness-checkpoint.txt"  # the last checkpoint `cta ledger witness` cosigned


class Secrets(BaseModel):
    """Secrets, read only from the environment. Held as SecretStr: printing shows '**********'."""

    model_config = ConfigDict(frozen=True)

    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None
    db_password: SecretStr | None = None
    api_token: SecretStr | None = None
    viewer_token: SecretStr | None = None
    ledger_signing_key: SecretStr | None = None
    ledger_witness_key: SecretStr | None = None

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
    ledger: LedgerSettings = LedgerSettings()
    secrets: Secrets = Field(default_factory=Secrets, exclude=True, repr=False)

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of every non-secret setting (logged with each run)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def public_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def shown_dict(self) -> dict[str, Any]:
        """What may be shown to a person (`cta config show`): `public_dict` with every password in a URL masked."""
        masked: dict[str, Any] = mask_passwords(self.public_dict())
        return masked

    def warnings(self) -> list[str]:
        """Settings that are valid but switch a protection off (logged as WARNING at start, shown by config show)."""
        out: list[str] = []
        if self.backtest.gate.is_off:
            out.append(
                "backtest.gate is OFF: every threshold refuses nothing (min_sharpe <= 0, max_drawdown >= 1, "
                "min_trades = 0, must_beat = [], min_deflated_sharpe = 0): any candidate can be promoted"
            )
        return out

    def log_warnings(self) -> None:
        for warning in self.warnings():
            log.warning("config: %s", warning)


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


def _no_duplicate_keys(source: str) -> typing.Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """json's object_pairs_hook: a key given twice in one object is an error (json keeps the last one silently)."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise ConfigError(key, "<duplicate>", f"the key {key!r} is given twice in one object of {source}")
            out[key] = value
        return out

    return hook


def _strict_json(text: str, source: str) -> Any:
    return json.loads(text, object_pairs_hook=_no_duplicate_keys(source))


def env_var_name(dotted: str) -> str:
    """The environment variable of a setting: "serving.database_url" -> "CTA_SERVING__DATABASE_URL"."""
    return ENV_PREFIX + "__".join(part.upper() for part in dotted.split("."))


def url_password(value: str) -> str | None:
    """The password inside a URL ("scheme://user:password@host/...") or a "host:port,password=..." connection
    string, as written; None if there is none."""
    if "://" in value:
        try:
            password = urlsplit(value).password
        except ValueError:
            return None
        return password or None
    match = _KV_PASSWORD.search(value)
    return (match.group(3).strip() or None) if match else None


def mask_url_password(value: str) -> str:
    """`value` with the password of a URL or connection string replaced by ***."""
    password = url_password(value)
    if password is None:
        return value
    if "://" in value:
        scheme, rest = value.split("://", 1)
        netloc, sep, tail = rest.partition("/")
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        return f"{scheme}://{user}:{MASK}@{host}{sep}{tail}"
    return _KV_PASSWORD.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", value)


def mask_passwords(data: Any) -> Any:
    """A copy of `data` (JSON-like) with every password in a URL masked, and every secret-like key's value too."""
    if isinstance(data, Mapping):
        return {
            key: MASK if _secret_like(str(key)) and data[key] not in (None, "") else mask_passwords(data[key])
            for key in data
        }
    if isinstance(data, list | tuple):
        return [mask_passwords(item) for item in data]
    if isinstance(data, str):
        return mask_url_password(data)
    return data


def _secret_like(key: str) -> bool:
    return any(marker in key.lower() for marker in _SECRET_LIKE)


def env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """CTA_SECTION__FIELD=value -> {"section": {"field": value}} (secrets and meta vars excluded)."""
    skip = {*SECRET_ENV_VARS.values(), *NOT_SETTINGS_ENV_VARS}
    out: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name in skip:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        value: Any
        if raw.strip().lower() in ("true", "false"):  # booleans in any case, as before settings were strict
            value = raw.strip().lower() == "true"
        else:
            try:
                value = _strict_json(raw, name)
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
        if _secret_like(key) and value not in (None, ""):
            raise ConfigError(dotted, "<hidden>", f"secrets are read only from the environment, not {source}")
        if isinstance(value, Mapping):
            _refuse_secrets_in_files(value, source, prefix=f"{dotted}.")


def _refuse_file_only_values(data: Mapping[str, Any], source: str, prefix: str = "") -> None:
    """What a config FILE may not hold though the environment may: a URL with a password; and NaN/Infinity
    (which would switch a limit off) are refused here, naming the field and the file."""
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, str) and url_password(value) is not None:
            also = " (or only the password in CTA_DB_PASSWORD)" if dotted == "serving.database_url" else ""
            raise ConfigError(
                dotted,
                mask_url_password(value),
                f"a password in a URL is read only from the environment, not {source}: "
                f"set {env_var_name(dotted)}{also} instead",
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(dotted, value, f"not a finite number (in {source}): NaN and Infinity are not allowed")
        if isinstance(value, Mapping):
            _refuse_file_only_values(value, source, prefix=f"{dotted}.")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = _strict_json(path.read_text(), path.name)
    except FileNotFoundError:
        raise ConfigError("profile", path.stem, f"no config file {path}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(path.name, f"line {e.lineno}", f"not valid JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(path.name, type(data).__name__, "top level must be a JSON object")
    _refuse_secrets_in_files(data, path.name)
    _refuse_file_only_values(data, path.name)
    return data


PROFILE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


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
    if not PROFILE_NAME.fullmatch(profile):
        shown = profile.encode("unicode_escape", "backslashreplace").decode("ascii")[:100]
        raise ConfigError("profile", shown, "a profile is a config file's name: letters, digits, _ and - only")
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


def _bool_field(annotation: Any) -> bool:
    """A field typed bool or bool | None."""
    if annotation is bool:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = set(typing.get_args(annotation))
        return bool in args and args <= {bool, type(None)}
    return False


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The settings model of a field typed Model or Model | None."""
    candidates = typing.get_args(annotation) if typing.get_origin(annotation) else (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _refuse_lax_bools(model: type[BaseModel], data: Mapping[str, Any], prefix: str = "") -> None:
    """Booleans are JSON true/false only, in every settings model (also those defined outside this module):
    pydantic alone would take 0/1, "yes", "off" ..."""
    for name, field in model.model_fields.items():
        if name not in data:
            continue
        value, dotted = data[name], f"{prefix}{name}"
        if _bool_field(field.annotation):
            if not (isinstance(value, bool) or value is None):
                raise ConfigError(dotted, value, "must be true or false (a JSON boolean)")
        elif isinstance(value, Mapping) and (nested := _model_of(field.annotation)) is not None:
            _refuse_lax_bools(nested, value, prefix=f"{dotted}.")


def _non_finite(data: Any, prefix: str = "") -> tuple[str, float] | None:
    """The first NaN or infinite float in the dumped settings, with its dotted path."""
    if isinstance(data, float) and not math.isfinite(data):
        return prefix.rstrip("."), data
    if isinstance(data, Mapping):
        for key, value in data.items():
            found = _non_finite(value, f"{prefix}{key}.")
            if found:
                return found
    return None


def _validated(data: Mapping[str, Any], secrets: Secrets) -> Settings:
    _refuse_lax_bools(Settings, data)
    try:
        settings = Settings.model_validate({**data, "secrets": secrets})
    except ValidationError as e:
        error = e.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        raise ConfigError(field, error.get("input"), error["msg"]) from None
    # Settings models defined outside this module (costs, limits, the local exchange) do not refuse NaN/Infinity
    # themselves: one check over everything.
    found = _non_finite(settings.model_dump())
    if found:
        raise ConfigError(found[0], found[1], "must be a finite number (NaN and Infinity are not allowed)")
    return settings
