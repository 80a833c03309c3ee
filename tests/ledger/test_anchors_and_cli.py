"""Anchors outside the database (a directory; S3 on moto, with Object Lock when the bucket has it) and the
`cta ledger` commands: checkpoint, prove, check-proof, verify (which catches a rewritten and re-hashed database
against the newest anchor) and witness."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path

import boto3
import pytest
from typer.testing import CliRunner

from cta.checkpoints import Checkpoint, Note, Signer, cosign, sign
from cta.errors import CTAError
from serving.db import make_engine, session_factory, upgrade
from serving.ledger import append
from serving.ledger_anchor import (
    AnchorConflict,
    FileAnchors,
    S3Anchors,
    anchor_name,
    audit,
    newest_anchor,
    publish,
    publish_pending,
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
    assert Note.parse(text).signed_by([log.verifier, witness.verifier]) == ["cta-log", "witness-1"]
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


def test_audit_detects_a_rewritten_and_rehashed_database(tmp_path: Path) -> None:
    """The attacker has the database and even the log's signing key: they rewrite entry 2, rebuild the chain,
    the tree and the checkpoints. Everything inside the database verifies; the anchor outside does not match."""
    signer, _ = Signer.generate("cta-log")
    cp = Checkpointer(signer, ORIGIN, CheckpointPolicy(every_entries=3, every_ms=10**12))
    store = FileAnchors(tmp_path / "anchors")
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


def test_ledger_commands_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(monkeypatch, {}, "ledger", "keygen", "cta-log", "--out", str(tmp_path / "log.key"))
    assert code == 0
    log_vkey = out.strip()
    code, out, _ = run(monkeypatch, {}, "ledger", "keygen", "witness-1", "--out", str(tmp_path / "witness.key"))
    witness_vkey = out.strip()
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
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    with session_factory(engine)() as session:
        for i in range(5):
            append(session, "decision", {"i": i}, TS + i)
        session.commit()

    code, out, _ = run(monkeypatch, env, "ledger", "checkpoint")
    assert code == 0 and f"{ORIGIN}\n5\n" in out and "anchored: sizes 5" in out
    code, out, _ = run(monkeypatch, env, "ledger", "witness")
    assert code == 0 and "witness-1" in out and "cosigned checkpoint 5 anchored" in out
    code, out, _ = run(monkeypatch, env, "ledger", "verify")
    assert code == 0, out
    assert "ledger ok: 5 entries" in out and "anchored checkpoint of size 5" in out and "witness-1" in out

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
    with sqlite3.connect(db) as connection:
        connection.executescript(
            "DELETE FROM ledger_checkpoints; DELETE FROM ledger_merkle_nodes; DELETE FROM ledger_entries;"
        )
    with session_factory(engine)() as session:
        for i in range(6):
            append(session, "decision", {"i": i if i != 2 else 200}, TS + i)
        session.commit()
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
