"""Crash drills of the whole worker: `cta serve` with the ccxt broker, trading a champion that changes its mind
every candle against the local exchange (replay clock), is SIGKILLed in the middle of an order (before send, after
send, after acknowledgement, during fill handling), restarted, killed again, and so on; a last run ends cleanly.

Unlike `test_order_drills.py`, which drives the order path directly, each run here is the worker as `cta serve` runs
it (`tests.serving.drill_serve`: the CLI's settings and `app.serve.serve`, with the drill checkpoint installed in the
broker): start-up reconciliation, the decision loop, the model, Feast and the API all restart each time. Afterwards:
every exchange order with our prefix has exactly one row with the exchange's status, fills and trade ids; no row is
left in flight; the position equals the exchange's balance; one decision per candle; the ledger verifies; no
decision's order was sent twice (client order ids are per candle). The default run does 4 cycles (one per crash
point); the slow one 20.
"""

from __future__ import annotations

import math
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sqlalchemy import func, select

from cta.config import Settings, load_settings
from cta.lake import Market
from cta.registry import promote, promotion_lock, registered_model_name
from features.registry import feature_names
from serving.db import make_engine, session_factory
from serving.models import Decision, Order
from serving.types import CrashPoint
from tests.conftest import CONFIG_DIR, subprocess_env
from tests.exchange_fixtures import EXCHANGE_API_KEY, EXCHANGE_API_SECRET, running_exchange, sync_client
from tests.serving.drill_driver import compare_books
from tests.serving.drill_hook import crash_message

pytestmark = pytest.mark.integration

BTC = Market("binance", "BTC/USDT", "1h")
PREFIX = "cta"
SEED = 20261125
RUN_TIMEOUT_S = 120
SPEED = 3_600.0  # one market hour per second: each restart finds a few closed candles waiting
REPO = Path(__file__).resolve().parents[2]
HARNESS = "tests.serving.drill_serve"  # `cta serve` with the drill checkpoint (run as `python -m`)


