"""Anchors: the ledger's signed checkpoints (with any witness cosignatures) kept outside the database, and the
audit that checks the database against the newest of them.

A store holds one object per checkpoint, `checkpoint-<size, 20 digits>.note`, the signed note's text. Publishing
the same checkpoint again merges the signature lines (a witness's cosignature is added); a checkpoint of a size
already anchored with another root is refused (`AnchorConflict`): an anchor is never rewritten to another history.
`FileAnchors` writes a directory (atomically: temp file, fsync, rename); `S3Anchors` a bucket, and when the bucket
has Object Lock enabled each object is put with a COMPLIANCE retention, so not even the account can delete it or
its versions before `anchor_retention_days`. `GitAnchors` commits each checkpoint to a local git repository
(`ledger.anchor_git`), `checkpoints/<origin>/checkpoint-<size>.note` and `checkpoints/<origin>/latest`, one commit
per change, and reads only what is committed. It refuses a new checkpoint smaller than its latest, and a
repository whose branch was moved off its own history (a reset, an amend, a rebase: a commit of the branch's
reflog is no longer in its history); `audit` fails on the latter too. Push the repository to a remote that
refuses non-fast-forward pushes to keep a copy its host cannot rewrite.

`audit` is what `cta ledger verify` runs: the hash chain, the Merkle tree and the stored checkpoints
(`serving.ledger.verify`), the stored checkpoints' signatures (with `ledger.log_keys`), and the entries against the
newest anchored checkpoint, verified with the log's public keys. Whoever rewrites the database, chain, tree and
checkpoints re-hashed, cannot rewrite the anchor, and the root recomputed from the entries no longer matches it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from sqlalchemy.orm import Session, sessionmaker

from cta.checkpoints import Checkpoint, Note, NoteError, Verifier, open_checkpoint
from cta.config import LedgerSettings, Secrets
from cta.errors import ConfigError, CTAError
from cta.storage import LocalStorage, S3Storage
from serving import ledger
from serving.ledger_log import Checkpointer, checkpoints_after

ANCHOR_NAME = re.compile(r"^checkpoint-(\d{20})\.note$")


class AnchorConflict(RuntimeError):
    """An anchor refuses a checkpoint: another root for a size it holds (the log forked), or a git anchor's new
    checkpoint smaller than its latest or on top of a rewritten history."""


class AnchorError(CTAError):
    """An anchor store that cannot be used (a git command failed); the message names the store."""


def anchor_name(size: int) -> str:
    return f"checkpoint-{size:020d}.note"


class AnchorStore(Protocol):
    where: str

    def read(self, name: str) -> str | None: ...

    def write(self, name: str, text: str) -> None: ...

    def names(self) -> list[str]: ...

    def history_problem(self) -> str | None:
        """Why the store's history cannot be trusted (None: nothing seen)."""
        ...


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

    def history_problem(self) -> str | None:
        return None


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

    def history_problem(self) -> str | None:
        return None  # Object Lock is the bucket's guard


GIT_SETTING = "ledger.anchor_git"
GIT_IDENTITY = {  # the commits' author and committer: no global git config needed
    "GIT_AUTHOR_NAME": "cta ledger",
    "GIT_AUTHOR_EMAIL": "ledger@cta.invalid",
    "GIT_COMMITTER_NAME": "cta ledger",
    "GIT_COMMITTER_EMAIL": "ledger@cta.invalid",
}


def origin_dirname(origin: str) -> str:
    """A log's origin as one directory name, unambiguous (percent-encoded, '/' included) and never '.' or '..'."""
    name = quote(origin, safe="-._~")
    return name.replace(".", "%2E") if name.strip(".") == "" else name


