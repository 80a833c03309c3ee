"""RequestSpacer, the token bucket in front of every ccxt request: driven by an injected clock, no sleeping."""

from __future__ import annotations

import random

import pytest

from cta.config import DEFAULT_BURST_COST, ExchangeSettings
from cta.exchange import RequestSpacer


class FakeClock:
    """Monotonic seconds that move only when told to."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def test_a_burst_goes_at_once_then_requests_are_spaced_at_the_budget_rate() -> None:
    clock = FakeClock()
    spacer = RequestSpacer(ms_per_cost=50, burst_cost=10, now=clock)  # 20 units per second, 10 saved up

    assert [spacer.reserve(2) for _ in range(5)] == [0.0] * 5  # 10 units: the whole burst, no wait
    waits = [spacer.reserve(1) for _ in range(4)]  # the bucket is empty: each waits for its unit behind the others
    assert waits == pytest.approx([0.05, 0.10, 0.15, 0.20])


def test_a_request_waits_only_for_the_units_the_bucket_lacks() -> None:
    clock = FakeClock()
    spacer = RequestSpacer(ms_per_cost=50, burst_cost=4, now=clock)
    assert spacer.reserve(3) == 0.0  # 1 unit left
    assert spacer.reserve(4) == pytest.approx(0.15)  # 3 units missing
    clock.now += 0.15 + 0.5  # it was sent; then a quiet half second refills 10 units, capped at the burst of 4
    assert spacer.reserve(4) == 0.0
    assert spacer.reserve(0.5) == pytest.approx(0.025)


def test_a_quiet_spell_refills_the_bucket_only_up_to_the_burst() -> None:
    clock = FakeClock()
    spacer = RequestSpacer(ms_per_cost=50, burst_cost=5, now=clock)
    assert spacer.reserve(5) == 0.0
    clock.now += 3600.0  # an hour idle: still only 5 units saved
    assert [spacer.reserve(1) for _ in range(5)] == [0.0] * 5
    assert spacer.reserve(1) == pytest.approx(0.05)


def test_zero_burst_spaces_every_request_by_its_own_cost() -> None:
    clock = FakeClock()
    spacer = RequestSpacer(ms_per_cost=50, burst_cost=0, now=clock)
    assert spacer.reserve(1) == pytest.approx(0.05)
    assert spacer.reserve(2) == pytest.approx(0.15)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_units_sent_in_any_window_never_exceed_burst_plus_refill(seed: int) -> None:
    """Random costs (at most the burst), gaps mostly shorter than the budget allows with a few idle spells, each
    request sent when the spacer says: for every window [start of request i, start of request j], the units of
    requests i..j stay within burst + elapsed / ms_per_cost."""
    rng = random.Random(seed)
    ms_per_cost, burst = 55.6, 20.0
    clock = FakeClock()
    spacer = RequestSpacer(ms_per_cost=ms_per_cost, burst_cost=burst, now=clock)
    sent: list[tuple[float, float]] = []  # (start, cost)
    waits: list[float] = []
    for _ in range(400):
        clock.now += 10.0 if rng.random() < 0.02 else rng.choice([0.0, 0.0, 0.0, 0.01, 0.05, rng.uniform(0, 0.5)])
        cost = rng.choice([0.2, 0.4, 0.8, 1.2, 4.0, rng.uniform(0.1, burst)])
        wait = spacer.reserve(cost)
        waits.append(wait)
        sent.append((clock.now + wait, cost))
    starts = [start for start, _ in sent]
    assert starts == sorted(starts)  # reservations are served in call order
    for i in range(len(sent)):
        units = 0.0
        for j in range(i, len(sent)):
            units += sent[j][1]
            elapsed = sent[j][0] - sent[i][0]
            assert units <= burst + elapsed * 1000 / ms_per_cost + 1e-9, (i, j)
    # the demand (about 40 units/s against 18) did make it hold requests back, and idle spells let bursts through
    assert sum(w > 0 for w in waits) > len(waits) / 2 and sum(w == 0 for w in waits) >= 10


def test_invalid_budgets_are_refused() -> None:
    with pytest.raises(ValueError):
        RequestSpacer(ms_per_cost=0)
    with pytest.raises(ValueError):
        RequestSpacer(ms_per_cost=50, burst_cost=-1)


def test_the_burst_is_an_exchange_setting_with_a_default_of_about_a_second_of_binance_budget() -> None:
    assert ExchangeSettings().rate_limit_burst == DEFAULT_BURST_COST == 20.0
    assert ExchangeSettings(rate_limit_burst=0).rate_limit_burst == 0
    with pytest.raises(ValueError):
        ExchangeSettings(rate_limit_burst=-1)
