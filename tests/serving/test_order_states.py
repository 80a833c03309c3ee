"""The order state machine, the ccxt status mapping and client order ids (pure code, no database)."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cta.errors import CTAError, ExchangeError
from serving.client_ids import client_order_id
from serving.exchange_reports import from_ccxt_status
from serving.orders import IllegalTransition, OrderStatus, is_live, is_terminal, transition

S = OrderStatus
SPEC: dict[OrderStatus, set[OrderStatus]] = {
    S.PENDING_SUBMIT: {S.ACKNOWLEDGED, S.UNKNOWN, S.REJECTED, S.OPEN, S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED},
    S.UNKNOWN: {S.ACKNOWLEDGED, S.OPEN, S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.REJECTED},
    S.ACKNOWLEDGED: {S.OPEN, S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED},
    S.OPEN: {S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED},
    S.PARTIALLY_FILLED: {S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED},
    S.FILLED: set(),
    S.CANCELLED: set(),
    S.REJECTED: set(),
}
BINANCE_CLIENT_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
PAIRS = list(itertools.product(OrderStatus, OrderStatus))


@pytest.mark.parametrize(("current", "new"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_transition_allows_exactly_the_specified_moves(current: OrderStatus, new: OrderStatus) -> None:
    if new == current or new in SPEC[current]:
        assert transition(current, new) is new
    else:
        with pytest.raises(IllegalTransition) as raised:
            transition(current, new)
        assert (raised.value.current, raised.value.new) == (current, new)


def test_illegal_transition_is_a_cta_error_and_accepts_stored_strings() -> None:
    assert issubclass(IllegalTransition, CTAError)
    assert transition("OPEN", "FILLED") is S.FILLED
    with pytest.raises(IllegalTransition):
        transition("FILLED", "OPEN")


def test_terminal_and_live_partition_the_states() -> None:
    assert {s for s in OrderStatus if is_terminal(s)} == {S.FILLED, S.CANCELLED, S.REJECTED}
    assert {s for s in OrderStatus if is_live(s)} == set(OrderStatus) - {S.FILLED, S.CANCELLED, S.REJECTED}


@pytest.mark.parametrize(
    ("status", "filled", "amount", "expected"),
    [
        ("open", 0.0, 1.0, S.OPEN),
        ("open", 0.4, 1.0, S.PARTIALLY_FILLED),
        ("open", 1.0, 1.0, S.FILLED),
        ("open", 0.1 + 0.2, 0.3, S.FILLED),
        ("closed", 1.0, 1.0, S.FILLED),
        ("canceled", 0.0, 1.0, S.CANCELLED),
        ("canceled", 0.5, 1.0, S.CANCELLED),
        ("expired", 0.0, 1.0, S.CANCELLED),
        ("rejected", 0.0, 1.0, S.REJECTED),
        ("OPEN", 0.0, 1.0, S.OPEN),
    ],
)
def test_from_ccxt_status(status: str, filled: float, amount: float, expected: OrderStatus) -> None:
    assert from_ccxt_status(status, filled, amount) is expected


@pytest.mark.parametrize("status", ["", "pending", "weird"])
def test_from_ccxt_status_refuses_what_it_cannot_interpret(status: str) -> None:
    with pytest.raises(ExchangeError):
        from_ccxt_status(status, 0.0, 1.0)


def test_client_order_id_is_pinned_across_processes() -> None:
    """A golden value, also computed in a fresh interpreter: the id cannot depend on PYTHONHASHSEED."""
    expected = client_order_id("cta", "binance:BTC/USDT:1h", 1_700_000_000_000, 3)
    code = (
        "from serving.client_ids import client_order_id as c; print(c('cta', 'binance:BTC/USDT:1h', 1700000000000, 3))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123"}
    )
    assert expected == "cta-077e7f3b73-loyw3v28-3"
    assert other.stdout.strip() == expected


prefixes = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=8)
markets = st.text(min_size=0, max_size=80)
candle_times = st.integers(min_value=0, max_value=36**9 - 1)
seqs = st.integers(min_value=0, max_value=36**6 - 1)


@given(prefix=prefixes, market=markets, candle_ts=candle_times, seq=seqs)
def test_client_order_id_is_deterministic_and_binance_safe(prefix: str, market: str, candle_ts: int, seq: int) -> None:
    cid = client_order_id(prefix, market, candle_ts, seq)
    assert cid == client_order_id(prefix, market, candle_ts, seq)
    assert BINANCE_CLIENT_ID.match(cid)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,36}", cid)
    assert cid.startswith(prefix + "-")


@given(
    first=st.tuples(prefixes, markets, candle_times, seqs),
    second=st.tuples(prefixes, markets, candle_times, seqs),
)
def test_client_order_ids_differ_for_different_inputs(
    first: tuple[str, str, int, int], second: tuple[str, str, int, int]
) -> None:
    if first != second:
        assert client_order_id(*first) != client_order_id(*second)


@given(market=markets, candle_ts=candle_times, seq=seqs)
def test_client_order_ids_differ_by_seq_and_candle(market: str, candle_ts: int, seq: int) -> None:
    base = client_order_id("cta", market, candle_ts, seq)
    assert base != client_order_id("cta", market, candle_ts, (seq + 1) % 36**6)
    assert base != client_order_id("cta", market, (candle_ts + 1) % 36**9, seq)


@pytest.mark.parametrize(
    ("prefix", "candle_ts", "seq"),
    [
        ("", 0, 0),
        ("toolongprefix", 0, 0),
        ("c-a", 0, 0),
        ("c_a", 0, 0),
        ("cta", -1, 0),
        ("cta", 36**9, 0),
        ("cta", 0, -1),
    ],
)
def test_client_order_id_refuses_inputs_it_cannot_encode_safely(prefix: str, candle_ts: int, seq: int) -> None:
    with pytest.raises(ValueError, match=r"prefix|candle_ts|seq"):
        client_order_id(prefix, "binance:BTC/USDT:1h", candle_ts, seq)
