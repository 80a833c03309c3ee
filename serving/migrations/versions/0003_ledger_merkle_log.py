"""The ledger becomes a Merkle log: `ledger_merkle_nodes` (the tree's perfect subtrees) and `ledger_checkpoints`.

Upgrading backfills the nodes of the entries already in the ledger, in seq order, with RFC 6962 hashing of each
entry's canonical encoding (the same bytes `serving.ledger.entry_leaf_data` produces, frozen here: history, not
code). Downgrading drops both tables; the entries and their hash chain are untouched either way.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 5000

ledger_entries = sa.table(
    "ledger_entries",
    sa.column("seq", sa.BigInteger()),
    sa.column("ts", sa.BigInteger()),
    sa.column("kind", sa.String(32)),
    sa.column("payload", sa.Text()),
)


def _leaf_data(seq: int, ts: int, kind: str, payload_text: str) -> bytes:
    body = {"kind": kind, "payload": json.loads(payload_text), "seq": seq, "ts": ts}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=True).encode()


def upgrade() -> None:
    nodes = op.create_table(
        "ledger_merkle_nodes",
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name=op.f("pk_ledger_merkle_nodes")),
        sa.CheckConstraint("level >= 0 AND idx >= 0", name=op.f("ck_ledger_merkle_nodes_position")),
    )
    op.create_table(
        "ledger_checkpoints",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root_hash", sa.String(64), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("size", name=op.f("pk_ledger_checkpoints")),
        sa.CheckConstraint("size >= 0", name=op.f("ck_ledger_checkpoints_size_non_negative")),
    )
    assert nodes is not None
    connection = op.get_bind()
    frontier: list[bytes] = []
    pending: list[dict[str, object]] = []
    rows = connection.execute(
        sa.select(ledger_entries.c.seq, ledger_entries.c.ts, ledger_entries.c.kind, ledger_entries.c.payload).order_by(
            ledger_entries.c.seq
        )
    ).all()
    for size, (seq, ts, kind, payload) in enumerate(rows):
        node = hashlib.sha256(b"\x00" + _leaf_data(seq, ts, kind, payload)).digest()
        level, idx = 0, size
        pending.append({"level": 0, "idx": idx, "hash": node.hex()})
        while idx & 1:
            node = hashlib.sha256(b"\x01" + frontier.pop() + node).digest()
            level, idx = level + 1, idx >> 1
            pending.append({"level": level, "idx": idx, "hash": node.hex()})
        frontier.append(node)
        if len(pending) >= BATCH:
            connection.execute(nodes.insert(), pending)
            pending = []
    if pending:
        connection.execute(nodes.insert(), pending)


def downgrade() -> None:
    op.drop_table("ledger_checkpoints")
    op.drop_table("ledger_merkle_nodes")
