"""Crash drills: a worker process placing orders is SIGKILLed at a random point of a random order, restarted, and so
on; at the end no order is lost or doubled and the database matches the exchange.

Each lane is one exchange and one database. Its driver runs (tests/serving/drill_driver.py, each run a fresh process)
crash at increasing random order indices, each at one of the four crash points (the driver's `--crash-at` /
`--crash-on` install the drill checkpoint, `tests.serving.drill_hook`), each restart resuming from the database; a
last run without them finishes the sequence. Lanes run side by side. The default run does
20 crash/restart cycles, the slow one 100 (seeded: the same plan every time).

The cycles start the driver from multiprocessing's forkserver, which imports the driver once and forks a fresh
process per run: a run costs ~0.4 s instead of ~3 s of imports. One test runs the command line itself
(`python -m tests.serving.drill_driver ...`) through a crash and a restart.
"""

from __future__ import annotations

import multiprocessing
import random
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from serving.db import make_engine, session_factory
from serving.types import CrashPoint
from tests.exchange_fixtures import running_exchange, sync_client
from tests.serving import drill_driver
from tests.serving.drill_driver import BookCheck, compare_books, order_candle_ts
from tests.serving.drill_hook import crash_message

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PREFIX = "drill"
SEED = 20240601
RUN_TIMEOUT_S = 60


@dataclass
class LaneResult:
    crashes: list[tuple[int, CrashPoint]]
    check: BookCheck
    runs: list[int] = field(default_factory=list)  # exit codes, in order


def driver_args(db_url: str, url: str, orders: int, crash: tuple[int, CrashPoint] | None) -> list[str]:
    """The driver's command line; with `crash` (order index, point), the run SIGKILLs itself there."""
    args = ["--db", db_url, "--url", url, "--orders", str(orders), "--prefix", PREFIX]
    return args if crash is None else [*args, "--crash-at", crash[1].value, "--crash-on", str(crash[0])]


def check_exit(code: int | None, output: str) -> int:
    if code not in {0, -signal.SIGKILL}:
        raise AssertionError(f"driver failed ({code}):\n{output[-4000:]}")
    assert code is not None
    return code


