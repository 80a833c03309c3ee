"""The persisted kill switch: written with its ledger entry in one transaction, and still there after a restart."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from serving import ledger
from serving.control import TradingState, acknowledge_cancel_open, get_control_state, set_trading_state, trading_state
from serving.ledger import verify
from serving.models import ControlState, LedgerEntry

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def control_entries(sessions: sessionmaker[Session]) -> list[dict[str, object]]:
    with sessions() as session:
        rows = session.scalars(select(LedgerEntry).where(LedgerEntry.kind == "control").order_by(LedgerEntry.seq))
        return [json.loads(row.payload) for row in rows]


def test_default_is_running(sessions: sessionmaker[Session]) -> None:
    snapshot = trading_state(sessions)
    assert (snapshot.state, snapshot.reason, snapshot.cancel_open, snapshot.updated_at) == (
        TradingState.RUNNING,
        "",
        False,
        None,
    )


def test_set_persists_with_a_ledger_entry_and_survives_a_restart(
    sessions: sessionmaker[Session], reopen: Callable[..., sessionmaker[Session]]
) -> None:
    snapshot = set_trading_state(sessions, TradingState.HALTED, "drawdown 26 %", "worker", cancel_open=True, now=NOW)
    assert (snapshot.state, snapshot.reason, snapshot.cancel_open, snapshot.updated_by) == (
        TradingState.HALTED,
        "drawdown 26 %",
        True,
        "worker",
    )
    assert snapshot.updated_at == NOW

    restarted = reopen(read_only=True)  # a new engine on the same database: what a restarted worker sees
    assert trading_state(restarted) == snapshot
    assert control_entries(restarted) == [
        {
            "action": "set",
            "key": "trading",
            "state": "HALTED",
            "previous_state": "RUNNING",
            "reason": "drawdown 26 %",
            "cancel_open": True,
            "by": "worker",
        }
    ]
    with restarted() as session:
        assert verify(session).ok
        assert session.scalar(select(LedgerEntry.ts)) == int(NOW.timestamp() * 1000)


def test_successive_changes_chain_in_the_ledger(sessions: sessionmaker[Session]) -> None:
    set_trading_state(sessions, "REDUCING", "news", "ops")
    set_trading_state(sessions, TradingState.RUNNING, "all clear", "ops")
    entries = control_entries(sessions)
    assert [(e["previous_state"], e["state"]) for e in entries] == [("RUNNING", "REDUCING"), ("REDUCING", "RUNNING")]
    assert trading_state(sessions).state == TradingState.RUNNING
    with sessions() as session:
        assert verify(session).ok


def test_a_failed_ledger_append_leaves_the_switch_unchanged(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_append(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(ledger, "append", broken_append)
    with pytest.raises(RuntimeError, match="disk full"):
        set_trading_state(sessions, TradingState.HALTED, "test", "ops")
    assert trading_state(sessions).state == TradingState.RUNNING
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(ControlState)) == 0


def test_cancel_open_is_its_own_column_and_the_reason_is_stored_as_given(sessions: sessionmaker[Session]) -> None:
    set_trading_state(sessions, TradingState.REDUCING, "exchange maintenance", "ops", cancel_open=True)
    with sessions() as session:
        row = session.get(ControlState, "trading")
        assert row is not None and (row.reason, row.cancel_open) == ("exchange maintenance", True)
        assert get_control_state(session).cancel_open is True
    snapshot = trading_state(sessions)
    assert (snapshot.reason, snapshot.cancel_open) == ("exchange maintenance", True)
    # what used to be the in-reason marker is just text now: no request to cancel
    set_trading_state(sessions, TradingState.HALTED, "[cancel-open] quoted", "ops")
    assert (trading_state(sessions).reason, trading_state(sessions).cancel_open) == ("[cancel-open] quoted", False)


def test_acknowledging_the_cancel_clears_it_once(sessions: sessionmaker[Session]) -> None:
    seen = set_trading_state(sessions, TradingState.HALTED, "stop", "ops", cancel_open=True, now=NOW)
    assert acknowledge_cancel_open(sessions, seen, "worker")
    after = trading_state(sessions)
    assert (after.state, after.reason, after.cancel_open) == (TradingState.HALTED, "stop", False)
    assert not acknowledge_cancel_open(sessions, seen, "worker")
    assert [e["action"] for e in control_entries(sessions)] == ["set", "cancel_open_done"]


def test_acknowledging_an_old_request_keeps_a_newer_one(sessions: sessionmaker[Session]) -> None:
    seen = set_trading_state(sessions, TradingState.REDUCING, "first", "ops", cancel_open=True, now=NOW)
    later = NOW.replace(hour=13)
    set_trading_state(sessions, TradingState.HALTED, "second", "ops", cancel_open=True, now=later)
    assert not acknowledge_cancel_open(sessions, seen, "worker")
    current = trading_state(sessions)
    assert (current.state, current.cancel_open, current.updated_at) == (TradingState.HALTED, True, later)


def test_invalid_by_is_refused(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(ValueError, match="1-64 characters"):
        set_trading_state(sessions, TradingState.HALTED, "x", "")
    with pytest.raises(ValueError, match="1-64 characters"):
        set_trading_state(sessions, TradingState.HALTED, "x", "a" * 65)
    with pytest.raises(ValueError):
        set_trading_state(sessions, "PAUSED", "x", "ops")
