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

from cta.candles import CANDLE_COLUMNS, CANDLE_DTYPES, PRICE_COLUMNS
from cta.timeframes import timeframe_ms

log = logging.getLogger(__name__)

MIN_TS_MS = 946_684_800_000  # 2000-01-01: no crypto venue has candles before this
MAX_PRICE = 1e15
MAX_VOLUME = 1e18


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
def candle_check_frame(candles: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """Candles plus the derived columns the candle suite checks (close time, alignment, OHLC bounds)."""
    step = timeframe_ms(timeframe)
    frame = candles.reset_index(drop=True).copy()
    frame["close_ts"] = frame["ts"] + step
    frame["ts_offset"] = frame["ts"] % step
    frame["max_open_close"] = np.fmax(frame["open"], frame["close"])
    frame["min_open_close"] = np.fmin(frame["open"], frame["close"])
    return frame


def candle_checks(timeframe: str, now_ms: int) -> list[Any]:
    """The "candles" suite: schema, completeness, prices, OHLC consistency, time grid, closedness."""
    derived = ["close_ts", "ts_offset", "max_open_close", "min_open_close"]
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
        check("ExpectColumnValuesToBeUnique", "duplicate timestamp", column="ts"),
        check("ExpectColumnValuesToBeIncreasing", "timestamp not increasing", column="ts", strictly=True),
        check(
            "ExpectColumnValuesToBeInSet", f"timestamp not aligned to {timeframe}", column="ts_offset", value_set=[0]
        ),
        check(
            "ExpectColumnValuesToBeBetween",
            "timestamp before 2000 or in the future",
            column="ts",
            min_value=MIN_TS_MS,
            max_value=now_ms,
        ),
        check("ExpectColumnValuesToBeBetween", "candle not closed yet", column="close_ts", max_value=now_ms),
    ]


def validate_candles(candles: pd.DataFrame, timeframe: str, now_ms: int, results_dir: Path | None = None) -> GateReport:
    return run_gate(candle_check_frame(candles, timeframe), "candles", candle_checks(timeframe, now_ms), results_dir)


def find_gaps(ts: pd.Series, timeframe: str) -> list[tuple[int, int]]:
    """(last candle before the gap, number of missing candles) for each hole in a sorted ts series."""
    step = timeframe_ms(timeframe)
    values = ts.to_numpy(dtype="int64")
    if len(values) < 2:
        return []
    missing = np.diff(values) // step - 1
    where = np.nonzero(missing > 0)[0]
    return [(int(values[i]), int(missing[i])) for i in where]


def candle_problem(row: Sequence[Any], timeframe: str, now_ms: int, previous_ts: int | None = None) -> str | None:
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
    if previous_ts is not None and ts == previous_ts:
        return "duplicate timestamp"
    if previous_ts is not None and ts < previous_ts:
        return "timestamp not increasing"
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
