"""Signed-request checks as Binance does them: API key, HMAC-SHA256 signature, timestamp window."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

from cta.exchange_server import api_errors
from cta.exchange_server.api_errors import ApiError

DEFAULT_RECV_WINDOW_MS = 5000
MAX_AHEAD_MS = 1000


@dataclass(frozen=True)
class Credentials:
    api_key: str
    api_secret: str = field(repr=False)


def strip_signature(raw: str) -> str:
    """The raw parameter string without its `signature=...` pair, otherwise byte for byte."""
    return "&".join(p for p in raw.split("&") if p and not p.startswith("signature="))


def sign(secret: str, payload: str) -> str:
    """Hex HMAC-SHA256 of `payload`, as ccxt and Binance compute it."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def verify_signed_request(
    *,
    credentials: Credentials | None,
    api_key: str | None,
    raw_query: str,
    raw_body: str,
    params: Mapping[str, str],
    wall_now_ms: int,
    max_recv_window_ms: int,
) -> None:
    """Raise the ApiError Binance would answer, or return if the request is properly signed and fresh.

    The signed payload is Binance's totalParams: the query string followed by the body (each without
    the signature pair) exactly as sent.
    """
    if credentials is None or not api_key or not hmac.compare_digest(api_key, credentials.api_key):
        raise api_errors.invalid_api_key()
    signature = params.get("signature")
    if not signature:
        raise api_errors.missing_param("signature")
    payload = strip_signature(raw_query) + strip_signature(raw_body)
    expected = sign(credentials.api_secret, payload)
    if not hmac.compare_digest(signature.lower(), expected):
        raise api_errors.bad_signature()
    raw_ts = params.get("timestamp")
    if not raw_ts:
        raise api_errors.missing_param("timestamp")
    try:
        timestamp = int(raw_ts)
    except ValueError:
        raise api_errors.illegal_param("timestamp") from None
    recv_window = DEFAULT_RECV_WINDOW_MS
    if params.get("recvWindow"):
        try:
            recv_window = int(params["recvWindow"])
        except ValueError:
            raise api_errors.illegal_param("recvWindow") from None
        if recv_window <= 0 or recv_window > max_recv_window_ms:
            raise ApiError(-1131, f"recvWindow must be less than {max_recv_window_ms}")
    if timestamp > wall_now_ms + MAX_AHEAD_MS:
        raise ApiError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
    if wall_now_ms - timestamp > recv_window:
        raise ApiError(-1021, "Timestamp for this request is outside of the recvWindow.")
