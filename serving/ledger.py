"""An append-only, hash-chained ledger of what the worker did: promotions, decisions, orders, fills, control.

Entry n stores `hash_n = sha256(hash_{n-1} || canonical_json({"seq", "ts", "kind", "payload"}))`, with 64 zeros
before entry 1. Editing, deleting, reordering or re-hashing any entry breaks the chain at that entry, which
`verify` reports. Truncating the newest entries is only visible against an anchor kept elsewhere (the head's
seq and hash, e.g. logged to MLflow): pass it to `verify` as `expected_head`.

Appends are serialised so the chain never forks: on PostgreSQL by a transaction-scoped advisory lock, on SQLite
by the database write lock, which `serving.db` takes at BEGIN (IMMEDIATE). The primary key on `seq` stops a
fork even when a caller bypasses both.

The entries are also the leaves of an RFC 6962 Merkle tree (`cta.merkle`): leaf `seq` is the hash of the entry's
canonical encoding (`entry_leaf_data`). The tree's perfect subtrees are stored beside the entries
(`ledger_merkle_nodes`) in the append's own transaction, so an entry and its nodes commit together or not at all,
an append writes one leaf and on average one inner node, and any inclusion or consistency proof reads O(log n)
nodes. Signed checkpoints of the tree (`serving.ledger_log`) are what anchors and witnesses hold.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import and_, bindparam, func, or_, select, text
from sqlalchemy.orm import Session

from cta import merkle
from serving.db import Prepared
from serving.models import LedgerCheckpoint, LedgerEntry, LedgerNode, table_of

GENESIS_HASH = "0" * 64
ADVISORY_LOCK_KEY = int.from_bytes(b"CTA_LEDG", "big")


def canonical_json(value: Any) -> str:
    """The one text form of a JSON value: sorted keys, no spaces, floats as `repr`, NaN and infinity refused."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=True)


def entry_leaf_data(seq: int, ts: int, kind: str, payload: Any) -> bytes:
    """The canonical encoding of an entry, the data of its Merkle leaf: the canonical JSON of seq, ts, kind and
    payload (UTF-8; ASCII in fact). The previous hash is left out: the tree itself orders the entries."""
    return canonical_json({"seq": seq, "ts": ts, "kind": kind, "payload": payload}).encode("utf-8")


def entry_leaf_hash(seq: int, ts: int, kind: str, payload: Any) -> bytes:
    return merkle.leaf_hash(entry_leaf_data(seq, ts, kind, payload))


def entry_hash(prev_hash: str, seq: int, ts: int, kind: str, payload: Any) -> str:
    """The hash of entry `seq`, chaining it to `prev_hash`."""
    return chain_hash(prev_hash, entry_leaf_data(seq, ts, kind, payload))


def chain_hash(prev_hash: str, body: bytes) -> str:
    """SHA-256 of the previous hash followed by the entry's canonical encoding (`entry_leaf_data`)."""
    return hashlib.sha256(prev_hash.encode("utf-8") + body).hexdigest()


def _lock_chain(session: Session) -> None:
    """Serialise appends for the rest of the caller's transaction (see the module docstring)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})


def head(session: Session) -> tuple[int, str] | None:
    """The newest entry's (seq, hash), None for an empty ledger: the anchor to keep outside the database."""
    row = _HEAD.execute(session.connection()).fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


class AfterAppend(Protocol):
    """What runs after each append in the same transaction (`serving.ledger_log.Checkpointer`)."""

    def after_append(self, session: Session, now_ms: int) -> object: ...


@dataclass(frozen=True)
class Appended:
    """The entry an append wrote (its stored row's values)."""

    seq: int
    ts: int
    kind: str
    payload: str
    prev_hash: str
    hash: str


def append(
    session: Session,
    kind: str,
    payload: Mapping[str, Any],
    ts_ms: int,
    *,
    checkpointer: AfterAppend | None = None,
) -> Appended:
    """Append one entry (written, not committed: it commits with the caller's transaction, or not at all).

    `payload` must be JSON (dicts with string keys, lists, strings, finite numbers, booleans, None); it is stored
    in canonical form, so what is hashed is exactly what is stored. With a `checkpointer`, a checkpoint that has
    become due is signed in the same transaction.

    On the decision path: plain INSERTs on the session's connection (no ORM objects to track), the head read
    once and the new nodes' left siblings read in one statement.
    """
    stored = canonical_json(dict(payload))
    value = json.loads(stored)
    _lock_chain(session)
    last = head(session)
    seq, prev_hash = (1, GENESIS_HASH) if last is None else (last[0] + 1, last[1])
    body = entry_leaf_data(seq, ts_ms, kind, value)  # what both the chain and the tree hash (encoded once)
    entry = Appended(seq, ts_ms, kind, stored, prev_hash, chain_hash(prev_hash, body))
    connection = session.connection()
    _INSERT_ENTRY.execute(
        connection,
        {"seq": seq, "ts": ts_ms, "kind": kind, "payload": stored, "prev_hash": prev_hash, "hash": entry.hash},
        insert=True,
    ).close()
    _add_nodes(connection, seq - 1, merkle.leaf_hash(body))
    if checkpointer is not None:
        checkpointer.after_append(session, ts_ms)
    return entry


