"""The MLflow model registry, shared by training, backtests, serving and the CLI: where the tracking
store is (`configure_mlflow`), how models and experiments are named per market, and the registry
moves: the `champion` alias, the `previous` alias kept for rollback, and the
verdict tags on each version. Every move happens under a per-model lock and re-checks, inside the
lock, that the champion is still the one the gate compared against (optimistic concurrency): two
promotions racing for one market leave one champion, the right `previous`, and a `stale` verdict on
the loser, never an inconsistent pair of aliases.

The champion history (for rollback) is a JSON list of versions in a registered-model tag.

A move changes two aliases and the history in separate registry calls, so it is written ahead: the state before
and after goes into a registered-model tag (`cta.pending_move`) before the first alias moves, and is removed once
the move is complete. When the registry fails part-way (the tracking server or its database goes away), the move
is settled at once, retrying for a bounded time: completed when both aliases already moved, else undone. A move
that cannot be settled because the registry stays away is settled by the next move of that model (`promote` and
`rollback` first settle any interrupted move). Readers (the worker) only follow `champion`, which moves in one
call: they see the old champion or the new one.

With an http(s) tracking URI the tracking server owns the store and serves the artifacts (`mlflow server
--serve-artifacts`): experiments are created without an artifact location, so the server gives them
`mlflow-artifacts:` ones, and clients need only the tracking URL (no storage credentials).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from cta.candles import symbol_to_path
from cta.errors import CTAError
from cta.lake import Market
from cta.monitor import Expectations

if TYPE_CHECKING:
    from cta.config import Settings

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS = "previous"
EXPECTATIONS_ARTIFACT = "monitor/expectations.json"  # on a version's backtest run (cta.monitor)
DEMOTED = "demoted"  # the verdict tag of a champion monitoring took the alias from
HISTORY_TAG = "cta.champion_history"
PENDING_TAG = "cta.pending_move"  # a registry move under way (write-ahead), see the module docstring
VERDICT_TAG = "verdict"
PROMOTION_FAILED = "promotion_failed"  # the outcome of a promotion the registry failed part-way
SETTLE_TIMEOUT_S = 60.0  # how long a move that failed part-way is retried (completed or undone) before giving up
# MLflow's error codes for "no such model / alias": anything else from the registry means it is unavailable.
_NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})


def is_tracking_server(uri: str) -> bool:
    """Whether `uri` is a tracking server (http/https), which owns the store and serves the artifacts."""
    return uri.split(":", 1)[0].lower() in {"http", "https"}


def registry_problem(uri: str, timeout_s: float = 2.0) -> str | None:
    """Why the tracking store at `uri` cannot be used now (None: it can). A tracking server must answer its
    `/health` route; a PostgreSQL/MySQL store must accept a connection; a local (sqlite/file) store always can.
    Quick by design (one request, `timeout_s`): health checks and start-up loops call it instead of a registry
    call, which MLflow retries for minutes when the server is down."""
    scheme = uri.split(":", 1)[0].lower()
    if is_tracking_server(uri):
        url = f"{uri.rstrip('/')}/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (http(s) only, checked)
                if response.status != 200:
                    return f"{url} answered HTTP {response.status}"
        except urllib.error.HTTPError as e:
            return f"{url} answered HTTP {e.code}"
        except (OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            return f"{url} unreachable ({type(e).__name__}: {reason})"
        return None
    if scheme.startswith(("postgresql", "mysql", "mssql")):
        import sqlalchemy

        engine = sqlalchemy.create_engine(
            uri, poolclass=sqlalchemy.pool.NullPool, connect_args=_connect_timeout(scheme, timeout_s)
        )
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text("SELECT 1"))
        except sqlalchemy.exc.SQLAlchemyError as e:
            cause = str(getattr(e, "orig", None) or e).strip()
            return f"the tracking database is unreachable ({type(e).__name__}: {cause})"
        finally:
            engine.dispose()
    return None


def _connect_timeout(scheme: str, timeout_s: float) -> dict[str, Any]:
    return {"connect_timeout": max(1, int(timeout_s))} if scheme.startswith(("postgresql", "mysql")) else {}


def registry_unavailable(error: MlflowException) -> bool:
    """Whether an MLflow error means the registry could not be reached or failed (not "no such model/alias")."""
    return error.error_code not in _NOT_FOUND_CODES


class RegistryUnavailable(CTAError):
    """The model registry (tracking server or store) did not answer or failed; nothing can be concluded."""


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
    """The market's experiment id. Created, on a local store (sqlite, file, database URI), with its artifact
    location under training.artifact_root; on a tracking server (http/https) without one: the server assigns
    its own (`mlflow-artifacts:/<id>` when it serves artifacts), so clients never write artifacts anywhere but
    through it, and training.artifact_root is not used."""
    name = experiment_name(market)
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    if is_tracking_server(settings.training.tracking_uri):
        return str(mlflow.create_experiment(name))
    root = settings.training.artifact_root
    location = root if "://" in root else Path(root).resolve().as_uri()
    return str(mlflow.create_experiment(name, artifact_location=f"{location}/{symbol_to_path(name)}"))


class PromotionError(CTAError):
    """A registry move that cannot be made (unknown version, nothing to roll back to, lock timeout)."""


@dataclass(frozen=True)
class Move:
    """What a promotion or rollback did."""

    model: str
    outcome: str  # "champion" | "stale" | "promotion_failed" | "rolled_back"
    version: str
    previous: str | None
    detail: str = ""


@dataclass(frozen=True)
class AliasState:
    """What a registry move changes: the two aliases and the champion history."""

    champion: str | None
    previous: str | None
    history: tuple[str, ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AliasState:
        return cls(data.get("champion"), data.get("previous"), tuple(str(v) for v in data.get("history", [])))

    def describe(self) -> str:
        return f"champion {_v(self.champion)}, previous {_v(self.previous)}"


def _v(version: str | None) -> str:
    return f"v{version}" if version is not None else "none"


def champion(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version holding the `champion` alias, or None (no champion yet, or no such model).
    RegistryUnavailable when the registry does not answer (never mistaken for "no champion")."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as e:
        if registry_unavailable(e):
            raise RegistryUnavailable(f"{name}: cannot read the champion alias: {_short(e)}") from e
        return None


def champion_history(client: MlflowClient, name: str) -> list[str]:
    try:
        tags = client.get_registered_model(name).tags
    except MlflowException as e:
        if registry_unavailable(e):
            raise RegistryUnavailable(f"{name}: cannot read the champion history: {_short(e)}") from e
        return []
    history: list[str] = json.loads(tags.get(HISTORY_TAG, "[]"))
    return history


def alias_state(client: MlflowClient, name: str) -> tuple[AliasState, dict[str, Any] | None]:
    """The model's aliases and history, and the move under way if one was interrupted (else None), in one call.
    Raises MlflowException when the registry fails (or the model does not exist)."""
    model = client.get_registered_model(name)
    aliases = {alias: str(version) for alias, version in (model.aliases or {}).items()}
    tags = model.tags or {}
    history = tuple(str(v) for v in json.loads(tags.get(HISTORY_TAG, "[]")))
    pending = json.loads(tags[PENDING_TAG]) if PENDING_TAG in tags else None
    return AliasState(aliases.get(CHAMPION), aliases.get(PREVIOUS), history), pending


def _short(error: BaseException, limit: int = 300) -> str:
    text = f"{type(error).__name__}: {error}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


def _write(client: MlflowClient, name: str, target: AliasState, current: AliasState) -> None:
    """Move the registry from `current` to `target`: `previous` first, then `champion` (one call, what the worker
    follows), then the history. Only what differs is written."""
    for alias, want, have in (
        (PREVIOUS, target.previous, current.previous),
        (CHAMPION, target.champion, current.champion),
    ):
        if want == have:
            continue
        if want is None:
            client.delete_registered_model_alias(name, alias)
        else:
            client.set_registered_model_alias(name, alias, want)
    if target.history != current.history:
        client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(list(target.history)))


def _settle_once(client: MlflowClient, name: str, intent: dict[str, Any]) -> str:
    """Finish an interrupted move: "completed" when both aliases already hold the new state (the history follows),
    else "undone" (aliases and history back to the state before). Then the intent is removed."""
    state, pending = alias_state(client, name)
    before, after = AliasState.from_json(intent["before"]), AliasState.from_json(intent["after"])
    if (state.champion, state.previous) == (after.champion, after.previous):
        _write(client, name, after, state)
        outcome = "completed"
    else:
        _write(client, name, before, state)
        outcome = "undone"
    if pending is not None:
        client.delete_registered_model_tag(name, PENDING_TAG)
    return outcome


def _settle(client: MlflowClient, name: str, intent: dict[str, Any], timeout_s: float) -> str:
    """`_settle_once`, retried with a growing delay (0.25 s doubling, at most 5 s) while the registry fails, for
    at most `timeout_s`: "completed", "undone" or "unsettled" (the registry stayed away; the intent stays)."""
    deadline = time.monotonic() + timeout_s
    delay = 0.25
    while True:
        try:
            return _settle_once(client, name, intent)
        except MlflowException as e:
            log.warning(
                "%s: settling the interrupted %s failed (%s); retry in %.2f s", name, intent["kind"], _short(e), delay
            )
        if time.monotonic() + delay > deadline:
            return "unsettled"
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def recover_interrupted_move(client: MlflowClient, name: str) -> str | None:
    """Settle a move of `name` that the registry interrupted earlier and that could not be settled then (its
    intent tag is still there): completed if both aliases had moved, else undone. Returns what was done, or None
    when nothing was pending (or the model does not exist). Call under the model's registry lock."""
    try:
        _, pending = alias_state(client, name)
    except MlflowException as e:
        if registry_unavailable(e):
            raise
        return None
    if pending is None:
        return None
    outcome = _settle_once(client, name, pending)
    done = f"an interrupted {pending.get('kind', 'move')} of v{pending.get('version')} was {outcome}"
    log.warning("%s: %s", name, done)
    return done


