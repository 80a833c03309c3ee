"""Promotions when the tracking server fails: the aliases are never left half-moved.

A promotion moves `previous`, then `champion`, then the history, in separate registry calls. An HTTP proxy in
front of the real tracking server (PostgreSQL backend, artifacts on moto) drops chosen requests or goes down
altogether, at the moment the second alias call is made. Afterwards `champion` and `previous` (and the history)
are either exactly the state before or exactly the state after, and the outcome says why. Each test fails
against a promotion that moves the aliases without settling an interrupted move.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.models import infer_signature
from mlflow.pyfunc.model import PythonModel

from cta.execution import Execution
from cta.lake import Market
from cta.registry import (
    CHAMPION,
    PENDING_TAG,
    PREVIOUS,
    PROMOTION_FAILED,
    VERDICT_TAG,
    RegistryUnavailable,
    alias_state,
    champion,
    promote,
    recover_interrupted_move,
    registry_lock,
    registry_problem,
)
from features.registry import feature_names
from serving.models_manager import ModelManager
from tests.conftest import load_test_settings
from tests.factories import real_candles
from tests.production.conftest import Fault, HttpFaultProxy, MlflowStack

pytestmark = [pytest.mark.integration, pytest.mark.production]

ALIAS_CALL = ("POST", "/registered-models/alias")


@pytest.fixture
def proxy(mlflow_stack: MlflowStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpFaultProxy]:
    """A fault proxy in front of the server; MLflow's client does not retry (a dropped call fails at once)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    relay = HttpFaultProxy(mlflow_stack.server.url)
    relay.up()
    try:
        yield relay
    finally:
        relay.close()


@pytest.fixture
def model(proxy: HttpFaultProxy) -> tuple[MlflowClient, str]:
    """A registered model with four versions, v2 the champion and v1 the previous one (history [1, 2])."""
    client = MlflowClient(proxy.url)
    name = f"cta.test.faults.{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    for _ in range(4):
        client.create_model_version(name, source="s3://unused/model")
    promote(client, name, "1", expected_champion=None, reason="setup", lock=_lock(name))
    promote(client, name, "2", expected_champion="1", reason="setup", lock=_lock(name))
    return client, name


@pytest.fixture(autouse=True)
def _lock_dir(tmp_path: Path) -> None:
    LOCK_DIR[0] = tmp_path / "locks"


LOCK_DIR = [Path("locks")]


def _lock(name: str) -> object:
    """The registry lock a flow takes with an http tracking URI (a file lock)."""
    return registry_lock("http://tracking-server", LOCK_DIR[0], name)


def registry(client: MlflowClient, name: str) -> tuple[dict[str, str], list[str], bool]:
    """Aliases, history and whether a move is pending, read through the server."""
    state, pending = alias_state(client, name)
    aliases = {alias: v for alias, v in ((CHAMPION, state.champion), (PREVIOUS, state.previous)) if v is not None}
    return aliases, list(state.history), pending is not None


BEFORE = ({CHAMPION: "2", PREVIOUS: "1"}, ["1", "2"], False)
AFTER = ({CHAMPION: "3", PREVIOUS: "2"}, ["1", "2", "3"], False)


def test_a_dropped_champion_alias_call_undoes_the_move_and_says_why(
    model: tuple[MlflowClient, str], proxy: HttpFaultProxy
) -> None:
    client, name = model
    proxy.faults.append(Fault(*ALIAS_CALL, nth=2, count=1))  # previous moves, then the champion call is lost

    move = promote(client, name, "3", expected_champion="2", reason="gate", lock=_lock(name), settle_timeout_s=10)

    assert ("POST", "/api/2.0/mlflow/registered-models/alias", "dropped") in proxy.requests
    assert move.outcome == PROMOTION_FAILED
    assert "registry failed during the alias move" in move.detail and "undone: champion v2, previous v1" in move.detail
    assert registry(client, name) == BEFORE
    tags = client.get_model_version(name, "3").tags
    assert tags[VERDICT_TAG] == PROMOTION_FAILED and "undone" in tags["verdict_reasons"]
    # and the next promotion goes through as usual
    again = promote(client, name, "3", expected_champion="2", reason="gate", lock=_lock(name))
    assert again.outcome == CHAMPION and registry(client, name) == AFTER


