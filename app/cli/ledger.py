"""`cta ledger ...`: the ledger as a verifiable log: keys, signed checkpoints, proofs, the witness, the audit.

`verify` here replaces the chain-only check `app.cli.trading` registered: it checks the chain, the Merkle tree,
the signed checkpoints and the newest anchored checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli.root import console, ledger_app, settings_of
from app.cli.trading import serving_sessions
from cta.checkpoints import COSIGNATURE_V1_TYPE, ED25519_TYPE, NoteError, Signer, Verifier
from cta.config import Settings
from cta.errors import CTAError
from cta.logs import printable


def _checkpointer(settings: Settings) -> Any:
    from serving.ledger_log import Checkpointer

    checkpointer = Checkpointer.from_settings(settings.ledger, settings.secrets)
    if checkpointer is None:
        raise CTAError("no signing key: set CTA_LEDGER_SIGNING_KEY (cta ledger keygen makes one)")
    return checkpointer


def _log_keys(settings: Settings) -> list[Verifier]:
    from serving.ledger_log import log_verifiers, signer_from_secret

    return log_verifiers(settings.ledger, signer_from_secret(settings.secrets))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _utc(seconds: int) -> str:
    """A cosignature's timestamp as UTC text (a year past 9999 shown as the number)."""
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return f"{seconds} s"


@ledger_app.command("keygen")
def keygen(
    name: Annotated[str, typer.Argument(help="The key's name, e.g. cta-log-2026 or witness-alice.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the private key (created, mode 0600).")],
    witness: Annotated[
        bool, typer.Option("--witness", help="A witness's key: its verifier key is for cosignatures (type 0x04).")
    ] = False,
) -> None:
    """Make an Ed25519 key: the private key goes to --out (put it in CTA_LEDGER_SIGNING_KEY, or with --witness in
    CTA_LEDGER_WITNESS_KEY), the verifier key is printed (add it to ledger.log_keys, or ledger.witness_keys: with
    --witness it is the C2SP tlog-cosignature key, type 0x04)."""
    try:
        signer, private = Signer.generate(name, COSIGNATURE_V1_TYPE if witness else ED25519_TYPE)
    except NoteError as e:
        raise CTAError(str(e)) from e
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except (OSError, ValueError) as e:  # exists, no such directory, not allowed, a NUL in the path
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise CTAError(f"cannot create the key file {printable(str(out))!r}: {reason}") from e
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(private + "\n")
    console.print((signer.cosigner if witness else signer.verifier).encode(), soft_wrap=True)


@ledger_app.command("checkpoint")
def checkpoint(
    ctx: typer.Context,
    watch: Annotated[bool, typer.Option("--watch", help="Keep running: sign whenever one is due.")] = False,
    poll_s: Annotated[float, typer.Option("--poll-s", help="With --watch: how often to look.")] = 1.0,
) -> None:
    """Sign a checkpoint of the ledger's tree now (if it grew) and publish the checkpoints to the anchors;
    with --watch, every ledger.checkpoint_every_entries entries or ledger.checkpoint_every_s seconds."""
    from serving.ledger_anchor import AnchorConflict, publish_pending, stores_from_settings

    settings = settings_of(ctx)
    checkpointer = _checkpointer(settings)
    stores = stores_from_settings(settings.ledger)
    sessions = serving_sessions(settings)
    while True:
        with sessions() as session:
            now = _now_ms()
            if not watch or checkpointer.due(session, now):
                row = checkpointer.checkpoint(session, now)
                session.commit()
                try:
                    published = publish_pending(session, stores)
                except AnchorConflict as e:
                    raise CTAError(f"refused to anchor checkpoint {row.size}: {e}") from e
                if not watch:
                    console.print(row.note, end="", soft_wrap=True, markup=False, highlight=False)
                    if published:
                        console.print(f"anchored: sizes {', '.join(map(str, published))}")
        if not watch:
            return
        time.sleep(poll_s)


@ledger_app.command("prove")
def prove(
    ctx: typer.Context,
    seq: Annotated[int | None, typer.Argument(help="The entry to prove included.")] = None,
    size: Annotated[int | None, typer.Option("--size", help="Against the checkpoint of this size.")] = None,
    old: Annotated[int | None, typer.Option("--from", help="Consistency proof from this checkpoint size.")] = None,
    new: Annotated[int | None, typer.Option("--to", help="... to this one (the latest by default).")] = None,
) -> None:
    """Print a proof bundle (JSON): the inclusion of entry SEQ, or the consistency of two checkpoints (--from);
    `cta ledger check-proof` or any RFC 9162 verifier checks it with the log's public key alone."""
    from serving.ledger_log import ProofError, proof_bundle_consistency, proof_bundle_inclusion

    if (seq is None) == (old is None):
        raise CTAError("give an entry SEQ (inclusion) or --from SIZE (consistency)")
    with serving_sessions(settings_of(ctx), read_only=True)() as session:
        try:
            bundle = (
                proof_bundle_inclusion(session, seq, size)
                if seq is not None
                else proof_bundle_consistency(session, old or 0, new)
            )
        except (ProofError, ValueError) as e:
            raise CTAError(str(e)) from e
    typer.echo(json.dumps(bundle, indent=2))


