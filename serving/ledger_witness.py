"""The witness: a separate party, with its own key, that cosigns a checkpoint of the ledger only after checking
that it extends the last checkpoint it cosigned.

It keeps the last checkpoint it saw in a file. For each new checkpoint it verifies the log's signature, refuses a
tree that shrank or a second root for a size it already saw, asks the log for the consistency proof from its
checkpoint to the new one, verifies it, and only then cosigns and keeps the new checkpoint. A log that rewrote its
history cannot get a cosignature for the new history from any witness that saw the old one.

Its cosignature is a C2SP tlog-cosignature/v1 (`cta.checkpoints.cosign`): a signature line with the witness's
key id for type 0x04, the time of cosigning (read from the injected clock) and an Ed25519 signature over
`cosignature/v1`, that time and the checkpoint body. Whoever holds only the witness's verifier key (`cta ledger
keygen --witness` prints it) checks it with `cta.checkpoints.verify_cosignature`.

It reads the log through a `LogClient`: `DatabaseLog` (the ledger's database, read-only) or `HttpLog` (the worker's
API, `/api/ledger/...`). The state file is written atomically, and before the cosignature is handed out.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from cta.checkpoints import Checkpoint, NoteError, Signer, Verifier, cosign, open_checkpoint
from cta.clock import Clock, SystemClock
from cta.merkle import verify_consistency
from serving import ledger
from serving.ledger_log import latest_checkpoint


class WitnessRefused(RuntimeError):
    """The witness will not cosign this checkpoint (and says why)."""


class LogClient(Protocol):
    def latest_checkpoint(self) -> str | None: ...

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]: ...


class DatabaseLog:
    """The log read straight from its database (read-only sessions)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def latest_checkpoint(self) -> str | None:
        with self.sessions() as session:
            row = latest_checkpoint(session)
            return None if row is None else row.note

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        with self.sessions() as session:
            return ledger.consistency_proof(session, old_size, new_size)


class HttpLog:
    """The log through the worker's API (`GET /api/ledger/checkpoint`, `/api/ledger/proof/consistency`)."""

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s

    def _get(self, path: str, params: dict[str, int] | None = None) -> Any:
        url = self.base_url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"not an http(s) URL: {self.base_url}")
        request = urllib.request.Request(url)  # noqa: S310 (scheme checked above)
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
            return json.loads(response.read())

    def latest_checkpoint(self) -> str | None:
        body = self._get("/api/ledger/checkpoint")
        note: str | None = body.get("checkpoint")
        return note

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        body = self._get("/api/ledger/proof/consistency", {"from": old_size, "to": new_size})
        return [base64.b64decode(item, validate=True) for item in body["proof"]]


class Witness:
    def __init__(
        self, signer: Signer, log_keys: list[Verifier], origin: str, state_path: Path, clock: Clock | None = None
    ) -> None:
        self.signer = signer
        self.log_keys = log_keys
        self.origin = origin
        self.state_path = state_path
        self.clock = clock or SystemClock()  # the cosignature's timestamp (whole seconds)

    def last_seen(self) -> tuple[Checkpoint, str] | None:
        """The checkpoint the witness last cosigned (its note), None before the first."""
        if not self.state_path.exists():
            return None
        text = self.state_path.read_text(encoding="utf-8")
        return open_checkpoint(text, self.log_keys, origin=self.origin), text

    def check(self, note_text: str, log: LogClient) -> Checkpoint:
        """Verify `note_text` as the successor of the last checkpoint seen; raises WitnessRefused."""
        try:
            new = open_checkpoint(note_text, self.log_keys, origin=self.origin)
        except NoteError as e:
            raise WitnessRefused(f"not a checkpoint of {self.origin} signed by a known log key: {e}") from e
        seen = self.last_seen()
        if seen is None:
            return new  # the first checkpoint is trusted on first use
        old = seen[0]
        if new.size < old.size:
            raise WitnessRefused(f"refused: the log shrank from {old.size} to {new.size} entries (history was removed)")
        if new.size == old.size:
            if new.root != old.root:
                raise WitnessRefused(f"refused: the log forked: two different roots for tree size {new.size}")
            return new
        proof = log.consistency_proof(old.size, new.size)
        if not verify_consistency(old.size, new.size, old.root, new.root, proof):
            raise WitnessRefused(
                f"refused: checkpoint {new.size} does not extend checkpoint {old.size} the witness cosigned "
                "(the consistency proof fails: the log forked or rewrote its history)"
            )
        return new

    def witness(self, log: LogClient) -> str | None:
        """Cosign the log's latest checkpoint after checking it; the cosigned note (None: nothing to cosign)."""
        note_text = log.latest_checkpoint()
        if note_text is None:
            return None
        self.check(note_text, log)
        self._keep(note_text)
        return cosign(note_text, self.signer, self.clock.now_ms() // 1000)

    def _keep(self, note_text: str) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.state_path.parent, prefix=".witness-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(note_text)
                handle.flush()
                os.fsync(handle.fileno())
            Path(tmp).replace(self.state_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