def test_a_lost_history_write_completes_the_move(model: tuple[MlflowClient, str], proxy: HttpFaultProxy) -> None:
    client, name = model
    proxy.faults.append(Fault("POST", "/registered-models/set-tag", nth=2, count=1))  # intent ok, history lost

    move = promote(client, name, "3", expected_champion="2", reason="gate", lock=_lock(name), settle_timeout_s=10)

    assert move.outcome == CHAMPION, move
    assert registry(client, name) == AFTER


def test_the_server_dying_mid_move_is_settled_when_it_comes_back(
    model: tuple[MlflowClient, str], proxy: HttpFaultProxy
) -> None:
    client, name = model
    # the server "dies" as the champion alias call is made, and stays away longer than the settle window
    proxy.faults.append(Fault(*ALIAS_CALL, nth=2, count=1, then_down=True))

    move = promote(client, name, "3", expected_champion="2", reason="gate", lock=_lock(name), settle_timeout_s=1.0)

    assert move.outcome == PROMOTION_FAILED
    assert "stayed unavailable" in move.detail and PENDING_TAG in move.detail
    assert proxy.is_down
    proxy.up()  # the server is back
    state, pending = alias_state(client, name)
    assert state.champion == "2"  # what the worker follows never moved
    assert pending is not None and pending["version"] == "3"
    assert recover_interrupted_move(client, name) == "an interrupted promotion of v3 was undone"
    assert registry(client, name) == BEFORE
    # the next promotion settles an interrupted move by itself first; here there is none left
    assert promote(client, name, "3", expected_champion="2", reason="gate", lock=_lock(name)).outcome == CHAMPION
    assert registry(client, name) == AFTER


def test_the_next_promotion_settles_a_move_left_pending(model: tuple[MlflowClient, str], proxy: HttpFaultProxy) -> None:
    client, name = model
    proxy.faults.append(Fault(*ALIAS_CALL, nth=2, count=1, then_down=True))
    first = promote(client, name, "3", expected_champion="2", reason="gate", lock=_lock(name), settle_timeout_s=0.5)
    assert first.outcome == PROMOTION_FAILED
    proxy.up()

    second = promote(client, name, "4", expected_champion="2", reason="gate", lock=_lock(name))

    assert second.outcome == CHAMPION, second
    assert registry(client, name) == ({CHAMPION: "4", PREVIOUS: "2"}, ["1", "2", "4"], False)


def test_a_server_down_before_the_move_moves_nothing(model: tuple[MlflowClient, str], proxy: HttpFaultProxy) -> None:
    client, name = model
    proxy.down()  # stopped between the gate and the promotion

    move = promote(client, name, "3", expected_champion="2", reason="gate", lock=_lock(name))

    assert move.outcome == PROMOTION_FAILED and "nothing was moved" in move.detail
    with pytest.raises(RegistryUnavailable, match="cannot read the champion alias"):
        champion(client, name)  # "unavailable" is never taken for "no champion"
    proxy.up()
    assert registry(client, name) == BEFORE


