"""`cta exchange serve` warns when its candle files do not cover the replay window it was given."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from cta.exchange_server import LocalExchangeSettings
from cta.exchange_server.candle_store import CandleStore
from cta.exchange_server.runner import build_service, coverage_warnings, warn_if_uncovered

HOUR_MS = 3_600_000
T0 = 1_656_633_600_000  # 2022-07-01T00:00Z


def frame(start_ms: int, count: int, step_ms: int = HOUR_MS) -> pd.DataFrame:
    ts = [start_ms + i * step_ms for i in range(count)]
    return pd.DataFrame({"timestamp": ts, "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 10.0})


@pytest.fixture
def store() -> CandleStore:
    return CandleStore.from_frames(
        {("BTC/USDT", "1h"): frame(T0, 100), ("ETH/USDT", "1h"): frame(T0 + 50 * HOUR_MS, 100)}
    )


def test_covered_window_says_nothing(store: CandleStore) -> None:
    assert coverage_warnings(store, T0 + 80 * HOUR_MS, T0 + 60 * HOUR_MS) == []
    assert coverage_warnings(store, T0 + 100 * HOUR_MS) == []  # the end of the data is still covered


def test_each_uncovered_series_is_named_with_the_files_range(store: CandleStore) -> None:
    # the backfill start precedes ETH's first candle
    assert coverage_warnings(store, T0 + 80 * HOUR_MS, T0) == [
        "ETH/USDT 1h: files hold 2022-07-03T02:00:00Z .. 2022-07-07T06:00:00Z"
    ]
    # the replay start is past BTC's last candle
    assert coverage_warnings(store, T0 + 120 * HOUR_MS) == [
        "BTC/USDT 1h: files hold 2022-07-01T00:00:00Z .. 2022-07-05T04:00:00Z"
    ]
    # a replay start before every file: both
    assert len(coverage_warnings(store, T0 - HOUR_MS)) == 2


def test_only_the_markets_clients_ask_for_are_checked(store: CandleStore) -> None:
    assert coverage_warnings(store, T0 + 120 * HOUR_MS, markets=[("ETH/USDT", "1h")]) == []
    assert coverage_warnings(store, T0 + 80 * HOUR_MS, markets=[("BTC/USDT", "4h"), ("SOL/USDT", "1h")]) == [
        "BTC/USDT 4h: no candle file (timeframes held for BTC/USDT: 1h)",
        "SOL/USDT 1h: no candle file (timeframes held for SOL/USDT: none)",
    ]


def test_the_warning_names_window_files_and_series(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    frame(T0, 48).to_csv(tmp_path / "BTC_USDT-1h.csv", index=False)
    service = build_service(LocalExchangeSettings(port=0, data_dir=tmp_path, start="2022-07-05T00:00:00Z"))
    with caplog.at_level(logging.WARNING, logger="cta.exchange_server.runner"):
        problems = warn_if_uncovered(service, history_start_ms=T0 - 24 * HOUR_MS, markets=[("BTC/USDT", "1h")])
    assert problems == ["BTC/USDT 1h: files hold 2022-07-01T00:00:00Z .. 2022-07-03T00:00:00Z"]
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    text = record.getMessage()
    assert str(tmp_path) in text and "2022-06-30T00:00:00Z .. 2022-07-05T00:00:00Z" in text
    assert "BTC/USDT 1h: files hold 2022-07-01T00:00:00Z .. 2022-07-03T00:00:00Z" in text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cta.exchange_server.runner"):
        assert warn_if_uncovered(service, history_start_ms=T0 + HOUR_MS, markets=[("BTC/USDT", "1h")]) != []
        service.clock.set(T0 + 47 * HOUR_MS)
        assert warn_if_uncovered(service, history_start_ms=T0, markets=[("BTC/USDT", "1h")]) == []
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_cta_exchange_serve_warns_about_the_configured_window(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT, subprocess_env

    env = subprocess_env(tmp_path, CTA_INGEST__START="2020-06-01", CTA_MARKETS__TIMEFRAMES='["1h", "4h"]')
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "exchange", "serve", "--port", "0", "--speed", "0"],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "ETH/USDT 4h" in line:
                break
        text = "".join(lines)
        assert "WARNING" in text and "2020-06-01T00:00:00Z .. 2022-09-01T00:00:00Z" in text, text
        assert "ingest.start" in text and "local_exchange.start" in text
        assert "BTC/USDT 1h: files hold 2021-01-01T00:00:00Z .. 2022-10-11T11:00:00Z" in text
        assert "BTC/USDT 4h: no candle file (timeframes held for BTC/USDT: 1m, 1h)" in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
