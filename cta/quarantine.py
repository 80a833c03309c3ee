"""Quarantine: rejected candles are kept, with the reason per row, never silently dropped."""

from __future__ import annotations

import io
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import pandas as pd

from cta.lake import Market
from cta.storage import Storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuarantineRecord:
    key: str
    rows: int


class Quarantine:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def put(
        self,
        market: Market,
        rows: pd.DataFrame,
        reasons: pd.Series,
        *,
        run_id: str,
        detected_at_ms: int,
        raw: list[Any] | None = None,
    ) -> QuarantineRecord:
        """Store `rows` with their `reasons` (aligned Series) and, if given, the raw rows as received."""
        frame = rows.reset_index(drop=True).copy()
        frame["reason"] = reasons.reset_index(drop=True).astype(str)
        frame["raw"] = [json.dumps(r, default=str) for r in raw] if raw is not None else ""
        frame["run_id"] = run_id
        frame["detected_at_ms"] = detected_at_ms
        stamp = pd.Timestamp(detected_at_ms, unit="ms", tz="UTC").strftime("%Y%m%dT%H%M%S")
        key = f"quarantine/{market.key}/{stamp}-{run_id[:12]}-{uuid.uuid4().hex[:6]}.parquet"
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        self.storage.put(key, buffer.getvalue())
        log.warning("quarantined %d %s rows to %s/%s", len(frame), market, self.storage.uri, key)
        return QuarantineRecord(key=key, rows=len(frame))

    def read(self, market: Market | None = None) -> pd.DataFrame:
        prefix = f"quarantine/{market.key}/" if market else "quarantine/"
        frames = [
            pd.read_parquet(io.BytesIO(raw))
            for key in self.storage.list(prefix)
            if key.endswith(".parquet") and (raw := self.storage.get(key)) is not None
        ]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
