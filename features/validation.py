"""The "features" gate, derived from the feature registry: every registry column with its dtype,
finite and non-null after the warm-up, within its known bounds, and exactly one row per candle
after the warm-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from cta.validation import GateReport, check, run_gate
from features.registry import FeatureSpec, select, warmup_bars
from features.table import KEY_COLUMNS

FINITE = 1e12  # no feature is this large; catches +-inf (GX "between" treats them as out of range)


def feature_checks(specs: tuple[FeatureSpec, ...], expected_rows: int) -> list[Any]:
    checks = [
        check(
            "ExpectTableColumnsToMatchOrderedList",
            "columns differ from the feature registry",
            column_list=[*KEY_COLUMNS, *(s.name for s in specs)],
        ),
        check(
            "ExpectTableRowCountToEqual", f"row count is not candles - warm-up ({expected_rows})", value=expected_rows
        ),
        check("ExpectColumnValuesToBeUnique", "duplicate candle", column="ts"),
        check("ExpectColumnValuesToBeIncreasing", "candles out of order", column="ts", strictly=True),
    ]
    for spec in specs:
        lower = spec.lower if spec.lower is not None else -FINITE
        upper = spec.upper if spec.upper is not None else FINITE
        checks += [
            check(
                "ExpectColumnValuesToBeOfType", f"{spec.name} is not {spec.dtype}", column=spec.name, type_=spec.dtype
            ),
            check("ExpectColumnValuesToNotBeNull", f"{spec.name} missing after warm-up", column=spec.name),
            check(
                "ExpectColumnValuesToBeBetween",
                f"{spec.name} outside [{lower}, {upper}] or not finite",
                column=spec.name,
                min_value=lower,
                max_value=upper,
            ),
        ]
    return checks


def validate_features(
    frame: pd.DataFrame, candle_count: int, names: tuple[str, ...] | None, results_dir: Path | None = None
) -> GateReport:
    specs = select(names)
    expected_rows = candle_count - warmup_bars(specs)
    return run_gate(frame, "features", feature_checks(specs, expected_rows), results_dir)
