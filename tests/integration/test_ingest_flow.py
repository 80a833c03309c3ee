"""`ingest_flow` under a real (temporary) Prefect API, against the local exchange over HTTP."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from cta.components import make_lake, make_quarantine
from cta.config import Settings
from cta.errors import DataValidationError, ExchangeError
from cta.exchange_server import LocalExchangeServer
from flows.deployments import refresh_deployments, refresh_schedules
from flows.ingest import ingest_flow
from tests.conftest import load_test_settings
from tests.exchange_fixtures import EXCHANGE_START_MS
from tests.factories import HOUR_MS

pytestmark = pytest.mark.integration
START = "2022-05-25"
START_MS = 1_653_436_800_000


async def flow_runs_by_state() -> dict[str, int]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        runs = await client.read_flow_runs()
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.state_name or "?"] = counts.get(run.state_name or "?", 0) + 1
    return counts


def test_ingest_flow_backfills_every_configured_market(
    prefect_harness: None, exchange_server: LocalExchangeServer, settings_for: Any
) -> None:
    settings = settings_for(exchange={"api_url": exchange_server.url}, ingest={"start": START})
    before = asyncio.run(flow_runs_by_state()).get("Completed", 0)
    reports = asyncio.run(ingest_flow(settings))
    expected = (EXCHANGE_START_MS - START_MS) // HOUR_MS
    assert sorted(r["market"] for r in reports) == ["binance:BTC/USDT:1h", "binance:ETH/USDT:1h"]
    assert all(r["added"] == expected for r in reports)
    lake = make_lake(settings)
    assert [len(lake.read(m)) for m in lake.markets()] == [expected, expected]
    assert all(r["validation_results"] for r in reports)  # GX results saved per run
    assert asyncio.run(flow_runs_by_state())["Completed"] == before + 1
    # a second run is a no-op
    assert all(r["fetched"] == 0 for r in asyncio.run(ingest_flow(settings)))


def test_flow_fails_on_bad_input_and_writes_nothing(
    prefect_harness: None, exchange_server: LocalExchangeServer, settings_for: Any
) -> None:
    settings = settings_for(exchange={"api_url": exchange_server.url}, ingest={"start": START})
    failed_before = asyncio.run(flow_runs_by_state()).get("Failed", 0)
    with pytest.raises(ExchangeError, match="unknown symbol"):
        asyncio.run(ingest_flow(settings, symbols=["DOGE/USDT"]))
    assert asyncio.run(flow_runs_by_state())["Failed"] == failed_before + 1
    assert make_lake(settings).manifests() == []


def test_bad_data_stops_the_flow_and_is_quarantined(prefect_harness: None, tmp_path: Any, settings_for: Any) -> None:
    import gzip

    from tests.exchange_fixtures import running_exchange
    from tests.factories import real_candles

    candles = real_candles("ETHUSDT").head(30).rename(columns={"ts": "timestamp"})
    candles.loc[7, "close"] = 0.0
    (tmp_path / "candles").mkdir()
    with gzip.open(tmp_path / "candles" / "binance_ETHUSDT_1h.csv.gz", "wt") as handle:
        candles.to_csv(handle, index=False)
    first = int(candles["timestamp"].iloc[0])
    with running_exchange(data_dir=tmp_path / "candles", start=first + 30 * HOUR_MS) as server:
        settings = settings_for(
            exchange={"api_url": server.url}, ingest={"start": str(first)}, markets={"symbols": ["ETH/USDT"]}
        )
        with pytest.raises(DataValidationError, match="close not a finite positive price"):
            asyncio.run(ingest_flow(settings))
    assert make_lake(settings).manifests() == []
    assert make_quarantine(settings).read()["ts"].tolist() == [int(candles["timestamp"].iloc[7])]


def test_one_scheduled_deployment_per_timeframe_firing_after_each_close() -> None:
    schedules = refresh_schedules(("1m", "1h"), offset_s=10)
    assert [(s.name, s.every) for s in schedules] == [
        ("refresh-1m", timedelta(minutes=1)),
        ("refresh-1h", timedelta(hours=1)),
    ]
    assert all(s.anchor.timestamp() == 10 for s in schedules)
    settings = load_test_settings(markets={"timeframes": ["1m", "1h"]}, prefect={"schedule_offset_s": 10})
    deployments = refresh_deployments(settings)
    assert [d.name for d in deployments] == ["refresh-1m", "refresh-1h"]
    assert deployments[1].parameters == {"settings": settings.public_dict(), "timeframes": ["1h"]}
    # the served settings come back as the same object in the flow run (same hash)
    assert Settings.model_validate(deployments[1].parameters["settings"]).config_hash() == settings.config_hash()
    assert deployments[1].schedules[0].schedule.interval == timedelta(hours=1)
