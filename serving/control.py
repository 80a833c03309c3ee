"""The kill switch, persisted: RUNNING, REDUCING or HALTED, with who set it, why, and whether to cancel open orders.

Every change writes the `control_state` row (through `serving.orders.set_control_state`) and a ledger entry of
kind "control" in ONE transaction, so the switch and its audit trail never disagree. The switch lives in the
database, not in memory: a restarted worker comes back in the state it was left in.

`cancel_open` asks the worker to cancel its open orders when it sees the change. The `control_state` table
has no column for it (migration 0001), so it is stored as a marker at the start of the stored reason
(`CANCEL_OPEN_MARKER`) and decoded here; read the switch through `trading_state`, not the raw row. Once the
worker has cancelled, `acknowledge_cancel_open` clears the request so a restart does not cancel again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from serving import ledger, orders
from serving.models import utc_now
from serving.orders import TRADING_KEY, TradingState

log = logging.getLogger(__name__)

CANCEL_OPEN_MARKER = "[cancel-open] "
LEDGER_KIND = "control"
MAX_BY_CHARS = 64  # control_state.updated_by is VARCHAR(64)


@dataclass(frozen=True)
class ControlSnapshot(orders.ControlSnapshot):
    """The persisted switch as `serving.orders.ControlSnapshot` has it (reason without the marker),
    plus whether cancelling the open orders was requested with it and not yet acknowledged."""

    cancel_open: bool = False


def encode_reason(reason: str, cancel_open: bool) -> str:
    """The reason as stored: prefixed with CANCEL_OPEN_MARKER when cancelling open orders is requested."""
    if reason.startswith(CANCEL_OPEN_MARKER):
        raise ValueError(f"a reason must not start with {CANCEL_OPEN_MARKER!r}: pass cancel_open instead")
    return CANCEL_OPEN_MARKER + reason if cancel_open else reason


def decode_reason(stored: str) -> tuple[str, bool]:
    """(reason, cancel_open) from a stored reason."""
    if stored.startswith(CANCEL_OPEN_MARKER):
        return stored[len(CANCEL_OPEN_MARKER) :], True
    return stored, False


def _snapshot(raw: orders.ControlSnapshot) -> ControlSnapshot:
    reason, cancel_open = decode_reason(raw.reason)
    return ControlSnapshot(
        key=raw.key,
        state=raw.state,
        reason=reason,
        updated_at=raw.updated_at,
        updated_by=raw.updated_by,
        cancel_open=cancel_open,
    )


def _write(
    session: Session, *, state: TradingState, reason: str, by: str, cancel_open: bool, action: str, now: datetime
) -> ControlSnapshot:
    """Write the switch and its ledger entry into `session`'s transaction (flushed, not committed)."""
    if not by or len(by) > MAX_BY_CHARS:
        raise ValueError(f"'by' must be 1-{MAX_BY_CHARS} characters, got {len(by)}")
    previous = _snapshot(orders.get_control_state(session))
    raw = orders.set_control_state(
        session, state, reason=encode_reason(reason, cancel_open), updated_by=by, key=TRADING_KEY, now=now
    )
    payload = {
        "action": action,
        "key": TRADING_KEY,
        "state": raw.state.value,
        "previous_state": previous.state.value,
        "reason": reason,
        "cancel_open": cancel_open,
        "by": by,
    }
    ledger.append(session, LEDGER_KIND, payload, int(now.timestamp() * 1000))
    return _snapshot(raw)


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
    the ledger entry. Setting the state it already has is recorded too: the reason may have changed.
    """
    new_state = TradingState(state)
    stamp = now or utc_now()
    with session_factory.begin() as session:
        snapshot = _write(
            session, state=new_state, reason=reason, by=by, cancel_open=cancel_open, action="set", now=stamp
        )
    log.warning("trading state set to %s by %s (cancel open orders: %s): %s", new_state.value, by, cancel_open, reason)
    return snapshot


def trading_state(session_factory: sessionmaker[Session]) -> ControlSnapshot:
    """The persisted kill switch; RUNNING (no reason, no cancel request) when it was never set."""
    with session_factory() as session:
        return read_trading_state(session)


def read_trading_state(session: Session) -> ControlSnapshot:
    """`trading_state` inside the caller's transaction."""
    return _snapshot(orders.get_control_state(session))


def acknowledge_cancel_open(
    session_factory: sessionmaker[Session], seen: ControlSnapshot, by: str, *, now: datetime | None = None
) -> bool:
    """Clear the cancel request the worker has acted on, keeping state and reason; False if nothing to clear.

    Compare-and-set on `seen.updated_at`: if the switch changed after the worker read it (a newer request),
    that request is left for the worker to see, and this returns False.
    """
    stamp = now or utc_now()
    with session_factory.begin() as session:
        current = _snapshot(orders.get_control_state(session))
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
    log.info("open orders cancelled for trading state %s (acknowledged by %s)", current.state.value, by)
    return True
