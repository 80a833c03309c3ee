"""Checkpoints as C2SP signed notes: Go's note test vector, key ids, rotation, witness cosignatures in the C2SP
tlog-cosignature/v1 format (a known answer assembled here byte by byte from the spec), the policy (every N entries
or T seconds) inside the append's transaction, and proof bundles checked with only the public key."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import SecretStr
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from cta import checkpoints, merkle
from cta.checkpoints import (
    Checkpoint,
    Note,
    NoteError,
    Signer,
    Verifier,
    cosign,
    open_checkpoint,
    sign,
    verify_cosignature,
)
from cta.config import LedgerSettings, Secrets
from cta.errors import ConfigError
from serving import ledger
from serving.ledger import append, verify
from serving.ledger_log import (
    Checkpointer,
    CheckpointPolicy,
    ProofError,
    latest_checkpoint,
    log_verifiers,
    proof_bundle_consistency,
    proof_bundle_inclusion,
    signer_from_secret,
    verify_bundle,
    witness_verifiers,
)
from serving.models import LedgerCheckpoint

TS = 1_700_000_000_000
# golang.org/x/mod/sumdb/note's documented example key and signature (Ed25519 signatures are deterministic)
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_SIGNATURE = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def test_go_note_test_vector() -> None:
    signer = Signer.parse(GO_SKEY)
    assert signer.verifier.encode() == GO_VKEY
    assert sign(GO_TEXT, signer) == GO_TEXT + "\n" + GO_SIGNATURE
    note = Note.parse(GO_TEXT + "\n" + GO_SIGNATURE)
    assert note.signed_by([Verifier.parse(GO_VKEY)]) == ["PeterNeumann"]
    assert "AYEKF" not in repr(signer)


def test_key_id_is_the_c2sp_hash() -> None:
    verifier = Verifier.parse(GO_VKEY)
    digest = hashlib.sha256(b"PeterNeumann\n\x01" + verifier.public_key).digest()
    assert verifier.key_id == digest[:4] == bytes.fromhex("c74f20a3")
    with pytest.raises(NoteError, match="does not match"):
        Verifier.parse("Other+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")


def test_checkpoint_body_and_tampering() -> None:
    signer, _ = Signer.generate("cta-log")
    body = Checkpoint("cta.test/ledger", 12, b"\x07" * 32).body()
    assert body == "cta.test/ledger\n12\n" + base64.b64encode(b"\x07" * 32).decode() + "\n"
    note = sign(body, signer)
    assert open_checkpoint(note, [signer.verifier]) == Checkpoint("cta.test/ledger", 12, b"\x07" * 32)
    with pytest.raises(NoteError, match="no valid signature"):
        open_checkpoint(note.replace("\n12\n", "\n13\n"), [signer.verifier])
    other, _ = Signer.generate("cta-log")  # same name, other key: another key id
    with pytest.raises(NoteError, match="no valid signature"):
        open_checkpoint(note, [other.verifier])
    with pytest.raises(NoteError, match="not 'x'"):
        open_checkpoint(note, [signer.verifier], origin="x")


def test_cosignatures_add_lines_and_rotation_keeps_old_checkpoints_valid() -> None:
    old_key, _ = Signer.generate("cta-log-2025")
    new_key, _ = Signer.generate("cta-log-2026")
    witness, _ = Signer.generate("witness-1")
    old_note = sign(Checkpoint("o", 3, b"\x01" * 32).body(), old_key)
    new_note = cosign(sign(Checkpoint("o", 5, b"\x02" * 32).body(), new_key), witness)
    keys = [old_key.verifier, new_key.verifier]
    assert open_checkpoint(old_note, keys).size == 3
    assert open_checkpoint(new_note, keys).size == 5
    assert Note.parse(new_note).signed_by([witness.cosigner]) == ["witness-1"]
    assert Note.parse(new_note).signed_by([witness.verifier]) == []  # a cosignature is no plain note signature
    assert cosign(new_note, witness).count("witness-1") == 1  # re-cosigning replaces, never duplicates
    with pytest.raises(NoteError):
        open_checkpoint(old_note, [new_key.verifier])


# ----- witness cosignatures: C2SP tlog-cosignature/v1 ------------------------------------------------------------

WITNESS_SEED = bytes(range(32))
WITNESS_NAME = "witness.example/w1"
WITNESS_TIME = 1679315147  # the spec's example timestamp


def _spec_cosignature(body: str, seed: bytes, name: str, timestamp: int) -> tuple[str, str]:
    """The signature line and vkey of a cosignature/v1, assembled from c2sp.org/tlog-cosignature alone:
    key ID = SHA-256(<name> || "\\n" || 0x04 || 32-byte Ed25519 public key)[:4]; signed message = "cosignature/v1\\n",
    "time <decimal>\\n", then the note body; signature = base64(key ID || u64 big-endian timestamp || Ed25519
    signature); vkey = <name>+<key ID hex>+base64(0x04 || public key)."""
    private = Ed25519PrivateKey.from_private_bytes(seed)
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    kid = hashlib.sha256(name.encode() + b"\n" + b"\x04" + public).digest()[:4]
    message = b"cosignature/v1\n" + b"time " + str(timestamp).encode() + b"\n" + body.encode()
    blob = kid + struct.pack(">Q", timestamp) + private.sign(message)
    line = "\u2014 " + name + " " + base64.b64encode(blob).decode() + "\n"
    return line, name + "+" + kid.hex() + "+" + base64.b64encode(b"\x04" + public).decode()


def test_cosignature_known_answer_from_the_spec_layout() -> None:
    log, _ = Signer.generate("example.com/behind-the-sofa")
    body = Checkpoint("example.com/behind-the-sofa", 20852163, b"\x0a" * 32).body()
    note = sign(body, log)
    line, vkey = _spec_cosignature(body, WITNESS_SEED, WITNESS_NAME, WITNESS_TIME)
    witness = Signer(WITNESS_NAME, WITNESS_SEED)
    cosigned = cosign(note, witness, WITNESS_TIME)
    assert cosigned == note + line  # Ed25519 is deterministic: byte for byte
    assert witness.cosigner.encode() == vkey
    assert Verifier.parse(vkey) == witness.cosigner and Verifier.parse(vkey).is_cosigner
    assert witness.cosigner.key_id != witness.verifier.key_id  # the type byte separates the two uses of one key
    assert verify_cosignature(cosigned, Verifier.parse(vkey)) == WITNESS_TIME
    assert Note.parse(cosigned).cosigned_by([Verifier.parse(vkey)]) == {WITNESS_NAME: WITNESS_TIME}
    assert open_checkpoint(cosigned, [log.verifier]).size == 20852163  # the log's own 0x01 signature is kept


def test_the_spec_example_line_and_a_third_party_vkey_parse() -> None:
    """The spec's example cosignature line carries the time of its example message (1679315147) after the key ID;
    transparency-dev/formats' test vkey of type 0x04 has the key ID the 0x04 hash gives."""
    spec_line = (
        "\u2014 witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZ"
        "qhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
    )
    body = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    (signature,) = Note.parse(body + "\n" + spec_line).signatures
    assert len(signature.signature) == 8 + 64
    assert struct.unpack(">Q", signature.signature[:8]) == (1679315147,)
    remora = Verifier.parse("remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2")
    assert remora.is_cosigner and remora.key_id == bytes.fromhex("da77ade7")
    with pytest.raises(NoteError, match="does not match"):  # the same key read as type 0x01 has another id
        Verifier.parse("remora.n621.de+da77ade7+AevN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2")


