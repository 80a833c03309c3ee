"""The trading environment of the RL family: one market's feature rows, its next-bar returns and the
SAME `CostModel` the backtests use, as a `gymnasium.Env`.

- observation: the last `window` feature rows (oldest first), standardised with a mean/std computed on
  the training rows (passed in, never computed here), clipped to +-`clip`, flattened, followed by the
  position currently held: `float32`, shape `(window * n_features + 1,)`;
- action: `Discrete(3)`, mapped to the target position `action - 1` (short / flat / long);
- reward at row t: `CostModel.net_returns` for that one step, i.e. `position_t * next_return_t` minus
  the cost of moving from the previous position (an episode starts flat);
- an episode walks the rows from the first full window (`window - 1`) to the last one, or, for
  training, a random slice of `episode_length` rows drawn from the env's seeded RNG.

Pure numpy in `step()`. RLlib builds the env from its config dict (`TradingEnv(env_config)`);
`env_config(...)` makes that dict from a Dataset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd

from cta.costs import CostModel
from features.dataset import Dataset

POSITIONS = np.array([-1.0, 0.0, 1.0])  # action index -> target position
CLIP = 10.0  # standardised features are clipped to +-CLIP (the pyfunc applies the same)


def action_to_position(action: int) -> float:
    return float(POSITIONS[int(action)])


def standardisation(features: pd.DataFrame | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of the (training) rows; a constant feature gets std 1."""
    values = np.asarray(features, dtype="float64")
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)


def standardise(features: np.ndarray, mean: np.ndarray, std: np.ndarray, clip: float = CLIP) -> np.ndarray:
    scaled: np.ndarray = np.clip((np.asarray(features, dtype="float64") - mean) / std, -clip, clip)
    return scaled.astype("float32")


def env_config(
    dataset: Dataset,
    *,
    mean: np.ndarray,
    std: np.ndarray,
    window: int,
    costs: CostModel,
    episode_length: int | None = None,
    clip: float = CLIP,
) -> dict[str, Any]:
    """The config dict `TradingEnv` is built from (RLlib passes it as `env_config`)."""
    return {
        "features": dataset.X.to_numpy(dtype="float64"),
        "next_return": np.asarray(dataset.next_return, dtype="float64"),
        "mean": np.asarray(mean, dtype="float64"),
        "std": np.asarray(std, dtype="float64"),
        "window": int(window),
        "costs": costs,
        "episode_length": episode_length,
        "clip": float(clip),
    }


class TradingEnv(gym.Env[np.ndarray, int]):
    """See the module docstring. Keys of `config`: features (rows x features, raw), next_return, mean,
    std, window, costs (a CostModel), episode_length (None: the whole dataset), clip."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium's class attribute)

    def __init__(self, config: Mapping[str, Any] | None = None, **overrides: Any) -> None:
        config = {**(config or {}), **overrides}
        self.window = int(config["window"])
        self.costs: CostModel = config["costs"]
        self.clip = float(config.get("clip", CLIP))
        self.features = standardise(config["features"], config["mean"], config["std"], self.clip)
        self.next_return = np.asarray(config["next_return"], dtype="float64")
        rows, n_features = self.features.shape
        if len(self.next_return) != rows:
            raise ValueError(f"{rows} feature rows but {len(self.next_return)} next returns")
        if rows < self.window:
            raise ValueError(f"{rows} rows are fewer than one window of {self.window}")
        length = config.get("episode_length")
        self.episode_length = None if length is None else min(int(length), rows - self.window + 1)
        self.observation_space = gym.spaces.Box(
            low=-self.clip, high=self.clip, shape=(self.window * n_features + 1,), dtype=np.float32
        )
        self.action_space = gym.spaces.Discrete(len(POSITIONS))
        self._row = self._end = self.window - 1
        self._position = 0.0

    def observation(self, row: int, position: float) -> np.ndarray:
        window = self.features[row - self.window + 1 : row + 1].ravel()
        return np.concatenate([window, np.array([position], dtype=np.float32)])

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        first, rows = self.window - 1, len(self.features)
        if self.episode_length is None:
            start, end = first, rows
        else:
            start = int(self.np_random.integers(first, rows - self.episode_length + 1))
            end = start + self.episode_length
        self._row, self._end, self._position = start, end, 0.0
        return self.observation(start, 0.0), {"row": start}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        row, previous = self._row, self._position
        position = POSITIONS[int(action)]
        reward = float(self.costs.net_returns(np.array([position]), self.next_return[row : row + 1], previous)[0])
        self._row, self._position = row + 1, float(position)
        terminated = self._row == len(self.features)  # no later row: the data ends here
        truncated = not terminated and self._row == self._end  # the training slice ends here
        observation = self.observation(row if terminated else self._row, self._position)
        return observation, reward, terminated, truncated, {"row": row, "position": float(position)}
