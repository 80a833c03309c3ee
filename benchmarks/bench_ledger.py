"""The ledger as a Merkle log: appends per second with checkpoints off and on (SQLite file, one transaction per
append, as the worker commits), and inclusion / consistency proofs at 1 M entries (the pure `cta.merkle`
functions over 1 M leaf hashes: size and time per proof, and the one-off cost of building the tree). Beside them, in
the same run, the alternative: pymerkle's in-memory RFC 6962 tree (the independent implementation the tests
cross-check against) building the same number of entries and proving inclusion and consistency in it, and the ratios.

    python -m benchmarks.run ledger [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from cta import merkle
from cta.checkpoints import Signer
from serving.db import make_engine, session_factory, upgrade
from serving.ledger import append, verify
from serving.ledger_log import Checkpointer, CheckpointPolicy

TS = 1_700_000_000_000


def _appends(entries: int, checkpoint_every: int | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'ledger.db'}")
        upgrade(engine)
        sessions = session_factory(engine)
        checkpointer = None
        if checkpoint_every is not None:
            signer, _ = Signer.generate("bench-log")
            checkpointer = Checkpointer(signer, "bench/ledger", CheckpointPolicy(checkpoint_every, 10**12))
        payload = {"market": "binance:BTC/USDT:1h", "target": 0.5, "prediction": 0.61, "reason": "bench"}
        started = time.perf_counter()
        with sessions() as session:
            for i in range(entries):
                append(session, "decision", {**payload, "i": i}, TS + i, checkpointer=checkpointer)
                session.commit()
        elapsed = time.perf_counter() - started
        with sessions() as session:
            verify_started = time.perf_counter()
            assert verify(session).ok
            verify_s = time.perf_counter() - verify_started
        engine.dispose()
    label = "off" if checkpoint_every is None else f"every {checkpoint_every}"
    return {
        "case": f"append, checkpoints {label}",
        "entries": entries,
        "appends_per_s": entries / elapsed,
        "ms_per_append": 1000 * elapsed / entries,
        "verify_s": verify_s,
    }


def _proofs(leaves: int, samples: int) -> list[dict[str, Any]]:
    hashes = [merkle.leaf_hash(i.to_bytes(8, "big")) for i in range(leaves)]
    started = time.perf_counter()
    levels = merkle.Levels(hashes)
    build_s = time.perf_counter() - started
    root = levels.root()
    step = max(1, leaves // samples)
    inclusion_times, inclusion_sizes, verify_times = [], [], []
    for index in range(0, leaves, step):
        t0 = time.perf_counter()
        proof = merkle.inclusion_proof(index, leaves, levels)
        t1 = time.perf_counter()
        assert merkle.verify_inclusion(hashes[index], index, leaves, proof, root)
        t2 = time.perf_counter()
        inclusion_times.append(t1 - t0)
        verify_times.append(t2 - t1)
        inclusion_sizes.append(len(proof))
    consistency_times, consistency_sizes, consistency_verify = [], [], []
    for old in range(1, leaves, step):
        t0 = time.perf_counter()
        proof = merkle.consistency_proof(old, leaves, levels)
        t1 = time.perf_counter()
        assert merkle.verify_consistency(old, leaves, levels.root(old), root, proof)
        t2 = time.perf_counter()
        consistency_times.append(t1 - t0)
        consistency_verify.append(t2 - t1)
        consistency_sizes.append(len(proof))
    return [
        {"case": f"build tree of {leaves:,} leaf hashes", "entries": leaves, "seconds": build_s},
        {
            "case": "inclusion proof",
            "entries": leaves,
            "proof_hashes_max": max(inclusion_sizes),
            "proof_bytes_max": 32 * max(inclusion_sizes),
            "prove_us_median": 1e6 * statistics.median(inclusion_times),
            "verify_us_median": 1e6 * statistics.median(verify_times),
        },
        {
            "case": "consistency proof",
            "entries": leaves,
            "proof_hashes_max": max(consistency_sizes),
            "proof_bytes_max": 32 * max(consistency_sizes),
            "prove_us_median": 1e6 * statistics.median(consistency_times),
            "verify_us_median": 1e6 * statistics.median(consistency_verify),
        },
    ]


def _versus_pymerkle(leaves: int, samples: int) -> list[dict[str, Any]]:
    """The same entries through cta.merkle and through pymerkle: build (entries hashed as leaves), then median
    inclusion and consistency proof times; each side verifies its own proofs' first answer against the other's root."""
    import pymerkle

    data = [f"entry {i}".encode() for i in range(leaves)]
    t0 = time.perf_counter()
    levels = merkle.Levels([merkle.leaf_hash(d) for d in data])
    ours_build = time.perf_counter() - t0
    tree = pymerkle.InmemoryTree(algorithm="sha256")
    t0 = time.perf_counter()
    for d in data:
        tree.append_entry(d)
    theirs_build = time.perf_counter() - t0
    assert tree.get_state() == levels.root()
    step = max(1, leaves // samples)
    ours_inc, theirs_inc, ours_con, theirs_con = [], [], [], []
    for index in range(0, leaves, step):
        t0 = time.perf_counter()
        merkle.inclusion_proof(index, leaves, levels)
        t1 = time.perf_counter()
        tree.prove_inclusion(index + 1, leaves)  # pymerkle counts leaves from 1
        t2 = time.perf_counter()
        ours_inc.append(t1 - t0)
        theirs_inc.append(t2 - t1)
    for old in range(1, leaves, step):
        t0 = time.perf_counter()
        merkle.consistency_proof(old, leaves, levels)
        t1 = time.perf_counter()
        tree.prove_consistency(old, leaves)
        t2 = time.perf_counter()
        ours_con.append(t1 - t0)
        theirs_con.append(t2 - t1)
    rows = []
    for case, ours, theirs in (
        ("build from entries", [ours_build], [theirs_build]),
        ("inclusion proof (median)", ours_inc, theirs_inc),
        ("consistency proof (median)", ours_con, theirs_con),
    ):
        mine, other = statistics.median(ours), statistics.median(theirs)
        rows.append(
            {
                "case": f"{case}: cta.merkle vs pymerkle",
                "entries": leaves,
                "cta_us": 1e6 * mine,
                "pymerkle_us": 1e6 * other,
                "pymerkle_over_cta": other / mine if mine else None,
            }
        )
    return rows


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    entries = 300 if args.quick else 2000
    leaves = 50_000 if args.quick else 1_000_000
    rows = [_appends(entries, None), _appends(entries, 100), _appends(entries, 1)]
    rows += _proofs(leaves, samples=200)
    rows += _versus_pymerkle(20_000 if args.quick else 200_000, samples=100)
    return rows
