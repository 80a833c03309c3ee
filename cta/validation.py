"""Validation gates on Great Expectations 1.x, with a reason for every rejected row.

A gate is a named GX suite of (expectation, reason) pairs. `run_gate` validates a DataFrame, saves the
GX result as JSON under the results dir, and returns which rows failed which expectation, so bad rows
can be quarantined with a human-readable reason instead of being dropped.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cta.candles import CANDLE_COLUMNS, CANDLE_DTYPES, MIN_TS_MS, PRICE_COLUMNS, timestamp_units
from cta.config import DEFAULT_MAX_CLOSE_JUMP
from cta.timeframes import timeframe_ms

log = logging.getLogger(__name__)

MAX_PRICE = 1e15
MAX_VOLUME = 1e18
TS_UNIT_REASON = "timestamp not in milliseconds (it reads as seconds, microseconds or nanoseconds)"
WRONG_UNITS = ("s", "us", "ns")


def jump_reason(max_close_jump: float) -> str:
    return f"close moved more than {max_close_jump:g}x from the previous close"


def default_max_close_jump(timeframe: str) -> float:
    timeframe_ms(timeframe)  # ConfigError for an unknown timeframe
    return DEFAULT_MAX_CLOSE_JUMP[timeframe]


def check(expectation_type: str, reason: str, **kwargs: Any) -> Any:
    """A GX expectation (by class name, e.g. "ExpectColumnValuesToNotBeNull") that carries the reason
    a failing row is given, in its meta."""
    import great_expectations.expectations as gxe

    return getattr(gxe, expectation_type)(**kwargs, meta={"reason": reason})


@dataclass
class GateReport:
    suite: str
    success: bool
    rows: int
    row_reasons: dict[int, list[str]] = field(default_factory=dict)  # positional row -> reasons
    table_failures: list[str] = field(default_factory=list)  # failures that concern the whole batch
    results_path: Path | None = None

    @property
    def bad_rows(self) -> list[int]:
        return sorted(self.row_reasons)

    def reasons_series(self, index: pd.Index) -> pd.Series:
        """A Series aligned to the validated frame's index with '; '-joined reasons ('' if clean)."""
        joined = ["; ".join(self.row_reasons.get(i, [])) for i in range(len(index))]
        return pd.Series(joined, index=index, dtype="object")

    def summary(self) -> str:
        if self.success:
            return f"suite {self.suite!r}: {self.rows} rows passed"
        counts: dict[str, int] = {}
        for reasons in self.row_reasons.values():
            for reason in reasons:
                counts[reason] = counts.get(reason, 0) + 1
        parts = [f"{n}x {r}" for r, n in sorted(counts.items(), key=lambda kv: -kv[1])]
        parts += self.table_failures
        return f"suite {self.suite!r}: {len(self.row_reasons)} of {self.rows} rows failed: " + ", ".join(parts)


@functools.cache
def _batch_definition() -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("cta")
    return source.add_dataframe_asset("frame").add_batch_definition_whole_dataframe("whole")


def run_gate(
    frame: pd.DataFrame, suite_name: str, checks: Sequence[Any], results_dir: Path | None = None
) -> GateReport:
    """Validate `frame` against expectations made by `check()`; never raises on bad data."""
    import great_expectations as gx

    data = frame.reset_index(drop=True)
    suite = gx.ExpectationSuite(name=suite_name, expectations=list(checks))
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": data})
    result = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    report = GateReport(suite=suite_name, success=bool(result.success), rows=len(data))
    for item in result.results:
        if item.success:
            continue
        config = item.expectation_config
        reason = str((config.meta or {}).get("reason", config.type))
        if item.exception_info and item.exception_info.get("raised_exception"):
            problem = item.exception_info.get("exception_message")
            report.table_failures.append(f"{reason} (could not evaluate: {problem})")
            continue
        indices = (item.result or {}).get("unexpected_index_list")
        if indices is None:
            report.table_failures.append(reason)
            continue
        for position in indices:
            report.row_reasons.setdefault(int(position), []).append(reason)
    if results_dir is not None:
        report.results_path = _save(result, results_dir, suite_name)
        log.info("validation %s saved to %s", "passed" if report.success else "FAILED", report.results_path)
    return report


