"""Position arithmetic (pure): the units, average cost and realized profit a fill leaves a position with."""

from __future__ import annotations

from dataclasses import dataclass

POSITION_TOLERANCE = 5e-9  # half the last of the 8 decimals exchanges report balances with


@dataclass(frozen=True)
class PositionState:
    """Base units held, their average cost (None when unknown or flat) and the realized profit in quote."""

    units: float = 0.0
    average_price: float | None = None
    realized_pnl: float = 0.0


def apply_fill(
    position: PositionState,
    *,
    side: str,
    price: float,
    amount: float,
    fee_cost: float,
    fee_currency: str | None,
    base: str,
    quote: str,
) -> PositionState:
    """The position after one fill, fees included where the exchange charged them.

    A buy's fee in the base asset reduces the units received (spot exchanges deduct it from them); in the quote asset
    it adds to the cost. A sell realizes `(price - average cost)` on the units it closes, minus its fee. Units with no
    known cost (adopted from a balance correction) are costed at the fill's price.
    """
    basis = position.average_price if position.average_price is not None else price
    held = max(position.units, 0.0)
    if side == "buy":
        received = amount - (fee_cost if fee_currency == base else 0.0)
        cost = amount * price + (fee_cost if fee_currency == quote else 0.0)
        units = position.units + received
        average = (held * basis + cost) / units if units > POSITION_TOLERANCE else None
        return PositionState(units, average, position.realized_pnl)
    fee_value = fee_cost if fee_currency == quote else fee_cost * price if fee_currency == base else 0.0
    delivered = amount + (fee_cost if fee_currency == base else 0.0)
    closing = min(amount, held)
    realized = position.realized_pnl + closing * (price - basis) - fee_value
    units = position.units - delivered
    return PositionState(units, position.average_price if units > POSITION_TOLERANCE else None, realized)
