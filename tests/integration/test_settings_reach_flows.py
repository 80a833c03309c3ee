"""The settings the CLI builds are the settings the flows run with: one object, built once at the entry
point, handed down (no flow re-reads the environment). Checked end to end: `cta --profile demo --verbose
ingest --start ...` runs the real ingest flow under Prefect, and the settings recorded as that flow run's
parameter must equal, field by field, the ones the CLI built from the profile and its options."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cta.config import Settings, differing_fields, load_settings
from cta.exchange_server import LocalExchangeServer
from tests.conftest import CONFIG_DIR, load_test_settings, subprocess_env

pytestmark = pytest.mark.integration
START = "2022-05-30"


async def newest_flow_run_settings(flow_name: str) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])), sort=FlowRunSort.START_TIME_DESC, limit=1
        )
    assert runs, f"no {flow_name} flow run was recorded"
    settings: dict[str, Any] = runs[0].parameters["settings"]
    return settings


def test_cli_options_and_profile_reach_the_flow_as_one_settings_object(
    prefect_harness: None, exchange_server: LocalExchangeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.cli import cli

    env = subprocess_env(tmp_path, CTA_EXCHANGE__API_URL=exchange_server.url)
    cta_env = {k: v for k, v in env.items() if k.startswith("CTA_")}
    for name, value in cta_env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(
        cli, ["--profile", "demo", "--verbose", "ingest", "-s", "BTC/USDT", "--start", START, "--no-progress"]
    )
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"

    built_by_cli = load_settings(
        "demo",
        env=cta_env,
        config_dir=CONFIG_DIR,
        overrides={"logging": {"level": "DEBUG"}, "ingest": {"start": START}},
    )
    in_flow = Settings.model_validate(asyncio.run(newest_flow_run_settings("ingest")))
    differing = differing_fields(built_by_cli, in_flow)
    assert not differing, f"the ingest flow ran with other settings than the CLI built: {differing}"
    assert in_flow.logging.level == "DEBUG"  # --verbose reached the flow
    assert in_flow.backtest.gate.min_trades == 5  # so did the demo profile


def test_differing_fields_names_each_field_that_differs() -> None:
    base = load_test_settings()
    other = load_test_settings(logging={"level": "DEBUG"}, backtest={"gate": {"min_trades": 7}})
    assert differing_fields(base, other) == ["backtest.gate.min_trades", "logging.level"]
    assert differing_fields(base, load_test_settings()) == []
