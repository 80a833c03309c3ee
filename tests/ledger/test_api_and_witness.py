"""The ledger's API routes over a real server (checkpoint, inclusion and consistency proofs checked with only the
public key), and the witness: cosigns (C2SP tlog-cosignature/v1, at its clock's time, checked with its vkey alone)
only a checkpoint that extends the last one it saw, refuses a forking or shrinking log and says so, over the
database and over HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from cta.checkpoints import Note, Signer, Verifier, open_checkpoint, verify_cosignature
from cta.clock import ManualClock
from serving.api import ApiServer, build_app
from serving.ledger import append
from serving.ledger_log import Checkpointer, CheckpointPolicy, verify_bundle
from serving.ledger_witness import DatabaseLog, HttpLog, Witness, WitnessRefused
from serving.metrics import WorkerMetrics

TOKEN = "ledger-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TS = 1_700_000_000_000
ORIGIN = "cta.test/ledger"


def log_key() -> Checkpointer:
    signer, _ = Signer.generate("cta-log")
    return Checkpointer(signer, ORIGIN, CheckpointPolicy(every_entries=5, every_ms=10**12))


def fill(session: Session, cp: Checkpointer, start: int, count: int) -> None:
    for i in range(start, start + count):
        append(session, "order", {"i": i}, TS + i, checkpointer=cp)
    session.commit()


async def _get(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession(base_url=url) as client, client.get(path, headers=headers) as response:
        return response.status, await response.json()


@pytest.mark.integration
def test_api_serves_the_checkpoint_and_proofs(session: Session, readers: sessionmaker[Session]) -> None:
    cp = log_key()
    keys = [cp.signer.verifier]

    async def scenario() -> None:
        server = ApiServer(build_app(sessions=readers, metrics=WorkerMetrics(), status=dict, token=TOKEN))
        url = await server.start("127.0.0.1", 0)
        try:
            assert (await _get(url, "/api/ledger/checkpoint", AUTH))[0] == 404  # none yet
            await asyncio.to_thread(fill, session, cp, 0, 11)
            status, body = await _get(url, "/api/ledger/checkpoint", AUTH)
            assert status == 200 and body["size"] == 11
            assert open_checkpoint(body["checkpoint"], keys).size == 11
            status, inclusion = await _get(url, "/api/ledger/proof/inclusion?seq=4", AUTH)
            assert status == 200 and verify_bundle(inclusion, keys).size == 11
            status, consistency = await _get(url, "/api/ledger/proof/consistency?from=6&to=11", AUTH)
            assert status == 200 and verify_bundle(consistency, keys).size == 11
            assert (await _get(url, "/api/ledger/proof/inclusion?seq=12", AUTH))[0] == 404
            assert (await _get(url, "/api/ledger/proof/consistency?from=7", AUTH))[0] == 404  # no such checkpoint
            assert (await _get(url, "/api/ledger/proof/inclusion?seq=x", AUTH))[0] == 400
            assert (await _get(url, "/api/ledger/checkpoint"))[0] == 401  # behind the token like every /api route
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_the_witness_cosigns_a_growing_log(tmp_path: Path, session: Session, readers: sessionmaker[Session]) -> None:
    cp = log_key()
    witness_key, _ = Signer.generate("witness-1")
    clock = ManualClock(TS)
    witness = Witness(witness_key, [cp.signer.verifier], ORIGIN, tmp_path / "witness" / "state.note", clock)
    vkey = Verifier.parse(witness_key.cosigner.encode())  # what a client is given: the witness's vkey alone
    log = DatabaseLog(readers)
    assert witness.witness(log) is None  # nothing signed yet
    fill(session, cp, 0, 3)
    first = witness.witness(log)
    assert first is not None
    assert verify_cosignature(first, vkey) == TS // 1000  # the time of cosigning, from the witness's clock
    note = Note.parse(first)
    assert note.signed_by([vkey]) == ["witness-1"]
    assert note.signed_by([cp.signer.verifier]) == ["cta-log"]
    fill(session, cp, 3, 9)
    clock.advance(61_000)
    second = witness.witness(log)
    assert second is not None and open_checkpoint(second, [cp.signer.verifier]).size == 11
    assert verify_cosignature(second, vkey) == TS // 1000 + 61
    assert witness.last_seen() is not None and witness.last_seen()[0].size == 11  # type: ignore[index]
    assert witness.witness(log) == second  # the same checkpoint again: cosigned again, nothing refused


def test_the_witness_refuses_a_forked_log(
    tmp_path: Path, engine: Engine, session: Session, readers: sessionmaker[Session]
) -> None:
    """The operator (holding the log's key) rewrites entry 2 and re-signs: the witness that saw the old history
    refuses every checkpoint of the new one, shorter, equal or longer."""
    cp = log_key()
    witness_key, _ = Signer.generate("witness-1")
    witness = Witness(witness_key, [cp.signer.verifier], ORIGIN, tmp_path / "state.note")
    log = DatabaseLog(readers)
    fill(session, cp, 0, 6)  # checkpoints 1 and 6
    assert witness.witness(log) is not None  # saw size 6

    with engine.begin() as connection:
        for table in ("ledger_checkpoints", "ledger_merkle_nodes", "ledger_entries"):
            connection.exec_driver_sql(f"DELETE FROM {table}")
    session.expunge_all()
    append(session, "order", {"i": 0}, TS, checkpointer=cp)
    append(session, "order", {"i": "rewritten"}, TS + 1, checkpointer=cp)
    fill(session, cp, 2, 2)  # 4 entries: the tree shrank
    cp.checkpoint(session, TS + 10)
    session.commit()
    with pytest.raises(WitnessRefused, match="shrank from 6 to 4"):
        witness.witness(log)
    fill(session, cp, 4, 2)  # 6 entries: another root for size 6
    cp.checkpoint(session, TS + 20)
    session.commit()
    with pytest.raises(WitnessRefused, match="forked: two different roots for tree size 6"):
        witness.witness(log)
    fill(session, cp, 6, 4)  # 10 entries: longer, but not an extension of what the witness saw
    cp.checkpoint(session, TS + 30)
    session.commit()
    with pytest.raises(WitnessRefused, match="does not extend checkpoint 6"):
        witness.witness(log)
    assert witness.last_seen()[0].size == 6  # type: ignore[index]  # it kept the history it cosigned


def test_the_witness_refuses_a_checkpoint_not_signed_by_the_log(tmp_path: Path) -> None:
    cp, impostor = log_key(), log_key()
    witness_key, _ = Signer.generate("witness-1")
    witness = Witness(witness_key, [cp.signer.verifier], ORIGIN, tmp_path / "state.note")

    class Forged:
        def latest_checkpoint(self) -> str:
            from cta.checkpoints import Checkpoint, sign

            return sign(Checkpoint(ORIGIN, 3, b"\x00" * 32).body(), impostor.signer)

        def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
            return []

    with pytest.raises(WitnessRefused, match="signed by a known log key"):
        witness.witness(Forged())


@pytest.mark.integration
def test_the_witness_reads_the_log_over_http(tmp_path: Path, session: Session, readers: sessionmaker[Session]) -> None:
    cp = log_key()
    witness_key, _ = Signer.generate("witness-1")
    witness = Witness(witness_key, [cp.signer.verifier], ORIGIN, tmp_path / "state.note")
    fill(session, cp, 0, 6)

    async def scenario() -> list[str | None]:
        server = ApiServer(build_app(sessions=readers, metrics=WorkerMetrics(), status=dict, token=TOKEN))
        url = await server.start("127.0.0.1", 0)
        try:
            log = HttpLog(url, TOKEN)
            first = await asyncio.to_thread(witness.witness, log)
            await asyncio.to_thread(fill, session, cp, 6, 10)
            second = await asyncio.to_thread(witness.witness, log)
            return [first, second]
        finally:
            await server.stop()

    first, second = asyncio.run(scenario())
    assert first is not None and second is not None
    assert open_checkpoint(second, [cp.signer.verifier]).size == 16
    assert verify_cosignature(second, Verifier.parse(witness_key.cosigner.encode())) > 0
