"""Pre-trade risk checks: each rule blocks entries, exits pass everything but HALTED, and nothing allowed under
REDUCING ever grows a position."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cta.config import RiskSettings
from cta.lake import Market
from serving.control import TradingState
from serving.risk import RiskState, check_order, classify, position_after, should_halt
from serving.types import OrderRequest, Side

MARKET = Market("binance", "BTC/USDT", "1h")
H = 3_600_000
LIMITS = RiskSettings(
    max_order_notional=10_000.0,
    max_position_notional=15_000.0,
    daily_loss_limit=0.05,
    max_drawdown_halt=0.20,
    stale_after_bars=1.0,
)
HEALTHY = RiskState(
    trading_state=TradingState.RUNNING,
    equity=100_000.0,
    day_open_equity=100_000.0,
    peak_equity=100_000.0,
    position_units=0.0,
    price=100.0,
    candle_age_ms=5_000,
    features_age_ms=6_000,
    bar_ms=H,
    model_age_days=3.0,
    max_model_age_days=30.0,
)


def order(side: Side, amount: float) -> OrderRequest:
    return OrderRequest(
        market=MARKET, side=side, amount=amount, target=0.0, candle_ts=1_700_000_000_000, reference_price=100.0
    )


def state(**changes: Any) -> RiskState:
    return dataclasses.replace(HEALTHY, **changes)


# Each rule alone: (case, state changes, reason fragment). An entry is blocked, an exit/reduce is not.
BREACHES = [
    ("reducing", {"trading_state": TradingState.REDUCING}, "REDUCING"),
    ("daily loss", {"equity": 94_000.0, "peak_equity": 100_000.0}, "daily loss 6.00%"),
    ("drawdown", {"equity": 79_000.0, "day_open_equity": 79_500.0}, "drawdown 21.00%"),
    ("stale candle", {"candle_age_ms": H + 1}, "candle is stale"),
    ("stale features", {"features_age_ms": 2 * H}, "features is stale: 7200 s"),
    ("unknown candle age", {"candle_age_ms": None}, "candle age unknown"),
    ("old model", {"model_age_days": 31.0}, "model is 31.0 days old > 30 days"),
    ("no model", {"model_age_days": None}, "no model version known"),
]


@pytest.mark.parametrize(("case", "changes", "fragment"), BREACHES, ids=[b[0] for b in BREACHES])
def test_each_rule_blocks_entries_with_a_reason(case: str, changes: dict[str, Any], fragment: str) -> None:
    verdict = check_order(order("buy", 10.0), state(**changes), LIMITS)
    assert (verdict.allowed, verdict.kind) == (False, "entry")
    assert any(fragment in reason for reason in verdict.reasons), verdict.reasons
    # A flip through zero is an entry too.
    flip = check_order(order("sell", 15.0), state(position_units=5.0, **changes), LIMITS)
    assert (flip.allowed, flip.kind) == (False, "entry")


@pytest.mark.parametrize(("case", "changes", "fragment"), BREACHES, ids=[b[0] for b in BREACHES])
def test_exits_and_reductions_pass_every_rule_but_halted(case: str, changes: dict[str, Any], fragment: str) -> None:
    long_state = state(position_units=120.0, **changes)  # 12,000 notional
    exit_verdict = check_order(order("sell", 120.0), long_state, LIMITS)
    assert (exit_verdict.allowed, exit_verdict.kind, exit_verdict.reasons) == (True, "exit", ())
    reduce_verdict = check_order(order("buy", 30.0), state(position_units=-120.0, **changes), LIMITS)
    assert (reduce_verdict.allowed, reduce_verdict.kind) == (True, "reduce")


def test_exits_pass_notional_limits_even_when_larger_than_them() -> None:
    # 300 units at 100 = 30,000, above both notional limits: closing it must still be possible.
    verdict = check_order(order("sell", 300.0), state(position_units=300.0), LIMITS)
    assert (verdict.allowed, verdict.kind) == (True, "exit")


def test_halted_blocks_everything() -> None:
    halted = state(trading_state=TradingState.HALTED, position_units=10.0)
    for request in (order("sell", 10.0), order("sell", 5.0), order("buy", 1.0)):
        verdict = check_order(request, halted, LIMITS)
        assert not verdict.allowed
        assert verdict.reasons == ("trading state is HALTED: no orders are sent",)


def test_a_healthy_entry_within_limits_is_allowed() -> None:
    verdict = check_order(order("buy", 50.0), HEALTHY, LIMITS)
    assert (verdict.allowed, verdict.kind, verdict.reasons) == (True, "entry", ())


@pytest.mark.parametrize(
    ("position", "side", "amount", "fragment"),
    [
        (0.0, "buy", 101.0, "order notional 10,100.00 exceeds the limit 10,000.00"),
        (100.0, "buy", 60.0, "position notional after the order 16,000.00 exceeds the limit 15,000.00"),
        (-100.0, "sell", 60.0, "position notional after the order 16,000.00 exceeds the limit 15,000.00"),
        (10.0, "sell", 170.0, "position notional after the order 16,000.00"),  # a flip past the limit
    ],
)
def test_notional_limits_block_entries(position: float, side: Side, amount: float, fragment: str) -> None:
    verdict = check_order(order(side, amount), state(position_units=position), LIMITS)
    assert not verdict.allowed
    assert any(fragment in reason for reason in verdict.reasons), verdict.reasons


def test_at_the_limits_is_still_allowed() -> None:
    at_limits = state(
        equity=95_000.0, candle_age_ms=H, features_age_ms=H, model_age_days=30.0, position_units=50.0
    )  # daily loss exactly 5 %, ages exactly one bar, model exactly 30 days
    verdict = check_order(order("buy", 100.0), at_limits, LIMITS)  # order 10,000, position 15,000
    assert verdict.allowed, verdict.reasons


def test_stale_after_bars_scales_with_the_bar() -> None:
    two_bars = LIMITS.model_copy(update={"stale_after_bars": 2.0})
    assert check_order(order("buy", 1.0), state(candle_age_ms=H + 1), two_bars).allowed
    assert not check_order(order("buy", 1.0), state(candle_age_ms=2 * H + 1), two_bars).allowed
    five_minutes = state(bar_ms=300_000, candle_age_ms=300_001)
    assert not check_order(order("buy", 1.0), five_minutes, LIMITS).allowed


def test_every_breach_is_reported_at_once() -> None:
    bad = state(equity=70_000.0, day_open_equity=100_000.0, candle_age_ms=2 * H, model_age_days=40.0)
    verdict = check_order(order("buy", 200.0), bad, LIMITS)
    assert len(verdict.reasons) == 6  # order notional, position notional, daily loss, drawdown, candle, model


def test_malformed_amounts_are_refused_whatever_the_kind() -> None:
    for amount in (0.0, -1.0, float("nan")):
        assert not check_order(order("sell", amount), state(position_units=10.0), LIMITS).allowed


def test_classify() -> None:
    assert classify(0.0, 1.0) == "entry"
    assert classify(2.0, 3.0) == "entry"
    assert classify(2.0, -1.0) == "entry"  # flip
    assert classify(2.0, 1.0) == "reduce"
    assert classify(-2.0, -0.5) == "reduce"
    assert classify(2.0, 0.0) == "exit"
    assert classify(0.3, 0.3 - 0.1 - 0.2) == "exit"  # float dust counts as flat
    assert position_after(order("sell", 0.5), 2.0) == 1.5


def test_should_halt_on_drawdown_only() -> None:
    assert should_halt(HEALTHY, LIMITS) is None
    assert should_halt(state(equity=94_000.0), LIMITS) is None  # daily loss: no new entries, but no halt
    reason = should_halt(state(equity=75_000.0, peak_equity=100_000.0), LIMITS)
    assert reason is not None and "drawdown 25.00% from peak 100,000.00 exceeds the 20.00% halt limit" in reason
    already = state(equity=75_000.0, trading_state=TradingState.HALTED)
    assert should_halt(already, LIMITS) is None


risk_states = st.builds(
    RiskState,
    trading_state=st.sampled_from(list(TradingState)),
    equity=st.floats(0, 2e5),
    day_open_equity=st.floats(0, 2e5),
    peak_equity=st.floats(0, 2e5),
    position_units=st.floats(-500, 500),
    price=st.floats(0.01, 1e4),
    candle_age_ms=st.none() | st.integers(0, 3 * H),
    features_age_ms=st.none() | st.integers(0, 3 * H),
    bar_ms=st.just(H),
    model_age_days=st.none() | st.floats(0, 60),
    max_model_age_days=st.just(30.0),
)
orders = st.builds(order, side=st.sampled_from(["buy", "sell"]), amount=st.floats(1e-6, 1000))


@given(risk_state=risk_states, request=orders)
def test_allowed_orders_under_reducing_never_increase_the_position(
    risk_state: RiskState, request: OrderRequest
) -> None:
    reducing = dataclasses.replace(risk_state, trading_state=TradingState.REDUCING)
    verdict = check_order(request, reducing, LIMITS)
    after = position_after(request, reducing.position_units)
    if verdict.allowed:
        assert abs(after) <= abs(reducing.position_units)
        assert after * reducing.position_units >= 0 or abs(after) <= 1e-9 * abs(reducing.position_units)


@given(risk_state=risk_states, request=orders)
def test_exits_are_blocked_only_by_halted(risk_state: RiskState, request: OrderRequest) -> None:
    verdict = check_order(request, risk_state, LIMITS)
    if verdict.kind != "entry":
        assert verdict.allowed == (risk_state.trading_state != TradingState.HALTED)
    if risk_state.trading_state == TradingState.HALTED:
        assert not verdict.allowed
