"""The dashboard API's contract (API v1): what every route takes and returns, as pydantic models.

The OpenAPI document (`serving.api_v1.openapi`) is generated from these models and the route table; the
dashboard's TypeScript types are generated from that document (`dashboard/src/api/schema.d.ts`), so nothing here
is written twice. Times are ISO-8601 UTC strings, amounts are floats, identifiers integers.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["viewer", "operator"]
TradingStateName = Literal["RUNNING", "REDUCING", "HALTED"]
Limit = Annotated[int, Field(ge=1, le=1000, description="rows per page (1-1000)")]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _In(BaseModel):
    """A request body or a query: unknown fields are refused by name."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# ----- errors and identity ----------------------------------------------------------------------------------------


class ErrorOut(_Out):
    error: str = Field(description="what was wrong, naming the field when one was")
    field: str | None = Field(default=None, description="the offending field's dotted path, when there is one")


class MeOut(_Out):
    role: Role
    can_operate: bool
    markets: list[str] = Field(description="the markets this worker serves (configured order)")


# ----- overview ---------------------------------------------------------------------------------------------------


class ControlOut(_Out):
    state: TradingStateName
    reason: str
    cancel_open: bool
    updated_at: str | None
    updated_by: str | None


class ChampionOut(_Out):
    model: str | None
    version: str | None
    problem: str | None


class LastDecisionOut(_Out):
    time: str
    prediction: float | None
    target: float
    reason: str
    model_version: str


class MarketOverview(_Out):
    market: str
    symbol: str
    timeframe: str
    enabled: bool
    champion: ChampionOut
    position_units: float
    position_value: float | None
    equity: float | None
    start_equity: float | None
    pnl_today: float | None
    pnl_since_start: float | None
    return_since_start: float | None = Field(description="equity now / equity at the first snapshot - 1")
    buy_hold_since_start: float | None = Field(description="close now / close at the first snapshot - 1")
    last_candle_time: str | None
    data_age_s: float | None = Field(description="seconds since the newest processed candle closed")
    last_decision: LastDecisionOut | None
    orders: int
    warnings: list[str]


class OverviewOut(_Out):
    mode: Literal["paper", "live"]
    venue: str
    broker: str
    trading: ControlOut
    ready: bool
    reasons: list[str]
    markets: list[MarketOverview]
    server_time: str
    market_time: str | None = Field(
        default=None, description="the market clock the worker trades by (a replay's differs from server_time)"
    )


# ----- orders, fills, decisions -------------------------------------------------------------------------------------


class FillOut(_Out):
    id: int
    order_id: int
    client_order_id: str
    exchange_trade_id: str
    market: str
    price: float
    amount: float
    fee_cost: float
    fee_currency: str | None
    time: str


class DecisionOut(_Out):
    id: int
    market: str
    candle_time: str
    model_name: str
    model_version: str
    feature_hash: str
    prediction: float | None
    target: float
    delta: float
    reason: str
    created_at: str | None


class OrderOut(_Out):
    id: int
    client_order_id: str
    exchange_order_id: str | None
    market: str
    symbol: str
    side: str
    type: str
    status: str
    amount: float
    limit_price: float | None
    filled: float
    average_price: float | None
    fee_cost: float
    fee_currency: str | None
    candle_time: str
    created_at: str | None
    updated_at: str | None
    last_error: str | None
    decision_id: int | None
    decision: DecisionOut | None
    fills: list[FillOut]
    ledger_seq: int | None = Field(description="the newest ledger entry about the order (its intent, sending or state)")


class OrderPage(_Out):
    items: list[OrderOut]
    total: int
    next_before: int | None = Field(description="pass as `before` for the next (older) page; null at the end")


class FillPage(_Out):
    items: list[FillOut]
    total: int
    next_before: int | None


class DecisionPage(_Out):
    items: list[DecisionOut]
    total: int
    next_before: int | None


class PageQuery(_In):
    limit: Limit = 50
    before: Annotated[int | None, Field(ge=1, description="only rows with an id below this (the next page)")] = None
    market: str | None = None


class OrderQuery(PageQuery):
    status: str | None = Field(default=None, description="one status or a comma-separated list, e.g. OPEN,FILLED")
    side: Literal["buy", "sell"] | None = None


class DecisionQuery(PageQuery):
    orders_only: bool = Field(default=False, description="only decisions that asked for an order")


# ----- chart ------------------------------------------------------------------------------------------------------


class CandleOut(_Out):
    time: int = Field(description="open time, epoch seconds")
    open: float
    high: float
    low: float
    close: float
    volume: float


class TargetOut(_Out):
    time: int = Field(description="candle open time, epoch seconds")
    target: float
    prediction: float | None


class ChartFillOut(_Out):
    time: int = Field(description="epoch seconds")
    side: str
    price: float
    amount: float


class ChartOut(_Out):
    market: str
    candles: list[CandleOut]
    targets: list[TargetOut]
    fills: list[ChartFillOut]
    source: str = Field(description="where the candles came from")


class ChartQuery(_In):
    market: str
    limit: Annotated[int, Field(ge=10, le=1000)] = 300


# ----- performance ------------------------------------------------------------------------------------------------


