"""The reinforcement-learning candidate: PPO (RLlib 2.60, new API stack, torch) trading one market in
`training.trading_env.TradingEnv`, whose reward is `CostModel.net_returns` for the step (the same
cost model as the backtests).

Training: a local Ray session (`num_env_runners=0`, `num_learners=0`: sampling and learning in this
process), `settings.ppo_iterations` iterations of `TRAIN_BATCH` env steps over random slices of
`EPISODE_LENGTH` rows of `data.train`, an [64, 64] MLP, seeded with `settings.seed`. Every file Ray
and RLlib write goes under one directory: the `training.ray_dir` setting, else a fresh temp dir (see
`work_dir`): Ray's session files (`ray.init(_temp_dir=...)`), the Algorithm's log dir (RLlib 2.60
otherwise creates `~/ray_results/<timestamp>`; its path is fixed at import, so `_ProjectPPO`
overrides `Trainable._setup_logdir`) and the exported policy.

Evaluation: the policy is NOT retrained per walk-forward fold (one PPO fit per fold would multiply
the training time). The final policy, trained on `data.train`, is run greedily over each fold's test
rows and over `data.validation`, exactly as the logged pyfunc runs (each block on its own, starting
flat, rows without a full window flat). Fold test rows overlap `data.train`, so the fold metrics are
in-sample diagnostics, not out-of-sample estimates; the validation block is out of sample.

Serving: the policy's logits network is exported with `torch.export` (a `.pt2` file, the MLflow
artifact "policy"); `PPOPositionModel` needs only numpy, pandas and torch to load and predict.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc.model import PythonModel

from cta.config import TrainingSettings
from cta.costs import CostModel
from features.dataset import Dataset
from training.candidate import Candidate, TrainingData
from training.metrics import position_metrics
from training.trading_env import CLIP, TradingEnv, env_config, standardisation

log = logging.getLogger(__name__)

HIDDEN = [64, 64]
TRAIN_BATCH = 1000  # env steps per iteration
MINIBATCH = 250
EPOCHS = 4
LEARNING_RATE = 3e-4
GAMMA = 0.99
ENTROPY = 0.01
EPISODE_LENGTH = 250  # rows per training episode (a random slice of the training block)
RAY_ENV_DEFAULTS = {
    "RLLIB_TEST_NO_TF_IMPORT": "1",  # RLlib would import TensorFlow too (+7 s, +500 MB)
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",  # no token warning, no ~/.ray/auth_token
    "TF_CPP_MIN_LOG_LEVEL": "2",
}
# One node only: every Ray process (GCS, raylet, agents, workers, the driver's core worker) listens on 127.0.0.1,
# not on the machine's interfaces (Ray's default, unauthenticated here). Ray reads this at import, so it is set
# before `import ray`; with it, Ray also refuses to join a multi-node cluster (see docs/security.md).
RAY_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
POLICY_FILE = "policy.pt2"
TORCH_REQUIREMENT = "torch==2.13.0"
SINGLE_THREAD_ROWS = 1024  # network batches up to this many rows run on one torch thread


class NumpyMLP:
    """The exported policy's logits network in numpy (float32): RLlib's default PPO module, an encoder of Linear
    layers each followed by tanh and a pi head of Linear layers (tanh between them), read from the exported
    program's weights.

    Why: a decision is three rows, and torch's per-call work (its dispatcher, the exported graph's interpreter, the
    thread-count switch) is most of what the model adds to the decision; these three small matrix products run on
    the calling thread. `from_program` keeps it only when it reproduces the exported program on a probe batch;
    every batch size then goes through it (the backtest's series and the worker's one window alike)."""

    ENCODER = "module.encoder.encoder.net.mlp."
    HEAD = "module.pi.net.mlp."

    def __init__(self, encoder: list[tuple[np.ndarray, np.ndarray]], head: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.encoder = encoder  # (weight transposed (in, out), bias (out,)) per layer
        self.head = head

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(rows, width) -> (rows, actions) logits. `einsum` (numpy's own loop, not BLAS, whose kernels differ by
        row count) makes a row's logits the same bits whatever the batch: the worker's 3 rows and the backtest's
        series decide alike."""
        hidden = np.asarray(batch, dtype="float32")
        for weight, bias in self.encoder:
            hidden = np.tanh(np.einsum("mk,kn->mn", hidden, weight) + bias)
        for index, (weight, bias) in enumerate(self.head):
            hidden = np.einsum("mk,kn->mn", hidden, weight) + bias
            if index < len(self.head) - 1:
                hidden = np.tanh(hidden)
        return hidden

    @classmethod
    def from_program(cls, state: dict[str, Any], module: Any, width: int) -> NumpyMLP | None:
        """From an exported program's state dict, checked against its module on a probe batch of `width` columns;
        None when the weights are not that shape or the outputs differ (the policy then runs in torch)."""

        def layers(prefix: str) -> list[tuple[np.ndarray, np.ndarray]]:
            weights = [key[len(prefix) :] for key in state if key.startswith(prefix) and key.endswith(".weight")]
            found = sorted(int(key.split(".")[0]) for key in weights)
            return [
                (
                    state[f"{prefix}{i}.weight"].detach().numpy().astype("float32").T.copy(),
                    state[f"{prefix}{i}.bias"].detach().numpy().astype("float32"),
                )
                for i in found
                if f"{prefix}{i}.bias" in state
            ]

        try:
            mlp = cls(layers(cls.ENCODER), layers(cls.HEAD))
            if not mlp.encoder or not mlp.head or mlp.encoder[0][0].shape[0] != width:
                return None
            probe = np.random.default_rng(0).normal(0.0, 1.5, size=(256, width)).astype("float32")
            probe[:, -1] = np.tile(np.array([-1.0, 0.0, 1.0], dtype="float32"), 86)[:256]  # the held position
            with torch.inference_mode():
                expected = module(torch.from_numpy(probe)).numpy()
            got = mlp(probe)
        except (KeyError, ValueError, RuntimeError, AttributeError):
            return None
        return mlp if got.shape == expected.shape and np.allclose(got, expected, rtol=1e-4, atol=1e-5) else None


