"""Which model each market trades with: the version holding the registry's `champion` alias.

The manager polls the alias; when it moves, it loads the new version off the event loop, runs a smoke
prediction on recent feature rows, and only then swaps it in. Any failure (missing or corrupt
artifact, a prediction that is not a position) keeps the last good model serving and is reported. A champion
that cannot be smoke-tested yet because the worker has no feature rows is not a broken champion: it is kept
loaded and smoke-tested again at the next poll (the worker gets rows from the candle lake when the exchange
cannot serve its history), instead of being refused until the alias moves.
With no champion a market trades nothing, and says why. An unavailable registry (tracking server or store
down) is told apart from "no champion": the last good model keeps serving, and a version that failed to load
while the registry was down is tried again once it answers (not taken for a broken artifact). With a `probe`
(`cta.registry.registry_problem` of the tracking URI) a poll while the registry is down costs one quick
request instead of MLflow's minutes of retries."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.model import _PythonModelPyfuncWrapper

from cta.monitor import Expectations
from cta.registry import CHAMPION, DEMOTED, VERDICT_TAG, load_expectations, registry_unavailable

log = logging.getLogger(__name__)

PREVIOUS_POSITION = "previous_position"  # the predict param a stateful model (metadata "stateful") reads


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    model: Any  # mlflow.pyfunc.PyFuncModel
    input_names: tuple[str, ...]
    history_rows: int
    created_ms: int  # registry creation time of the version (wall clock)
    stateful: bool = False  # its position depends on its previous one: the worker passes PREVIOUS_POSITION
    expectations: Expectations | None = None  # what its gating backtest predicts (None: not monitored)

    def age_days(self, now_ms: float) -> float:
        return (now_ms - self.created_ms) / 86_400_000

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        """Through the pyfunc, with MLflow's schema checks (the smoke check, tools, backtests)."""
        output = self.model.predict(features[list(self.input_names)])
        return np.asarray(output, dtype="float64").reshape(-1)

    def predict_next(self, features: pd.DataFrame, previous_position: float | None = None) -> float:
        """The position for the LAST row of `features` (float64 columns, a superset of the signature's):
        the worker's path per closed candle.

        A python-function model is called without MLflow's per-call schema enforcement, which costs
        ~3 ms per call (column-by-column checks) and converts nothing here: the worker builds exactly the
        float64 columns the signature declares. A stateful model gets its own previous position, so that
        streaming one row at a time equals its walk over the whole series (the backtest's)."""
        frame = features if list(features.columns) == list(self.input_names) else features[list(self.input_names)]
        params = {PREVIOUS_POSITION: previous_position} if self.stateful and previous_position is not None else None
        impl = getattr(self.model, "_model_impl", None)  # mlflow's wrapper around a PythonModel (context kept)
        if isinstance(impl, _PythonModelPyfuncWrapper):
            output = impl.predict(frame, params=params)
        else:
            output = self.model.predict(frame, params=params)
        return float(np.asarray(output, dtype="float64").reshape(-1)[-1])


@dataclass
class ModelSlot:
    """One market's model: the one serving, and what the last check found."""

    name: str
    current: LoadedModel | None = None
    problem: str | None = None  # why the market has no (new) model, for status and logs
    failed_version: str | None = None  # a version that failed to load (not retried until the alias moves)
    untested: LoadedModel | None = None  # loaded, waiting for feature rows to smoke-test it (tried at each poll)
    flat: str | None = None  # why the market must be flat: its champion was demoted and none came back
    checked_at: float = field(default=0.0)


class NoSmokeRows(ValueError):
    """No feature rows to smoke-test a model with yet: not the model's fault (tried again at the next poll)."""


def smoke_check(model: LoadedModel, rows: pd.DataFrame) -> None:
    """Predict on recent rows: one finite position in [-1, 1] per row, else ValueError (NoSmokeRows: no rows)."""
    if rows.empty:
        raise NoSmokeRows("no feature rows to smoke-test the model with")
    output = model.predict(rows)
    if len(output) != len(rows):
        raise ValueError(f"smoke prediction returned {len(output)} values for {len(rows)} rows")
    if not np.all(np.isfinite(output)) or np.any(np.abs(output) > 1.0):
        raise ValueError(f"smoke prediction is not a position in [-1, 1]: {output[:5]}")


def load_version(client: MlflowClient, name: str, version: str) -> LoadedModel:
    import mlflow

    details = client.get_model_version(name, version)
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    metadata = model.metadata
    schema = metadata.get_input_schema()
    if schema is None:
        raise ValueError(f"{name} v{version} has no input signature")
    extra = metadata.metadata or {}
    return LoadedModel(
        name,
        version,
        model,
        tuple(schema.input_names()),
        int(extra.get("history_rows", 1)),
        int(details.creation_timestamp),
        stateful=bool(extra.get("stateful", False)),
        expectations=load_expectations(client, name, version),
    )


