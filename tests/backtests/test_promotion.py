"""Registry moves on a real MLflow store (SQLite): first promotion, champion replaced with a rollback
alias, stale verdicts, rollback, and two promotions racing for one market."""

from __future__ import annotations

import threading
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from cta.registry import (
    CHAMPION,
    PREVIOUS,
    PromotionError,
    champion,
    champion_history,
    demote,
    promote,
    registry_lock,
    rollback,
)

NAME = "cta.binance.BTC_USDT.1h"


@pytest.fixture
def registry(tmp_path: Path) -> tuple[MlflowClient, str, Path]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    client.create_registered_model(NAME)
    for _ in range(4):
        client.create_model_version(NAME, source=str(tmp_path / "model"))
    return client, uri, tmp_path / "locks"


def aliases(client: MlflowClient) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(NAME).aliases.items()}


def test_first_promotion_then_replacement_keeps_the_old_champion_for_rollback(registry) -> None:
    client, uri, locks = registry
    first = promote(client, NAME, "1", expected_champion=None, reason="gate", lock=registry_lock(uri, locks, NAME))
    assert (first.outcome, first.previous) == ("champion", None)
    assert aliases(client) == {CHAMPION: "1"}
    promote(client, NAME, "2", expected_champion="1", reason="gate", lock=registry_lock(uri, locks, NAME))
    assert aliases(client) == {CHAMPION: "2", PREVIOUS: "1"}
    assert client.get_model_version(NAME, "2").tags["verdict"] == "champion"
    assert champion_history(client, NAME) == ["1", "2"]


def test_a_verdict_against_an_outdated_champion_is_stale_and_moves_nothing(registry) -> None:
    client, uri, locks = registry
    promote(client, NAME, "1", expected_champion=None, reason="gate", lock=registry_lock(uri, locks, NAME))
    move = promote(client, NAME, "3", expected_champion=None, reason="gate", lock=registry_lock(uri, locks, NAME))
    assert move.outcome == "stale" and "champion moved to v1" in move.detail
    assert aliases(client) == {CHAMPION: "1"}
    assert client.get_model_version(NAME, "3").tags["verdict"] == "stale"


def test_rollback_restores_the_previous_champion_step_by_step(registry) -> None:
    client, uri, locks = registry
    for version, expected in (("1", None), ("2", "1"), ("3", "2")):
        promote(client, NAME, version, expected_champion=expected, reason="gate", lock=registry_lock(uri, locks, NAME))
    move = rollback(client, NAME, lock=registry_lock(uri, locks, NAME))
    assert (move.version, move.previous) == ("2", "3")
    assert aliases(client) == {CHAMPION: "2", PREVIOUS: "1"}
    assert client.get_model_version(NAME, "3").tags["verdict"] == "rolled_back"
    rollback(client, NAME, lock=registry_lock(uri, locks, NAME))
    assert aliases(client) == {CHAMPION: "1"}
    with pytest.raises(PromotionError, match="no previous champion"):
        rollback(client, NAME, lock=registry_lock(uri, locks, NAME))
    champ = champion(client, NAME)
    assert champ is not None and str(champ.version) == "1"


def test_a_demotion_gives_the_alias_back_to_the_previous_champion_or_to_nobody(registry) -> None:
    client, uri, locks = registry
    for version, expected in (("1", None), ("2", "1")):
        promote(client, NAME, version, expected_champion=expected, reason="gate", lock=registry_lock(uri, locks, NAME))
    stale = demote(client, NAME, "1", "returns: short", lock=registry_lock(uri, locks, NAME))
    assert stale.outcome == "stale" and aliases(client) == {CHAMPION: "2", PREVIOUS: "1"}

    move = demote(client, NAME, "2", "returns: short", lock=registry_lock(uri, locks, NAME))
    assert (move.outcome, move.version, move.previous) == ("demoted", "1", "2")
    assert aliases(client) == {CHAMPION: "1"}
    assert client.get_model_version(NAME, "2").tags["verdict"] == "demoted"
    assert client.get_model_version(NAME, "2").tags["demotion_reasons"] == "returns: short"
    assert champion_history(client, NAME) == ["1"]

    last = demote(client, NAME, "1", "feature_drift: rsi_14 0.9", lock=registry_lock(uri, locks, NAME))
    assert (last.outcome, last.version) == ("demoted", "")
    assert aliases(client) == {} and champion(client, NAME) is None and champion_history(client, NAME) == []
    # the next gate promotes against no champion
    promote(client, NAME, "3", expected_champion=None, reason="gate", lock=registry_lock(uri, locks, NAME))
    assert aliases(client) == {CHAMPION: "3"}


def test_without_any_champion_rollback_is_refused(registry) -> None:
    client, uri, locks = registry
    with pytest.raises(PromotionError):
        rollback(client, NAME, lock=registry_lock(uri, locks, NAME))
    assert champion(client, NAME) is None


def test_concurrent_promotions_leave_one_consistent_champion(registry) -> None:
    """Eight threads promote versions 2, 3 and 4, all gated against champion v1, at the same moment."""
    client, uri, locks = registry
    promote(client, NAME, "1", expected_champion=None, reason="gate", lock=registry_lock(uri, locks, NAME))
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def race(version: str) -> None:
        own = MlflowClient(uri)
        start.wait()
        move = promote(own, NAME, version, expected_champion="1", reason="race", lock=registry_lock(uri, locks, NAME))
        outcomes.append(move.outcome)

    threads = [threading.Thread(target=race, args=(str(2 + i % 3),)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["champion"] + ["stale"] * 7
    current = aliases(client)
    assert current[PREVIOUS] == "1" and current[CHAMPION] in {"2", "3", "4"}
    assert champion_history(client, NAME) == ["1", current[CHAMPION]]