def test_a_cosignature_fails_for_another_body_key_or_time() -> None:
    log, _ = Signer.generate("cta-log")
    witness = Signer(WITNESS_NAME, WITNESS_SEED)
    note = sign(Checkpoint("o", 5, b"\x02" * 32).body(), log)
    cosigned = cosign(note, witness, WITNESS_TIME)
    vkey = Verifier.parse(witness.cosigner.encode())  # the verifier holds the witness's vkey only
    assert verify_cosignature(cosigned, vkey) == WITNESS_TIME

    other_body = Note.parse(cosign(sign(Checkpoint("o", 6, b"\x02" * 32).body(), log), witness, WITNESS_TIME))
    moved = Note(other_body.body, Note.parse(cosigned).signatures).text()  # the lines moved onto another body
    with pytest.raises(NoteError, match="does not verify"):
        verify_cosignature(moved, vkey)

    impostor, _ = Signer.generate(WITNESS_NAME)  # same name, another key: another key id
    with pytest.raises(NoteError, match="no cosignature by"):
        verify_cosignature(cosign(note, impostor, WITNESS_TIME), vkey)
    forged = Note.parse(cosign(note, impostor, WITNESS_TIME))
    relabelled = [replace(s, key_id=vkey.key_id) if s.name == WITNESS_NAME else s for s in forged.signatures]
    with pytest.raises(NoteError, match="does not verify"):  # the impostor's signature under the real key id
        verify_cosignature(Note(forged.body, tuple(relabelled)).text(), vkey)

    parsed = Note.parse(cosigned)
    mine = next(s for s in parsed.signatures if s.name == WITNESS_NAME)
    retimed = replace(mine, signature=struct.pack(">Q", WITNESS_TIME + 1) + mine.signature[8:])
    with pytest.raises(NoteError, match="does not verify"):  # another timestamp than the one signed
        verify_cosignature(Note(parsed.body, (parsed.signatures[0], retimed)).text(), vkey)

    with pytest.raises(NoteError, match="not a cosigner key"):
        verify_cosignature(cosigned, witness.verifier)
    with pytest.raises(NoteError, match=r"no valid signature of a known log key \(witness.example/w1: cosigner"):
        open_checkpoint(cosigned, [vkey])  # a cosignature never passes for the log's signature
    with pytest.raises(NoteError, match=r"0\.\.2\^63-1"):
        cosign(note, witness, 2**63)