def _save(result: Any, results_dir: Path, suite_name: str) -> Path:
    directory = results_dir / suite_name
    directory.mkdir(parents=True, exist_ok=True)
    run_name = result.meta.get("run_id", {}).get("run_time") if isinstance(result.meta, dict) else None
    stem = str(run_name or "run").replace(":", "").replace(" ", "T")
    path = directory / f"{stem}-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(result.to_json_dict(), indent=1, default=str))
    return path


# --- the "candles" suite -------------------------------------------------------------------------
def candle_check_frame(candles: pd.DataFrame, timeframe: str, previous_close: float | None = None) -> pd.DataFrame:
    """Candles plus the derived columns the candle suite checks (close time, alignment, OHLC bounds, the
    timestamp's unit, the move from the previous close: the previous usable close in the frame, or
    `previous_close` for the first row, e.g. the newest stored candle's)."""
    step = timeframe_ms(timeframe)
    frame = candles.reset_index(drop=True).copy()
    frame["close_ts"] = frame["ts"] + step
    frame["ts_offset"] = frame["ts"] % step
    frame["max_open_close"] = np.fmax(frame["open"], frame["close"])
    frame["min_open_close"] = np.fmin(frame["open"], frame["close"])
    frame["ts_unit"] = timestamp_units(pd.to_numeric(frame["ts"], errors="coerce"))
    frame["close_jump"] = close_jumps(frame["close"], previous_close)
    return frame


def close_jumps(close: pd.Series, previous_close: float | None = None) -> pd.Series:
    """max(close / previous, previous / close) per row, previous = the last usable (finite, positive) close
    before it; NaN where either is missing (those rows fail the price checks instead). Up and down moves of
    the same size in log terms give the same factor. A spike flags its own row and the one after it: a
    comparison of neighbours cannot tell which side is wrong."""
    values = pd.to_numeric(close, errors="coerce").astype("float64").reset_index(drop=True)
    usable = values.where(np.isfinite(values) & (values > 0))
    previous = usable.shift(1)
    if len(previous) and previous_close is not None and math.isfinite(previous_close) and previous_close > 0:
        previous.iloc[0] = previous_close
    ratio = usable / previous.ffill()
    return np.fmax(ratio, 1 / ratio)


def candle_checks(timeframe: str, now_ms: int, max_close_jump: float | None = None) -> list[Any]:
    """The "candles" suite: schema, completeness, prices, OHLC consistency, implausible moves, time grid and
    unit, closedness.

    Implausible moves are quarantined, not just flagged or warned about: a 10x close that reached the lake
    would be learned from, backtested on and traded on, and corrupt data is worse than missing data (a hole is
    reported as a gap and never filled). The bound (`validation.max_close_jump`, per timeframe) is far above
    any real move in the data we hold, so what it catches is almost surely an error; the quarantined row keeps
    its reason, so a real move can be reviewed and let through with a higher bound."""
    jump = default_max_close_jump(timeframe) if max_close_jump is None else max_close_jump
    derived = ["close_ts", "ts_offset", "max_open_close", "min_open_close", "ts_unit", "close_jump"]
    checks = [
        check(
            "ExpectTableColumnsToMatchSet",
            "columns differ from the candle schema",
            column_set=[*CANDLE_COLUMNS, *derived],
            exact_match=True,
        ),
    ]
    for column, dtype in CANDLE_DTYPES.items():
        checks.append(check("ExpectColumnValuesToBeOfType", f"{column} is not {dtype}", column=column, type_=dtype))
        checks.append(check("ExpectColumnValuesToNotBeNull", f"{column} missing or not a number", column=column))
    for column in PRICE_COLUMNS:
        checks.append(
            check(
                "ExpectColumnValuesToBeBetween",
                f"{column} not a finite positive price",
                column=column,
                min_value=0,
                strict_min=True,
                max_value=MAX_PRICE,
            )
        )
    return [
        *checks,
        check(
            "ExpectColumnValuesToBeBetween",
            "volume negative or not finite",
            column="volume",
            min_value=0,
            max_value=MAX_VOLUME,
        ),
        check(
            "ExpectColumnPairValuesAToBeGreaterThanB",
            "high below open or close",
            column_A="high",
            column_B="max_open_close",
            or_equal=True,
        ),
        check(
            "ExpectColumnPairValuesAToBeGreaterThanB",
            "low above open or close",
            column_A="min_open_close",
            column_B="low",
            or_equal=True,
        ),
        check("ExpectColumnValuesToBeBetween", jump_reason(jump), column="close_jump", max_value=jump),
        check("ExpectColumnValuesToBeUnique", "duplicate timestamp", column="ts"),
        check("ExpectColumnValuesToBeIncreasing", "timestamp not increasing", column="ts", strictly=True),
        check(
            "ExpectColumnValuesToBeInSet", f"timestamp not aligned to {timeframe}", column="ts_offset", value_set=[0]
        ),
        check("ExpectColumnValuesToNotBeInSet", TS_UNIT_REASON, column="ts_unit", value_set=list(WRONG_UNITS)),
        check(
            "ExpectColumnValuesToBeBetween",
            "timestamp before 2000 or in the future",
            column="ts",
            min_value=MIN_TS_MS,
            max_value=now_ms,
        ),
        check("ExpectColumnValuesToBeBetween", "candle not closed yet", column="close_ts", max_value=now_ms),
    ]