# The append's statements, compiled once (serving.db.Prepared): building and running a statement through
# SQLAlchemy costs more than SQLite's own work on this path.
_ENTRIES = table_of(LedgerEntry)
_NODES = table_of(LedgerNode)
_HEAD = Prepared(select(_ENTRIES.c.seq, _ENTRIES.c.hash).order_by(_ENTRIES.c.seq.desc()).limit(1))
_INSERT_ENTRY = Prepared(_ENTRIES.insert())
_INSERT_NODES = Prepared(_NODES.insert())


@functools.cache
def _siblings(count: int) -> Prepared:
    """SELECT the nodes (level_k, idx_k), k < count, by bound parameters l0, i0, l1, i1, ..."""
    wanted = [and_(_NODES.c.level == bindparam(f"l{k}"), _NODES.c.idx == bindparam(f"i{k}")) for k in range(count)]
    return Prepared(select(_NODES.c.level, _NODES.c.idx, _NODES.c.hash).where(or_(*wanted)))


def _add_nodes(connection: Any, index: int, leaf: bytes) -> None:
    """Store leaf `index` and every inner node it completes (one per trailing 1 bit of `index`): their left
    siblings are read in one statement, the nodes written in one."""
    lefts: list[tuple[int, int]] = []
    level, idx = 0, index
    while idx & 1:
        lefts.append((level, idx - 1))
        level, idx = level + 1, idx >> 1
    found: dict[tuple[int, int], str] = {}
    if lefts:
        values = {f"{name}{k}": v for k, pair in enumerate(lefts) for name, v in zip("li", pair, strict=True)}
        rows = _siblings(len(lefts)).execute(connection, values).fetchall()
        found = {(int(r[0]), int(r[1])): r[2] for r in rows}
    nodes = [{"level": 0, "idx": index, "hash": leaf.hex()}]
    node = leaf
    for level, left_idx in lefts:
        left = found.get((level, left_idx))
        if left is None:
            raise LookupError(f"Merkle node ({level}, {left_idx}) is missing: run the migrations (0003 backfills)")
        node = merkle.node_hash(bytes.fromhex(left), node)
        nodes.append({"level": level + 1, "idx": (left_idx + 1) >> 1, "hash": node.hex()})
    _INSERT_NODES.executemany(connection, nodes)


def tree_size(session: Session) -> int:
    """The number of leaves in the Merkle tree (equals the number of entries)."""
    last = session.scalar(select(func.max(LedgerNode.idx)).where(LedgerNode.level == 0))
    return 0 if last is None else int(last) + 1


