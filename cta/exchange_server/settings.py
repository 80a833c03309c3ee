"""Settings of the local exchange server (pydantic v2, frozen). Credentials are not settings."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

BUNDLED_CANDLES_DIR = Path(__file__).resolve().parent.parent / "data" / "candles"


def parse_start_ms(value: str | int) -> int:
    """Epoch ms from an ISO-8601 string (naive means UTC), a digit string, or an int; ValueError if bad."""
    if isinstance(value, bool):
        raise ValueError("start must be an ISO-8601 UTC string or epoch milliseconds, not a bool")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"start must be >= 0 epoch ms, got {value}")
        return value
    text = value.strip()
    if text.isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"start must be ISO-8601 (e.g. 2022-06-01T00:00:00Z) or epoch ms, got {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


class FaultSettings(BaseModel):
    """Random faults, drawn from a seeded RNG for every non-admin request."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    latency_ms: float = Field(default=0.0, ge=0, description="delay added before every request is handled")
    error_rate: float = Field(default=0.0, ge=0, le=1, description="probability of an HTTP 503")
    timeout_rate: float = Field(default=0.0, ge=0, le=1, description="probability of waiting timeout_s first")
    timeout_s: float = Field(default=30.0, gt=0, description="how long a timeout fault stalls the answer")
    drop_after_execute_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="POST /order: execute, then close the connection without answering",
    )
    seed: int | None = None


class LocalExchangeSettings(BaseModel):
    """Where to listen, which candles to replay and how the simulated account behaves."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535, description="0 picks a free port")
    data_dir: Path | None = Field(default=None, description="candle directory; None = bundled cta/data/candles")
    speed: float = Field(default=1.0, ge=0, description="market seconds per wall second; 0 freezes the clock")
    start: str | int | None = Field(
        default=None, description="replay start (ISO-8601 UTC or epoch ms); None = end of the data"
    )
    initial_balances: dict[str, float] = Field(default_factory=lambda: {"USDT": 10000.0})
    taker_fee_rate: float = Field(default=0.001, ge=0, lt=1)
    maker_fee_rate: float = Field(default=0.001, ge=0, lt=1)
    weight_limit_per_minute: int = Field(default=6000, ge=1)
    max_recv_window_ms: int = Field(default=60000, ge=1)
    fill_participation: float = Field(
        default=0.1, gt=0, le=1, description="max share of a candle's volume one resting limit order can fill"
    )
    faults: FaultSettings = Field(default_factory=FaultSettings)
    withdrawals_enabled: bool = Field(
        default=False,
        description="what the key may do: apiRestrictions (Binance), key_permissions can_transfer (Coinbase)",
    )

    @field_validator("start")
    @classmethod
    def _check_start(cls, value: str | int | None) -> str | int | None:
        if value is not None:
            parse_start_ms(value)
        return value

    @field_validator("initial_balances")
    @classmethod
    def _check_balances(cls, value: dict[str, float]) -> dict[str, float]:
        for asset, amount in value.items():
            if not asset or not asset.isalnum() or asset.upper() != asset:
                raise ValueError(f"asset names must be upper-case alphanumerics, got {asset!r}")
            if not amount >= 0:
                raise ValueError(f"balance of {asset} must be >= 0, got {amount}")
        return value

    def start_ms(self) -> int | None:
        """The replay start in epoch ms, or None for 'the end of the data'."""
        return None if self.start is None else parse_start_ms(self.start)

    def resolved_data_dir(self) -> Path:
        return self.data_dir if self.data_dir is not None else BUNDLED_CANDLES_DIR
