"""The hash-chained ledger: it verifies when untouched, names the first tampered entry, and never forks."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from serving import ledger
from serving.ledger import GENESIS_HASH, LedgerReport, append, canonical_json, head, verify
from serving.models import LedgerEntry

TS = 1_700_000_000_000


def fill_ledger(session: Session, entries: int = 6) -> None:
    kinds = ["promotion", "decision", "order", "fill", "control"]
    for i in range(entries):
        append(session, kinds[i % len(kinds)], {"i": i, "price": 100.0 + i / 3, "tags": ["a", i]}, TS + i)
    session.commit()


def run_sql(engine: Engine, *statements: str) -> None:
    """Tamper as an attacker with database access would: raw SQL, behind the application's back."""
    with engine.begin() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)


def test_canonical_json_is_sorted_compact_and_exact() -> None:
    assert canonical_json({"b": 1, "a": [0.1, 1e-07, 2.5e20, True, None], "é": "x"}) == (
        '{"a":[0.1,1e-07,2.5e+20,true,null],"b":1,"\\u00e9":"x"}'
    )
    with pytest.raises(ValueError, match="JSON compliant"):
        canonical_json({"x": float("nan")})


def test_entries_chain_from_genesis(session: Session) -> None:
    first = append(session, "promotion", {"model": "m", "version": "3"}, TS)
    second = append(session, "decision", {"market": "binance:BTC/USDT:1h", "target": 0.5}, TS + 1)
    session.commit()
    assert (first.seq, first.prev_hash, second.seq, second.prev_hash) == (1, GENESIS_HASH, 2, first.hash)
    body = '{"kind":"promotion","payload":{"model":"m","version":"3"},"seq":1,"ts":1700000000000}'
    assert first.hash == hashlib.sha256((GENESIS_HASH + body).encode()).hexdigest()
    assert head(session) == (2, second.hash)


def test_an_untouched_ledger_verifies(session: Session) -> None:
    assert verify(session) == LedgerReport(ok=True, entries=0)
    fill_ledger(session)
    assert verify(session) == LedgerReport(ok=True, entries=6)


def test_payloads_are_stored_canonically_and_refuse_non_json(session: Session) -> None:
    entry = append(session, "fill", {"z": 1, "a": {"y": 0.30000000000000004, "x": -0.0}}, TS)
    assert entry.payload == '{"a":{"x":-0.0,"y":0.30000000000000004},"z":1}'
    with pytest.raises(ValueError, match="JSON compliant"):
        append(session, "fill", {"price": float("inf")}, TS)
    with pytest.raises(TypeError):
        append(session, "fill", {"when": object()}, TS)
    session.commit()
    assert verify(session).ok


def test_an_append_rolled_back_leaves_no_trace(session: Session) -> None:
    fill_ledger(session, 2)
    append(session, "order", {"lost": True}, TS)
    session.rollback()
    assert append(session, "order", {"kept": True}, TS).seq == 3
    session.commit()
    assert verify(session) == LedgerReport(ok=True, entries=3)


TAMPERING = {
    "edited payload": (['UPDATE ledger_entries SET payload = \'{"i":3,"price":1.0,"tags":["a",3]}\' WHERE seq = 4'], 4),
    "payload re-spaced": (["UPDATE ledger_entries SET payload = REPLACE(payload, ':', ': ') WHERE seq = 2"], 2),
    "edited kind": (["UPDATE ledger_entries SET kind = 'control' WHERE seq = 3"], 3),
    "edited ts": (["UPDATE ledger_entries SET ts = ts + 1 WHERE seq = 5"], 5),
    "edited hash": (["UPDATE ledger_entries SET hash = REPLACE(hash, SUBSTR(hash, 1, 1), 'x') WHERE seq = 2"], 2),
    "edited prev_hash": (["UPDATE ledger_entries SET prev_hash = hash WHERE seq = 6"], 6),
    "deleted entry": (["DELETE FROM ledger_entries WHERE seq = 3"], 3),
    "deleted first entry": (["DELETE FROM ledger_entries WHERE seq = 1"], 1),
    "swapped seqs": (
        [
            "UPDATE ledger_entries SET seq = 100 WHERE seq = 4",
            "UPDATE ledger_entries SET seq = 4 WHERE seq = 5",
            "UPDATE ledger_entries SET seq = 5 WHERE seq = 100",
        ],
        4,
    ),
    "entry inserted": (
        [
            "UPDATE ledger_entries SET seq = seq + 10 WHERE seq >= 3",
            "UPDATE ledger_entries SET seq = seq - 9 WHERE seq >= 13",
            "INSERT INTO ledger_entries (seq, ts, kind, payload, prev_hash, hash) "
            "SELECT 3, ts, kind, payload, prev_hash, hash FROM ledger_entries WHERE seq = 2",
        ],
        3,
    ),
}


