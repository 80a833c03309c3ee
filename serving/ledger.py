"""An append-only, hash-chained ledger of what the worker did: promotions, decisions, orders, fills, control.

Entry n stores `hash_n = sha256(hash_{n-1} || canonical_json({"seq", "ts", "kind", "payload"}))`, with 64 zeros
before entry 1. Editing, deleting, reordering or re-hashing any entry breaks the chain at that entry, which
`verify` reports. Truncating the newest entries is only visible against an anchor kept elsewhere (the head's
seq and hash, e.g. logged to MLflow): pass it to `verify` as `expected_head`.

Appends are serialised so the chain never forks: on PostgreSQL by a transaction-scoped advisory lock, on SQLite
by the database write lock, which `serving.db` takes at BEGIN (IMMEDIATE). The primary key on `seq` stops a
fork even when a caller bypasses both.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from serving.models import LedgerEntry

GENESIS_HASH = "0" * 64
ADVISORY_LOCK_KEY = int.from_bytes(b"CTA_LEDG", "big")


def canonical_json(value: Any) -> str:
    """The one text form of a JSON value: sorted keys, no spaces, floats as `repr`, NaN and infinity refused."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=True)


def entry_hash(prev_hash: str, seq: int, ts: int, kind: str, payload: Any) -> str:
    """The hash of entry `seq`, chaining it to `prev_hash`."""
    body = canonical_json({"seq": seq, "ts": ts, "kind": kind, "payload": payload})
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def _lock_chain(session: Session) -> None:
    """Serialise appends for the rest of the caller's transaction (see the module docstring)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})


def head(session: Session) -> tuple[int, str] | None:
    """The newest entry's (seq, hash), None for an empty ledger: the anchor to keep outside the database."""
    row = session.execute(select(LedgerEntry.seq, LedgerEntry.hash).order_by(LedgerEntry.seq.desc()).limit(1)).first()
    return None if row is None else (row.seq, row.hash)


def append(session: Session, kind: str, payload: Mapping[str, Any], ts_ms: int) -> LedgerEntry:
    """Append one entry (flushed, not committed: it commits with the caller's transaction, or not at all).

    `payload` must be JSON (dicts with string keys, lists, strings, finite numbers, booleans, None); it is stored
    in canonical form, so what is hashed is exactly what is stored.
    """
    stored = canonical_json(dict(payload))
    value = json.loads(stored)
    _lock_chain(session)
    last = head(session)
    seq, prev_hash = (1, GENESIS_HASH) if last is None else (last[0] + 1, last[1])
    entry = LedgerEntry(
        seq=seq,
        ts=ts_ms,
        kind=kind,
        payload=stored,
        prev_hash=prev_hash,
        hash=entry_hash(prev_hash, seq, ts_ms, kind, value),
    )
    session.add(entry)
    session.flush()
    return entry


@dataclass(frozen=True)
class LedgerReport:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    problem: str | None = None


def _entry_problem(expected_seq: int, prev_hash: str, row: Any) -> str | None:
    """What is wrong with `row` as entry `expected_seq` following a hash of `prev_hash`, None if nothing."""
    if row.seq != expected_seq:
        return f"entry {expected_seq} is missing (next stored seq is {row.seq})"
    if row.prev_hash != prev_hash:
        return f"entry {row.seq} does not link to entry {row.seq - 1} (prev_hash differs)"
    try:
        payload = json.loads(row.payload)
    except ValueError:
        return f"entry {row.seq} payload is not JSON"
    if canonical_json(payload) != row.payload:
        return f"entry {row.seq} payload is not in canonical form (edited)"
    if entry_hash(prev_hash, row.seq, row.ts, row.kind, payload) != row.hash:
        return f"entry {row.seq} content does not match its hash (edited)"
    return None


def verify(session: Session, *, expected_head: tuple[int, str] | None = None) -> LedgerReport:
    """Walk the chain from entry 1 and report the first entry that breaks it.

    Reads columns, not ORM objects, so it checks what the database holds now, whatever the session cached.
    `expected_head` (seq, hash), kept outside the database, also catches removal of the newest entries.
    """
    total = session.scalar(select(func.count()).select_from(LedgerEntry)) or 0
    columns = select(
        LedgerEntry.seq, LedgerEntry.ts, LedgerEntry.kind, LedgerEntry.payload, LedgerEntry.prev_hash, LedgerEntry.hash
    ).order_by(LedgerEntry.seq)
    prev_hash, expected_seq = GENESIS_HASH, 1
    hashes_at_head: str | None = None
    for row in session.execute(columns).yield_per(1000):
        problem = _entry_problem(expected_seq, prev_hash, row)
        if problem is not None:
            return LedgerReport(ok=False, entries=total, first_bad_seq=expected_seq, problem=problem)
        if expected_head is not None and row.seq == expected_head[0]:
            hashes_at_head = row.hash
        prev_hash, expected_seq = row.hash, expected_seq + 1
    if expected_head is not None:
        anchor_seq, anchor_hash = expected_head
        if hashes_at_head is None:
            return LedgerReport(
                ok=False, entries=total, first_bad_seq=total + 1, problem=f"entries after {total} are missing"
            )
        if hashes_at_head != anchor_hash:
            return LedgerReport(
                ok=False, entries=total, first_bad_seq=anchor_seq, problem=f"entry {anchor_seq} differs from the anchor"
            )
    return LedgerReport(ok=True, entries=total)