class GitAnchors:
    """Anchors as commits in a local git repository, through the `git` command. The repository is made when the
    path is missing or an empty directory; any other path that is not the top of a git work tree is a ConfigError
    naming `ledger.anchor_git`, as is a missing `git` binary."""

    def __init__(self, root: Path, origin: str, git: str | None = None, timeout_s: float = 60.0) -> None:
        self.root = root
        self.where = f"git:{root}"
        self.directory = f"checkpoints/{origin_dirname(origin)}"
        self.timeout_s = timeout_s
        binary = shutil.which(git or "git")
        if binary is None:
            raise ConfigError(
                GIT_SETTING, str(root), f"the {git or 'git'} binary is not found (install git or unset it)"
            )
        self._git = binary
        self._git_dir = self._open()

    # ----- git -----

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}  # no GIT_DIR from a caller
        env.update(GIT_IDENTITY, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
        command = [self._git, "-c", "commit.gpgsign=false", *args]  # no signing prompt from a global config
        try:
            done = subprocess.run(  # noqa: S603 (a fixed binary, arguments as a list, no shell)
                command,
                cwd=self.root,
                env=env,
                capture_output=True,
                text=True,
                encoding="utf-8",
                timeout=self.timeout_s,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise AnchorError(f"the git anchor {self.where}: git {args[0]} failed: {e}") from e
        if check and done.returncode != 0:
            reason = (done.stderr or done.stdout).strip().splitlines()
            raise AnchorError(
                f"the git anchor {self.where}: git {args[0]} failed: {reason[-1] if reason else done.returncode}"
            )
        return done

    def _open(self) -> Path:
        """Make the repository if the path is missing or empty; the git directory."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise ConfigError(GIT_SETTING, str(root), "not a directory")
        if not root.exists() or not any(root.iterdir()):
            root.mkdir(parents=True, exist_ok=True)
            self._run("init", "-q", "-b", "main", ".")
        top = self._run("rev-parse", "--show-toplevel", check=False)
        if top.returncode != 0:
            raise ConfigError(
                GIT_SETTING, str(root), "not a git repository (and not empty): give a git work tree or a new directory"
            )
        if Path(top.stdout.strip()).resolve() != root.resolve():
            problem = f"inside the git repository {top.stdout.strip()}, not a repository of its own"
            raise ConfigError(GIT_SETTING, str(root), problem)
        return Path(self._run("rev-parse", "--absolute-git-dir").stdout.strip())

    def _has_commits(self) -> bool:
        return self._run("rev-parse", "--verify", "-q", "HEAD", check=False).returncode == 0

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time (the worker's sealer and a witness may publish together)."""
        with (self._git_dir / "cta-anchor.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # ----- the store -----

    def read(self, name: str) -> str | None:
        if name not in self.names():
            return None
        return self._run("cat-file", "blob", f"HEAD:{self.directory}/{name}").stdout

    def names(self) -> list[str]:
        """The checkpoints committed at HEAD (the work tree is never read)."""
        if not self._has_commits():
            return []
        listed = self._run("ls-tree", "-z", "--name-only", "HEAD", "--", f"{self.directory}/").stdout
        names = (path.rpartition("/")[2] for path in listed.split("\0") if path)
        return sorted(name for name in names if ANCHOR_NAME.match(name))

    def latest_size(self) -> int | None:
        """The largest checkpoint committed: of `latest` and of the checkpoint files, whichever is larger."""
        sizes = [int(match.group(1)) for name in self.names() if (match := ANCHOR_NAME.match(name))]
        latest = self._run("cat-file", "blob", f"HEAD:{self.directory}/latest", check=False)
        if latest.returncode == 0:
            with contextlib.suppress(NoteError):  # a damaged `latest` does not hide the files' sizes
                sizes.append(Checkpoint.parse(Note.parse(latest.stdout).body).size)
        return max(sizes, default=None)

    def history_problem(self) -> str | None:
        """A commit the branch once pointed to that is no longer in its history (`git reset`, `commit --amend`,
        a rebase), or a detached HEAD. The branch's reflog is the witness here, so it catches a rewrite made with
        git on this machine, not one that also deleted the reflog: a remote that refuses force-pushes does."""
        if not self._has_commits():
            return None
        branch = self._run("symbolic-ref", "-q", "HEAD", check=False)
        if branch.returncode != 0:
            return "HEAD is detached (an older commit checked out?): check out the anchor's branch"
        ref = branch.stdout.strip()
        reflog = self._run("log", "-g", "--format=%H", ref, check=False)
        if reflog.returncode != 0:
            return None  # no reflog kept (core.logAllRefUpdates off): nothing to compare with
        history = set(self._run("rev-list", ref).stdout.split())
        lost = [commit for commit in reflog.stdout.split() if commit not in history]
        if lost:
            return (
                f"its history was rewritten: commit {lost[0][:12]}, once the tip of {ref}, is no longer in its "
                "history (a reset, amend or rebase)"
            )
        return None

    def write(self, name: str, text: str) -> None:
        """Commit one checkpoint, its signatures merged with a committed one of its size (and `latest` when it is
        the largest). AnchorConflict for a new checkpoint smaller than the latest, or a rewritten history."""
        match = ANCHOR_NAME.match(name)
        if match is None:
            raise ValueError(f"not an anchor name: {name!r}")
        size = int(match.group(1))
        with self._locked():
            problem = self.history_problem()
            if problem is not None:
                raise AnchorConflict(f"the git anchor {self.where}: {problem}; refused to add checkpoint {size}")
            latest, known = self.latest_size(), name in self.names()
            if latest is not None and size < latest and not known:
                raise AnchorConflict(
                    f"the git anchor {self.where} holds checkpoint {latest}: refused checkpoint {size}, smaller than "
                    "its latest (the log shrank or its history was rewritten)"
                )
            current = self.read(name) if known else None
            text = text if current is None else merge_notes(current, text)  # a writer between our read and now
            if text == current:
                return
            paths = [f"{self.directory}/{name}"]
            if latest is None or size >= latest:
                paths.append(f"{self.directory}/latest")
            for path in paths:
                target = self.root / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
            self._run("add", "--", *paths)
            message = f"checkpoint {size} of {self.directory.removeprefix('checkpoints/')}"
            message += ": signatures merged" if known else ""
            self._run("commit", "-q", "--no-verify", "-m", message, "--", *paths)


def stores_from_settings(settings: LedgerSettings) -> list[AnchorStore]:
    """The anchor stores the settings name (none by default)."""
    stores: list[AnchorStore] = []
    if settings.anchor_dir:
        stores.append(FileAnchors(Path(settings.anchor_dir).expanduser()))
    if settings.anchor_git:
        stores.append(GitAnchors(Path(settings.anchor_git).expanduser(), settings.origin))
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
    witnesses: dict[str, int] = field(default_factory=dict)  # the anchor's valid cosignatures: name -> POSIX seconds
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
    """The database checked against itself, its signed checkpoints and the newest anchored checkpoint (with its
    tlog-cosignatures by `witness_keys`, type 0x04)."""
    warnings: list[str] = []
    anchor: Checkpoint | None = None
    anchor_where = None
    witnesses: dict[str, int] = {}
    for store in stores:
        problem = store.history_problem()
        if problem is not None:
            bad = ledger.LedgerReport(ok=False, entries=0, problem=f"the anchor {store.where}: {problem}")
            return Audit(report=bad, anchor_where=store.where, warnings=warnings)
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
            witnesses = Note.parse(newest[1]).cosigned_by(witness_keys)
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
