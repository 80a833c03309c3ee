"""Hostile and careless configs (issue 19, items 3 and 7): each is refused naming the field, or shown masked.

Real config files in a temp dir on top of the repo's default.json, real environment mappings, and the real
`cta config show` in a subprocess."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cta.config import load_settings, mask_passwords, with_overrides
from cta.errors import ConfigError
from tests.conftest import CONFIG_DIR, subprocess_env

SECRET = "s3cr3t-Pa55"


def config_dir(tmp_path: Path, text: str, profile: str = "hostile") -> Path:
    """A config dir with the repo's default.json and `text` as <profile>.json."""
    (tmp_path / "default.json").write_text((CONFIG_DIR / "default.json").read_text())
    (tmp_path / f"{profile}.json").write_text(text)
    return tmp_path


def refused(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as excinfo:
        load_settings("hostile", env=env or {}, config_dir=config_dir(tmp_path, text))
    return excinfo.value


def refused_env(env: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(env=env, config_dir=CONFIG_DIR)
    return excinfo.value


# --- item 7: booleans ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "value", "field"),
    [
        ({"exchange": {"verbose": 1}}, 1, "exchange.verbose"),
        ({"backtest": {"reports": 0}}, 0, "backtest.reports"),
        ({"limits": {"allow_short": 1}}, 1, "limits.allow_short"),  # a model defined outside cta/config.py
        ({"local_exchange": {"withdrawals_enabled": "yes"}}, "yes", "local_exchange.withdrawals_enabled"),
    ],
)
def test_a_boolean_must_be_a_json_boolean(tmp_path: Path, section: dict[str, Any], value: object, field: str) -> None:
    error = refused(tmp_path, json.dumps(section))
    assert error.field == field and error.value == value
    assert "true or false" in str(error)


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("True", True), ("FALSE", False), ("false", False)])
def test_the_environment_still_gives_booleans_as_true_or_false(raw: str, expected: bool) -> None:
    settings = load_settings(env={"CTA_EXCHANGE__VERBOSE": raw, "CTA_LIMITS__ALLOW_SHORT": raw}, config_dir=CONFIG_DIR)
    assert settings.exchange.verbose is expected and settings.limits.allow_short is expected


def test_the_environment_may_not_give_a_boolean_as_a_number() -> None:
    error = refused_env({"CTA_EXCHANGE__VERBOSE": "1"})
    assert error.field == "exchange.verbose"


# --- item 7: duplicate keys ---------------------------------------------------------------------------------------


def test_a_key_given_twice_is_refused_naming_the_key_and_the_file(tmp_path: Path) -> None:
    error = refused(tmp_path, '{"mode": "paper", "serving": {"broker": "paper"}, "mode": "live"}')
    assert error.field == "mode" and "hostile.json" in str(error) and "twice" in str(error)
    nested = refused(tmp_path, '{"serving": {"broker": "paper", "broker": "ccxt"}}')
    assert nested.field == "broker" and "hostile.json" in str(nested)


def test_a_key_given_twice_in_an_environment_value_is_refused() -> None:
    error = refused_env({"CTA_LOCAL_EXCHANGE__INITIAL_BALANCES": '{"USDT": 1, "USDT": 2}'})
    assert error.field == "USDT" and "CTA_LOCAL_EXCHANGE__INITIAL_BALANCES" in str(error)


# --- item 7: NaN and Infinity -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"serving": {"risk": {"max_order_notional": Infinity}}}', "serving.risk.max_order_notional"),
        ('{"backtest": {"gate": {"min_sharpe": NaN}}}', "backtest.gate.min_sharpe"),
        ('{"serving": {"risk": {"max_position_notional": 1e999}}}', "serving.risk.max_position_notional"),
        ('{"local_exchange": {"speed": Infinity}}', "local_exchange.speed"),
    ],
)
def test_a_non_finite_number_in_a_file_is_refused(tmp_path: Path, text: str, field: str) -> None:
    error = refused(tmp_path, text)
    assert error.field == field and "finite" in str(error) and "hostile.json" in str(error)


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"CTA_SERVING__RISK__MAX_ORDER_NOTIONAL": "Infinity"}, "serving.risk.max_order_notional"),
        ({"CTA_SERVING__RISK__MAX_ORDER_NOTIONAL": "inf"}, "serving.risk.max_order_notional"),
        ({"CTA_BACKTEST__GATE__MIN_SHARPE": "nan"}, "backtest.gate.min_sharpe"),
        ({"CTA_LOCAL_EXCHANGE__SPEED": "inf"}, "local_exchange.speed"),  # outside cta/config.py
        ({"CTA_LOCAL_EXCHANGE__INITIAL_BALANCES": '{"USDT": Infinity}'}, "local_exchange.initial_balances.USDT"),
    ],
)
def test_a_non_finite_number_from_the_environment_is_refused(env: dict[str, str], field: str) -> None:
    error = refused_env(env)
    assert error.field == field and "finite" in str(error)


# --- item 7: start after end --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("start", "end"), [("2023-01-01", "2022-01-01"), ("2023-01-01", "2023-01-01")])
def test_ingest_start_must_be_before_end(start: str, end: str) -> None:
    error = refused_env({"CTA_INGEST__START": start, "CTA_INGEST__END": end})
    assert "ingest.start" in str(error) and "ingest.end" in str(error)
    settings = load_settings(env={}, config_dir=CONFIG_DIR)
    with pytest.raises(ConfigError, match=r"ingest\.start .* must be before ingest\.end"):  # CLI options too
        with_overrides(settings, {"ingest": {"start": start, "end": end}})


