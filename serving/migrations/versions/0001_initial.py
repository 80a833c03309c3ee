"""The serving worker's first schema: decisions, orders, fills, positions, equity, control state, ledger.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("market", sa.String(64), nullable=False),
        sa.Column("candle_ts", sa.BigInteger(), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("feature_hash", sa.String(64), nullable=False),
        sa.Column("inputs", sa.Text(), nullable=False),
        sa.Column("prediction", sa.Double(), nullable=True),
        sa.Column("target", sa.Double(), nullable=False),
        sa.Column("delta", sa.Double(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decisions")),
        sa.UniqueConstraint("market", "candle_ts", name=op.f("uq_decisions_market_candle_ts")),
    )
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_order_id", sa.String(36), nullable=False),
        sa.Column("market", sa.String(64), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("type", sa.String(8), nullable=False),
        sa.Column("amount", sa.Double(), nullable=False),
        sa.Column("limit_price", sa.Double(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("exchange_order_id", sa.String(64), nullable=True),
        sa.Column("filled", sa.Double(), nullable=False),
        sa.Column("average_price", sa.Double(), nullable=True),
        sa.Column("fee_cost", sa.Double(), nullable=False),
        sa.Column("fee_currency", sa.String(16), nullable=True),
        sa.Column("decision_id", sa.Integer(), nullable=True),
        sa.Column("candle_ts", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.UniqueConstraint("client_order_id", name=op.f("uq_orders_client_order_id")),
        sa.ForeignKeyConstraint(["decision_id"], ["decisions.id"], name=op.f("fk_orders_decision_id_decisions")),
        sa.CheckConstraint("side IN ('buy', 'sell')", name=op.f("ck_orders_side")),
        sa.CheckConstraint("type IN ('market', 'limit')", name=op.f("ck_orders_type")),
        sa.CheckConstraint("amount > 0", name=op.f("ck_orders_amount_positive")),
        sa.CheckConstraint("filled >= 0", name=op.f("ck_orders_filled_non_negative")),
    )
    op.create_index(op.f("ix_orders_market_status"), "orders", ["market", "status"])
    op.create_table(
        "fills",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("client_order_id", sa.String(36), nullable=False),
        sa.Column("exchange_trade_id", sa.String(64), nullable=False),
        sa.Column("market", sa.String(64), nullable=False),
        sa.Column("price", sa.Double(), nullable=False),
        sa.Column("amount", sa.Double(), nullable=False),
        sa.Column("fee_cost", sa.Double(), nullable=False),
        sa.Column("fee_currency", sa.String(16), nullable=True),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fills")),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"], name=op.f("fk_fills_order_id_orders")),
        sa.UniqueConstraint("market", "exchange_trade_id", name=op.f("uq_fills_market_exchange_trade_id")),
    )
    op.create_index(op.f("ix_fills_order_id"), "fills", ["order_id"])
    op.create_table(
        "positions",
        sa.Column("market", sa.String(64), nullable=False),
        sa.Column("units", sa.Double(), nullable=False),
        sa.Column("average_price", sa.Double(), nullable=True),
        sa.Column("realized_pnl", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("market", name=op.f("pk_positions")),
    )
    op.create_table(
        "equity_snapshots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("market", sa.String(64), nullable=True),
        sa.Column("cash", sa.Double(), nullable=False),
        sa.Column("position_value", sa.Double(), nullable=False),
        sa.Column("equity", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_equity_snapshots")),
    )
    op.create_index(op.f("ix_equity_snapshots_market_ts"), "equity_snapshots", ["market", "ts"])
    op.create_table(
        "control_state",
        sa.Column("key", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_control_state")),
        sa.CheckConstraint("state IN ('RUNNING', 'REDUCING', 'HALTED')", name=op.f("ck_control_state_state")),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_ledger_entries")),
        sa.CheckConstraint("seq >= 1", name=op.f("ck_ledger_entries_seq_positive")),
    )


def downgrade() -> None:
    op.drop_table("ledger_entries")
    op.drop_table("control_state")
    op.drop_index(op.f("ix_equity_snapshots_market_ts"), table_name="equity_snapshots")
    op.drop_table("equity_snapshots")
    op.drop_table("positions")
    op.drop_index(op.f("ix_fills_order_id"), table_name="fills")
    op.drop_table("fills")
    op.drop_index(op.f("ix_orders_market_status"), table_name="orders")
    op.drop_table("orders")
    op.drop_table("decisions")
