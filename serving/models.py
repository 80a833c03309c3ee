"""The serving worker's tables, as SQLAlchemy 2.0 typed models.

Times the exchange gives (candles, trades) are epoch milliseconds in BIGINT columns, exactly as received;
times this process stamps (created, updated) are timezone-aware UTC datetimes. The migrations
(`serving/migrations/versions`) create the same schema explicitly; a test compares the two, so a change here needs
a new migration.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utc_now() -> datetime:
    """The wall-clock time stamped on rows (audit metadata only; decisions take their time from candles)."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    SQLite stores no offset, so values are normalised to UTC on the way in and marked UTC on the way out;
    a naive datetime is refused rather than guessed.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware UTC time")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def table_of(model: type[Base]) -> Table:
    """A mapped class's Table, for the plain INSERT/UPDATE statements of the decision path (no ORM objects)."""
    return cast(Table, model.__table__)


class Decision(Base):
    """What the policy decided for one market at one candle close, with everything needed to replay it."""

    __tablename__ = "decisions"
    # one market's decisions newest first (the dashboard's pages) without sorting them all: migration 0004
    __table_args__ = (UniqueConstraint("market", "candle_ts"), Index("ix_decisions_market_id", "market", "id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    market: Mapped[str] = mapped_column(String(64))
    candle_ts: Mapped[int] = mapped_column(BigInteger)
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))
    feature_hash: Mapped[str] = mapped_column(String(64))
    inputs: Mapped[str] = mapped_column(Text)
    prediction: Mapped[float | None] = mapped_column(Double)
    target: Mapped[float] = mapped_column(Double)
    delta: Mapped[float] = mapped_column(Double)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)


class Order(Base):
    """An order from the write-ahead intent (PENDING_SUBMIT, committed before sending) to its final state."""

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("client_order_id"),
        Index("ix_orders_market_status", "market", "status"),
        CheckConstraint("side IN ('buy', 'sell')", name="side"),
        CheckConstraint("type IN ('market', 'limit')", name="type"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("filled >= 0", name="filled_non_negative"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_order_id: Mapped[str] = mapped_column(String(36))
    market: Mapped[str] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(4))
    type: Mapped[str] = mapped_column(String(8))
    amount: Mapped[float] = mapped_column(Double)
    limit_price: Mapped[float | None] = mapped_column(Double)
    status: Mapped[str] = mapped_column(String(16))
    exchange_order_id: Mapped[str | None] = mapped_column(String(64))
    filled: Mapped[float] = mapped_column(Double, default=0.0)
    average_price: Mapped[float | None] = mapped_column(Double)
    fee_cost: Mapped[float] = mapped_column(Double, default=0.0)
    fee_currency: Mapped[str | None] = mapped_column(String(16))
    decision_id: Mapped[int | None] = mapped_column(ForeignKey("decisions.id"))
    candle_ts: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now, onupdate=utc_now)
    last_error: Mapped[str | None] = mapped_column(Text)


class Fill(Base):
    """One trade against one of our orders; the exchange's trade id makes a re-fetched trade a duplicate."""

    __tablename__ = "fills"
    __table_args__ = (UniqueConstraint("market", "exchange_trade_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    client_order_id: Mapped[str] = mapped_column(String(36))
    exchange_trade_id: Mapped[str] = mapped_column(String(64))
    market: Mapped[str] = mapped_column(String(64))
    price: Mapped[float] = mapped_column(Double)
    amount: Mapped[float] = mapped_column(Double)
    fee_cost: Mapped[float] = mapped_column(Double, default=0.0)
    fee_currency: Mapped[str | None] = mapped_column(String(16))
    ts: Mapped[int] = mapped_column(BigInteger)


class Position(Base):
    """The worker's book position in one market (base units), reconciled against the exchange's balances."""

    __tablename__ = "positions"

    market: Mapped[str] = mapped_column(String(64), primary_key=True)
    units: Mapped[float] = mapped_column(Double, default=0.0)
    average_price: Mapped[float | None] = mapped_column(Double)
    realized_pnl: Mapped[float] = mapped_column(Double, default=0.0)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now, onupdate=utc_now)


class EquitySnapshot(Base):
    """Cash, position value and equity at one time; `market` None is the account total."""

    __tablename__ = "equity_snapshots"
    __table_args__ = (Index("ix_equity_snapshots_market_ts", "market", "ts"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[int] = mapped_column(BigInteger)
    market: Mapped[str | None] = mapped_column(String(64))
    cash: Mapped[float] = mapped_column(Double)
    position_value: Mapped[float] = mapped_column(Double)
    equity: Mapped[float] = mapped_column(Double)
    price: Mapped[float | None] = mapped_column(Double)  # the close equity was valued at (migration 0004)


class ControlState(Base):
    """A persisted switch (the kill switch is key "trading"): it survives restarts, unlike a flag in memory."""

    __tablename__ = "control_state"
    __table_args__ = (CheckConstraint("state IN ('RUNNING', 'REDUCING', 'HALTED')", name="state"),)

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now, onupdate=utc_now)
    updated_by: Mapped[str] = mapped_column(String(64))
    # cancel the open orders when the worker sees this state (cleared once it has); migration 0002
    cancel_open: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class ParameterState(Base):
    """Trading parameters changed live (`serving.parameters`): the overrides of the configuration, as JSON, with a
    version that increments on every change. Persisted, so a restarted worker trades with them (migration 0004)."""

    __tablename__ = "trading_parameters"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    overrides: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now, onupdate=utc_now)
    updated_by: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)


class LedgerEntry(Base):
    """One link of the append-only hash chain (see `serving.ledger`); `seq` runs 1..n without gaps."""

    __tablename__ = "ledger_entries"
    # one kind's entries newest first (the dashboard's ledger filter): migration 0004
    __table_args__ = (
        CheckConstraint("seq >= 1", name="seq_positive"),
        Index("ix_ledger_entries_kind_seq", "kind", "seq"),
    )

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    ts: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class LedgerNode(Base):
    """A perfect, aligned subtree of the ledger's Merkle tree (see `cta.merkle`): node (level, idx) covers entries
    idx * 2**level + 1 .. (idx + 1) * 2**level; level 0 holds the leaf hash of entry idx + 1. Written with the entry,
    so a proof reads O(log n) rows and an append writes O(1) (amortised) of them; migration 0003."""

    __tablename__ = "ledger_merkle_nodes"
    __table_args__ = (CheckConstraint("level >= 0 AND idx >= 0", name="position"),)

    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))


class LedgerCheckpoint(Base):
    """A signed checkpoint of the ledger's Merkle tree (a C2SP signed note, see `cta.checkpoints`); migration 0003."""

    __tablename__ = "ledger_checkpoints"
    __table_args__ = (CheckConstraint("size >= 0", name="size_non_negative"),)

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root_hash: Mapped[str] = mapped_column(String(64))
    ts: Mapped[int] = mapped_column(BigInteger)  # epoch ms at signing
    note: Mapped[str] = mapped_column(Text)
