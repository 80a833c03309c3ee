"""The PPO candidate and its trading environment: env rewards are the backtests' net returns, the
pyfunc contract (positions, no look-ahead), seeded reproducibility, the MLflow round trip into a
process that imports neither Ray nor CTA, and Ray's files kept out of `~/ray_results`.

One module-scoped fit (ppo_iterations=1) is shared; a second one checks reproducibility."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import mlflow
import numpy as np
import pytest

from cta.config import TrainingSettings
from cta.costs import CostModel
from tests.factories import training_data
from training.candidate import Candidate, TrainingData
from training.trading_env import CLIP, TradingEnv, action_to_position, env_config, standardisation

WINDOW = 8
RAY_ENV = {
    "RLLIB_TEST_NO_TF_IMPORT": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}
RAY_RESULTS = Path("~/ray_results").expanduser()


def ray_results_listing() -> set[str]:
    return {str(p) for p in RAY_RESULTS.rglob("*")} if RAY_RESULTS.exists() else set()


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return training_data(rows=3000)


@pytest.fixture(scope="module")
def costs() -> CostModel:
    return CostModel(taker_fee_rate=0.001, slippage_bps=3.0)


@pytest.fixture(scope="module")
def ray_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`training.ray_dir` for the module's fits (a short path: Ray's socket paths must fit in 107 bytes)."""
    path = tmp_path_factory.mktemp("ray")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in RAY_ENV.items():
            patch.setenv(name, value)
        yield path


@pytest.fixture(scope="module")
def before_fit() -> set[str]:
    return ray_results_listing()


@pytest.fixture(scope="module")
def settings(ray_dir: Path) -> TrainingSettings:
    return TrainingSettings(ppo_iterations=1, ppo_window=WINDOW, seed=7, ray_dir=ray_dir)


@pytest.fixture(scope="module")
def candidate(
    data: TrainingData, settings: TrainingSettings, costs: CostModel, ray_dir: Path, before_fit: set[str]
) -> Candidate:
    from training.models.ppo import fit_ppo

    return fit_ppo(data, settings, costs)


def make_env(data: TrainingData, costs: CostModel, episode_length: int | None = None) -> TradingEnv:
    mean, std = standardisation(data.train.X)
    return TradingEnv(
        env_config(data.validation, mean=mean, std=std, window=WINDOW, costs=costs, episode_length=episode_length)
    )


def rollout(env: TradingEnv, actions: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], list[dict[str, Any]]]:
    observation, _ = env.reset(seed=0)
    rewards, observations, infos = [], [observation], []
    for action in actions:
        observation, reward, terminated, truncated, info = env.step(int(action))
        rewards.append(reward)
        observations.append(observation)
        infos.append(info)
        if terminated or truncated:
            break
    return np.array(rewards), observations, infos


def test_env_rewards_are_the_cost_models_net_returns(data: TrainingData, costs: CostModel) -> None:
    env = make_env(data, costs)
    steps = len(data.validation) - WINDOW + 1
    actions = np.random.default_rng(3).integers(0, 3, steps)
    rewards, _, infos = rollout(env, actions)
    assert len(rewards) == steps  # one episode: every row from the first full window to the end
    positions = np.array([action_to_position(a) for a in actions])
    expected = costs.net_returns(positions, data.validation.next_return[WINDOW - 1 :])
    np.testing.assert_allclose(rewards, expected, rtol=0, atol=1e-15)
    assert (expected != positions * data.validation.next_return[WINDOW - 1 :]).any()  # costs were charged
    assert [i["position"] for i in infos] == positions.tolist()


