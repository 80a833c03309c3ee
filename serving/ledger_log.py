"""The ledger's signed checkpoints and proofs: what `cta ledger checkpoint | prove`, the API and the witness use.

A checkpoint is a C2SP signed note (`cta.checkpoints`) of the tree of the first `size` entries, signed with the
log's Ed25519 key. `Checkpointer` signs one when `checkpoint_every_entries` entries were appended since the last,
or the last is `checkpoint_every_s` old and the tree grew. It writes the checkpoint in the caller's transaction:
called from `serving.ledger.append` it commits with the entry that made it due or not at all, so a crash between
an append and its checkpoint leaves entries, tree and checkpoints consistent (the next append or
`cta ledger checkpoint` signs the overdue checkpoint). The key is held by the `Signer` (never logged, never in a
repr); the public keys that verify checkpoints, old ones kept after a rotation, come from `ledger.log_keys`.

Proofs are served against signed checkpoints only, so whoever checks one needs nothing but the log's public key:
`proof_bundle_inclusion` / `proof_bundle_consistency` give JSON with the notes, the proof hashes (base64) and, for
inclusion, the entry's canonical encoding; `verify_bundle` checks such a bundle with `cta.checkpoints` alone.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cta import checkpoints
from cta.checkpoints import Checkpoint, NoteError, Signer, Verifier
from cta.config import LedgerSettings, Secrets
from cta.errors import ConfigError
from serving import ledger
from serving.models import LedgerCheckpoint, LedgerEntry

log = logging.getLogger(__name__)


class ProofError(ValueError):
    """A proof that cannot be given (no such entry, no checkpoint of that size)."""


def log_verifiers(settings: LedgerSettings, signer: Signer | None = None) -> list[Verifier]:
    """The public keys a checkpoint of this log may be signed with (with the signer's own, when given). A witness's
    key (type 0x04) is refused here: it verifies cosignatures, never the log's signature."""
    try:
        verifiers = [Verifier.parse(text) for text in settings.log_keys]
    except NoteError as e:
        raise ConfigError("ledger.log_keys", "<key>", str(e)) from e
    for verifier in verifiers:
        if verifier.is_cosigner:
            problem = f"{verifier.name!r} is a witness's cosigner key (type 0x04), not a log key (type 0x01)"
            raise ConfigError("ledger.log_keys", verifier.encode(), problem)
    if signer is not None and signer.verifier not in verifiers:
        verifiers.append(signer.verifier)
    return verifiers


def witness_verifiers(settings: LedgerSettings) -> list[Verifier]:
    """The witnesses' cosigner keys (type 0x04). A plain Ed25519 key (type 0x01, as `cta ledger keygen` printed
    for a witness before cosignatures were timestamped) is read as the same key's cosigner key, as
    transparency-dev/formats reads it: its key id is then the 0x04 one."""
    try:
        verifiers = [Verifier.parse(text) for text in settings.witness_keys]
    except NoteError as e:
        raise ConfigError("ledger.witness_keys", "<key>", str(e)) from e
    return [v if v.is_cosigner else v.as_cosigner() for v in verifiers]


def signer_from_secret(secrets: Secrets, field: str = "ledger_signing_key") -> Signer | None:
    """The Ed25519 signer held in a secret (None when it is not set); a malformed key is a ConfigError that
    never shows the key. The log's signing key may not be a witness's key (type 0x04)."""
    secret = getattr(secrets, field)
    if secret is None:
        return None
    try:
        signer = Signer.parse(secret.get_secret_value().strip())
    except (NoteError, ValueError) as e:
        raise ConfigError(f"secrets.{field}", "<hidden>", f"not a signer key: {type(e).__name__}") from None
    if field == "ledger_signing_key" and signer.key_type == checkpoints.COSIGNATURE_V1_TYPE:
        problem = "a witness's key (type 0x04) cannot sign the log's checkpoints: `cta ledger keygen NAME` makes one"
        raise ConfigError(f"secrets.{field}", "<hidden>", problem)
    return signer


@dataclass(frozen=True)
class CheckpointPolicy:
    every_entries: int = 1000
    every_ms: int = 300_000


class Checkpointer:
    """Signs checkpoints of the ledger's tree with the log's key, when due (see the module docstring)."""

    def __init__(self, signer: Signer, origin: str, policy: CheckpointPolicy = CheckpointPolicy()) -> None:
        self.signer = signer
        self.origin = origin
        self.policy = policy

    @classmethod
    def from_settings(cls, settings: LedgerSettings, secrets: Secrets) -> Checkpointer | None:
        """The log's checkpointer, None when CTA_LEDGER_SIGNING_KEY is not set."""
        signer = signer_from_secret(secrets)
        if signer is None:
            return None
        policy = CheckpointPolicy(settings.checkpoint_every_entries, int(settings.checkpoint_every_s * 1000))
        return cls(signer, settings.origin, policy)

    def due(self, session: Session, now_ms: int) -> bool:
        size = ledger.tree_size(session)
        last = latest_checkpoint(session)
        if last is None:
            return size > 0
        grown = size - last.size
        return grown >= self.policy.every_entries or (grown > 0 and now_ms - last.ts >= self.policy.every_ms)

    def checkpoint(self, session: Session, now_ms: int) -> LedgerCheckpoint:
        """Sign (and add to the session) a checkpoint of the whole tree now; the existing one if the tree has
        not grown since the last."""
        size = ledger.tree_size(session)
        last = latest_checkpoint(session)
        if last is not None and last.size == size:
            return last
        root = ledger.tree_root(session, size)
        note = checkpoints.sign(Checkpoint(self.origin, size, root).body(), self.signer)
        row = LedgerCheckpoint(size=size, root_hash=root.hex(), ts=now_ms, note=note)
        session.add(row)
        session.flush()
        log.info("ledger checkpoint signed: size %d, root %s, key %s", size, root.hex()[:16], self.signer.name)
        return row

    def after_append(self, session: Session, now_ms: int) -> LedgerCheckpoint | None:
        """What `serving.ledger.append` calls: a checkpoint when one is due, else None."""
        return self.checkpoint(session, now_ms) if self.due(session, now_ms) else None


def latest_checkpoint(session: Session) -> LedgerCheckpoint | None:
    return session.scalar(select(LedgerCheckpoint).order_by(LedgerCheckpoint.size.desc()).limit(1))


def checkpoint_at(session: Session, size: int) -> LedgerCheckpoint:
    row = session.get(LedgerCheckpoint, size)
    if row is None:
        raise ProofError(f"no checkpoint of tree size {size}")
    return row


def checkpoints_after(session: Session, size: int) -> list[LedgerCheckpoint]:
    rows = session.scalars(
        select(LedgerCheckpoint).where(LedgerCheckpoint.size > size).order_by(LedgerCheckpoint.size)
    ).all()
    return list(rows)


def _b64(hashes: Sequence[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in hashes]


def _unb64(items: Sequence[str]) -> list[bytes]:
    try:
        return [base64.b64decode(item, validate=True) for item in items]
    except ValueError as e:
        raise NoteError("a proof hash is not base64") from e


def proof_bundle_inclusion(session: Session, seq: int, size: int | None = None) -> dict[str, Any]:
    """Entry `seq` with its audit path in a signed checkpoint (the latest by default)."""
    row = latest_checkpoint(session) if size is None else checkpoint_at(session, size)
    if row is None:
        raise ProofError("the ledger has no checkpoint yet (cta ledger checkpoint)")
    if not 1 <= seq <= row.size:
        raise ProofError(f"entry {seq} is not in checkpoint {row.size} (entries 1..{row.size})")
    entry = session.get(LedgerEntry, seq)
    if entry is None:
        raise ProofError(f"entry {seq} is missing from the database")
    data = ledger.entry_leaf_data(entry.seq, entry.ts, entry.kind, json.loads(entry.payload))
    return {
        "type": "inclusion",
        "seq": seq,
        "index": seq - 1,
        "tree_size": row.size,
        "entry": data.decode("utf-8"),
        "proof": _b64(ledger.inclusion_proof(session, seq, row.size)),
        "checkpoint": row.note,
    }


def proof_bundle_consistency(session: Session, old_size: int, new_size: int | None = None) -> dict[str, Any]:
    """The consistency proof between two signed checkpoints (to the latest by default)."""
    old = checkpoint_at(session, old_size)
    new = latest_checkpoint(session) if new_size is None else checkpoint_at(session, new_size)
    assert new is not None  # `old` exists
    if new.size < old.size:
        raise ProofError(f"no consistency proof from size {old.size} down to {new.size}")
    return {
        "type": "consistency",
        "old_size": old.size,
        "new_size": new.size,
        "proof": _b64(ledger.consistency_proof(session, old.size, new.size)),
        "old_checkpoint": old.note,
        "new_checkpoint": new.note,
    }


def verify_bundle(bundle: Mapping[str, Any], log_keys: Sequence[Verifier]) -> Checkpoint:
    """Check a proof bundle with nothing but the log's public keys; the (newest) checkpoint it proves against.
    Raises NoteError naming what does not hold."""
    try:
        kind = bundle["type"]
        if kind == "inclusion":
            checkpoint = checkpoints.verify_inclusion(
                bundle["checkpoint"],
                log_keys,
                bundle["entry"].encode("utf-8"),
                int(bundle["index"]),
                _unb64(bundle["proof"]),
            )
            if checkpoint.size != int(bundle["tree_size"]):
                raise NoteError("the bundle's tree size is not its checkpoint's")
            if json.loads(bundle["entry"]).get("seq") != int(bundle["index"]) + 1:
                raise NoteError("the entry's seq is not its leaf index + 1")
            return checkpoint
        if kind == "consistency":
            _old, new = checkpoints.verify_consistency(
                bundle["old_checkpoint"], bundle["new_checkpoint"], log_keys, _unb64(bundle["proof"])
            )
            return new
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, NoteError):
            raise
        raise NoteError(f"malformed proof bundle: {type(e).__name__}: {e}") from e
    raise NoteError(f"unknown proof bundle type {kind!r}")
