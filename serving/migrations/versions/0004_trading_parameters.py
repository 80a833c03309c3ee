"""Trading parameters changed live (`trading_parameters`), the price each equity snapshot was valued at, and two
indexes for the dashboard's pages (one market's decisions, one kind of ledger entry, newest first).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "trading_parameters",
        sa.Column("key", sa.String(32), primary_key=True),
        sa.Column("overrides", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
    )
    op.add_column("equity_snapshots", sa.Column("price", sa.Double(), nullable=True))
    # the dashboard's pages: one market's decisions and one kind of ledger entry, newest first, without a sort
    op.create_index("ix_decisions_market_id", "decisions", ["market", "id"])
    op.create_index("ix_ledger_entries_kind_seq", "ledger_entries", ["kind", "seq"])


def downgrade() -> None:
    op.drop_index("ix_ledger_entries_kind_seq", table_name="ledger_entries")
    op.drop_index("ix_decisions_market_id", table_name="decisions")
    op.drop_column("equity_snapshots", "price")
    op.drop_table("trading_parameters")
