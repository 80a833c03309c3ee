from __future__ import annotations

import math

import numpy as np
import pytest

from cta.decide import Limits, OrderIntent, decide, decide_path

LIMITS = Limits(max_position=1.0, min_trade=0.1, allow_short=True)


@pytest.mark.parametrize(
    ("prediction", "position", "expected"),
    [
        (1.0, 0.0, OrderIntent(1.0, 1.0)),  # enter long
        (2.5, 0.0, OrderIntent(1.0, 1.0)),  # capped at max_position
        (-3.0, 1.0, OrderIntent(-1.0, -2.0)),  # reverse
        (1.0, 1.0, OrderIntent(1.0, 0.0)),  # already there: no order
        (0.95, 1.0, OrderIntent(1.0, 0.0)),  # churn below min_trade: no order
        (0.0, 0.05, OrderIntent(0.0, -0.05)),  # going flat is never blocked by min_trade
        (math.nan, 0.5, OrderIntent(0.5, 0.0)),  # no finite prediction: no order
        (math.inf, 0.0, OrderIntent(0.0, 0.0)),
    ],
)
def test_decide(prediction: float, position: float, expected: OrderIntent) -> None:
    assert decide(prediction, position, LIMITS) == expected


def test_long_only_limits_never_short() -> None:
    long_only = Limits(allow_short=False)
    assert decide(-1.0, 0.0, long_only) == OrderIntent(0.0, 0.0)
    assert decide(-1.0, 1.0, long_only) == OrderIntent(0.0, -1.0)
    assert not decide(-1.0, 0.0, long_only).is_order


def test_decide_path_applies_decide_bar_by_bar() -> None:
    predictions = np.array([0.0, 1.0, 0.97, 0.5, np.nan, -1.0, 0.0])
    np.testing.assert_array_equal(decide_path(predictions, LIMITS), [0.0, 1.0, 1.0, 0.5, 0.5, -1.0, 0.0])
    rng = np.random.default_rng(1)
    noisy = rng.uniform(-1.5, 1.5, 500)
    path = decide_path(noisy, LIMITS)
    position = 0.0
    for prediction, after in zip(noisy, path, strict=True):
        position = decide(prediction, position, LIMITS).target
        assert after == position


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_position"):
        Limits(max_position=2.0)