class PPOPositionModel(PythonModel):
    """pyfunc: feature rows in time order -> positions in {-1, 0, 1} (float64), greedy.

    Mirrors `TradingEnv`: the observation at row t is the last `window` rows (standardised with the
    training mean/std, clipped), flattened, plus the position held before t; the model walks the rows
    carrying its own position, starting flat. Rows without a full window (the first `window - 1`, and
    any window containing a NaN) are flat. The network runs once, batched, over every window with each
    of the three possible previous positions; only the argmax lookup is sequential.

    Depends only on numpy, pandas and torch (and mlflow) at load time: the policy is a
    `torch.export` file (artifact "policy"), loaded by `load_context` or, before logging, from
    `policy_path`."""

    def __init__(
        self,
        policy_path: str,
        feature_names: list[str],
        *,
        mean: np.ndarray,
        std: np.ndarray,
        window: int,
        clip: float,
    ) -> None:
        self.policy_path = policy_path
        self.feature_names = list(feature_names)
        self.mean = np.asarray(mean, dtype="float64")
        self.std = np.asarray(std, dtype="float64")
        self.window = int(window)
        self.clip = float(clip)
        self._policy: Any = None
        self._numpy: NumpyMLP | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_policy"] = None  # a loaded torch program is not pickled: load_context reloads it
        state["_numpy"] = None
        return state

    def load_context(self, context: Any) -> None:
        self._load(context.artifacts["policy"])

    def _load(self, path: str) -> None:
        program = torch.export.load(path)
        self._policy = program.module()
        width = self.window * len(self.feature_names) + 1
        self._numpy = NumpyMLP.from_program(dict(program.state_dict), self._policy, width)

    def policy(self) -> Any:
        if self._policy is None:
            self._load(self.policy_path)
        return self._policy

    def action_table(self, model_input: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(greedy action per previous position and full window: shape (3, windows); valid windows)."""
        values = model_input[self.feature_names].to_numpy(dtype="float64")
        scaled = np.clip((values - self.mean) / self.std, -self.clip, self.clip).astype("float32")
        windows = np.lib.stride_tricks.sliding_window_view(scaled, (self.window, scaled.shape[1]))
        windows = windows.reshape(len(windows), -1)
        valid = ~np.isnan(windows).any(axis=1)
        windows = np.where(valid[:, None], windows, np.float32(0.0))
        count = len(windows)
        batch = np.empty((3 * count, windows.shape[1] + 1), dtype="float32")
        for index, previous in enumerate((-1.0, 0.0, 1.0)):
            batch[index * count : (index + 1) * count, :-1] = windows
            batch[index * count : (index + 1) * count, -1] = previous
        return self.logits(batch).argmax(axis=1).reshape(3, count), valid

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """The policy's logits: the numpy network when it reproduces the exported one (`NumpyMLP`), else torch,
        where a small batch (one live decision) runs on one intra-op thread: with
        more, torch's thread barrier costs ~0.2 ms and, when the CPUs are busy, spikes of 20-50 ms
        (measured); the process-wide thread count is restored afterwards."""
        policy = self.policy()
        packed: NumpyMLP | None = getattr(self, "_numpy", None)  # (a wrapper pickled before it had one: torch)
        if packed is not None:
            return packed(batch)
        threads = torch.get_num_threads()
        single = threads > 1 and len(batch) <= SINGLE_THREAD_ROWS
        if single:
            torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                return np.asarray(policy(torch.from_numpy(batch)).numpy())
        finally:
            if single:
                torch.set_num_threads(threads)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        """Positions in {-1, 0, 1}, one per row: a walk from flat through the rows, each action taken
        from the position the previous row chose.

        `params["previous_position"]` (the serving worker, streaming one candle at a time): the position
        this model chose for the row before the last; the LAST row's position then continues from it
        instead of from the walk over `model_input`, so streaming equals one walk over the whole series (only
        that row is computed; the others are returned as 0)."""
        rows = len(model_input)
        positions = np.zeros(rows, dtype="float64")
        if rows < self.window:
            return positions
        previous = (params or {}).get("previous_position")
        if previous is not None:  # only the last window's actions are needed
            table, valid = self.action_table(model_input.iloc[-self.window :])
            held = round(min(1.0, max(-1.0, float(previous)))) + 1
            positions[-1] = (int(table[held][-1]) if bool(valid[-1]) else 1) - 1.0
            return positions
        table, valid = self.action_table(model_input)
        actions = table.tolist()
        valid_list = valid.tolist()
        held = 1  # index of the position held: 0 short, 1 flat, 2 long (== the action that chose it)
        out = [0] * len(valid_list)
        for t in range(len(valid_list)):
            held = actions[held][t] if valid_list[t] else 1
            out[t] = held
        positions[self.window - 1 :] = np.asarray(out, dtype="float64") - 1.0
        return positions


def work_dir(ray_dir: str | os.PathLike[str] | None = None) -> tuple[Path, bool]:
    """(the directory for every Ray/RLlib file and the exported policy, whether it is a temp dir):
    `ray_dir` (the `training.ray_dir` setting), else a new temp dir. Ray's unix sockets live under it,
    so the path must stay short (Ray refuses socket paths over 107 bytes)."""
    if ray_dir:
        chosen = ray_dir
        path = Path(chosen).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path, False
    return Path(tempfile.mkdtemp(prefix="cta-ppo-")), True


@contextmanager
def ray_session(root: Path) -> Iterator[None]:
    """A local Ray session whose files go under `root/ray`; shut down on exit (also on error). An
    already running session (the caller's) is reused and left running."""
    for name, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    os.environ.update(RAY_LOOPBACK_ENV)
    logging.getLogger("ray.rllib.utils.framework").setLevel(logging.ERROR)  # "Not importing TensorFlow" x20
    import ray
    from ray._private import ray_constants

    if ray.is_initialized():
        yield
        return
    # Ray was imported before the variable was set (by the caller): Ray reads the flag when it picks the node's
    # address, so set it there too (the processes ray.init starts inherit the variable).
    ray_constants.ENABLE_RAY_CLUSTER = False
    ray.init(
        num_cpus=2,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=str(root / "ray"),
        configure_logging=True,
        logging_level=logging.WARNING,
    )
    try:
        yield
    finally:
        ray.shutdown()


def _algorithm_class(results_dir: Path) -> Any:
    from ray.rllib.algorithms.ppo import PPO

    class _ProjectPPO(PPO):  # type: ignore[misc]
        """PPO whose log dir is under the project's Ray dir, not `~/ray_results`."""

        def _setup_logdir(self) -> None:
            results_dir.mkdir(parents=True, exist_ok=True)
            # ray's Trainable declares `_logdir` only by assigning None (mypy infers the type None)
            self._logdir = tempfile.mkdtemp(  # type: ignore[assignment]
                prefix=time.strftime("PPO_%Y-%m-%d_%H-%M-%S_"), dir=results_dir
            )

    return _ProjectPPO


def ppo_config(env: dict[str, Any], seed: int) -> Any:
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    return (
        PPOConfig()  # type: ignore[no-untyped-call]  # RLlib's PPOConfig.__init__ is unannotated
        .environment(TradingEnv, env_config=env)
        .framework("torch")
        .env_runners(num_env_runners=0, num_envs_per_env_runner=1)
        .learners(num_learners=0)
        .training(
            train_batch_size_per_learner=TRAIN_BATCH,
            minibatch_size=MINIBATCH,
            num_epochs=EPOCHS,
            lr=LEARNING_RATE,
            gamma=GAMMA,
            entropy_coeff=ENTROPY,
        )
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=HIDDEN, fcnet_activation="tanh"))
        .debugging(seed=seed, log_level="WARN")
    )