def run_driver_command(db_url: str, url: str, orders: int, crash: tuple[int, CrashPoint] | None) -> int:
    """`python -m tests.serving.drill_driver ...` as an operator would run it."""
    command = [sys.executable, "-m", drill_driver.__name__, *driver_args(db_url, url, orders, crash)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    return check_exit(done.returncode, done.stderr)


def run_driver_forked(db_url: str, url: str, orders: int, crash: tuple[int, CrashPoint] | None, output: Path) -> int:
    """The driver's main in a fresh process forked from the preloaded forkserver."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([drill_driver.__name__])
    process = context.Process(
        target=drill_driver.main_in_child, args=(driver_args(db_url, url, orders, crash), str(output))
    )
    logged_before = output.stat().st_size if output.exists() else 0
    process.start()
    process.join(RUN_TIMEOUT_S)
    if process.is_alive():
        process.kill()
        process.join()
        raise AssertionError(f"driver still running after {RUN_TIMEOUT_S}s:\n{output.read_text()[-4000:]}")
    text = output.read_text() if output.exists() else ""
    return check_exit(_exit_code(process.exitcode, text[logged_before:], crash), text)


def _exit_code(code: int | None, logged: str, crash: tuple[int, CrashPoint] | None) -> int | None:
    """The run's exit code. multiprocessing's forkserver reports 255 when it loses a child's exit status
    ("ended abnormally", seen about once in 100 SIGKILLs on a loaded machine): a planned crash run whose last
    line is the drill's own "SIGKILL at <point>" was killed as planned."""
    last = logged.strip().splitlines()[-1] if logged.strip() else ""
    if code == 255 and crash is not None and last.endswith(crash_message(crash[1])):
        return -signal.SIGKILL
    return code


def crash_plan(rng: random.Random, crashes: int, orders: int) -> list[tuple[int, CrashPoint]]:
    """Increasing order indices (each run crashes on an order the previous runs have not reached) and crash points
    that cycle through all four in a shuffled order."""
    indices = sorted(rng.sample(range(orders), crashes))
    points = [p for _ in range(crashes // len(CrashPoint) + 1) for p in rng.sample(list(CrashPoint), len(CrashPoint))]
    return list(zip(indices, points[:crashes], strict=True))


def run_lane(lane: int, crashes: int, orders: int, tmp_path: Path) -> LaneResult:
    rng = random.Random(f"{SEED}-{lane}")
    plan = crash_plan(rng, crashes, orders)
    db_url = f"sqlite:///{tmp_path / f'lane{lane}.db'}"
    with running_exchange(initial_balances={"USDT": 100_000.0, "BTC": 1.0}) as server:
        output = tmp_path / f"lane{lane}.log"
        codes = [run_driver_forked(db_url, server.url, orders, crash, output) for crash in plan]
        codes.append(run_driver_forked(db_url, server.url, orders, None, output))
        check = books(db_url, server.url, orders)
    return LaneResult(plan, check, codes)


def books(db_url: str, url: str, orders: int) -> BookCheck:
    """The drill's invariants, from the exchange's orders, trades and balance as ccxt reads them."""
    client = sync_client(url)
    engine = make_engine(db_url)
    try:
        return compare_books(
            session_factory(engine),
            PREFIX,
            client.fetch_orders("BTC/USDT", None, 1000),
            client.fetch_my_trades("BTC/USDT", None, 1000),
            float(client.fetch_balance()["BTC"]["total"]),
            intended=[order_candle_ts(i) for i in range(orders)],
        )
    finally:
        engine.dispose()


def run_drills(lanes: int, crashes: int, orders: int, tmp_path: Path) -> list[LaneResult]:
    with ThreadPoolExecutor(max_workers=lanes) as pool:
        futures = [pool.submit(run_lane, lane, crashes, orders, tmp_path) for lane in range(lanes)]
        return [f.result() for f in futures]


@pytest.mark.parametrize(
    ("lanes", "crashes", "orders"),
    [
        pytest.param(4, 5, 8, id="20-cycles"),
        pytest.param(10, 10, 14, id="100-cycles", marks=pytest.mark.slow),
    ],
)
def test_crash_restart_cycles_lose_and_double_nothing(lanes: int, crashes: int, orders: int, tmp_path: Path) -> None:
    results = run_drills(lanes, crashes, orders, tmp_path)

    cycles = sum(code == -signal.SIGKILL for r in results for code in r.runs)
    points = {point for r in results for _, point in r.crashes}
    problems = [f"lane {i}: {p}" for i, r in enumerate(results) for p in r.check.problems]
    exchange_orders = sum(r.check.exchange_orders for r in results)
    print(
        f"drills: {cycles} crash/restart cycles over {lanes} lanes of {orders} orders; "
        f"duplicates {sum(r.check.duplicates for r in results)}, lost {sum(r.check.lost for r in results)}, "
        f"exchange orders {exchange_orders}, db rows {sum(r.check.db_rows for r in results)}"
    )
    assert cycles == lanes * crashes  # every planned crash happened (SIGKILL), and every last run finished cleanly
    assert all(r.runs[-1] == 0 for r in results)
    assert points == set(CrashPoint)
    assert problems == []
    assert all(r.check.exchange_orders == orders and r.check.duplicates == r.check.lost == 0 for r in results)


def test_driver_command_line_crashes_and_resumes(tmp_path: Path) -> None:
    """The command line itself: SIGKILLed after sending order 1, restarted, it finishes without sending it again."""
    db_url = f"sqlite:///{tmp_path / 'cli.db'}"
    with running_exchange(initial_balances={"USDT": 100_000.0, "BTC": 1.0}) as server:
        crashed = run_driver_command(db_url, server.url, 3, (1, CrashPoint.AFTER_SEND))
        finished = run_driver_command(db_url, server.url, 3, None)
        check = books(db_url, server.url, 3)
        posts = server.request_count("/api/v3/order", "POST")
    assert (crashed, finished) == (-signal.SIGKILL, 0)
    assert check.problems == [] and check.exchange_orders == 3 and posts == 3
