from __future__ import annotations

import numpy as np
import pytest

from cta.costs import CostModel
from cta.errors import DataValidationError
from cta.lake import Market
from features.dataset import assemble
from tests.factories import real_candles
from training.contract import FLAT, ThresholdPolicy, fit_threshold_policy
from training.splits import train_validation_oos, walk_forward_folds


def test_blocks_are_in_time_order_and_purged_by_the_label_horizon() -> None:
    split = train_validation_oos(1000, 0.15, 0.2, horizon=4, embargo=1)
    assert split.train[-1] + 5 < split.validation[0] and split.validation[-1] + 5 < split.out_of_sample[0]
    assert split.validation[0] - split.train[-1] == 6 and split.out_of_sample[0] - split.validation[-1] == 6
    assert len(split.out_of_sample) == 200 and len(split.validation) == 150 and split.out_of_sample[-1] == 999


@pytest.mark.parametrize("horizon", [1, 4, 24])
def test_walk_forward_folds_never_overlap_and_never_leak_labels(horizon: int) -> None:
    folds = walk_forward_folds(2000, 4, min_train=500, horizon=horizon)
    assert len(folds) == 4
    previous_test_end = -1
    for train, test in folds:
        assert train[-1] + horizon < test[0]  # a training label (t .. t+horizon) ends before the test block
        assert test[0] > previous_test_end  # test blocks move forward and do not overlap
        assert np.all(np.diff(test) == 1) and train[0] == 0  # expanding window
        previous_test_end = test[-1]


def test_too_few_rows_is_a_clear_error_before_training() -> None:
    with pytest.raises(DataValidationError, match="too few for 4 walk-forward folds"):
        walk_forward_folds(300, 4, min_train=298, horizon=4)
    with pytest.raises(DataValidationError, match="too few to split"):
        train_validation_oos(8, 0.15, 0.2, horizon=4)


def test_horizon_longer_than_the_data_and_constant_labels_are_refused() -> None:
    market = Market("binance", "BTC/USDT", "1h")
    candles = real_candles(rows=50)
    features = candles[["ts"]].assign(x=1.0)
    with pytest.raises(DataValidationError, match="label horizon 60 is longer"):
        assemble(market, candles, features, horizon=60, dead_zone_bps=10)
    with pytest.raises(DataValidationError, match="direction label is constant"):
        assemble(market, candles, features, horizon=4, dead_zone_bps=100_000)


def test_threshold_policy_is_fitted_net_of_costs() -> None:
    rng = np.random.default_rng(0)
    score = rng.uniform(-1, 1, 2000)
    next_return = 0.004 * np.sign(score) * (np.abs(score) > 0.6) + rng.normal(0, 0.0005, 2000)
    policy = fit_threshold_policy(score, next_return, CostModel())
    assert 0.5 <= policy.long_above <= 0.65 and policy.short_below == -policy.long_above
    assert fit_threshold_policy(score, rng.normal(0, 0.001, 2000) * 0, CostModel()) == FLAT
    assert ThresholdPolicy(0.5, -0.5).positions(np.array([0.6, 0.0, -0.7])).tolist() == [1.0, 0.0, -1.0]


def test_cost_model_charges_turnover() -> None:
    costs = CostModel(taker_fee_rate=0.001, slippage_bps=5)
    positions = np.array([1.0, 1.0, -1.0, 0.0])
    np.testing.assert_allclose(costs.turnover_cost(positions), [0.0015, 0, 0.003, 0.0015])
    np.testing.assert_allclose(
        costs.net_returns(positions, np.array([0.01, 0.01, -0.01, 0.02])), [0.01 - 0.0015, 0.01, 0.01 - 0.003, -0.0015]
    )
