"""Coinbase Advanced Trade authentication as the venue checks it: an ES256 JWT per request (CDP API keys).

ccxt's `coinbase` signs every private request with the key's EC P-256 private key: header
`{"alg": "ES256", "kid": <key name>, "nonce": ..., "typ": "JWT"}`, claims `iss` ("cdp" or "coinbase-cloud"),
`sub` (the key name), `aud`, `nbf`, `iat`, `exp` (nbf + 120 s) and `uri` = "METHOD host/path" (query
excluded; against an http:// base URL ccxt keeps the scheme: "GET http://127.0.0.1:8765/api/v3/...").
The server holds only the key name and its PUBLIC key.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

MAX_LIFETIME_S = 120  # Coinbase tokens live two minutes
LEEWAY_S = 5  # clock skew tolerated on nbf/exp
ISSUERS = frozenset({"cdp", "coinbase-cloud"})


class JwtRejected(Exception):
    """Why a token was refused (the server answers 401 with this reason)."""


@dataclass(frozen=True)
class CoinbaseKey:
    """A CDP API key as the venue knows it: its name (`organizations/{org}/apiKeys/{id}`) and public key."""

    name: str
    public_key_pem: str = field(repr=False)

    @classmethod
    def from_private_pem(cls, name: str, private_key_pem: str) -> CoinbaseKey:
        """The server-side view of a key whose private PEM (what a client is given) is at hand."""
        private = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey) or not isinstance(private.curve, ec.SECP256R1):
            raise ValueError("a Coinbase CDP key is an EC P-256 (prime256v1) private key")
        public = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(name, public.decode())

    def public_key(self) -> ec.EllipticCurvePublicKey:
        key = serialization.load_pem_public_key(self.public_key_pem.encode())
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError("the Coinbase key's public key must be an EC P-256 key")
        return key


def generate_key(name: str) -> tuple[CoinbaseKey, str]:
    """A fresh key (tests, drills): the server's CoinbaseKey and the client's private PEM ("EC PRIVATE KEY")."""
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    return CoinbaseKey.from_private_pem(name, pem), pem


def _b64url(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise JwtRejected("the token is not base64url") from None


def _json_part(part: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64url(part))
    except ValueError:
        raise JwtRejected(f"the token's {what} is not JSON") from None
    if not isinstance(value, dict):
        raise JwtRejected(f"the token's {what} is not a JSON object")
    return value


def _uri_matches(claim: object, method: str, host: str, path: str) -> bool:
    if not isinstance(claim, str):
        return False
    claim_method, _, target = claim.partition(" ")
    for scheme in ("https://", "http://"):
        target = target.removeprefix(scheme)
    return claim_method == method and target == f"{host}{path}"


def verify_jwt(
    authorization: str | None, key: CoinbaseKey | None, *, method: str, host: str, path: str, now_s: float
) -> None:
    """Return if `authorization` ("Bearer <jwt>") is a valid token of `key` for this request, else JwtRejected."""
    if key is None:
        raise JwtRejected("no API key is configured on this server (signed endpoints are disabled)")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme != "Bearer" or not token:
        raise JwtRejected("missing 'Authorization: Bearer <JWT>' header")
    parts = token.split(".")
    if len(parts) != 3:
        raise JwtRejected("the token is not a JWS (header.payload.signature)")
    header, claims = _json_part(parts[0], "header"), _json_part(parts[1], "payload")
    if header.get("alg") != "ES256":
        raise JwtRejected(f"unsupported alg {header.get('alg')!r}: ES256 expected")
    if not isinstance(header.get("kid"), str) or not hmac.compare_digest(header["kid"], key.name):
        raise JwtRejected("unknown key name (kid)")
    signature = _b64url(parts[2])
    if len(signature) != 64:
        raise JwtRejected("the ES256 signature must be 64 bytes (r || s)")
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        key.public_key().verify(der, f"{parts[0]}.{parts[1]}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise JwtRejected("bad signature") from None
    if claims.get("sub") != key.name:
        raise JwtRejected("the token's sub is not the key name")
    if claims.get("iss") not in ISSUERS:
        raise JwtRejected(f"unknown issuer {claims.get('iss')!r}")
    nbf, exp = claims.get("nbf"), claims.get("exp")
    if not isinstance(nbf, int | float) or not isinstance(exp, int | float):
        raise JwtRejected("nbf and exp are required")
    if exp - nbf > MAX_LIFETIME_S:
        raise JwtRejected(f"the token lives longer than {MAX_LIFETIME_S} s")
    if now_s + LEEWAY_S < nbf:
        raise JwtRejected("the token is not valid yet (nbf in the future: check the clock)")
    if now_s - LEEWAY_S >= exp:
        raise JwtRejected("the token has expired")
    if not _uri_matches(claims.get("uri"), method, host, path):
        raise JwtRejected(f"the token's uri claim {claims.get('uri')!r} is not this request ({method} {host}{path})")