def test_a_timestamp_past_2_63_is_refused_even_when_signed() -> None:
    log, _ = Signer.generate("cta-log")
    body = Checkpoint("o", 5, b"\x02" * 32).body()
    line, vkey = _spec_cosignature(body, WITNESS_SEED, WITNESS_NAME, 2**63)
    with pytest.raises(NoteError, match="does not verify"):
        verify_cosignature(sign(body, log) + line, Verifier.parse(vkey))


def test_witness_and_log_keys_in_the_settings() -> None:
    witness = Signer(WITNESS_NAME, WITNESS_SEED)
    assert witness_verifiers(LedgerSettings(witness_keys=[witness.cosigner.encode()])) == [witness.cosigner]
    # a plain 0x01 key given for a witness (what keygen printed before) is read as its cosigner key
    assert witness_verifiers(LedgerSettings(witness_keys=[witness.verifier.encode()])) == [witness.cosigner]
    with pytest.raises(ConfigError, match=r"ledger\.log_keys.*cosigner key \(type 0x04\)"):
        log_verifiers(LedgerSettings(log_keys=[witness.cosigner.encode()]))
    _, witness_secret = Signer.generate("witness-1", checkpoints.COSIGNATURE_V1_TYPE)
    parsed = Signer.parse(witness_secret)
    assert parsed.key_type == checkpoints.COSIGNATURE_V1_TYPE and parsed.cosigner.key_id.hex() in witness_secret
    assert signer_from_secret(Secrets(ledger_witness_key=SecretStr(witness_secret)), "ledger_witness_key") is not None
    with pytest.raises(ConfigError, match=r"secrets\.ledger_signing_key.*cannot sign the log"):
        signer_from_secret(Secrets(ledger_signing_key=SecretStr(witness_secret)))


def test_the_signing_key_comes_from_a_secret_and_is_never_shown() -> None:
    _, encoded = Signer.generate("cta-log")
    secrets = Secrets(ledger_signing_key=SecretStr(encoded))
    assert signer_from_secret(secrets) is not None
    assert encoded in secrets.values()  # so logging redacts it
    assert encoded not in repr(secrets)
    with pytest.raises(ConfigError) as error:
        signer_from_secret(Secrets(ledger_signing_key=SecretStr(encoded[:-4] + "AAAA")))
    assert encoded[20:] not in str(error.value)
    assert signer_from_secret(Secrets()) is None


# ----- in the database -------------------------------------------------------------------------------------------


def make_checkpointer(every_entries: int = 4, every_ms: int = 60_000) -> Checkpointer:
    signer, _ = Signer.generate("cta-log")
    return Checkpointer(signer, "cta.test/ledger", CheckpointPolicy(every_entries, every_ms))


def test_checkpoints_every_n_entries_or_t_seconds(session: Session) -> None:
    cp = make_checkpointer(every_entries=4, every_ms=60_000)
    for i in range(9):
        append(session, "decision", {"i": i}, TS + i, checkpointer=cp)
    session.commit()
    assert [row.size for row in session.scalars(select(LedgerCheckpoint).order_by(LedgerCheckpoint.size))] == [1, 5, 9]
    # the first entry is checkpointed at once (no checkpoint yet); then 4 entries each; then time
    append(session, "decision", {"i": 9}, TS + 9, checkpointer=cp)
    assert latest_checkpoint(session).size == 9  # type: ignore[union-attr]
    append(session, "decision", {"i": 10}, TS + 60_010, checkpointer=cp)
    session.commit()
    last = latest_checkpoint(session)
    assert last is not None and last.size == 11
    keys = [cp.signer.verifier]
    assert open_checkpoint(last.note, keys, origin="cta.test/ledger").root == ledger.tree_root(session, 11)
    assert verify(session).ok