class HourParity(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Long on even hours, flat on odd ones (from the candle's hour features): an order on every candle, and the
    same decision for a candle whichever process makes it."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        angle = np.arctan2(model_input["hour_sin"].to_numpy(), model_input["hour_cos"].to_numpy())
        hour = np.rint(angle * 24 / (2 * math.pi)).astype(int) % 24
        return (hour % 2 == 0).astype("float64")


def worker_env(tmp_path: Path, url: str, **extra: str) -> dict[str, str]:
    return subprocess_env(
        tmp_path,
        CTA_API_KEY=EXCHANGE_API_KEY,
        CTA_API_SECRET=EXCHANGE_API_SECRET,
        CTA_EXCHANGE__API_URL=url,
        CTA_EXCHANGE__MARKET_TIME="replay",
        CTA_MARKETS__SYMBOLS='["BTC/USDT"]',
        CTA_MARKETS__TIMEFRAMES='["1h"]',
        CTA_TRAINING__TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
        CTA_TRAINING__ARTIFACT_ROOT=str(tmp_path / "mlruns"),
        CTA_SERVING__DATABASE_URL=f"sqlite:///{tmp_path / 'serving.db'}",
        CTA_SERVING__BROKER="ccxt",
        CTA_SERVING__CASH_BUFFER="0.1",  # the price moves between sizing and the fill
        CTA_SERVING__POLL_INTERVAL_S="0.05",
        CTA_SERVING__RECONCILE_EVERY_S="1",
        CTA_SERVING__API_PORT="0",
        CTA_SERVING__RISK__STALE_AFTER_BARS="1000",  # a restart takes several replayed hours
        # The drill is about crashes, not risk limits: which replayed hours a run lands on depends on how long each
        # restart takes, and a losing day must not block the clean run's orders that the last check counts.
        CTA_SERVING__RISK__DAILY_LOSS_LIMIT="1",
        CTA_SERVING__RISK__MAX_DRAWDOWN_HALT="1",
        **extra,
    )


def register_champion(settings: Settings) -> None:
    mlflow.set_tracking_uri(settings.training.tracking_uri)
    name = registered_model_name(BTC)
    example = pd.DataFrame([dict.fromkeys(feature_names(), 0.0)])
    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            name="model",
            python_model=HourParity(),
            signature=infer_signature(example, np.zeros(1)),
            registered_model_name=name,
        )
    lock = promotion_lock(settings, name)
    promote(MlflowClient(), name, "1", expected_champion=None, reason="drill", lock=lock)


def run_worker(env: dict[str, str], bars: int, log: Path, crash_at: CrashPoint | None = None) -> tuple[int, str]:
    """`cta serve --bars N` as an operator runs it, through the drill harness (killed at `crash_at` of its first
    order when given); its exit code and output."""
    with log.open("a") as out:
        out.write(f"\n--- run {crash_at.value if crash_at else 'clean'} ---\n")
    crash = [] if crash_at is None else ["--crash-at", crash_at.value]
    done = subprocess.run(
        [sys.executable, "-m", HARNESS, "--bars", str(bars), *crash],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    with log.open("a") as out:
        out.write(done.stdout + done.stderr)
    return done.returncode, done.stdout + done.stderr


def ends(output: str, chars: int = 2_500) -> str:
    """The start of a run's output (its restart: reconciliation, target, warm-up) and its end."""
    return output if len(output) <= 2 * chars else f"{output[:chars]}\n[...]\n{output[-chars:]}"


def crash_points(cycles: int, rng: random.Random) -> list[CrashPoint]:
    """Every point once per round of four, each round shuffled."""
    rounds = [rng.sample(list(CrashPoint), len(CrashPoint)) for _ in range(cycles // len(CrashPoint) + 1)]
    return [point for round_ in rounds for point in round_][:cycles]


@pytest.mark.parametrize(
    "cycles", [pytest.param(4, id="4-cycles"), pytest.param(20, id="20-cycles", marks=pytest.mark.slow)]
)
def test_worker_killed_mid_order_and_restarted_loses_and_doubles_nothing(cycles: int, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    with running_exchange(speed=SPEED) as exchange:
        env = worker_env(tmp_path, exchange.url)
        settings = load_settings(
            env={k: v for k, v in env.items() if k.startswith("CTA_") and k != "CTA_CONFIG_DIR"}, config_dir=CONFIG_DIR
        )
        register_champion(settings)

        plan = crash_points(cycles, random.Random(SEED))
        for point in plan:
            code, output = run_worker(env, bars=50, log=log, crash_at=point)
            assert code == -signal.SIGKILL, f"run planned to crash at {point} ended {code}:\n{ends(output)}"
            assert crash_message(point) in output
        # the last run has no crash: it resolves whatever the last crash left in flight (intents not found on the
        # exchange become REJECTED once they can no longer execute, ~7 s after them) and trades on
        code, output = run_worker(env, bars=12, log=log)
        assert code == 0, ends(output)

        client = sync_client(exchange.url)
        exchange_orders = client.fetch_orders("BTC/USDT", None, 1000)
        check = compare_books(
            session_factory(make_engine(settings.serving.database_url)),
            PREFIX,
            exchange_orders,
            client.fetch_my_trades("BTC/USDT", None, 1000),
            float(client.fetch_balance()["BTC"]["total"]),
            market=BTC,
        )
        posts = exchange.request_count("/api/v3/order", "POST")

    sessions = session_factory(make_engine(settings.serving.database_url))
    with sessions() as session:
        decisions = session.execute(select(Decision.candle_ts, func.count()).group_by(Decision.candle_ts)).all()
        rows = session.execute(select(Order.client_order_id, Order.status, Order.candle_ts)).all()
    ours = [o for o in exchange_orders if str(o.get("clientOrderId", "")).startswith(PREFIX + "-")]
    print(
        f"worker drills: {cycles} SIGKILLs at {[p.value for p in plan]}; exchange orders {len(ours)}, "
        f"rows {len(rows)}, create_order requests {posts}, duplicates {check.duplicates}, lost {check.lost}"
    )
    assert check.problems == []
    assert all(count == 1 for _, count in decisions)  # one decision per candle across every restart
    assert len({candle for _, _, candle in rows}) == len(rows)  # at most one order per candle
    assert posts == len(ours)  # no order was sent twice (each request created one exchange order)
    crashed_after_send = sum(point is not CrashPoint.BEFORE_SEND for point in plan)
    assert len(ours) >= crashed_after_send + 10  # the crashed orders that were sent, and the clean run's orders
