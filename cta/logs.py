"""Logging, configured once at an entry point: console plus a rotating file, secrets redacted."""

from __future__ import annotations

import logging
import logging.handlers
import re
from collections.abc import Iterable
from pathlib import Path

from cta.config import LoggingSettings

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_HANDLER_MARK = "_cta_handler"
# Values that look like credentials in URLs or query strings (ccxt verbose logs print requests).
_SECRET_KEYS = r"(signature|apikey|api_key|secret|password|x-mbx-apikey)"  # noqa: S105 (key names, not a secret)
# key=value in query strings and forms, and 'key': 'value' in printed dicts and JSON (quoted values only,
# so prose such as "no secret: ..." is left alone).
_QUERY_SECRETS = re.compile(_SECRET_KEYS + r"(=)([^&\s'\",}]+)", re.I)
_MAPPING_SECRETS = re.compile(_SECRET_KEYS + r"(['\"]\s*:\s*['\"])([^'\"]+)", re.I)


class RedactingFilter(logging.Filter):
    """Replaces every known secret value, and signature/key-looking query values, by '***'."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        text = _QUERY_SECRETS.sub(r"\1\2***", text)
        return _MAPPING_SECRETS.sub(r"\1\2***", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def configure_logging(settings: LoggingSettings, logs_dir: Path, secrets: Iterable[str] = ()) -> Path:
    """Console + rotating `logs_dir/<file_name>`. Idempotent: calling again replaces CTA's handlers."""
    logs_dir.mkdir(parents=True, exist_ok=True)
    log_file = logs_dir / settings.file_name
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(handler)
        handler.close()
    redactor = RedactingFilter(secrets)
    formatter = logging.Formatter(_FORMAT)
    console = logging.StreamHandler()
    rotating = logging.handlers.RotatingFileHandler(
        log_file, maxBytes=settings.max_bytes, backupCount=settings.backup_count, encoding="utf-8"
    )
    for handler in (console, rotating):
        handler.setFormatter(formatter)
        handler.addFilter(redactor)
        setattr(handler, _HANDLER_MARK, True)
        root.addHandler(handler)
    root.setLevel(settings.level)
    for noisy in (
        "urllib3",
        "botocore",
        "boto3",
        "s3transfer",
        "aiohttp.access",
        "great_expectations",
        "httpx",
        "httpcore",
        "feast",
        "alembic",
    ):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return log_file
