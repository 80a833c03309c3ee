from __future__ import annotations

import logging
from pathlib import Path

from cta.config import LoggingSettings
from cta.logs import configure_logging


def test_secrets_never_reach_the_log_file_even_at_debug(tmp_path: Path) -> None:
    secret = "sUp3r-s3cret-value"
    log_file = configure_logging(LoggingSettings(level="DEBUG"), tmp_path, secrets=[secret])
    try:
        logger = logging.getLogger("ccxt.test")
        logger.debug(
            "request GET /api/v3/account?timestamp=1&signature=abcdef0123 headers %s",
            {"X-MBX-APIKEY": "the-api-key-1234"},
        )
        logger.info("configured with %s", secret)
        for handler in logging.getLogger().handlers:
            handler.flush()
        text = log_file.read_text()
    finally:
        configure_logging(LoggingSettings(level="WARNING"), tmp_path / "after")
    assert "/api/v3/account" in text
    assert secret not in text
    assert "abcdef0123" not in text and "the-api-key-1234" not in text


def test_logging_writes_to_a_rotating_file(tmp_path: Path) -> None:
    log_file = configure_logging(LoggingSettings(level="INFO", max_bytes=2_000, backup_count=2), tmp_path)
    try:
        for i in range(200):
            logging.getLogger("cta.test").info("line %03d %s", i, "x" * 40)
    finally:
        configure_logging(LoggingSettings(level="WARNING"), tmp_path / "after")
    assert log_file.exists() and (tmp_path / "trading.log.1").exists()
    assert not (tmp_path / "trading.log.3").exists()