class _Logits(torch.nn.Module):
    """The RLModule's greedy path as a plain tensor -> tensor module (what gets exported)."""

    def __init__(self, module: Any) -> None:
        super().__init__()
        self.module = module

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.module.forward_inference({"obs": obs})["action_dist_inputs"]
        return logits


def export_policy(module: Any, example: np.ndarray, path: Path) -> Path:
    """`torch.export` the module's logits (dynamic batch) to `path`; checks the file reproduces them."""
    logits = _Logits(module).eval()
    sample = torch.from_numpy(np.ascontiguousarray(example, dtype="float32"))
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(logits, (sample,), dynamic_shapes={"obs": {0: batch}})
    torch.export.save(program, str(path))
    with torch.inference_mode():
        expected, got = logits(sample), torch.export.load(str(path)).module()(sample)
    if not torch.allclose(expected, got, rtol=0, atol=1e-6):
        raise RuntimeError("the exported policy does not reproduce the RLModule's logits")
    return path


def evaluate(model: PPOPositionModel, block: Dataset, costs: CostModel) -> dict[str, float]:
    """The greedy policy over one block's rows: episode return after costs (sum of per-bar net
    returns, what the env's rewards add up to) plus `position_metrics`."""
    positions = model.predict(None, block.X)
    net = costs.net_returns(positions, block.next_return)
    return {"episode_return_after_costs": float(net.sum()), **position_metrics(positions, block.next_return, costs)}