class EquityPointOut(_Out):
    time: str
    equity: float
    drawdown: float = Field(description="equity / running peak - 1 (0 or negative)")


class DailyPnlOut(_Out):
    day: str
    pnl: float


class PerformanceOut(_Out):
    market: str | None = Field(description="null: every market together")
    equity: list[EquityPointOut]
    daily: list[DailyPnlOut]
    total_return: float | None
    buy_hold_return: float | None
    sharpe: float | None = Field(description="annualised from per-snapshot returns (null under 30 of them)")
    sortino: float | None
    max_drawdown: float | None
    snapshots: int


class PerformanceQuery(_In):
    market: str | None = None
    limit: Annotated[int, Field(ge=10, le=20000)] = 5000


# ----- models -----------------------------------------------------------------------------------------------------


class VersionOut(_Out):
    version: str
    run_id: str | None
    family: str | None
    created_at: str | None
    tags: dict[str, str]


class CandidateOut(_Out):
    run_id: str | None
    started_at: str | None
    family: str | None
    version: str | None
    verdict: str
    reasons: list[str]
    sharpe: float | None
    max_drawdown: float | None
    trades: float | None


class CurvePointOut(_Out):
    time: str
    value: float = Field(description="growth of 1 since the curve's start")


class MarketModelsOut(_Out):
    market: str
    registered_name: str
    champion: VersionOut | None
    previous: VersionOut | None
    candidates: list[CandidateOut]
    backtest_curve: list[CurvePointOut] = Field(description="the promoting backtest's equity, from 1")
    live_curve: list[CurvePointOut] = Field(description="paper/live equity since the champion was promoted, from 1")
    backtest_return: float | None
    live_return: float | None
    gap: float | None = Field(description="live return - backtest return over the same number of bars")
    problem: str | None


class ModelsOut(_Out):
    markets: list[MarketModelsOut]


class RollbackIn(_In):
    market: str
    reason: Annotated[str, Field(min_length=1, max_length=1000)]


class RollbackOut(_Out):
    market: str
    description: str


# ----- data quality -----------------------------------------------------------------------------------------------


class ValidationRunOut(_Out):
    suite: str
    time: str | None
    success: bool | None
    failed: list[str]
    file: str


class QuarantinedRowOut(_Out):
    market: str
    candle_time: str | None
    reason: str
    run_id: str
    detected_at: str | None


class MarketQualityOut(_Out):
    market: str
    lake_rows: int
    lake_newest: str | None
    lake_age_s: float | None
    gaps: int
    missing_candles: int
    suite: str
    online_newest: str | None
    online_age_s: float | None
    quarantined: int


class QualityOut(_Out):
    markets: list[MarketQualityOut]
    validations: list[ValidationRunOut]
    quarantine: list[QuarantinedRowOut]
    problem: str | None


# ----- controls and parameters --------------------------------------------------------------------------------------


class ControlIn(_In):
    state: TradingStateName
    reason: Annotated[str, Field(min_length=1, max_length=1000)]
    cancel_open: bool = False


class ControlChangeOut(ControlOut):
    worker_notified: bool | None


class ParameterChange(_Out):
    field: str
    old: Any
    new: Any


class ParametersOut(_Out):
    values: dict[str, Any] = Field(description="the parameters in force: limits, risk")
    defaults: dict[str, Any] = Field(description="what the configuration says (before any live change)")
    parameter_schema: dict[str, Any] = Field(description="JSON Schema of `values`, the typed config's own")
    disabled_markets: list[str]
    version: int = Field(description="increments with every change; send it back to refuse a stale edit")
    updated_at: str | None
    updated_by: str | None
    reason: str | None


class ParametersIn(_In):
    changes: dict[str, Any] = Field(description="dotted field -> new value, e.g. {'limits.max_position': 0.5}")
    reason: Annotated[str, Field(min_length=1, max_length=1000)]
    version: int | None = Field(default=None, description="the version the edit was made on (optional)")


class ParametersChangedOut(_Out):
    parameters: ParametersOut
    changes: list[ParameterChange]
    ledger_seq: int | None


class MarketEnabledIn(_In):
    market: str
    enabled: bool
    reason: Annotated[str, Field(min_length=1, max_length=1000)]


# ----- ledger -----------------------------------------------------------------------------------------------------


class LedgerEntryOut(_Out):
    seq: int
    time: str
    kind: str
    payload: dict[str, Any]
    hash: str
    prev_hash: str


class LedgerPage(_Out):
    items: list[LedgerEntryOut]
    total: int
    next_before: int | None


class LedgerQuery(_In):
    limit: Limit = 50
    before: Annotated[int | None, Field(ge=1)] = None
    kind: str | None = None


class LedgerVerifyOut(_Out):
    ok: bool
    entries: int
    problem: str | None
    checkpoint_size: int | None
    checkpoint_time: str | None


# ----- the live stream ----------------------------------------------------------------------------------------------


class StreamEvent(_Out):
    """One server-sent event's data (its `event:` line is `kind`)."""

    kind: Literal["hello", "decision", "order", "fill", "equity", "state", "parameters", "heartbeat"]
    id: int | None = None
    market: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    server_time: str