def test_the_verdict_row_of_a_failed_promotion_says_why(
    model: tuple[MlflowClient, str], proxy: HttpFaultProxy, tmp_path: Path
) -> None:
    """The evaluate flow's last step (`record_and_promote`): a passing candidate whose promotion the registry
    interrupts gets the verdict `promotion_failed` with the reason, and the aliases are as before."""
    from backtests.engine import Bars, buy_and_hold, run_fast
    from backtests.evaluate import MarketEvaluation, ModelBacktest, Window, record_and_promote
    from backtests.gate import Verdict

    client, name = model
    settings = load_test_settings(
        paths={"data_dir": str(tmp_path / "data")}, training={"tracking_uri": proxy.url}, backtest={"reports": False}
    )
    mlflow.set_tracking_uri(proxy.url)
    bars = Bars.from_candles(real_candles(rows=300), "1h")
    execution = Execution.from_settings(settings.costs, settings.backtest)
    candidate = ModelBacktest("3", "logistic", "", run_fast(bars, np.ones(len(bars)), settings.limits, execution))
    market = Market("binance", "BTC/USDT", "1h")
    evaluation = MarketEvaluation(
        market,
        name,
        Window(market, bars, pd.DataFrame(index=range(len(bars))), 0),
        buy_and_hold(bars, execution),
        [candidate],
        None,
        champion_version="2",
        verdicts={"3": Verdict(True, (), 0.99, "2")},
    )
    proxy.faults.append(Fault(*ALIAS_CALL, nth=2, count=1))

    [row] = record_and_promote(settings, client, evaluation)

    assert row["verdict"] == PROMOTION_FAILED, row
    assert "registry failed during the alias move" in row["reasons"]
    assert "undone: champion v2, previous v1" in row["reasons"]
    assert registry(client, name) == BEFORE
    assert client.get_model_version(name, "3").tags[VERDICT_TAG] == PROMOTION_FAILED


class ConstantPosition(PythonModel):  # type: ignore[misc]
    def __init__(self, position: float) -> None:
        self.position = position

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        return np.full(len(model_input), self.position)


def register(client: MlflowClient, name: str, position: float) -> str:
    """A new version of `name` (a real pyfunc, artifacts through the server) that always wants `position`."""
    example = pd.DataFrame([dict.fromkeys(feature_names(), 0.0)])
    model = ConstantPosition(position)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            signature=infer_signature(example, model.predict(None, example)),
            registered_model_name=name,
            pip_requirements=["numpy", "pandas"],
        )
    return str(info.registered_model_version)


def test_the_model_manager_keeps_its_model_while_the_registry_is_down(
    proxy: HttpFaultProxy, no_storage_credentials: None
) -> None:
    """The worker's model manager: a registry that goes away is reported as such (never "no champion"), the
    loaded champion keeps serving, a new champion whose download the outage cut is loaded once it is back."""
    mlflow.set_tracking_uri(proxy.url)
    client = MlflowClient(proxy.url)
    name = f"cta.test.manager.{uuid.uuid4().hex[:8]}"
    rows = pd.DataFrame(np.zeros((16, len(feature_names()))), columns=feature_names())
    manager = ModelManager(
        client, {"m": name}, smoke_rows=lambda market: rows, poll_s=0, probe=lambda: registry_problem(proxy.url)
    )
    client.set_registered_model_alias(name, CHAMPION, register(client, name, 1.0))
    asyncio.run(manager.refresh("m"))
    assert (manager.model("m").version, manager.problem("m")) == ("1", None)  # type: ignore[union-attr]

    proxy.down()
    asyncio.run(manager.refresh("m"))
    problem = manager.problem("m") or ""
    assert "model registry is unavailable" in problem and "keeping v1" in problem, problem
    assert manager.model("m").version == "1"  # type: ignore[union-attr]

    proxy.up()
    client.set_registered_model_alias(name, CHAMPION, register(client, name, 0.0))
    proxy.faults.append(Fault("GET", "/mlflow-artifacts/artifacts/", then_down=True))  # dies mid-download
    asyncio.run(manager.refresh("m"))
    problem = manager.problem("m") or ""
    assert "champion v2 not loaded: the model registry is unavailable" in problem, problem
    assert manager.model("m").version == "1"  # type: ignore[union-attr]

    proxy.up()
    asyncio.run(manager.refresh("m"))  # not taken for a broken version: loaded now
    assert (manager.model("m").version, manager.problem("m")) == ("2", None)  # type: ignore[union-attr]
