"""Anchors outside the database (a directory; S3 on moto, with Object Lock when the bucket has it; a real local git
repository, which refuses a shrinking checkpoint and a rewritten history) and the `cta ledger` commands: keygen,
checkpoint, prove, check-proof, verify (which catches a rewritten and re-hashed database against the newest anchor,
the git anchor's included) and witness."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from cta.checkpoints import Checkpoint, Note, Signer, Verifier, cosign, sign, verify_cosignature
from cta.config import LedgerSettings
from cta.errors import ConfigError, CTAError
from serving.db import make_engine, session_factory, upgrade
from serving.ledger import append
from serving.ledger_anchor import (
    AnchorConflict,
    AnchorStore,
    FileAnchors,
    GitAnchors,
    S3Anchors,
    anchor_name,
    audit,
    newest_anchor,
    publish,
    publish_pending,
    stores_from_settings,
)
from serving.ledger_log import Checkpointer, CheckpointPolicy
from tests.conftest import subprocess_env

TS = 1_700_000_000_000
ORIGIN = "cta.test/ledger"


def note(size: int, root: bytes, signer: Signer) -> str:
    return sign(Checkpoint(ORIGIN, size, root).body(), signer)


def test_file_anchors_merge_cosignatures_and_refuse_a_fork(tmp_path: Path) -> None:
    log, _ = Signer.generate("cta-log")
    witness, _ = Signer.generate("witness-1")
    store = FileAnchors(tmp_path / "anchors")
    assert newest_anchor(store) is None
    publish(note(3, b"\x01" * 32, log), [store])
    publish(note(12, b"\x02" * 32, log), [store])
    publish(cosign(note(12, b"\x02" * 32, log), witness), [store])
    size, text = newest_anchor(store)  # type: ignore[misc]
    assert size == 12 and store.names() == [anchor_name(3), anchor_name(12)]
    assert Note.parse(text).signed_by([log.verifier, witness.cosigner]) == ["cta-log", "witness-1"]
    with pytest.raises(AnchorConflict, match="forked"):
        publish(note(12, b"\x03" * 32, log), [store])
    assert "\x02" not in text and Note.parse(store.read(anchor_name(12)) or "").body == Note.parse(text).body


@pytest.mark.production
def test_s3_anchors_use_object_lock_when_the_bucket_has_it(moto_s3: str, aws_env: None) -> None:
    client = boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1")
    locked, plain = f"anchors-{uuid.uuid4().hex[:8]}", f"anchors-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=locked, ObjectLockEnabledForBucket=True)
    client.create_bucket(Bucket=plain)
    log, _ = Signer.generate("cta-log")
    locked_store = S3Anchors(client, locked, "cta/ledger", retention_days=30)
    plain_store = S3Anchors(client, plain, "", retention_days=30)
    assert (locked_store.object_lock, plain_store.object_lock) == (True, False)
    publish(note(5, b"\x05" * 32, log), [locked_store, plain_store])
    publish(note(9, b"\x09" * 32, log), [locked_store, plain_store])
    assert newest_anchor(locked_store) == newest_anchor(plain_store)
    assert newest_anchor(locked_store)[0] == 9  # type: ignore[index]
    head = client.head_object(Bucket=locked, Key=f"cta/ledger/{anchor_name(9)}")  # (moto 5.2.5's
    assert head["ObjectLockMode"] == "COMPLIANCE"  # GetObjectRetention answers 500, so the head is read)
    assert "ObjectLockMode" not in client.head_object(Bucket=plain, Key=anchor_name(9))
    with pytest.raises(client.exceptions.ClientError, match="AccessDenied"):  # locked: nobody deletes it
        client.delete_object(Bucket=locked, Key=f"cta/ledger/{anchor_name(9)}", VersionId=head["VersionId"])


STORES: dict[str, Callable[[Path], AnchorStore]] = {
    "file": FileAnchors,
    "git": lambda path: GitAnchors(path, ORIGIN),
}


@pytest.mark.parametrize("kind", sorted(STORES))
def test_audit_detects_a_rewritten_and_rehashed_database(tmp_path: Path, kind: str) -> None:
    """The attacker has the database and even the log's signing key: they rewrite entry 2, rebuild the chain,
    the tree and the checkpoints. Everything inside the database verifies; the anchor outside does not match."""
    signer, _ = Signer.generate("cta-log")
    cp = Checkpointer(signer, ORIGIN, CheckpointPolicy(every_entries=3, every_ms=10**12))
    store = STORES[kind](tmp_path / "anchors")
    engine = make_engine(f"sqlite:///{tmp_path / 'serving.db'}")
    upgrade(engine)
    sessions = session_factory(engine)
    with sessions() as session:
        for i in range(7):
            append(session, "fill", {"i": i, "price": 100 + i}, TS + i, checkpointer=cp)
        session.commit()
        assert publish_pending(session, [store]) == [1, 4, 7]
        assert publish_pending(session, [store]) == []
        result = audit(session, [store], [signer.verifier], ORIGIN)
        assert result.ok and result.anchor is not None and result.anchor.size == 7 and result.signatures_checked == 3

    with engine.begin() as connection:
        for table in ("ledger_checkpoints", "ledger_merkle_nodes", "ledger_entries"):
            connection.exec_driver_sql(f"DELETE FROM {table}")
    with sessions() as session:
        for i in range(7):
            payload = {"i": i, "price": 100 + i} if i != 1 else {"i": 1, "price": 1.0}
            append(session, "fill", payload, TS + i, checkpointer=cp)
        session.commit()
        inside_only = audit(session, [], [signer.verifier], ORIGIN)
        assert inside_only.ok  # chain, tree and re-signed checkpoints all agree with each other
        result = audit(session, [store], [signer.verifier], ORIGIN)
    assert not result.ok
    assert result.report.problem == "the entries do not match the anchored checkpoint of size 7 (history rewritten)"

    with sessions() as session:  # truncating below the anchor is caught too
        with engine.begin() as connection:
            connection.exec_driver_sql("DELETE FROM ledger_checkpoints")
        forged = audit(session, [FileAnchors(tmp_path / "elsewhere")], [signer.verifier], ORIGIN)
        assert forged.warnings == [f"no anchored checkpoint in {tmp_path / 'elsewhere'} yet"]
    engine.dispose()


def test_audit_refuses_an_anchor_the_log_did_not_sign(tmp_path: Path) -> None:
    signer, _ = Signer.generate("cta-log")
    other, _ = Signer.generate("cta-log")
    store = FileAnchors(tmp_path / "anchors")
    publish(note(1, b"\x01" * 32, other), [store])
    engine = make_engine(f"sqlite:///{tmp_path / 'serving.db'}")
    upgrade(engine)
    with session_factory(engine)() as session:
        result = audit(session, [store], [signer.verifier], ORIGIN)
    assert not result.ok and "no valid signature of a known log key" in (result.report.problem or "")
    engine.dispose()


# ----- the commands ----------------------------------------------------------------------------------------------


def run(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *args: str) -> tuple[int, str, BaseException | None]:
    from app.cli import cli

    for name, value in env.items():
        if name.startswith("CTA_"):
            monkeypatch.setenv(name, value)
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output, result.exception


def ledger_database(db: Path, entries: int) -> Engine:
    """A migrated SQLite serving database at `db` whose ledger holds `entries` decision entries (its engine)."""
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    with session_factory(engine)() as session:
        for i in range(entries):
            append(session, "decision", {"i": i}, TS + i)
        session.commit()
    return engine


def rewrite_ledger(engine: Engine, db: Path, entries: int, changed: int) -> None:
    """Delete the ledger (entries, tree, checkpoints) and write it again with entry `changed` altered: a valid chain
    and tree of another history, as someone with write access to the database could."""
    with sqlite3.connect(db) as connection:
        connection.executescript(
            "DELETE FROM ledger_checkpoints; DELETE FROM ledger_merkle_nodes; DELETE FROM ledger_entries;"
        )
    with session_factory(engine)() as session:
        for i in range(entries):
            append(session, "decision", {"i": i if i != changed else 100 * i}, TS + i)
        session.commit()


def test_ledger_commands_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(monkeypatch, {}, "ledger", "keygen", "cta-log", "--out", str(tmp_path / "log.key"))
    assert code == 0
    log_vkey = out.strip()
    code, out, _ = run(
        monkeypatch, {}, "ledger", "keygen", "witness-1", "--witness", "--out", str(tmp_path / "witness.key")
    )
    witness_vkey = out.strip()
    assert code == 0 and Verifier.parse(witness_vkey).is_cosigner  # a tlog-cosignature vkey, type 0x04
    assert not Verifier.parse(log_vkey).is_cosigner
    assert (tmp_path / "log.key").stat().st_mode & 0o777 == 0o600
    db = tmp_path / "serving.db"
    env = subprocess_env(
        tmp_path,
        CTA_SERVING__DATABASE_URL=f"sqlite:///{db}",
        CTA_LEDGER__ORIGIN=ORIGIN,
        CTA_LEDGER__LOG_KEYS=json.dumps([log_vkey]),
        CTA_LEDGER__WITNESS_KEYS=json.dumps([witness_vkey]),
        CTA_LEDGER__ANCHOR_DIR=str(tmp_path / "anchors"),
        CTA_LEDGER__WITNESS_STATE=str(tmp_path / "witness-state.note"),
        CTA_LEDGER_SIGNING_KEY=(tmp_path / "log.key").read_text().strip(),
        CTA_LEDGER_WITNESS_KEY=(tmp_path / "witness.key").read_text().strip(),
    )
    engine = ledger_database(db, entries=5)

    code, out, _ = run(monkeypatch, env, "ledger", "checkpoint")
    assert code == 0 and f"{ORIGIN}\n5\n" in out and "anchored: sizes 5" in out
    code, out, _ = run(monkeypatch, env, "ledger", "witness")
    assert code == 0 and "witness-1" in out and "cosigned checkpoint 5 anchored" in out
    code, out, _ = run(monkeypatch, env, "ledger", "verify")
    assert code == 0, out
    assert "ledger ok: 5 entries" in out and "anchored checkpoint of size 5" in out and "witness-1 at 20" in out
    anchored = (tmp_path / "anchors" / anchor_name(5)).read_text()
    assert verify_cosignature(anchored, Verifier.parse(witness_vkey)) > 0  # with the witness's vkey alone

    code, out, _ = run(monkeypatch, env, "ledger", "prove", "3")
    assert code == 0
    (tmp_path / "proof.json").write_text(out)
    code, out, _ = run(monkeypatch, {}, "ledger", "check-proof", str(tmp_path / "proof.json"), "--key", log_vkey)
    assert code == 0 and f"proof ok: checkpoint {ORIGIN} size 5" in out
    code, out, error = run(
        monkeypatch, {}, "ledger", "check-proof", str(tmp_path / "proof.json"), "--key", witness_vkey
    )
    assert code == 1 and isinstance(error, CTAError) and "no valid signature" in str(error)

    with session_factory(engine)() as session:
        append(session, "order", {"i": 5}, TS + 5)
        session.commit()
    assert run(monkeypatch, env, "ledger", "checkpoint")[0] == 0
    code, out, _ = run(monkeypatch, env, "ledger", "prove", "--from", "5")
    assert code == 0 and json.loads(out)["new_size"] == 6
    assert run(monkeypatch, env, "ledger", "witness")[0] == 0

    # rewrite and re-hash the whole database behind the application's back (the chain and tree rebuilt)
    rewrite_ledger(engine, db, entries=6, changed=2)
    code, out, error = run(monkeypatch, env, "ledger", "verify")
    assert code == 1 and isinstance(error, CTAError)
    assert "do not match the anchored checkpoint of size 6 (history rewritten)" in str(error)
    # the re-signed forged checkpoint is refused by the witness, which saw the old history
    assert run(monkeypatch, env, "ledger", "checkpoint")[0] == 1  # the anchor refuses another root for size 6
    code, out, error = run(monkeypatch, env, "ledger", "witness")
    assert code == 1 and "forked: two different roots for tree size 6" in str(error)
    engine.dispose()
    keys = [env["CTA_LEDGER_SIGNING_KEY"], env["CTA_LEDGER_WITNESS_KEY"]]
    logged = [p.read_text(errors="replace") for p in (tmp_path / "logs").rglob("*") if p.is_file()]
    assert logged and not [key for key in keys for text in logged if key in text or key[-44:] in text]


# ----- the git anchor --------------------------------------------------------------------------------------------


def git(repo: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True)
    return done.stdout


def test_git_anchor_commits_each_checkpoint_and_refuses_a_smaller_one(tmp_path: Path) -> None:
    log, _ = Signer.generate("cta-log")
    witness, _ = Signer.generate("witness-1")
    repo = tmp_path / "anchor-repo"
    store = GitAnchors(repo, ORIGIN)  # made: the path did not exist
    assert newest_anchor(store) is None and store.names() == []
    publish(note(3, b"\x01" * 32, log), [store])
    publish(note(12, b"\x02" * 32, log), [store])
    publish(cosign(note(12, b"\x02" * 32, log), witness, 1_700_000_000), [store])
    size, text = newest_anchor(GitAnchors(repo, ORIGIN))  # type: ignore[misc]  # read back by a new reader
    assert size == 12 and store.names() == [anchor_name(3), anchor_name(12)]
    assert Note.parse(text).signed_by([log.verifier, witness.cosigner]) == ["cta-log", "witness-1"]
    directory = "checkpoints/cta.test%2Fledger"
    assert git(repo, "show", f"HEAD:{directory}/latest") == text
    assert git(repo, "log", "--format=%an|%s").splitlines() == [
        "cta ledger|checkpoint 12 of cta.test%2Fledger: signatures merged",
        "cta ledger|checkpoint 12 of cta.test%2Fledger",
        "cta ledger|checkpoint 3 of cta.test%2Fledger",
    ]

    with pytest.raises(AnchorConflict, match="holds checkpoint 12: refused checkpoint 5, smaller than its latest"):
        publish(note(5, b"\x05" * 32, log), [store])
    with pytest.raises(AnchorConflict, match="forked"):
        publish(note(12, b"\x03" * 32, log), [store])
    publish(cosign(note(3, b"\x01" * 32, log), witness), [store])  # a cosignature for an older one: merged
    assert Note.parse(store.read(anchor_name(3)) or "").cosigned_by([witness.cosigner]).keys() == {"witness-1"}
    assert git(repo, "show", f"HEAD:{directory}/latest") == text  # `latest` stays the largest
    assert git(repo, "rev-list", "--count", "HEAD").strip() == "4"

    (repo / directory / "latest").write_text("edited in the work tree, never committed")
    assert newest_anchor(store) == (12, text)  # only what is committed is read


def test_git_anchor_refuses_and_audit_fails_on_a_rewritten_history(tmp_path: Path) -> None:
    """`git reset --hard` to an older commit, then another checkpoint of a size the old history held: the anchor
    refuses to commit it, and `audit` (so `cta ledger verify`) fails naming the rewrite."""
    log, _ = Signer.generate("cta-log")
    repo = tmp_path / "anchor-repo"
    store = GitAnchors(repo, ORIGIN)
    publish(note(3, b"\x01" * 32, log), [store])
    publish(note(6, b"\x02" * 32, log), [store])
    assert store.history_problem() is None
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    assert newest_anchor(store) is not None and newest_anchor(store)[0] == 3  # type: ignore[index]
    with pytest.raises(
        AnchorConflict, match=r"history was rewritten: commit \w+, once the tip of refs/heads/main, is no longer"
    ):
        publish(note(6, b"\x06" * 32, log), [store])
    engine = make_engine(f"sqlite:///{tmp_path / 'serving.db'}")
    upgrade(engine)
    with session_factory(engine)() as session:
        result = audit(session, [store], [log.verifier], ORIGIN)
    engine.dispose()
    assert not result.ok and "history was rewritten" in (result.report.problem or "")
    assert result.report.problem.startswith(f"the anchor git:{repo}")  # type: ignore[union-attr]

    git(repo, "checkout", "-q", "--detach", "HEAD")
    assert "HEAD is detached" in (GitAnchors(repo, ORIGIN).history_problem() or "")


def test_git_anchor_setting_errors_name_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert stores_from_settings(LedgerSettings(anchor_git="")) == []  # empty: off
    not_a_repo = tmp_path / "not-a-repo"
    not_a_repo.mkdir()
    (not_a_repo / "notes.txt").write_text("something else lives here")
    with pytest.raises(ConfigError, match=r"ledger\.anchor_git=.*not a git repository \(and not empty\)"):
        stores_from_settings(LedgerSettings(anchor_git=str(not_a_repo)))
    outer = tmp_path / "outer"
    GitAnchors(outer, ORIGIN)
    (outer / "inner").mkdir()
    (outer / "inner" / "x").write_text("x")
    with pytest.raises(ConfigError, match=r"ledger\.anchor_git=.*inside the git repository"):
        GitAnchors(outer / "inner", ORIGIN)
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"ledger\.anchor_git=.*not a directory"):
        GitAnchors(tmp_path / "file", ORIGIN)
    monkeypatch.setenv("PATH", str(tmp_path / "no-binaries-here"))
    with pytest.raises(ConfigError, match=r"ledger\.anchor_git=.*git binary is not found"):
        stores_from_settings(LedgerSettings(anchor_git=str(tmp_path / "new-repo")))
    assert not (tmp_path / "new-repo").exists()


def test_ledger_verify_uses_the_git_anchor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log_key, log_secret = Signer.generate("cta-log")
    witness_key, witness_secret = Signer.generate("witness-1", b"\x04")
    db, repo = tmp_path / "serving.db", tmp_path / "anchor-repo"
    env = subprocess_env(
        tmp_path,
        CTA_SERVING__DATABASE_URL=f"sqlite:///{db}",
        CTA_LEDGER__ORIGIN=ORIGIN,
        CTA_LEDGER__LOG_KEYS=json.dumps([log_key.verifier.encode()]),
        CTA_LEDGER__WITNESS_KEYS=json.dumps([witness_key.cosigner.encode()]),
        CTA_LEDGER__ANCHOR_GIT=str(repo),
        CTA_LEDGER__WITNESS_STATE=str(tmp_path / "witness-state.note"),
        CTA_LEDGER_SIGNING_KEY=log_secret,
        CTA_LEDGER_WITNESS_KEY=witness_secret,
    )
    engine = ledger_database(db, entries=4)
    code, out, _ = run(monkeypatch, env, "ledger", "checkpoint")
    assert code == 0 and "anchored: sizes 4" in out
    code, out, _ = run(monkeypatch, env, "ledger", "witness")
    assert code == 0 and "cosigned checkpoint 4 anchored" in out
    code, out, _ = run(monkeypatch, env, "ledger", "verify")
    assert code == 0, out
    assert f"matches the anchored checkpoint of size 4 (git:{repo}) cosigned by witness-1 at 20" in out

    rewrite_ledger(engine, db, entries=4, changed=1)  # rewrite and re-hash the database
    engine.dispose()
    code, out, error = run(monkeypatch, env, "ledger", "verify")
    assert code == 1 and isinstance(error, CTAError)
    assert "do not match the anchored checkpoint of size 4 (history rewritten)" in str(error)

    git(repo, "reset", "-q", "--hard", "HEAD~1")  # and the anchor's history too
    code, out, error = run(monkeypatch, env, "ledger", "verify")
    assert code == 1 and "history was rewritten" in str(error)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file").write_text("")
    code, out, error = run(monkeypatch, {**env, "CTA_LEDGER__ANCHOR_GIT": str(tmp_path / "junk")}, "ledger", "verify")
    assert code == 1 and isinstance(error, ConfigError) and "ledger.anchor_git" in str(error)