def test_a_crash_between_append_and_checkpoint_leaves_a_consistent_log(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    """The checkpoint is written in the entry's transaction: a crash before the commit loses both, never one."""
    cp = make_checkpointer(every_entries=2)
    with sessions() as session:
        for i in range(3):
            append(session, "order", {"i": i}, TS + i, checkpointer=cp)
        session.commit()
    with sessions() as session:  # the process dies after the append and the checkpoint, before the commit
        append(session, "order", {"i": 3}, TS + 3, checkpointer=cp)
        append(session, "order", {"i": 4}, TS + 4, checkpointer=cp)
        assert latest_checkpoint(session).size == 5  # type: ignore[union-attr]
        session.rollback()
    with sessions() as session:  # a checkpoint signed but the append's commit failed: neither is there
        assert ledger.tree_size(session) == 3
        assert latest_checkpoint(session).size == 3  # type: ignore[union-attr]
        assert verify(session).ok
        # a crash after the entry committed but before the (separate) checkpoint: the next run signs it
        append(session, "order", {"i": 3}, TS + 3)
        session.commit()
        assert cp.due(session, TS + 4) is False  # 1 entry since the last checkpoint, not yet 2 and not old
        assert cp.checkpoint(session, TS + 4).size == 4
        session.commit()
        assert verify(session).ok


def test_verify_rejects_a_checkpoint_that_does_not_match_the_entries(engine: Engine, session: Session) -> None:
    cp = make_checkpointer(every_entries=3)
    for i in range(6):
        append(session, "order", {"i": i}, TS + i, checkpointer=cp)
    session.commit()
    with engine.begin() as connection:
        connection.exec_driver_sql(f"UPDATE ledger_checkpoints SET root_hash = '{'00' * 32}' WHERE size = 4")
    report = verify(session)
    assert (report.ok, report.first_bad_seq) == (False, 4)
    assert report.problem == "the checkpoint of size 4 does not match the entries"


def test_proof_bundles_verify_with_only_the_public_key(session: Session) -> None:
    cp = make_checkpointer(every_entries=5)
    for i in range(12):
        append(session, "fill", {"i": i, "price": 1.5 * i}, TS + i, checkpointer=cp)
    session.commit()
    cp.checkpoint(session, TS + 100)
    session.commit()
    keys = [cp.signer.verifier]
    sizes = list(session.scalars(select(LedgerCheckpoint.size).order_by(LedgerCheckpoint.size)))
    assert sizes == [1, 6, 11, 12]
    bundle = json.loads(json.dumps(proof_bundle_inclusion(session, 7)))  # through JSON, as a client gets it
    assert (bundle["tree_size"], verify_bundle(bundle, keys).size) == (12, 12)
    assert verify_bundle(proof_bundle_inclusion(session, 3, 6), keys).size == 6
    forged = {**bundle, "entry": bundle["entry"].replace('"i":6', '"i":60')}
    with pytest.raises(NoteError, match="does not match checkpoint 12"):
        verify_bundle(forged, keys)
    with pytest.raises(NoteError, match="no valid signature"):
        verify_bundle(bundle, [make_checkpointer().signer.verifier])
    consistency = proof_bundle_consistency(session, 6)
    assert verify_bundle(consistency, keys).size == 12
    with pytest.raises(NoteError):
        verify_bundle({**consistency, "proof": consistency["proof"][:-1]}, keys)
    with pytest.raises(ProofError, match="not in checkpoint 6"):
        proof_bundle_inclusion(session, 7, 6)
    with pytest.raises(ProofError, match="no checkpoint of tree size 5"):
        proof_bundle_consistency(session, 5)
    assert session.scalar(select(func.count()).select_from(LedgerCheckpoint)) == 4
    assert len(base64.b64decode(bundle["proof"][0])) == merkle.HASH_SIZE


def test_settings_name_the_log_keys() -> None:
    signer, _ = Signer.generate("cta-log")
    settings = LedgerSettings(log_keys=[signer.verifier.encode()])
    assert log_verifiers(settings) == [signer.verifier]
    with pytest.raises(ConfigError, match=r"ledger\.log_keys"):
        log_verifiers(LedgerSettings(log_keys=["nonsense"]))
    assert checkpoints.ED25519_TYPE == b"\x01"
