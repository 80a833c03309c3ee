"""The MLflow model registry, shared by training, backtests, serving and the CLI: where the tracking
store is (`configure_mlflow`), how models and experiments are named per market, and the registry
moves: the `champion` alias, the `previous` alias kept for rollback, and the
verdict tags on each version. Every move happens under a per-model lock and re-checks, inside the
lock, that the champion is still the one the gate compared against (optimistic concurrency): two
promotions racing for one market leave one champion, the right `previous`, and a `stale` verdict on
the loser, never an inconsistent pair of aliases.

The champion history (for rollback) is a JSON list of versions in a registered-model tag.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from cta.candles import symbol_to_path
from cta.errors import CTAError
from cta.lake import Market

if TYPE_CHECKING:
    from cta.config import Settings

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS = "previous"
HISTORY_TAG = "cta.champion_history"
VERDICT_TAG = "verdict"


def configure_mlflow(settings: Settings) -> str:
    """Point MLflow at the configured tracking store (creating a local SQLite dir if needed)."""
    uri = settings.training.tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return uri


def registered_model_name(market: Market) -> str:
    """The registered model of one market: `cta.<exchange>.<symbol>.<timeframe>`."""
    return f"cta.{market.exchange}.{symbol_to_path(market.symbol)}.{market.timeframe}"


def experiment_name(market: Market) -> str:
    return f"cta/{market.exchange}/{symbol_to_path(market.symbol)}/{market.timeframe}"


def ensure_experiment(settings: Settings, market: Market) -> str:
    """The market's experiment id (created with its artifact location under training.artifact_root)."""
    name = experiment_name(market)
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    root = settings.training.artifact_root
    location = root if "://" in root else Path(root).resolve().as_uri()
    return str(mlflow.create_experiment(name, artifact_location=f"{location}/{symbol_to_path(name)}"))


class PromotionError(CTAError):
    """A registry move that cannot be made (unknown version, nothing to roll back to, lock timeout)."""


@dataclass(frozen=True)
class Move:
    """What a promotion or rollback did."""

    model: str
    outcome: str  # "champion" | "stale" | "rolled_back"
    version: str
    previous: str | None
    detail: str = ""


def champion(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version holding the `champion` alias, or None (no champion yet, or no such model)."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def champion_history(client: MlflowClient, name: str) -> list[str]:
    try:
        tags = client.get_registered_model(name).tags
    except MlflowException:
        return []
    history: list[str] = json.loads(tags.get(HISTORY_TAG, "[]"))
    return history


@contextlib.contextmanager
def registry_lock(tracking_uri: str, lock_dir: Path, name: str, timeout_s: float = 60.0) -> Iterator[None]:
    """Serialise registry moves of one model across processes: a PostgreSQL advisory lock when the
    tracking store is PostgreSQL, else an exclusive flock on a file under `lock_dir`."""
    if tracking_uri.startswith("postgresql"):
        with _postgres_lock(tracking_uri, name, timeout_s):
            yield
        return
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"{hashlib.sha256(name.encode()).hexdigest()[:16]}.lock"
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PromotionError(f"{name}: registry lock {path} held for more than {timeout_s:.0f} s") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def promotion_lock(settings: Settings, name: str) -> contextlib.AbstractContextManager[None]:
    """The registry lock of one model, as configured (PostgreSQL advisory lock or a file lock)."""
    return registry_lock(settings.training.tracking_uri, settings.paths.data_dir / "locks", name)


@contextlib.contextmanager
def _postgres_lock(uri: str, name: str, timeout_s: float) -> Iterator[None]:
    import sqlalchemy

    key = int.from_bytes(hashlib.sha256(f"cta.registry:{name}".encode()).digest()[:8], "big", signed=True)
    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f"SET lock_timeout = '{int(timeout_s * 1000)}ms'"))
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    finally:
        engine.dispose()


def tag_version(client: MlflowClient, name: str, version: str, tags: dict[str, Any]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value)[:5000])


