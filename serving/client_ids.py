"""Client order ids: the one place they are made (`client_order_id`) and read back (`parse_client_order_id`, `is_ours`).

`<prefix>-<market hash>-<candle ts base36>-<seq base36>`: deterministic across processes, so re-deciding the same
candle gives the same id and the exchange refuses a second copy of an order that was already sent.
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass

CLIENT_ID_PREFIX = re.compile(r"^[A-Za-z0-9]{1,8}$")
MARKET_HASH_CHARS = 10
MAX_CANDLE_TS = 36**9
MAX_SEQ = 36**6
_BASE36 = string.digits + string.ascii_lowercase


@dataclass(frozen=True)
class ClientIdParts:
    prefix: str
    market_hash: str
    candle_ts: int
    seq: int


def _base36(value: int) -> str:
    digits = ""
    while True:
        value, remainder = divmod(value, 36)
        digits = _BASE36[remainder] + digits
        if value == 0:
            return digits


def check_prefix(prefix: str) -> None:
    """ValueError unless `prefix` is 1-8 letters or digits (what a client order id may start with)."""
    if not CLIENT_ID_PREFIX.match(prefix):
        raise ValueError(f"client order id prefix {prefix!r} must be 1-8 letters or digits")


def market_hash(market: str) -> str:
    """The market part of a client order id: the first characters of the market's sha256."""
    return hashlib.sha256(market.encode("utf-8")).hexdigest()[:MARKET_HASH_CHARS]


def client_order_id(prefix: str, market: str, candle_ts: int, seq: int) -> str:
    """The client order id for the `seq`-th order of `market` at candle `candle_ts`: `<prefix>-<h>-<ts>-<seq>`.

    Deterministic across processes (h is sha256 of the market, ts and seq in base 36), at most 36 characters
    of `[A-Za-z0-9-]`, which Binance's `newClientOrderId` accepts. Re-deciding the same candle gives the same
    id, so the exchange refuses a second copy of an order that was already sent.
    """
    check_prefix(prefix)
    if not 0 <= candle_ts < MAX_CANDLE_TS:
        raise ValueError(f"candle_ts {candle_ts} out of range [0, {MAX_CANDLE_TS})")
    if not 0 <= seq < MAX_SEQ:
        raise ValueError(f"seq {seq} out of range [0, {MAX_SEQ})")
    return f"{prefix}-{market_hash(market)}-{_base36(candle_ts)}-{_base36(seq)}"


def is_ours(client_order_id: str, prefix: str) -> bool:
    """Whether the id was made by `client_order_id` with this prefix ("cta" does not match "cta2-")."""
    return client_order_id.startswith(prefix + "-")


def parse_client_order_id(client_order_id: str) -> ClientIdParts | None:
    """The parts of `<prefix>-<market hash>-<candle ts base36>-<seq base36>`, None for any other shape."""
    parts = client_order_id.split("-")
    if len(parts) != 4 or len(parts[1]) != MARKET_HASH_CHARS:
        return None
    prefix, hashed, ts36, seq36 = parts
    try:
        return ClientIdParts(prefix, hashed, int(ts36, 36), int(seq36, 36))
    except ValueError:
        return None