def validate_candles(
    candles: pd.DataFrame,
    timeframe: str,
    now_ms: int,
    results_dir: Path | None = None,
    *,
    max_close_jump: float | None = None,
    previous_close: float | None = None,
) -> GateReport:
    """The "candles" suite over `candles`; `max_close_jump` defaults to the timeframe's default bound and
    `previous_close` (the newest stored candle's) lets the first row's move be checked too."""
    return run_gate(
        candle_check_frame(candles, timeframe, previous_close),
        "candles",
        candle_checks(timeframe, now_ms, max_close_jump),
        results_dir,
    )


def find_gaps(ts: pd.Series, timeframe: str) -> list[tuple[int, int]]:
    """(last candle before the gap, number of missing candles) for each hole in a sorted ts series."""
    step = timeframe_ms(timeframe)
    values = ts.to_numpy(dtype="int64")
    if len(values) < 2:
        return []
    missing = np.diff(values) // step - 1
    where = np.nonzero(missing > 0)[0]
    return [(int(values[i]), int(missing[i])) for i in where]


def candle_problem(
    row: Sequence[Any],
    timeframe: str,
    now_ms: int,
    previous_ts: int | None = None,
    *,
    previous_close: float | None = None,
    max_close_jump: float | None = None,
) -> str | None:
    """The first reason the candle suite would give one candle [ts, open, high, low, close, volume]
    (None if clean). Plain Python for the serving hot path, where a GX run per candle would cost more
    than the decision; the reasons are the suite's own, and a test holds the two to the same verdicts."""
    if len(row) != len(CANDLE_COLUMNS):
        return "columns differ from the candle schema"
    ts = row[0]
    open_, high, low, close, volume = (_number(v) for v in row[1:6])
    if not isinstance(ts, int | np.integer) or isinstance(ts, bool):
        return "timestamp before 2000 or in the future"
    for name, price in (("open", open_), ("high", high), ("low", low), ("close", close)):
        if not math.isfinite(price):
            return f"{name} missing or not a number" if math.isnan(price) else f"{name} not a finite positive price"
        if not 0 < price <= MAX_PRICE:
            return f"{name} not a finite positive price"
    if not math.isfinite(volume) or not 0 <= volume <= MAX_VOLUME:
        return "volume missing or not a number" if math.isnan(volume) else "volume negative or not finite"
    if high < max(open_, close):
        return "high below open or close"
    if low > min(open_, close):
        return "low above open or close"
    jump = default_max_close_jump(timeframe) if max_close_jump is None else max_close_jump
    if previous_close is not None and previous_close > 0 and max(close / previous_close, previous_close / close) > jump:
        return jump_reason(jump)
    if previous_ts is not None and ts == previous_ts:
        return "duplicate timestamp"
    if previous_ts is not None and ts < previous_ts:
        return "timestamp not increasing"
    if timestamp_units(np.array([ts]))[0] in WRONG_UNITS:
        return TS_UNIT_REASON
    step = timeframe_ms(timeframe)
    if ts % step:
        return f"timestamp not aligned to {timeframe}"
    if not MIN_TS_MS <= ts <= now_ms:
        return "timestamp before 2000 or in the future"
    if ts + step > now_ms:
        return "candle not closed yet"
    return None


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