@ledger_app.command("check-proof")
def check_proof(
    ctx: typer.Context,
    bundle_file: Annotated[Path, typer.Argument(help="A proof bundle from `cta ledger prove` or the API.")],
    key: Annotated[list[str] | None, typer.Option("--key", help="A log public key (default: ledger.log_keys).")] = None,
) -> None:
    """Check a proof bundle with nothing but the log's public key(s): no database needed."""
    from serving.ledger_log import verify_bundle

    try:
        text = bundle_file.read_text(encoding="utf-8")
    except (OSError, ValueError) as e:  # missing, a directory, unreadable, not UTF-8, a NUL in the path
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise CTAError(f"cannot read the proof bundle {printable(str(bundle_file))!r}: {reason}") from e
    try:
        keys = [Verifier.parse(k) for k in key] if key else _log_keys(settings_of(ctx))
        checkpoint = verify_bundle(json.loads(text), keys)
    except (NoteError, ValueError, TypeError, KeyError) as e:
        raise CTAError(f"proof refused: {e}") from e
    console.print(f"proof ok: checkpoint {checkpoint.origin} size {checkpoint.size}")


@ledger_app.command("verify")
def verify(ctx: typer.Context) -> None:
    """Check the ledger: the hash chain, the Merkle tree, the signed checkpoints, and the entries against the
    newest anchored checkpoint (so a rewritten and re-hashed database fails). Exit code 1 when broken."""
    from serving.ledger_anchor import audit, stores_from_settings
    from serving.ledger_log import witness_verifiers

    settings = settings_of(ctx)
    keys = _log_keys(settings)
    stores = stores_from_settings(settings.ledger)
    with serving_sessions(settings, read_only=True)() as session:
        result = audit(session, stores, keys, settings.ledger.origin, witness_verifiers(settings.ledger))
    for warning in result.warnings:
        console.print(f"warning: {warning}")
    report = result.report
    if not report.ok:
        raise CTAError(f"ledger broken at entry {report.first_bad_seq}: {report.problem}")
    line = f"ledger ok: {report.entries} entries, hash chain and Merkle tree intact"
    if result.signatures_checked:
        line += f", {result.signatures_checked} signed checkpoints"
    if result.anchor is not None:
        line += f", matches the anchored checkpoint of size {result.anchor.size} ({result.anchor_where})"
        if result.witnesses:
            cosigned = [f"{name} at {_utc(ts)}" for name, ts in result.witnesses.items()]
            line += f" cosigned by {', '.join(cosigned)}"
    console.print(line, soft_wrap=True)


@ledger_app.command("witness")
def witness(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option("--url", help="The worker API (default: read the database).")] = None,
    every_s: Annotated[float | None, typer.Option("--every-s", help="Keep running, checking this often.")] = None,
    state: Annotated[Path | None, typer.Option("--state", help="The last cosigned checkpoint (a file).")] = None,
) -> None:
    """Cosign the log's latest checkpoint with the witness key (CTA_LEDGER_WITNESS_KEY) after verifying that it
    extends the last one this witness cosigned; refuses a fork or a shrinking log. Publishes the cosigned
    checkpoint to the anchors."""
    from serving.ledger_anchor import AnchorConflict, publish, stores_from_settings
    from serving.ledger_log import signer_from_secret
    from serving.ledger_witness import DatabaseLog, HttpLog, LogClient, Witness, WitnessRefused

    settings = settings_of(ctx)
    signer = signer_from_secret(settings.secrets, "ledger_witness_key")
    if signer is None:
        raise CTAError("no witness key: set CTA_LEDGER_WITNESS_KEY (cta ledger keygen makes one)")
    from serving.ledger_log import log_verifiers

    keys = log_verifiers(settings.ledger)
    if not keys:
        raise CTAError("the witness needs the log's public keys: set ledger.log_keys")
    token = settings.secrets.api_token.get_secret_value() if settings.secrets.api_token else None
    log: LogClient = HttpLog(url, token) if url else DatabaseLog(serving_sessions(settings, read_only=True))
    path = state or Path(settings.ledger.witness_state)
    the_witness = Witness(signer, keys, settings.ledger.origin, path)
    stores = stores_from_settings(settings.ledger)
    while True:
        try:
            cosigned = the_witness.witness(log)
        except WitnessRefused as e:
            raise CTAError(str(e)) from e
        if cosigned is None:
            console.print("no checkpoint to witness yet")
        else:
            try:
                size = publish(cosigned, stores) if stores else None
            except AnchorConflict as e:
                raise CTAError(f"refused to anchor the cosigned checkpoint: {e}") from e
            console.print(cosigned, end="", soft_wrap=True, markup=False, highlight=False)
            if size is not None:
                console.print(f"cosigned checkpoint {size} anchored")
        if every_s is None:
            return
        time.sleep(every_s)