def test_env_observations_and_actions(data: TrainingData, costs: CostModel) -> None:
    env = make_env(data, costs)
    features = data.validation.X.shape[1]
    assert env.observation_space.shape == (WINDOW * features + 1,)
    assert env.action_space.n == 3
    assert [action_to_position(a) for a in range(3)] == [-1.0, 0.0, 1.0]
    actions = [2, 2, 0, 1, 0]
    _, observations, _ = rollout(env, np.array(actions))
    assert all(o.dtype == np.float32 and env.observation_space.contains(o) for o in observations)
    held = [0.0] + [action_to_position(a) for a in actions]
    assert [float(o[-1]) for o in observations] == held  # the last entry is the position held
    mean, std = standardisation(data.train.X)
    rows = data.validation.X.to_numpy()[:WINDOW]
    scaled = np.clip((rows - mean) / std, -CLIP, CLIP).astype("float32").ravel()
    np.testing.assert_array_equal(observations[0][:-1], scaled)  # the first full window, oldest row first

    training = make_env(data, costs, episode_length=50)
    assert training.reset(seed=1)[1]["row"] == training.reset(seed=1)[1]["row"]  # seeded
    assert len({training.reset(seed=s)[1]["row"] for s in range(10)}) > 1  # random slices
    rewards, _, _ = rollout(training, np.ones(100, dtype=int))
    assert len(rewards) == 50  # a training episode is a slice of fixed length


@pytest.mark.slow
def test_candidate_follows_the_contract(candidate: Candidate, data: TrainingData, costs: CostModel) -> None:
    assert candidate.family == "ppo" and candidate.history_rows == WINDOW
    assert candidate.pip_requirements == ["torch==2.13.0"] and Path(candidate.artifacts["policy"]).is_file()
    assert len(candidate.fold_metrics) == len(data.folds)
    keys = {"episode_return_after_costs", "net_return", "exposure", "turnover"}
    assert all(set(m) == keys for m in candidate.fold_metrics) and set(candidate.validation_metrics) == keys
    frame = data.validation.X
    positions = candidate.python_model.predict(None, frame)
    assert positions.dtype == np.float64 and positions.shape == (len(frame),)
    assert set(np.unique(positions)) <= {-1.0, 0.0, 1.0}
    assert (positions[: WINDOW - 1] == 0).all()
    # the env, fed the pyfunc's positions, earns exactly the reported validation episode return
    rewards, _, _ = rollout(make_env(data, costs), positions[WINDOW - 1 :] + 1)
    assert rewards.sum() == pytest.approx(candidate.validation_metrics["episode_return_after_costs"], abs=1e-12)
    # no look-ahead: changing rows after t changes nothing at or before t
    t = len(frame) // 2
    changed = frame.copy()
    changed.iloc[t + 1 :] = changed.iloc[t + 1 :].to_numpy() * -3.0 + 1.0
    np.testing.assert_array_equal(candidate.python_model.predict(None, changed)[: t + 1], positions[: t + 1])
    np.testing.assert_array_equal(candidate.python_model.predict(None, frame.iloc[: t + 1]), positions[: t + 1])
    assert (candidate.python_model.predict(None, frame.head(WINDOW - 1)) == 0).all()
    gap = frame.copy()
    gap.iloc[t, 0] = np.nan  # a window with a missing value is not a full window: flat
    assert (candidate.python_model.predict(None, gap)[t : t + WINDOW] == 0).all()


def test_streaming_one_row_at_a_time_equals_the_walk(candidate: Candidate, data: TrainingData) -> None:
    """The serving worker passes the model its own previous position; row by row, that reproduces the
    positions of one walk over the whole block (the backtest's), including where the position persists."""
    frame = data.validation.X
    walk = candidate.python_model.predict(None, frame)
    streamed = [
        candidate.python_model.predict(
            None, frame.iloc[max(0, t - WINDOW + 1) : t + 1], params={"previous_position": walk[t - 1]}
        )[-1]
        for t in range(WINDOW, len(frame))
    ]
    np.testing.assert_array_equal(streamed, walk[WINDOW:])


