"""The ledger's Merkle tree stored beside its entries: O(log n) nodes per append, proofs from the stored nodes,
the tree checked by `verify`, and migration 0003 backfilling a ledger written before it, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from cta import merkle
from serving import ledger
from serving.db import alembic_config, current_revision, session_factory, upgrade
from serving.ledger import append, entry_leaf_data, tree_root, tree_size, verify
from serving.models import LedgerEntry, LedgerNode
from tests.serving.conftest import Database

TS = 1_700_000_000_000


def fill(session: Session, entries: int, start: int = 0) -> None:
    for i in range(start, start + entries):
        append(session, ["decision", "order", "fill"][i % 3], {"i": i, "price": 100.0 + i / 7}, TS + i)
    session.commit()


def leaf_hashes(session: Session) -> list[bytes]:
    rows = session.execute(
        select(LedgerEntry.seq, LedgerEntry.ts, LedgerEntry.kind, LedgerEntry.payload).order_by(LedgerEntry.seq)
    ).all()
    return [merkle.leaf_hash(entry_leaf_data(r.seq, r.ts, r.kind, json.loads(r.payload))) for r in rows]


def test_the_leaf_is_the_canonical_encoding_of_the_entry(session: Session) -> None:
    append(session, "promotion", {"version": "3", "model": "m"}, TS)
    session.commit()
    data = b'{"kind":"promotion","payload":{"model":"m","version":"3"},"seq":1,"ts":1700000000000}'
    assert entry_leaf_data(1, TS, "promotion", {"model": "m", "version": "3"}) == data
    assert tree_root(session) == merkle.leaf_hash(data)
    assert tree_size(session) == 1


def test_stored_nodes_give_the_same_roots_and_proofs_as_the_pure_tree(session: Session) -> None:
    assert tree_size(session) == 0 and tree_root(session) == merkle.EMPTY_ROOT
    fill(session, 21)
    levels = merkle.Levels(leaf_hashes(session))
    # every append stored its leaf and the inner nodes it completed: 2n - popcount(n) nodes in all
    assert session.scalar(select(func.count()).select_from(LedgerNode)) == 2 * 21 - bin(21).count("1")
    for size in range(0, 22):
        assert tree_root(session, size) == levels.root(size)
    for seq in (1, 8, 13, 21):
        proof = ledger.inclusion_proof(session, seq)
        assert proof == merkle.inclusion_proof(seq - 1, 21, levels)
        assert merkle.verify_inclusion(levels(0, seq - 1), seq - 1, 21, proof, levels.root())
    for old in (1, 4, 7, 16, 21):
        proof = ledger.consistency_proof(session, old)
        assert merkle.verify_consistency(old, 21, levels.root(old), levels.root(), proof)
    with pytest.raises(ValueError, match="has 21 entries"):
        ledger.inclusion_proof(session, 1, 22)


def test_an_append_reads_its_siblings_in_one_statement(engine: Engine, sessions: sessionmaker[Session]) -> None:
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    with sessions() as session:
        fill(session, 127)  # the 128th append completes 7 inner nodes (7 siblings read): the worst case below 2**7
        sa.event.listen(engine, "before_cursor_execute", record)
        append(session, "decision", {"i": 127}, TS)
        session.commit()
        sa.event.remove(engine, "before_cursor_execute", record)
    node_reads = [s for s in statements if s.lstrip().upper().startswith("SELECT") and "ledger_merkle_nodes" in s]
    assert len(node_reads) == 1
    writes = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    assert len(writes) == 2  # the entry, and the leaf with its 7 inner nodes in one statement
    with sessions() as session:
        assert verify(session).ok


def test_verify_checks_the_stored_tree(engine: Engine, session: Session, readers: sessionmaker[Session]) -> None:
    fill(session, 10)
    with readers() as reader:
        assert verify(reader).ok
    with engine.begin() as connection:
        connection.exec_driver_sql(f"UPDATE ledger_merkle_nodes SET hash = '{'ab' * 32}' WHERE level = 2 AND idx = 1")
    with readers() as reader:
        report = verify(reader)
    assert not report.ok and report.problem == "Merkle node (2, 1) does not match its children"
    with engine.begin() as connection:
        connection.exec_driver_sql(f"UPDATE ledger_merkle_nodes SET hash = '{'ab' * 32}' WHERE level = 0 AND idx = 3")
    with readers() as reader:
        report = verify(reader)
    assert (report.ok, report.first_bad_seq, report.problem) == (False, 4, "entry 4's Merkle leaf is wrong")
    with engine.begin() as connection:
        connection.exec_driver_sql("DELETE FROM ledger_merkle_nodes WHERE level = 0 AND idx = 3")
    with readers() as reader:
        assert verify(reader).problem == "entry 4's Merkle leaf is missing"


def test_verify_refuses_a_node_beyond_the_tree(engine: Engine, session: Session) -> None:
    fill(session, 1)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"INSERT INTO ledger_merkle_nodes (level, idx, hash) VALUES (1, 0, '{'cd' * 32}')")
    assert verify(session).problem == "the Merkle tree has 1 nodes at level 1, not 0"


# ----- migration 0003: a ledger written before the Merkle tree --------------------------------------------------


def test_0003_backfills_the_tree_of_an_existing_ledger(database: Database) -> None:
    engine = database.new_engine()
    upgrade(engine, "0002")
    old_sessions = session_factory(engine)
    with old_sessions() as session:  # entries as the code of revision 0002 wrote them: the chain, no tree
        for i in range(13):
            payload = ledger.canonical_json({"i": i})
            prev = session.scalar(select(LedgerEntry.hash).order_by(LedgerEntry.seq.desc()).limit(1))
            prev = prev or ledger.GENESIS_HASH
            entry_hash = ledger.entry_hash(prev, i + 1, TS + i, "order", {"i": i})
            session.execute(
                sa.text(
                    "INSERT INTO ledger_entries (seq, ts, kind, payload, prev_hash, hash) "
                    "VALUES (:seq, :ts, 'order', :payload, :prev, :hash)"
                ),
                {"seq": i + 1, "ts": TS + i, "payload": payload, "prev": prev, "hash": entry_hash},
            )
        session.commit()

    upgrade(engine)

    assert current_revision(engine) == "0004"
    sessions = session_factory(engine)
    with sessions() as session:
        expected = merkle.root(leaf_hashes(session))
        assert tree_size(session) == 13 and tree_root(session) == expected
        assert verify(session).ok
        fill(session, 3, start=13)  # appends go on from the backfilled frontier
        assert verify(session).ok
        assert tree_root(session) == merkle.root(leaf_hashes(session))


def test_0003_downgrades_to_the_chain_alone(database: Database) -> None:
    engine = database.new_engine()
    upgrade(engine)
    with session_factory(engine)() as session:
        fill(session, 5)
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0002")
    assert current_revision(engine) == "0002"
    assert set(sa.inspect(engine).get_table_names()) >= {"ledger_entries"}
    assert not {"ledger_merkle_nodes", "ledger_checkpoints"} & set(sa.inspect(engine).get_table_names())
    upgrade(engine)  # and up again: backfilled from the entries
    with session_factory(engine)() as session:
        assert tree_size(session) == 5 and verify(session).ok