def audit(readers: sessionmaker[Session], expected_head: tuple[int, str] | None = None) -> LedgerReport:
    """Verify from a fresh read-only session, as an auditor beside the worker would."""
    with readers() as reader:
        return verify(reader, expected_head=expected_head)


@pytest.mark.parametrize(("statements", "bad_seq"), TAMPERING.values(), ids=TAMPERING.keys())
def test_tampering_is_detected_at_the_first_bad_entry(
    engine: Engine, session: Session, readers: sessionmaker[Session], statements: list[str], bad_seq: int
) -> None:
    fill_ledger(session)
    assert audit(readers).ok
    run_sql(engine, *statements)
    report = audit(readers)
    assert not report.ok
    assert report.first_bad_seq == bad_seq
    assert report.problem


def test_truncating_the_newest_entries_is_detected_against_the_anchor(
    engine: Engine, session: Session, readers: sessionmaker[Session]
) -> None:
    fill_ledger(session)
    anchor = head(session)
    session.commit()
    assert anchor is not None
    assert audit(readers, anchor).ok
    run_sql(engine, "DELETE FROM ledger_entries WHERE seq >= 5")
    assert not audit(readers).ok  # their Merkle nodes are still there
    # the attacker also removes the Merkle nodes of entries 5 and 6: only the anchor tells
    run_sql(engine, "DELETE FROM ledger_merkle_nodes WHERE (level = 0 AND idx >= 4) OR (level = 1 AND idx >= 2)")
    assert audit(readers).ok
    report = audit(readers, anchor)
    assert (report.ok, report.first_bad_seq, report.entries) == (False, 5, 4)


def test_a_rewritten_chain_is_detected_against_the_anchor(
    engine: Engine, session: Session, readers: sessionmaker[Session]
) -> None:
    """Whoever can write the table can rebuild a valid chain; only the anchor kept elsewhere tells."""
    fill_ledger(session, 3)
    anchor = head(session)
    session.commit()
    assert anchor is not None
    run_sql(engine, "DELETE FROM ledger_entries", "DELETE FROM ledger_merkle_nodes")
    for i in range(3):
        append(session, "order", {"forged": i}, TS + i)
    session.commit()
    assert audit(readers).ok
    report = audit(readers, anchor)
    assert (report.ok, report.first_bad_seq) == (False, 3)


def test_concurrent_appends_never_fork_the_chain(sessions: sessionmaker[Session]) -> None:
    """Two workers, 50 appends each, one transaction per append: seqs 1..100 and the chain verifies."""

    def worker(name: str) -> list[int]:
        seqs = []
        for i in range(50):
            with sessions() as session:
                seqs.append(append(session, "decision", {"worker": name, "i": i}, TS + i).seq)
                session.commit()
        return seqs

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(worker, ["a", "b"]))
    assert sorted(results[0] + results[1]) == list(range(1, 101))
    with sessions() as session:
        assert verify(session) == LedgerReport(ok=True, entries=100)
        stored = session.scalars(select(LedgerEntry.seq).order_by(LedgerEntry.seq)).all()
    assert list(stored) == list(range(1, 101))


def test_the_ledger_commits_atomically_with_the_callers_writes(
    session: Session, reopen: Callable[..., sessionmaker[Session]]
) -> None:
    """An entry and the fact it records land together: the ledger never runs ahead of the tables."""
    from serving.control import TradingState, get_control_state, set_control_state

    set_control_state(session, TradingState.HALTED, reason="manual", updated_by="ops")
    ledger.append(session, "control", {"state": "HALTED", "reason": "manual"}, TS)
    with reopen(read_only=True)() as other:
        assert get_control_state(other).state is TradingState.RUNNING
        assert verify(other).entries == 0
    session.commit()
    with reopen(read_only=True)() as other:
        assert get_control_state(other).state is TradingState.HALTED
        assert verify(other) == LedgerReport(ok=True, entries=1)