def promote(
    client: MlflowClient, name: str, version: str, *, expected_champion: str | None, reason: str, lock: Any
) -> Move:
    """Make `version` the champion if the champion is still `expected_champion` (the one it was
    compared with); otherwise tag it `stale` and change nothing. `lock` is a registry_lock context."""
    with lock:
        current = champion(client, name)
        current_version = str(current.version) if current is not None else None
        if current_version != expected_champion:
            detail = f"champion moved to v{current_version} after the gate compared with v{expected_champion}"
            tag_version(client, name, version, {VERDICT_TAG: "stale", "verdict_reasons": detail})
            log.warning("%s v%s not promoted: %s", name, version, detail)
            return Move(name, "stale", version, current_version, detail)
        history = champion_history(client, name)
        if current_version is not None:
            client.set_registered_model_alias(name, PREVIOUS, current_version)
        client.set_registered_model_alias(name, CHAMPION, version)
        client.set_registered_model_tag(name, HISTORY_TAG, json.dumps([*history, version]))
        tag_version(client, name, version, {VERDICT_TAG: CHAMPION, "promotion_reason": reason})
        previous = f"v{current_version}" if current_version else "none"
        log.info("%s: v%s is the champion (previous: %s)", name, version, previous)
        return Move(name, CHAMPION, version, current_version, reason)


def rollback(client: MlflowClient, name: str, *, lock: Any) -> Move:
    """Give the champion alias back to the previous champion; the demoted version is tagged
    `rolled_back`. Rolling back again goes one step further back."""
    with lock:
        history = champion_history(client, name)
        current = champion(client, name)
        if current is None or len(history) < 2 or history[-1] != str(current.version):
            raise PromotionError(f"{name}: no previous champion to roll back to (history {history})")
        demoted, restored = history[-1], history[-2]
        client.set_registered_model_alias(name, CHAMPION, restored)
        if len(history) >= 3:
            client.set_registered_model_alias(name, PREVIOUS, history[-3])
        else:
            client.delete_registered_model_alias(name, PREVIOUS)
        client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[:-1]))
        tag_version(client, name, demoted, {VERDICT_TAG: "rolled_back"})
        log.warning("%s: rolled back from v%s to v%s", name, demoted, restored)
        return Move(name, "rolled_back", restored, demoted)


def versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of the model, newest first."""
    found = client.search_model_versions(f"name = '{name}'")
    return sorted(found, key=lambda v: int(v.version), reverse=True)


@dataclass(frozen=True)
class VersionRow:
    """One registered version as `cta models list` shows it."""

    version: str
    family: str
    aliases: tuple[str, ...]
    verdict: str
    oos_sharpe: str
    oos_max_drawdown: str
    reasons: str


def version_rows(client: MlflowClient, name: str) -> list[VersionRow]:
    """Every version of the model, newest first, with its aliases and gate verdict (empty: no versions)."""
    found = versions(client, name)
    if not found:
        return []
    aliases: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(name).aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    return [
        VersionRow(
            version=str(v.version),
            family=v.tags.get("family", ""),
            aliases=tuple(aliases.get(str(v.version), [])),
            verdict=v.tags.get(VERDICT_TAG, "not gated"),
            oos_sharpe=v.tags.get("oos_sharpe", ""),
            oos_max_drawdown=v.tags.get("oos_max_drawdown", ""),
            reasons=v.tags.get("verdict_reasons", ""),
        )
        for v in found
    ]


def find_version(client: MlflowClient, name: str, version_or_alias: str) -> ModelVersion:
    """A version by number or alias (champion, previous); PromotionError if there is none."""
    try:
        if version_or_alias.isdigit():
            return client.get_model_version(name, version_or_alias)
        return client.get_model_version_by_alias(name, version_or_alias)
    except MlflowException:
        raise PromotionError(f"{name} has no version or alias {version_or_alias!r}") from None