def test_numpy_network_is_the_exported_policy(candidate: Candidate, data: TrainingData) -> None:
    """The policy runs as numpy when it reproduces the exported torch program: the same logits (float32 rounding
    apart) and actions on real observations, and a row's logits the same bits alone or in a batch; weights of
    another shape are not packed (torch then runs)."""
    import torch

    from training.models.ppo import NumpyMLP

    model = candidate.python_model
    policy = model.policy()
    assert isinstance(model._numpy, NumpyMLP)
    values = data.validation.X[model.feature_names].to_numpy(dtype="float64")
    scaled = np.clip((values - model.mean) / model.std, -model.clip, model.clip).astype("float32")
    windows = np.lib.stride_tricks.sliding_window_view(scaled, (WINDOW, scaled.shape[1])).reshape(
        -1, WINDOW * scaled.shape[1]
    )
    batch = np.concatenate([windows, np.ones((len(windows), 1), dtype="float32")], axis=1)
    with torch.inference_mode():
        expected = policy(torch.from_numpy(batch)).numpy()
    got = model.logits(batch)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).mean() > 0.999
    np.testing.assert_array_equal(model.logits(batch[-3:]), got[-3:])
    program = torch.export.load(model.policy_path)
    state = dict(program.state_dict)
    assert NumpyMLP.from_program(state, program.module(), batch.shape[1] + 1) is None  # another width
    state.pop(NumpyMLP.HEAD + "0.weight")
    assert NumpyMLP.from_program(state, program.module(), batch.shape[1]) is None  # no head


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*Overriding environment rllib-single-agent-env-v0")
def test_same_seed_same_policy_and_ray_files_stay_in_the_project_dir(
    candidate: Candidate,
    data: TrainingData,
    settings: TrainingSettings,
    costs: CostModel,
    ray_dir: Path,
    before_fit: set[str],
) -> None:
    """RLlib with num_env_runners=0, num_learners=0 and `.debugging(seed=...)` is bit-for-bit
    reproducible on one machine (measured: identical positions and metrics), so this is exact."""
    import ray

    from training.models.ppo import fit_ppo

    sessions, results = len(list((ray_dir / "ray").glob("session_2*"))), len(list((ray_dir / "results").iterdir()))
    again = fit_ppo(data, settings, costs)
    np.testing.assert_array_equal(
        again.python_model.predict(None, data.validation.X), candidate.python_model.predict(None, data.validation.X)
    )
    assert again.validation_metrics == candidate.validation_metrics
    assert again.fold_metrics == candidate.fold_metrics
    assert not ray.is_initialized()  # each fit shut its session down
    assert ray_results_listing() == before_fit  # nothing new under ~/ray_results
    assert len(list((ray_dir / "ray").glob("session_2*"))) == sessions + 1  # Ray's session: in training.ray_dir
    assert len(list((ray_dir / "results").iterdir())) == results + 1  # the Algorithm's log dir too


@pytest.mark.slow
def test_ray_is_shut_down_when_training_fails(
    data: TrainingData, settings: TrainingSettings, costs: CostModel, ray_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    import training.models.ppo as ppo

    def broken(results_dir: Path) -> Any:
        def build(**_: Any) -> Any:
            raise RuntimeError("the algorithm blew up")

        return build

    monkeypatch.setattr(ppo, "_algorithm_class", broken)
    with pytest.raises(RuntimeError, match="blew up"):
        ppo.fit_ppo(data, settings, costs)
    assert not ray.is_initialized()


@pytest.mark.slow
def test_mlflow_round_trip_in_a_process_without_ray_or_cta(
    candidate: Candidate, data: TrainingData, tmp_path: Path
) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("ppo", artifact_location=(tmp_path / "artifacts").as_uri())
    module = sys.modules[type(candidate.python_model).__module__]
    cloudpickle.register_pickle_by_value(module)  # as training.train does
    try:
        with mlflow.start_run(experiment_id=experiment) as run:
            assert candidate.log_extras is not None
            candidate.log_extras()
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=candidate.python_model,
                artifacts=candidate.artifacts,
                pip_requirements=candidate.pip_requirements,
            )
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    assert "ppo_episode_return.png" in {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    expected = candidate.python_model.predict(None, data.validation.X)
    data.validation.X.to_parquet(tmp_path / "x.parquet")
    script = f"""
import json, sys, mlflow, pandas as pd
mlflow.set_tracking_uri({mlflow.get_tracking_uri()!r})
model = mlflow.pyfunc.load_model({info.model_uri!r})
out = model.predict(pd.read_parquet({str(tmp_path / "x.parquet")!r}))
print(json.dumps({{"positions": [float(v) for v in out],
                  "leaked": sorted(m for m in ("ray", "cta", "training", "features") if m in sys.modules)}}))
"""
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, **RAY_ENV}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd="/", timeout=300, check=True
    )
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["leaked"] == []
    np.testing.assert_array_equal(answer["positions"], expected)
