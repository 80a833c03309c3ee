from __future__ import annotations

import json
from pathlib import Path

import pytest

from cta.config import load_settings
from cta.errors import ConfigError
from tests.conftest import CONFIG_DIR


def test_default_profile_loads_typed_frozen_settings() -> None:
    settings = load_settings(env={}, config_dir=CONFIG_DIR)
    assert settings.profile == "default"
    assert settings.markets.symbols == ("BTC/USDT", "ETH/USDT")
    assert settings.ingest.start_ms == 1_640_995_200_000
    with pytest.raises(Exception, match="frozen"):
        settings.mode = "live"  # type: ignore[misc]


def test_production_overlays_default_then_env_overrides_both() -> None:
    settings = load_settings(
        "production", env={"CTA_INGEST__START": "2024-06-01", "CTA_LAKE__S3_REGION": "us-west-2"}, config_dir=CONFIG_DIR
    )
    assert settings.lake.uri == "s3://cta-lake/candles"  # from production.json
    assert settings.exchange.page_limit == 1000  # kept from default.json
    assert settings.ingest.start == "2024-06-01"  # env wins
    assert settings.lake.s3_region == "us-west-2"


@pytest.mark.parametrize(
    ("env", "field", "value"),
    [
        ({"CTA_INGEST__CONCURRENCY": "0"}, "ingest.concurrency", 0),
        ({"CTA_MARKETS__TIMEFRAMES": '["7m"]'}, "markets.timeframes", ["7m"]),
        ({"CTA_EXCHANGE__ID": "notavenue"}, "exchange.id", "notavenue"),
        ({"CTA_INGEST__START": "yesterday"}, "ingest.start", "yesterday"),
        ({"CTA_MARKETS__SYMBOLS": '["BTCUSDT"]'}, "markets.symbols", ["BTCUSDT"]),
        ({"CTA_VALIDATION__ON_INVALID": "ignore"}, "validation.on_invalid", "ignore"),
        ({"CTA_EXCHANGE__TYPO": "1"}, "exchange.typo", 1),
    ],
)
def test_invalid_value_names_the_field_and_value(env: dict[str, str], field: str, value: object) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(env=env, config_dir=CONFIG_DIR)
    assert excinfo.value.field == field
    assert excinfo.value.value == value
    assert field in str(excinfo.value)


def test_unknown_profile_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no config file"):
        load_settings("staging", env={}, config_dir=CONFIG_DIR)


def test_secrets_come_only_from_env_and_never_print(tmp_path: Path) -> None:
    settings = load_settings(env={"CTA_API_KEY": "k-123456", "CTA_API_SECRET": "s-abcdef"}, config_dir=CONFIG_DIR)
    assert settings.secrets.api_secret is not None
    assert settings.secrets.api_secret.get_secret_value() == "s-abcdef"
    shown = repr(settings) + str(settings) + json.dumps(settings.public_dict())
    assert "s-abcdef" not in shown and "k-123456" not in shown
    # a secret in a config file is refused, naming the field
    (tmp_path / "default.json").write_text(json.dumps({"exchange": {"api_secret": "oops"}}))
    with pytest.raises(ConfigError) as excinfo:
        load_settings(env={}, config_dir=tmp_path)
    assert excinfo.value.field == "exchange.api_secret"
    assert "oops" not in str(excinfo.value)


def test_config_hash_is_stable_and_ignores_secrets() -> None:
    a = load_settings(env={}, config_dir=CONFIG_DIR)
    b = load_settings(env={"CTA_API_KEY": "something"}, config_dir=CONFIG_DIR)
    c = load_settings(env={"CTA_INGEST__START": "2022-02-01"}, config_dir=CONFIG_DIR)
    assert a.config_hash() == b.config_hash() != c.config_hash()


def test_a_bad_market_given_on_the_command_line_names_the_field() -> None:
    from cta.components import configured_markets

    settings = load_settings(env={}, config_dir=CONFIG_DIR)
    with pytest.raises(ConfigError, match=r"markets\.symbols"):
        configured_markets(settings, symbols=["BTCUSDT"])
    with pytest.raises(ConfigError, match=r"markets\.timeframes"):
        configured_markets(settings, timeframes=["7m"])
    assert [str(m) for m in configured_markets(settings, symbols=["SOL/USDT"])] == ["binance:SOL/USDT:1h"]