def _move(client: MlflowClient, name: str, intent: dict[str, Any], settle_timeout_s: float) -> tuple[str, str]:
    """Write `intent` (kind, version, the state before and after), move from before to after, remove the intent.
    Returns ("moved" | "completed" | "undone" | "unsettled" | "not_started", why). A failure part-way is settled
    at once (`_settle`)."""
    before, after = AliasState.from_json(intent["before"]), AliasState.from_json(intent["after"])
    try:
        client.set_registered_model_tag(name, PENDING_TAG, json.dumps(intent))
    except MlflowException as e:
        return "not_started", f"the registry is unavailable ({_short(e)}); nothing was moved"
    try:
        _write(client, name, after, before)
        client.delete_registered_model_tag(name, PENDING_TAG)
    except MlflowException as e:
        failure = _short(e)
        outcome = _settle(client, name, intent, settle_timeout_s)
        log.error("%s: the registry failed during the %s (%s): %s", name, intent["kind"], failure, outcome)
        return outcome, failure
    return "moved", ""


def _tag_quietly(client: MlflowClient, name: str, version: str, tags: dict[str, Any]) -> None:
    """Tag a version when the registry lets us; a verdict tag is never worth failing a settled move for."""
    try:
        tag_version(client, name, version, tags)
    except MlflowException as e:
        log.warning("%s v%s: tags %s not written (%s)", name, version, sorted(tags), _short(e))


