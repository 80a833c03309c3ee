"""Anchors: the ledger's signed checkpoints (with any witness cosignatures) kept outside the database, and the
audit that checks the database against the newest of them.

A store holds one object per checkpoint, `checkpoint-<size, 20 digits>.note`, the signed note's text. Publishing
the same checkpoint again merges the signature lines (a witness's cosignature is added); a checkpoint of a size
already anchored with another root is refused (`AnchorConflict`): an anchor is never rewritten to another history.
`FileAnchors` writes a directory (atomically: temp file, fsync, rename); `S3Anchors` a bucket, and when the bucket
has Object Lock enabled each object is put with a COMPLIANCE retention, so not even the account can delete it or
its versions before `anchor_retention_days`.

`audit` is what `cta ledger verify` runs: the hash chain, the Merkle tree and the stored checkpoints
(`serving.ledger.verify`), the stored checkpoints' signatures (with `ledger.log_keys`), and the entries against the
newest anchored checkpoint, verified with the log's public keys. Whoever rewrites the database, chain, tree and
checkpoints re-hashed, cannot rewrite the anchor, and the root recomputed from the entries no longer matches it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from cta.checkpoints import Checkpoint, Note, NoteError, Verifier, open_checkpoint
from cta.config import LedgerSettings, Secrets
from cta.storage import LocalStorage, S3Storage
from serving import ledger
from serving.ledger_log import Checkpointer, checkpoints_after

ANCHOR_NAME = re.compile(r"^checkpoint-(\d{20})\.note$")


class AnchorConflict(RuntimeError):
    """Two different checkpoints of one tree size: the log forked."""


def anchor_name(size: int) -> str:
    return f"checkpoint-{size:020d}.note"


class AnchorStore(Protocol):
    where: str

    def read(self, name: str) -> str | None: ...

    def write(self, name: str, text: str) -> None: ...

    def names(self) -> list[str]: ...


class FileAnchors:
    """Anchors in a directory (a mounted share, a synced folder, a separate disk)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.where = str(root)
        self._storage = LocalStorage(root)  # atomic writes (temp file, fsync, rename)

    def read(self, name: str) -> str | None:
        raw = self._storage.get(name)
        return None if raw is None else raw.decode("utf-8")

    def write(self, name: str, text: str) -> None:
        self._storage.put(name, text.encode("utf-8"))

    def names(self) -> list[str]:
        return sorted(name for name in self._storage.list() if ANCHOR_NAME.match(name))


