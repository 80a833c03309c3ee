"""Trading parameters changed live: the decision limits (`limits`), the risk limits (`risk`) and which markets
trade, over what the configuration says.

The editable parameters are the typed config's own models (`cta.decide.Limits`, `cta.config.RiskSettings`): the
dashboard's form is generated from their JSON Schema and every change is validated by them, so a value out of
bounds is refused naming its field, exactly as a bad config file would be. A change is persisted
(`trading_parameters`, one row of overrides with a version) together with a "parameters" ledger entry (who, old
-> new, why) in ONE transaction; the worker applies it from its next decision (`apply`) and a restarted worker
reads it back (`load`). Pure functions here, except `load` and `change`, which take the caller's sessions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy.orm import Session, sessionmaker

from cta.config import RiskSettings, Settings
from cta.decide import Limits
from cta.errors import CTAError
from serving import ledger
from serving.control import checked_reason
from serving.db import upsert
from serving.models import ParameterState, utc_now

KEY = "trading"
LEDGER_KIND = "parameters"
MAX_CHANGES = 32


class Editable(BaseModel):
    """What may be changed while trading: the decision limits and the risk limits (the config's own models)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limits: Limits
    risk: RiskSettings


class ParameterError(CTAError, ValueError):
    """A change that is refused; `field` names the offending parameter (dotted), when there is one."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class StaleEdit(ParameterError):
    """The edit was made on a version that is no longer current."""


@dataclass(frozen=True)
class Parameters:
    """The parameters in force, the overrides behind them and their history stamp."""

    values: Editable
    defaults: Editable
    disabled_markets: tuple[str, ...]
    version: int
    updated_at: datetime | None
    updated_by: str | None
    reason: str | None


def defaults_of(settings: Settings) -> Editable:
    return Editable(limits=settings.limits, risk=settings.serving.risk)


def schema() -> dict[str, Any]:
    """JSON Schema of the editable parameters (what the dashboard's form is generated from)."""
    return Editable.model_json_schema()


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _validated(defaults: Editable, overrides: Mapping[str, Any]) -> Editable:
    """`defaults` with the dotted `overrides`; ParameterError naming the first field that is refused."""
    known = _flatten(defaults.model_dump())
    for dotted in overrides:
        if dotted not in known:
            raise ParameterError(f"{dotted}: unknown parameter; editable: {', '.join(sorted(known))}", dotted)
    merged = {**known, **overrides}
    try:
        return Editable.model_validate(_nest(merged))
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise ParameterError(f"{field}: {first['msg']} (got {first.get('input')!r})", field) from None


def _stored(session: Session) -> ParameterState | None:
    return session.get(ParameterState, KEY, populate_existing=True)


def _overrides(row: ParameterState | None) -> tuple[dict[str, Any], tuple[str, ...]]:
    if row is None:
        return {}, ()
    document = json.loads(row.overrides)
    return dict(document.get("values", {})), tuple(document.get("disabled_markets", ()))


def read(session: Session, settings: Settings) -> Parameters:
    """The parameters in force (inside the caller's transaction). Stored overrides the current configuration no
    longer accepts (a bound tightened since) are dropped, never half applied: the configuration wins."""
    row = _stored(session)
    overrides, disabled = _overrides(row)
    defaults = defaults_of(settings)
    try:
        values = _validated(defaults, overrides)
    except ParameterError:
        values = defaults
    return Parameters(
        values=values,
        defaults=defaults,
        disabled_markets=disabled,
        version=row.version if row else 0,
        updated_at=row.updated_at if row else None,
        updated_by=row.updated_by if row else None,
        reason=row.reason if row else None,
    )


def load(sessions: sessionmaker[Session], settings: Settings) -> Parameters:
    with sessions() as session:
        return read(session, settings)


def apply(settings: Settings, parameters: Parameters) -> Settings:
    """`settings` trading with `parameters` (a new object; the configuration itself is not changed)."""
    serving = settings.serving.model_copy(update={"risk": parameters.values.risk})
    return settings.model_copy(update={"limits": parameters.values.limits, "serving": serving})


def change(
    sessions: sessionmaker[Session],
    settings: Settings,
    changes: Mapping[str, Any],
    *,
    reason: str,
    by: str,
    version: int | None = None,
    disable: Mapping[str, bool] | None = None,
    known_markets: tuple[str, ...] = (),
) -> tuple[Parameters, list[tuple[str, Any, Any]], int | None]:
    """Validate and persist `changes` (dotted name -> value) and/or `disable` (market -> disabled?), with a ledger
    entry, in one transaction. Returns the parameters now in force, the (field, old, new) changes and the ledger
    entry's sequence number (None when nothing changed: nothing is written). ParameterError names the field."""
    reason = checked_reason(reason)
    if len(changes) > MAX_CHANGES:
        raise ParameterError(f"at most {MAX_CHANGES} changes at once, got {len(changes)}")
    for market in disable or {}:
        if market not in known_markets:
            raise ParameterError(f"market: unknown market {market!r}; known: {', '.join(known_markets)}", "market")
    with sessions.begin() as session:
        current = read(session, settings)
        if version is not None and version != current.version:
            raise StaleEdit(
                f"version: the parameters changed since this edit was made (version {version}, now {current.version});"
                " reload and edit again",
                "version",
            )
        old_flat = _flatten(current.values.model_dump())
        default_flat = _flatten(current.defaults.model_dump())
        stored, _ = _overrides(_stored(session))
        new_values = _validated(current.defaults, {**stored, **dict(changes)})
        new_flat = _flatten(new_values.model_dump())
        diff: list[tuple[str, Any, Any]] = [
            (name, old_flat[name], new_flat[name]) for name in new_flat if new_flat[name] != old_flat[name]
        ]
        disabled = set(current.disabled_markets)
        for market, off in (disable or {}).items():
            if off and market not in disabled:
                diff.append((f"markets.{market}.enabled", True, False))
                disabled.add(market)
            elif not off and market in disabled:
                diff.append((f"markets.{market}.enabled", False, True))
                disabled.discard(market)
        if not diff:
            return current, [], None
        overrides = {name: value for name, value in new_flat.items() if value != default_flat[name]}
        document = {"values": overrides, "disabled_markets": sorted(disabled)}
        now = utc_now()
        upsert(
            session,
            ParameterState,
            {"key": KEY},
            {
                "overrides": json.dumps(document, sort_keys=True),
                "version": current.version + 1,
                "updated_at": now,
                "updated_by": by,
                "reason": reason,
            },
        )
        entry = ledger.append(
            session,
            LEDGER_KIND,
            {
                "by": by,
                "reason": reason,
                "version": current.version + 1,
                "changes": [{"field": name, "old": old, "new": new} for name, old, new in diff],
            },
            int(time.time() * 1000),
        )
        after = read(session, settings)
        return after, diff, entry.seq
