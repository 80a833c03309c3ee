"""The `cta` command as a user runs it: a subprocess, real config files, the local exchange over HTTP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cta.exchange_server import LocalExchangeServer
from tests.conftest import subprocess_env

pytestmark = pytest.mark.integration
CTA = [sys.executable, "-m", "app.cli"]


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The `error: ...` lines on stderr (log lines also go to stderr)."""
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


def run_cta(
    *args: str, tmp_path: Path, extra_env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    env = subprocess_env(tmp_path, **(extra_env or {}))
    return subprocess.run(
        [*CTA, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path, check=False
    )


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["exchange", "serve"],
        ["ingest"],
        ["validate"],
        ["lake", "show"],
        ["flows", "serve"],
        ["config", "show"],
        ["demo"],
    ],
)
def test_every_command_has_help(command: list[str], tmp_path: Path) -> None:
    result = run_cta(*command, "--help", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_invalid_config_is_one_line_naming_the_field(tmp_path: Path) -> None:
    result = run_cta("lake", "show", tmp_path=tmp_path, extra_env={"CTA_INGEST__CONCURRENCY": "0"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: invalid config: ingest.concurrency=0: Input should be greater than or equal to 1"
    ]


def test_config_show_hides_secrets(tmp_path: Path) -> None:
    result = run_cta("config", "show", tmp_path=tmp_path, extra_env={"CTA_API_SECRET": "very-secret-value"})
    assert result.returncode == 0, result.stderr
    assert '"api_secret": "set"' in result.stdout and "very-secret-value" not in result.stdout
    assert "very-secret-value" not in (tmp_path / "logs" / "trading.log").read_text()


def test_validate_on_an_empty_lake_fails_with_a_reason(tmp_path: Path) -> None:
    result = run_cta("validate", tmp_path=tmp_path)
    assert result.returncode == 1
    assert error_lines(result) == [line for line in result.stderr.splitlines() if line.strip()]
    assert error_lines(result)[0].startswith("error: no stored candles match")


def test_ingest_validate_and_show_against_the_local_exchange(
    tmp_path: Path, exchange_server: LocalExchangeServer
) -> None:
    env = {"CTA_EXCHANGE__API_URL": exchange_server.url, "CTA_INGEST__START": "2022-05-20"}
    bad = run_cta("ingest", "-s", "DOGE/USDT", tmp_path=tmp_path, extra_env=env)
    assert bad.returncode == 1
    assert len(error_lines(bad)) == 1 and error_lines(bad)[0].startswith("error: unknown symbol 'DOGE/USDT'")
    assert not (tmp_path / "lake").exists()

    ok = run_cta("ingest", "-s", "BTC/USDT", "--no-progress", tmp_path=tmp_path, extra_env=env)
    assert ok.returncode == 0, ok.stderr
    assert "binance:BTC/USDT:1h" in ok.stdout and "288" in ok.stdout  # 12 days of hourly candles

    checked = run_cta("validate", tmp_path=tmp_path, extra_env=env)
    assert checked.returncode == 0, checked.stderr
    assert "passed" in checked.stdout

    shown = run_cta("lake", "show", tmp_path=tmp_path, extra_env=env)
    assert shown.returncode == 0 and "2022-05-20 00:00" in shown.stdout and "2022-05-31 23:00" in shown.stdout


def test_start_after_end_is_refused(tmp_path: Path, exchange_server: LocalExchangeServer) -> None:
    env = {"CTA_EXCHANGE__API_URL": exchange_server.url}
    result = run_cta(
        "ingest", "--start", "2022-05-10", "--end", "2022-05-01", "--no-progress", tmp_path=tmp_path, extra_env=env
    )
    assert result.returncode == 1
    (line,) = error_lines(result)
    assert "ingest.start ('2022-05-10') must be before ingest.end" in line
    assert not (tmp_path / "lake").exists()