def _plot_returns(returns: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(np.arange(1, len(returns) + 1), returns, marker="o")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("training iteration")
    axis.set_ylabel("mean episode return (net of costs)")
    axis.set_title(f"PPO: {EPISODE_LENGTH}-bar training episodes")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    mlflow.log_figure(figure, "ppo_episode_return.png")
    plt.close(figure)


def fit_ppo(data: TrainingData, settings: TrainingSettings, costs: CostModel) -> Candidate:
    """Train PPO on `data.train` (see the module docstring), evaluate it greedily on every
    walk-forward fold's test rows (no per-fold retraining: in-sample diagnostics) and on
    `data.validation`, and return the candidate with its exported policy as the "policy" artifact."""
    window = settings.ppo_window
    feature_names = list(data.train.X.columns)
    mean, std = standardisation(data.train.X)
    env = env_config(
        data.train, mean=mean, std=std, window=window, costs=costs, episode_length=EPISODE_LENGTH, clip=CLIP
    )
    root, temporary = work_dir(settings.ray_dir)
    policy_dir = Path(tempfile.mkdtemp(prefix="policy-", dir=root))
    returns: list[float] = []
    started = time.monotonic()
    try:
        with ray_session(root):
            algo = _algorithm_class(root / "results")(config=ppo_config(env, settings.seed))
            try:
                for _ in range(settings.ppo_iterations):
                    result = algo.train()
                    returns.append(float(result.get("env_runners", {}).get("episode_return_mean", np.nan)))
                module = algo.get_module()  # the env runner's inference-only module, synced after training
                example = np.stack(
                    [TradingEnv(env).observation(t, p) for t in (window - 1, window, window + 1) for p in (-1, 0, 1)]
                )
                export_policy(module, example, policy_dir / POLICY_FILE)
            finally:
                algo.stop()
    finally:
        if temporary:
            shutil.rmtree(root / "ray", ignore_errors=True)  # Ray's session files; the policy stays
    seconds = time.monotonic() - started
    log.info("ppo: %d iterations in %.1f s, episode returns %s", settings.ppo_iterations, seconds, returns)
    model = PPOPositionModel(str(policy_dir / POLICY_FILE), feature_names, mean=mean, std=std, window=window, clip=CLIP)
    folds = [evaluate(model, data.development.take(test_rows), costs) for _, test_rows in data.folds]
    params = {
        "algorithm": "PPO (RLlib new API stack, torch)",
        "window": window,
        "iterations": settings.ppo_iterations,
        "train_batch": TRAIN_BATCH,
        "minibatch": MINIBATCH,
        "epochs": EPOCHS,
        "lr": LEARNING_RATE,
        "gamma": GAMMA,
        "entropy_coeff": ENTROPY,
        "hidden": str(HIDDEN),
        "episode_length": EPISODE_LENGTH,
        "clip": CLIP,
    }
    return Candidate(
        family="ppo",
        python_model=model,
        params=params,
        fold_metrics=folds,
        pip_requirements=[TORCH_REQUIREMENT],
        history_rows=window,
        stateful=True,
        artifacts={"policy": str(policy_dir / POLICY_FILE)},
        log_extras=lambda: _plot_returns(returns),
        validation_metrics=evaluate(model, data.validation, costs),
    )