class S3Anchors:
    """Anchors in an S3 bucket; Object Lock retention (COMPLIANCE) on every object when the bucket has it on."""

    def __init__(self, client: Any, bucket: str, prefix: str = "", retention_days: int = 3650) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.retention_days = retention_days
        self.where = f"s3://{bucket}/{self.prefix}"
        self._storage = S3Storage(bucket, self.prefix, client)
        self.object_lock = self._object_lock_enabled()

    def _object_lock_enabled(self) -> bool:
        try:
            config = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except self.client.exceptions.ClientError:
            return False
        return bool(config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled")

    def read(self, name: str) -> str | None:
        raw = self._storage.get(name)
        return None if raw is None else raw.decode("utf-8")

    def write(self, name: str, text: str) -> None:
        extra: dict[str, Any] = {}
        if self.object_lock:
            extra = {
                "ObjectLockMode": "COMPLIANCE",
                "ObjectLockRetainUntilDate": datetime.now(UTC) + timedelta(days=self.retention_days),
            }
        self._storage.put(name, text.encode("utf-8"), ContentType="text/plain", **extra)

    def names(self) -> list[str]:
        return sorted(name for name in self._storage.list() if ANCHOR_NAME.match(name))


def stores_from_settings(settings: LedgerSettings) -> list[AnchorStore]:
    """The anchor stores the settings name (none by default)."""
    stores: list[AnchorStore] = []
    if settings.anchor_dir:
        stores.append(FileAnchors(Path(settings.anchor_dir).expanduser()))
    if settings.anchor_s3_uri:
        import boto3

        bucket, _, prefix = settings.anchor_s3_uri.removeprefix("s3://").partition("/")
        client = boto3.client("s3", endpoint_url=settings.anchor_s3_endpoint_url)
        stores.append(S3Anchors(client, bucket, prefix, settings.anchor_retention_days))
    return stores


def merge_notes(existing: str, new: str) -> str:
    """One note with the signature lines of both; AnchorConflict when their bodies differ."""
    old_note, new_note = Note.parse(existing), Note.parse(new)
    if old_note.body != new_note.body:
        raise AnchorConflict("an anchored checkpoint of this size has another body: the log forked")
    seen = {(s.name, s.key_id) for s in old_note.signatures}
    merged = old_note.signatures + tuple(s for s in new_note.signatures if (s.name, s.key_id) not in seen)
    return Note(old_note.body, merged).text()


def _publish_one(store: AnchorStore, name: str, note_text: str) -> bool:
    existing = store.read(name)
    text = note_text if existing is None else merge_notes(existing, note_text)
    if text == existing:
        return False
    store.write(name, text)
    return True


def publish(note_text: str, stores: Sequence[AnchorStore]) -> int:
    """Anchor one signed checkpoint in every store (merging signatures with an anchor of the same size; an anchor
    of that size with another root raises AnchorConflict). Returns the checkpoint's size."""
    size = Checkpoint.parse(Note.parse(note_text).body).size
    for store in stores:
        _publish_one(store, anchor_name(size), note_text)
    return size


def newest_anchor(store: AnchorStore) -> tuple[int, str] | None:
    """The (size, note text) of the store's largest checkpoint, None when it holds none."""
    names = store.names()
    if not names:
        return None
    name = names[-1]
    text = store.read(name)
    match = ANCHOR_NAME.match(name)
    assert match is not None
    return None if text is None else (int(match.group(1)), text)


def publish_pending(session: Session, stores: Sequence[AnchorStore]) -> list[int]:
    """Anchor every stored checkpoint from each store's newest anchor on (that one again: a checkpoint re-signed
    for its size with another root raises AnchorConflict); the sizes whose anchors changed."""
    published: set[int] = set()
    for store in stores:
        newest = newest_anchor(store)
        for row in checkpoints_after(session, -1 if newest is None else newest[0] - 1):
            if _publish_one(store, anchor_name(row.size), row.note):
                published.add(row.size)
    return sorted(published)


@dataclass(frozen=True)
class Sealer:
    """Signs a checkpoint when one is due and publishes it to the anchors: what the trading worker runs between
    candles (off the decision's path) and once when it stops, and what `cta ledger checkpoint` runs."""

    checkpointer: Checkpointer
    stores: Sequence[AnchorStore]

    @classmethod
    def from_settings(cls, settings: LedgerSettings, secrets: Secrets) -> Sealer | None:
        """None when CTA_LEDGER_SIGNING_KEY is not set (the ledger is then a hash chain with its Merkle tree)."""
        checkpointer = Checkpointer.from_settings(settings, secrets)
        return None if checkpointer is None else cls(checkpointer, stores_from_settings(settings))

    def seal(self, sessions: sessionmaker[Session], now_ms: int, *, force: bool = False) -> tuple[int, list[int]]:
        """Sign a checkpoint if one is due (with `force`: if the tree grew since the last) and publish what the
        anchors lack. Returns the size checkpointed (0: nothing was due) and the sizes newly anchored.
        AnchorConflict if an anchor already holds another root for a size."""
        with sessions() as session:
            if ledger.tree_size(session) == 0 or not (force or self.checkpointer.due(session, now_ms)):
                return 0, []
            row = self.checkpointer.checkpoint(session, now_ms)
            session.commit()
            return row.size, publish_pending(session, self.stores)


@dataclass
class Audit:
    report: ledger.LedgerReport
    anchor: Checkpoint | None = None
    anchor_where: str | None = None
    signatures_checked: int = 0
    witnesses: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.report.ok


def audit(
    session: Session,
    stores: Sequence[AnchorStore],
    log_keys: Sequence[Verifier],
    origin: str,
    witness_keys: Sequence[Verifier] = (),
) -> Audit:
    """The database checked against itself, its signed checkpoints and the newest anchored checkpoint."""
    warnings: list[str] = []
    anchor: Checkpoint | None = None
    anchor_where = None
    witnesses: list[str] = []
    for store in stores:
        newest = newest_anchor(store)
        if newest is None:
            warnings.append(f"no anchored checkpoint in {store.where} yet")
            continue
        try:
            checkpoint = open_checkpoint(newest[1], log_keys, origin=origin)
        except NoteError as e:
            bad = ledger.LedgerReport(ok=False, entries=0, problem=f"the anchor {store.where}: {e}")
            return Audit(report=bad, anchor_where=store.where, warnings=warnings)
        if anchor is None or checkpoint.size > anchor.size:
            anchor, anchor_where = checkpoint, store.where
            witnesses = Note.parse(newest[1]).signed_by(witness_keys)
    report = ledger.verify(session, anchor=None if anchor is None else (anchor.size, anchor.root))
    checked = 0
    if report.ok:
        for row in checkpoints_after(session, -1):
            if not log_keys:
                warnings.append("checkpoint signatures not checked: set ledger.log_keys")
                break
            try:
                checkpoint = open_checkpoint(row.note, log_keys, origin=origin)
            except NoteError as e:
                problem = f"the stored checkpoint of size {row.size}: {e}"
                report = ledger.LedgerReport(ok=False, entries=report.entries, first_bad_seq=row.size, problem=problem)
                break
            if (checkpoint.size, checkpoint.root.hex()) != (row.size, row.root_hash):
                problem = f"the stored checkpoint of size {row.size} differs from its signed note"
                report = ledger.LedgerReport(ok=False, entries=report.entries, first_bad_seq=row.size, problem=problem)
                break
            checked += 1
    return Audit(report, anchor, anchor_where, checked, witnesses, warnings)