def promote(
    client: MlflowClient,
    name: str,
    version: str,
    *,
    expected_champion: str | None,
    reason: str,
    lock: Any,
    settle_timeout_s: float = SETTLE_TIMEOUT_S,
) -> Move:
    """Make `version` the champion if the champion is still `expected_champion` (the one it was
    compared with); otherwise tag it `stale` and change nothing. `lock` is a registry_lock context.

    When the registry fails, the outcome is `promotion_failed` and its detail says why and in which state the
    aliases are: nothing moved, or the move was undone (the state before), or it could not be settled within
    `settle_timeout_s` (the registry stayed away: the next move of this model settles it). A move the registry
    interrupted after both aliases moved is completed, and the outcome is `champion`."""
    with lock:
        try:
            recover_interrupted_move(client, name)
            before, _ = alias_state(client, name)
        except (MlflowException, RegistryUnavailable) as e:
            if isinstance(e, MlflowException) and not registry_unavailable(e):
                raise PromotionError(f"{name}: cannot promote v{version}: {_short(e)}") from e
            detail = f"the registry is unavailable ({_short(e)}); nothing was moved"
            log.error("%s v%s not promoted: %s", name, version, detail)
            return Move(name, PROMOTION_FAILED, version, expected_champion, detail)
        current_version = before.champion
        if current_version != expected_champion:
            detail = f"champion moved to v{current_version} after the gate compared with v{expected_champion}"
            _tag_quietly(client, name, version, {VERDICT_TAG: "stale", "verdict_reasons": detail})
            log.warning("%s v%s not promoted: %s", name, version, detail)
            return Move(name, "stale", version, current_version, detail)
        after = AliasState(
            champion=version,
            previous=current_version if current_version is not None else before.previous,
            history=(*before.history, version),
        )
        intent = {"kind": "promotion", "version": version, "before": asdict(before), "after": asdict(after)}
        outcome, failure = _move(client, name, intent, settle_timeout_s)
        if outcome in {"not_started", "undone", "unsettled"}:
            detail = {
                "not_started": failure,
                "undone": f"the registry failed during the alias move ({failure}); undone: {before.describe()}",
                "unsettled": (
                    f"the registry failed during the alias move ({failure}) and stayed unavailable for "
                    f"{settle_timeout_s:.0f} s; the move is recorded on the model ({PENDING_TAG}) and the next "
                    f"registry move of {name} completes or undoes it"
                ),
            }[outcome]
            if outcome == "undone":  # the registry answers again: the version says why too
                _tag_quietly(client, name, version, {VERDICT_TAG: PROMOTION_FAILED, "verdict_reasons": detail})
            log.error("%s v%s not promoted: %s", name, version, detail)
            return Move(name, PROMOTION_FAILED, version, current_version, detail)
        _tag_quietly(client, name, version, {VERDICT_TAG: CHAMPION, "promotion_reason": reason})
        previous = f"v{current_version}" if current_version else "none"
        log.info("%s: v%s is the champion (previous: %s)", name, version, previous)
        return Move(name, CHAMPION, version, current_version, reason)