# --- item 7: a gate switched off ----------------------------------------------------------------------------------

GATE_OFF = {
    "CTA_BACKTEST__GATE__MIN_SHARPE": "0",
    "CTA_BACKTEST__GATE__MAX_DRAWDOWN": "1",
    "CTA_BACKTEST__GATE__MIN_TRADES": "0",
    "CTA_BACKTEST__GATE__MUST_BEAT": "[]",
    "CTA_BACKTEST__GATE__MIN_DEFLATED_SHARPE": "0",
}


def test_a_gate_with_every_threshold_off_is_reported() -> None:
    settings = load_settings(env=GATE_OFF, config_dir=CONFIG_DIR)
    assert settings.backtest.gate.is_off
    assert any("backtest.gate is OFF" in w for w in settings.warnings())
    for profile in ("default", "demo", "production"):  # the shipped profiles keep the gate on
        shipped = load_settings(profile, env={}, config_dir=CONFIG_DIR)
        assert not shipped.backtest.gate.is_off and shipped.warnings() == []
    partly = load_settings(env={**GATE_OFF, "CTA_BACKTEST__GATE__MIN_TRADES": "3"}, config_dir=CONFIG_DIR)
    assert not partly.backtest.gate.is_off and "min_trades" not in partly.backtest.gate.checks_off()


def test_a_gate_with_every_threshold_off_is_a_warning_at_start(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(env=GATE_OFF, config_dir=CONFIG_DIR)
    with caplog.at_level(logging.WARNING, logger="cta.config"):
        settings.log_warnings()
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "backtest.gate is OFF" in caplog.records[0].getMessage()


# --- item 3: credentials inside URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "field"),
    [
        (
            {"serving": {"database_url": f"postgresql+psycopg2://cta:{SECRET}@127.0.0.1:5432/cta"}},
            "serving.database_url",
        ),
        ({"prefect": {"database_url": f"postgresql+asyncpg://cta:{SECRET}@db/prefect"}}, "prefect.database_url"),
        ({"features": {"redis_url": f"redis://:{SECRET}@127.0.0.1:6379/0"}}, "features.redis_url"),
        ({"features": {"redis_url": f"127.0.0.1:6379,db=0,password={SECRET}"}}, "features.redis_url"),
        ({"lake": {"s3_endpoint_url": f"http://minio:{SECRET}@127.0.0.1:9000"}}, "lake.s3_endpoint_url"),
        ({"training": {"tracking_uri": f"postgresql://mlflow:{SECRET}@db/mlflow"}}, "training.tracking_uri"),
    ],
)
def test_a_password_in_a_url_in_a_file_is_refused_naming_the_variable(
    tmp_path: Path, section: dict[str, Any], field: str
) -> None:
    error = refused(tmp_path, json.dumps(section))
    env_var = "CTA_" + "__".join(part.upper() for part in field.split("."))
    assert error.field == field
    assert env_var in str(error) and "environment" in str(error) and "hostile.json" in str(error)
    assert SECRET not in str(error) and SECRET not in repr(error.value)


def test_a_url_without_a_password_in_a_file_is_fine(tmp_path: Path) -> None:
    text = json.dumps({"serving": {"database_url": "postgresql+psycopg2://cta@127.0.0.1:5432/cta"}})
    settings = load_settings("hostile", env={}, config_dir=config_dir(tmp_path, text))
    assert settings.serving.database_url.endswith("cta@127.0.0.1:5432/cta")


def test_the_environment_may_give_a_url_with_a_password_and_it_is_masked() -> None:
    url = f"postgresql+psycopg2://cta:{SECRET}@127.0.0.1:5432/cta"
    settings = load_settings(
        env={"CTA_SERVING__DATABASE_URL": url, "CTA_FEATURES__REDIS_URL": f"127.0.0.1:6379,password={SECRET},db=0"},
        config_dir=CONFIG_DIR,
    )
    assert settings.serving.database_url == url  # the worker needs it as given
    shown = json.dumps(settings.shown_dict())
    assert SECRET not in shown
    assert "postgresql+psycopg2://cta:***@127.0.0.1:5432/cta" in shown and "password=***,db=0" in shown
    assert mask_passwords({"x": {"token": "t", "urls": [url]}}) == {
        "x": {"token": "***", "urls": ["postgresql+psycopg2://cta:***@127.0.0.1:5432/cta"]}
    }


def test_config_show_masks_passwords_and_says_the_gate_is_off(tmp_path: Path) -> None:
    env = subprocess_env(
        tmp_path,
        CTA_SERVING__DATABASE_URL=f"postgresql+psycopg2://cta:{SECRET}@127.0.0.1:5432/cta",
        CTA_PREFECT__DATABASE_URL=f"postgresql+asyncpg://cta:{SECRET}@127.0.0.1:5432/prefect",
        CTA_API_TOKEN=f"token-{SECRET}",
        **GATE_OFF,
    )
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "config", "show"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    shown = json.loads(result.stdout)
    assert shown["settings"]["serving"]["database_url"] == "postgresql+psycopg2://cta:***@127.0.0.1:5432/cta"
    assert shown["secrets"]["api_token"] == "set"
    assert shown["gate"]["status"] == "off" and shown["warnings"]
    assert "WARNING" in result.stderr and "backtest.gate is OFF" in result.stderr
    assert "backtest.gate is OFF" in (tmp_path / "logs" / "trading.log").read_text()
