"""The kill switch, persisted: RUNNING, REDUCING or HALTED, with who set it, why, and whether to cancel open orders.

Every change through `set_trading_state` writes the `control_state` row and a ledger entry of kind "control" in
ONE transaction, so the switch and its audit trail never disagree. The switch lives in the database, not in
memory: a restarted worker comes back in the state it was left in.

A reason is checked by `checked_reason` (the kill-switch API route and `cta kill-switch` both go through it,
and `set_trading_state` applies it to every caller): a non-empty string of at most MAX_REASON_CHARS characters
without control characters, so what is stored in the ledger and written to the logs is one plain line.

`cancel_open` (a column of `control_state`, migration 0002) asks the worker to cancel its open orders when it
sees the change. Once the worker has cancelled, `acknowledge_cancel_open` clears the request so a restart does
not cancel again. `get_control_state` / `set_control_state` read and write the bare row inside the caller's
transaction (no ledger entry).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, sessionmaker

from cta.errors import CTAError
from cta.logs import is_control, printable
from serving import ledger
from serving.db import Prepared, upsert
from serving.models import ControlState, table_of, utc_now

log = logging.getLogger(__name__)

TRADING_KEY = "trading"
LEDGER_KIND = "control"
MAX_BY_CHARS = 64  # control_state.updated_by is VARCHAR(64)
MAX_REASON_CHARS = 1000
REASON_RULE = f"reason must be a non-empty string of at most {MAX_REASON_CHARS} characters, without control characters"


class InvalidReason(CTAError, ValueError):
    """A kill-switch reason that `checked_reason` refuses; the message says what a reason must be."""


def checked_reason(reason: object) -> str:
    """`reason` if it is a valid kill-switch reason (see REASON_RULE), else InvalidReason. The one check for the
    API, the CLI and `set_trading_state`."""
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON_CHARS:
        raise InvalidReason(REASON_RULE)
    if any(is_control(char) or "\ud800" <= char <= "\udfff" for char in reason):
        raise InvalidReason(f"{REASON_RULE} (got {printable(reason[:80])!r})")
    return reason


class TradingState(StrEnum):
    """The kill switch: RUNNING trades; REDUCING only reduces positions; HALTED sends nothing."""

    RUNNING = "RUNNING"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


@dataclass(frozen=True)
class ControlSnapshot:
    """The persisted switch, and whether cancelling the open orders was requested with it and not yet acknowledged."""

    key: str
    state: TradingState
    reason: str
    updated_at: datetime | None
    updated_by: str | None
    cancel_open: bool = False


# ----- the row (inside the caller's transaction) ------------------------------------------------------------------


def get_control_state(session: Session, key: str = TRADING_KEY) -> ControlSnapshot:
    """The persisted switch `key` (read fresh, one prepared SELECT: no ORM object to go stale); RUNNING when it was
    never set."""
    row = _READ_CONTROL.first(session.connection(), {"key": key})
    if row is None:
        return ControlSnapshot(key=key, state=TradingState.RUNNING, reason="", updated_at=None, updated_by=None)
    return ControlSnapshot(
        key=key,
        state=TradingState(row[0]),
        reason=row[1],
        updated_at=row[2],
        updated_by=row[3],
        cancel_open=bool(row[4]),
    )


_CONTROL = table_of(ControlState)
_READ_CONTROL = Prepared(
    select(
        _CONTROL.c.state, _CONTROL.c.reason, _CONTROL.c.updated_at, _CONTROL.c.updated_by, _CONTROL.c.cancel_open
    ).where(_CONTROL.c.key == bindparam("key"))
)


def set_control_state(
    session: Session,
    state: TradingState | str,
    *,
    reason: str,
    updated_by: str,
    cancel_open: bool = False,
    key: str = TRADING_KEY,
    now: datetime | None = None,
) -> ControlSnapshot:
    """Persist switch `key` as `state` (flushed, not committed); the caller commits, typically with a ledger entry."""
    values = {
        "state": TradingState(state).value,
        "reason": reason,
        "cancel_open": cancel_open,
        "updated_by": updated_by,
        "updated_at": now or utc_now(),
    }
    upsert(session, ControlState, {"key": key}, values)
    return get_control_state(session, key)


# ----- the kill switch (with its ledger entry) --------------------------------------------------------------------


def _write(
    session: Session, *, state: TradingState, reason: str, by: str, cancel_open: bool, action: str, now: datetime
) -> ControlSnapshot:
    """Write the switch and its ledger entry into `session`'s transaction (flushed, not committed)."""
    if not by or len(by) > MAX_BY_CHARS:
        raise ValueError(f"'by' must be 1-{MAX_BY_CHARS} characters, got {len(by)}")
    previous = get_control_state(session)
    snapshot = set_control_state(
        session, state, reason=reason, updated_by=by, cancel_open=cancel_open, key=TRADING_KEY, now=now
    )
    payload = {
        "action": action,
        "key": TRADING_KEY,
        "state": snapshot.state.value,
        "previous_state": previous.state.value,
        "reason": reason,
        "cancel_open": cancel_open,
        "by": by,
    }
    ledger.append(session, LEDGER_KIND, payload, int(now.timestamp() * 1000))
    return snapshot


def set_trading_state(
    session_factory: sessionmaker[Session],
    state: TradingState | str,
    reason: str,
    by: str,
    cancel_open: bool = False,
    *,
    now: datetime | None = None,
) -> ControlSnapshot:
    """Persist the kill switch as `state` and append a "control" ledger entry, committed together.

    `session_factory` must write (not `read_only`). `now` (UTC, defaults to the wall clock) stamps the row and
    the ledger entry. Setting the state it already has is recorded too: the reason may have changed. A reason
    that `checked_reason` refuses raises InvalidReason before anything is written.
    """
    new_state = TradingState(state)
    reason = checked_reason(reason)
    stamp = now or utc_now()
    with session_factory.begin() as session:
        snapshot = _write(
            session, state=new_state, reason=reason, by=by, cancel_open=cancel_open, action="set", now=stamp
        )
    log.warning(
        "trading state set to %s by %s (cancel open orders: %s): %s",
        new_state.value,
        printable(by),
        cancel_open,
        printable(reason),
    )
    return snapshot


def trading_state(session_factory: sessionmaker[Session]) -> ControlSnapshot:
    """The persisted kill switch; RUNNING (no reason, no cancel request) when it was never set."""
    with session_factory() as session:
        return read_trading_state(session)


def read_trading_state(session: Session) -> ControlSnapshot:
    """`trading_state` inside the caller's transaction."""
    return get_control_state(session)


def acknowledge_cancel_open(
    session_factory: sessionmaker[Session], seen: ControlSnapshot, by: str, *, now: datetime | None = None
) -> bool:
    """Clear the cancel request the worker has acted on, keeping state and reason; False if nothing to clear.

    Compare-and-set on `seen.updated_at`: if the switch changed after the worker read it (a newer request),
    that request is left for the worker to see, and this returns False.
    """
    stamp = now or utc_now()
    with session_factory.begin() as session:
        current = get_control_state(session)
        if not current.cancel_open or current.updated_at != seen.updated_at:
            return False
        _write(
            session,
            state=current.state,
            reason=current.reason,
            by=by,
            cancel_open=False,
            action="cancel_open_done",
            now=stamp,
        )
    log.info("open orders cancelled for trading state %s (acknowledged by %s)", current.state.value, printable(by))
    return True