def rollback(client: MlflowClient, name: str, *, lock: Any, settle_timeout_s: float = SETTLE_TIMEOUT_S) -> Move:
    """Give the champion alias back to the previous champion; the demoted version is tagged
    `rolled_back`. Rolling back again goes one step further back. A registry failure part-way is settled
    (completed or undone) and, unless completed, raises PromotionError saying in which state the aliases are."""
    with lock:
        before = _settled_state(client, name, "rolling back")
        history = list(before.history)
        if before.champion is None or len(history) < 2 or history[-1] != before.champion:
            raise PromotionError(f"{name}: no previous champion to roll back to (history {history})")
        move = _step_back(client, name, "rollback", before, settle_timeout_s)
        _tag_quietly(client, name, move.previous or "", {VERDICT_TAG: "rolled_back"})
        log.warning("%s: rolled back from v%s to v%s", name, move.previous, move.version)
        return move


def demote(
    client: MlflowClient,
    name: str,
    version: str,
    reasons: str,
    *,
    lock: Any,
    settle_timeout_s: float = SETTLE_TIMEOUT_S,
) -> Move:
    """Take the champion alias from `version` (monitoring found it no longer behaves like its backtest): back to the
    previous champion when there is one, else no champion at all (the market goes flat). The version is tagged
    `demoted` with the reasons. If `version` is no longer the champion, nothing moves (outcome `stale`)."""
    with lock:
        before = _settled_state(client, name, "demoting")
        if before.champion != version:
            return Move(name, "stale", version, before.champion, f"v{version} is no longer the champion")
        move = _step_back(client, name, "demotion", before, settle_timeout_s)
        _tag_quietly(client, name, version, {VERDICT_TAG: DEMOTED, "demotion_reasons": reasons})
        log.warning("%s: v%s demoted (%s); champion now %s", name, version, reasons, _v(move.version or None))
        return Move(name, DEMOTED, move.version, version, reasons)


def _settled_state(client: MlflowClient, name: str, doing: str) -> AliasState:
    recovered = recover_interrupted_move(client, name)
    if recovered is not None:
        raise PromotionError(f"{name}: {recovered}; check the champion before {doing}")
    return alias_state(client, name)[0]


def _step_back(client: MlflowClient, name: str, kind: str, before: AliasState, settle_timeout_s: float) -> Move:
    """The champion alias one step back in the history (to nothing when the history has no earlier champion).
    Returns Move(version = the restored champion or "", previous = the one that lost the alias)."""
    history = list(before.history)
    if history and history[-1] == before.champion:
        history.pop()
    restored = history[-1] if history else None
    after = AliasState(restored, history[-2] if len(history) >= 2 else None, tuple(history))
    intent = {"kind": kind, "version": restored, "before": asdict(before), "after": asdict(after)}
    outcome, failure = _move(client, name, intent, settle_timeout_s)
    if outcome == "not_started":
        raise PromotionError(f"{name}: {kind} not done: {failure}")
    if outcome == "undone":
        raise PromotionError(f"{name}: the registry failed during the {kind} ({failure}); undone: {before.describe()}")
    if outcome == "unsettled":
        raise PromotionError(
            f"{name}: the registry failed during the {kind} ({failure}) and stayed unavailable; the next "
            f"registry move completes or undoes it ({PENDING_TAG})"
        )
    return Move(name, "rolled_back", restored or "", before.champion)


def load_expectations(client: MlflowClient, name: str, version: str) -> Expectations | None:
    """What the backtest that gated `version` predicts for it (cta.monitor), or None when the version has no
    backtest run with them (registered by hand, or gated before monitoring existed): it is then not monitored.
    Raises MlflowException when the registry fails."""
    run_id = client.get_model_version(name, version).tags.get("backtest_run_id")
    if not run_id:
        return None
    try:
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/{EXPECTATIONS_ARTIFACT}")
    except MlflowException as e:
        if registry_unavailable(e):
            raise
        return None
    except OSError:
        return None
    return Expectations.from_json(text)


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