class ModelManager:
    """Polls the champion alias of each market's registered model and hot-swaps safely."""

    def __init__(
        self,
        client: MlflowClient,
        names: dict[str, str],
        smoke_rows: Callable[[str], pd.DataFrame] | None = None,
        *,
        poll_s: float,
        loader: Callable[[MlflowClient, str, str], LoadedModel] = load_version,
        on_swap: Callable[[str, str | None, LoadedModel], None] | None = None,
        probe: Callable[[], str | None] | None = None,
    ) -> None:
        self.client = client
        self.slots = {market: ModelSlot(name) for market, name in names.items()}
        self.smoke_rows = smoke_rows  # None until a Worker serves with this manager: its recent feature rows
        self.poll_s = poll_s
        self.loader = loader
        self.on_swap = on_swap  # e.g. a ledger entry per model the worker starts trading with
        self.probe = probe  # why the registry cannot be used now (None: it can), e.g. cta.registry.registry_problem

    def model(self, market: str) -> LoadedModel | None:
        return self.slots[market].current

    def problem(self, market: str) -> str | None:
        return self.slots[market].problem

    def flat(self, market: str) -> str | None:
        """Why the market must go flat (its champion was demoted, none took its place), or None."""
        return self.slots[market].flat

    async def refresh_due(self) -> None:
        """Check every market whose last check is older than the poll interval."""
        now = time.monotonic()
        for market, slot in self.slots.items():
            if now - slot.checked_at >= self.poll_s:
                await self.refresh(market)

    async def _demoted(self, slot: ModelSlot, version: str) -> bool:
        """Whether `version` lost the champion alias to a demotion (not, e.g., a registry edited by hand)."""
        try:
            details = await asyncio.to_thread(self.client.get_model_version, slot.name, version)
        except MlflowException:
            return False
        return (details.tags or {}).get(VERDICT_TAG) == DEMOTED

    async def registry_down(self) -> str | None:
        """Why the registry cannot be used now (the probe's one quick request), or None: it answers or no probe."""
        return None if self.probe is None else await asyncio.to_thread(self.probe)

    async def refresh(self, market: str) -> None:
        slot = self.slots[market]
        slot.checked_at = time.monotonic()
        kept = f"keeping v{slot.current.version}" if slot.current else "no model serving"
        down = await self.registry_down()
        if down is not None:
            slot.problem = f"the model registry is unavailable ({down}); {kept}"
            log.warning("%s: %s", market, slot.problem)
            return
        try:
            champion = await asyncio.to_thread(self.client.get_model_version_by_alias, slot.name, CHAMPION)
        except MlflowException as e:
            if registry_unavailable(e):
                slot.problem = f"the model registry is unavailable ({type(e).__name__}: {e}); {kept}"
            elif slot.current is not None and await self._demoted(slot, slot.current.version):
                slot.flat = slot.problem = (
                    f"champion v{slot.current.version} was demoted and no earlier champion took its place: flat"
                )
                slot.current = None
                log.warning("%s: %s", market, slot.problem)
                return
            elif slot.current is None:
                slot.problem = f"no champion for {slot.name} (nothing trades until one is promoted)"
            else:
                slot.problem = f"cannot read the champion alias ({type(e).__name__}); keeping v{slot.current.version}"
            log.warning("%s: %s", market, slot.problem)
            return
        version = str(champion.version)
        if slot.current is not None and slot.current.version == version:
            slot.problem = None
            return
        if slot.failed_version == version:
            return
        untested = slot.untested if slot.untested is not None and slot.untested.version == version else None
        slot.untested = None
        try:
            if untested is None:
                loaded = await asyncio.to_thread(self.loader, self.client, slot.name, version)
            else:
                loaded = untested
            if self.smoke_rows is None:
                raise ValueError("no feature rows to smoke-test with (no worker serves with this manager)")
            rows = await asyncio.to_thread(self.smoke_rows, market)
            await asyncio.to_thread(smoke_check, loaded, rows.tail(max(loaded.history_rows * 4, 8)))
        except NoSmokeRows as e:  # the worker has no rows yet: not the version's fault, tried again at the next poll
            slot.untested = loaded
            slot.problem = f"champion v{version} loaded, not smoke-tested yet ({e}); {kept}"
            log.warning("%s: %s", market, slot.problem)
            return
        except Exception as e:  # noqa: BLE001 (any load or smoke failure keeps the last good model)
            down = await self.registry_down()
            if down is not None:  # not the version's fault: load it again once the registry answers
                slot.problem = f"champion v{version} not loaded: the model registry is unavailable ({down}); {kept}"
                log.warning("%s: %s", market, slot.problem)
                return
            slot.failed_version = version
            slot.problem = f"champion v{version} failed to load or smoke-test ({type(e).__name__}: {e}); {kept}"
            log.error("%s: %s", market, slot.problem)
            return
        previous = slot.current.version if slot.current else None
        slot.current, slot.problem, slot.failed_version, slot.flat = loaded, None, None, None
        if self.on_swap is not None:
            self.on_swap(market, previous, loaded)
        log.info("%s: now trading with %s v%s (was %s)", market, slot.name, version, previous or "none")