class StoredNodes:
    """The stored Merkle nodes as a `cta.merkle.NodeSource` (each row read at most once per instance)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.cache: dict[tuple[int, int], bytes] = {}

    def __call__(self, level: int, index: int) -> bytes:
        key = (level, index)
        if key not in self.cache:
            value = self.session.scalar(
                select(LedgerNode.hash).where(LedgerNode.level == level, LedgerNode.idx == index)
            )
            if value is None:
                raise LookupError(f"Merkle node ({level}, {index}) is not stored")
            self.cache[key] = bytes.fromhex(value)
        return self.cache[key]


def _check_size(session: Session, size: int) -> None:
    current = tree_size(session)
    if not 0 <= size <= current:
        raise ValueError(f"the ledger has {current} entries, not {size}")


def tree_root(session: Session, size: int | None = None) -> bytes:
    """The Merkle root of the first `size` entries (all of them by default), from O(log n) stored nodes."""
    size = tree_size(session) if size is None else size
    _check_size(session, size)
    return merkle.range_root(0, size, StoredNodes(session))


def inclusion_proof(session: Session, seq: int, size: int | None = None) -> list[bytes]:
    """The audit path of entry `seq` in the tree of the first `size` entries (all by default)."""
    size = tree_size(session) if size is None else size
    _check_size(session, size)
    return merkle.inclusion_proof(seq - 1, size, StoredNodes(session))


def consistency_proof(session: Session, old_size: int, new_size: int | None = None) -> list[bytes]:
    """The proof that the tree of `old_size` entries is a prefix of the tree of `new_size` (all by default)."""
    new_size = tree_size(session) if new_size is None else new_size
    _check_size(session, new_size)
    return merkle.consistency_proof(old_size, new_size, StoredNodes(session))


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


def verify(
    session: Session,
    *,
    expected_head: tuple[int, str] | None = None,
    anchor: tuple[int, bytes] | None = None,
) -> LedgerReport:
    """Walk the chain from entry 1 and report the first entry that breaks it, then check the Merkle tree.

    Reads columns, not ORM objects, so it checks what the database holds now, whatever the session cached. The
    Merkle leaves are recomputed from the entries and compared with the stored ones, every stored inner node with
    its two children, and every stored checkpoint's root with the root recomputed from the entries.
    `expected_head` (seq, hash) or `anchor` (tree size, root) kept outside the database also catch the removal of
    the newest entries, and the anchor a rewrite of the whole database, chain and tree re-hashed included.
    """
    total = session.scalar(select(func.count()).select_from(LedgerEntry)) or 0
    leaves = LedgerNode.__table__.alias("leaves")
    columns = (
        select(
            LedgerEntry.seq,
            LedgerEntry.ts,
            LedgerEntry.kind,
            LedgerEntry.payload,
            LedgerEntry.prev_hash,
            LedgerEntry.hash,
            leaves.c.hash.label("leaf"),
        )
        .outerjoin(leaves, (leaves.c.level == 0) & (leaves.c.idx == LedgerEntry.seq - 1))
        .order_by(LedgerEntry.seq)
    )
    roots_to_check = {
        row.size: row.root_hash for row in session.execute(select(LedgerCheckpoint.size, LedgerCheckpoint.root_hash))
    }
    if anchor is not None:
        anchor_size, anchor_root = anchor

    def bad(seq: int, problem: str) -> LedgerReport:
        return LedgerReport(ok=False, entries=total, first_bad_seq=seq, problem=problem)

    def root_problem(frontier: merkle.Frontier) -> LedgerReport | None:
        stored = roots_to_check.get(frontier.size)
        if stored is not None and stored != frontier.root().hex():
            return bad(frontier.size, f"the checkpoint of size {frontier.size} does not match the entries")
        if anchor is not None and frontier.size == anchor_size and frontier.root() != anchor_root:
            return bad(
                max(anchor_size, 1),
                f"the entries do not match the anchored checkpoint of size {anchor_size} (history rewritten)",
            )
        return None

    prev_hash, expected_seq = GENESIS_HASH, 1
    hashes_at_head: str | None = None
    frontier = merkle.Frontier()
    if (report := root_problem(frontier)) is not None:
        return report
    for row in session.execute(columns).yield_per(1000):
        problem = _entry_problem(expected_seq, prev_hash, row)
        if problem is not None:
            return bad(expected_seq, problem)
        leaf = entry_leaf_hash(row.seq, row.ts, row.kind, json.loads(row.payload))
        if row.leaf != leaf.hex():
            return bad(row.seq, f"entry {row.seq}'s Merkle leaf is {'missing' if row.leaf is None else 'wrong'}")
        frontier.append(leaf)
        if (report := root_problem(frontier)) is not None:
            return report
        if expected_head is not None and row.seq == expected_head[0]:
            hashes_at_head = row.hash
        prev_hash, expected_seq = row.hash, expected_seq + 1
    if (problem := _tree_problem(session, total)) is not None:
        return bad(total, problem)
    if beyond := sorted(size for size in roots_to_check if size > total):
        return bad(total + 1, f"entries after {total} are missing (a checkpoint has size {beyond[-1]})")
    if anchor is not None and anchor_size > total:
        return bad(total + 1, f"entries after {total} are missing (the anchored checkpoint has size {anchor_size})")
    if expected_head is not None:
        anchor_seq, anchor_hash = expected_head
        if hashes_at_head is None:
            return bad(total + 1, f"entries after {total} are missing")
        if hashes_at_head != anchor_hash:
            return bad(anchor_seq, f"entry {anchor_seq} differs from the anchor")
    return LedgerReport(ok=True, entries=total)


def _tree_problem(session: Session, size: int) -> str | None:
    """What is wrong with the stored inner nodes of a tree of `size` verified leaves, None if nothing: each level
    holds exactly size >> level nodes, and each inner node is the hash of its two children."""
    counts = {
        int(level): int(n)
        for level, n in session.execute(select(LedgerNode.level, func.count()).group_by(LedgerNode.level))
    }
    for level in range(max([size.bit_length(), *(level + 1 for level in counts)])):
        if counts.get(level, 0) != size >> level:
            return f"the Merkle tree has {counts.get(level, 0)} nodes at level {level}, not {size >> level}"
    parent, left, right = (LedgerNode.__table__.alias(name) for name in ("parent", "left_child", "right_child"))
    pairs = (
        select(parent.c.level, parent.c.idx, parent.c.hash, left.c.hash.label("left"), right.c.hash.label("right"))
        .join(left, (left.c.level == parent.c.level - 1) & (left.c.idx == 2 * parent.c.idx))
        .join(right, (right.c.level == parent.c.level - 1) & (right.c.idx == 2 * parent.c.idx + 1))
        .where(parent.c.level >= 1)
        .order_by(parent.c.level, parent.c.idx)
    )
    checked = 0
    for row in session.execute(pairs).yield_per(1000):
        if merkle.node_hash(bytes.fromhex(row.left), bytes.fromhex(row.right)).hex() != row.hash:
            return f"Merkle node ({row.level}, {row.idx}) does not match its children"
        checked += 1
    if checked != sum(size >> level for level in range(1, size.bit_length())):
        return "a Merkle node's children are missing"
    return None
