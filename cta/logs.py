"""Logging, configured once at an entry point: console plus a rotating file, secrets redacted.

Redaction happens once, where a record is made (`logging.setLogRecordFactory`): the message with its args, the
traceback (`exc_text`, formatted from `exc_info`) and `stack_info` are redacted before any handler sees the
record, so every handler in the process (CTA's console and file, Prefect's API and console handlers, aiohttp's
and uvicorn's loggers, ...) writes redacted text.

CTA's handlers escape control characters and indent continuation lines (`one_record`): user-supplied text in a
message cannot forge a log line or send terminal escapes. The console shows tracebacks only at DEBUG (`cta -v`);
the log file always has them. Records a command marks `extra={CONSOLE: False}` go to the file only, and so do
the failure records of Prefect's flow and task runs (below DEBUG), whose exception the command reports as its
one-line `error:`.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cta.config import LoggingSettings

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_HANDLER_MARK = "_cta_handler"
CONSOLE = "cta_console"  # extra={CONSOLE: False}: this record goes to the log file only
# Prefect logs a failed flow or task run's exception (with its traceback) on these loggers.
_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
# Values that look like credentials in URLs or query strings (ccxt verbose logs print requests).
_SECRET_KEYS = r"(signature|apikey|api_key|secret|password|x-mbx-apikey)"  # noqa: S105 (key names, not a secret)
# key=value in query strings and forms, and 'key': 'value' in printed dicts and JSON (quoted values only,
# so prose such as "no secret: ..." is left alone).
_QUERY_SECRETS = re.compile(_SECRET_KEYS + r"(=)([^&\s'\",}]+)", re.I)
_MAPPING_SECRETS = re.compile(_SECRET_KEYS + r"(['\"]\s*:\s*['\"])([^'\"]+)", re.I)
# An Authorization value, even cut short (an error message quoting the first bytes of a header).
_BEARER = re.compile(r"(bearer)(\s+)([^\s'\",]+)", re.I)
# Bidirectional overrides and isolates: they reorder how text displays (Trojan Source).
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def is_control(char: str) -> bool:
    """A character that changes how a line reads: C0/C1 controls (newline, escape, ...) and bidi overrides."""
    return unicodedata.category(char) == "Cc" or char in _BIDI


def printable(text: str) -> str:
    """`text` with every control character escaped (\\n, \\x1b, \\u202e, ...): user-supplied text for a log
    line or a one-line message, which then cannot forge lines or terminal escapes."""
    if not any(is_control(c) for c in text):
        return text
    return "".join(c.encode("unicode_escape").decode("ascii") if is_control(c) else c for c in text)


class RedactingFilter(logging.Filter):
    """Replaces every known secret value, and signature/key-looking query values, by '***'."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        text = _QUERY_SECRETS.sub(r"\1\2***", text)
        text = _BEARER.sub(r"\1\2***", text)
        return _MAPPING_SECRETS.sub(r"\1\2***", text)

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact `record` in place: the message with its args, the traceback and the stack."""
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 (a broken %-format: logging reports it when a handler formats)
            return True
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = _PLAIN.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


_PLAIN = logging.Formatter()


class _Configured:
    """What `configure_logging` set last: the redactor the record factory applies, and the log file."""

    redactor = RedactingFilter(())
    log_file: Path | None = None


_RecordFactory = Callable[..., logging.LogRecord]


def _install_record_factory() -> None:
    """Redact every record where it is made (once per process; the factory reads the current redactor)."""
    previous: _RecordFactory = logging.getLogRecordFactory()
    if getattr(previous, _HANDLER_MARK, False):
        return

    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _Configured.redactor.filter(record)
        return record

    setattr(redacting_factory, _HANDLER_MARK, True)
    logging.setLogRecordFactory(redacting_factory)


def one_record(text: str) -> str:
    """A formatted record that cannot pass for another (log injection) nor drive a terminal: control characters
    other than newline and tab escaped, and every continuation line indented, so a line that does not start with
    a space always starts a record."""
    if any(is_control(c) and c not in "\n\t" for c in text):
        text = "".join(printable(c) if c not in "\n\t" else c for c in text)
    if "\n" not in text:
        return text
    first, *rest = text.split("\n")
    return "\n".join([first, *(line if line[:1].isspace() or not line else "  " + line for line in rest)])


class SafeFormatter(logging.Formatter):
    """CTA's log format, made safe by `one_record` (every CTA handler uses it)."""

    def format(self, record: logging.LogRecord) -> str:
        return one_record(super().format(record))


class ConsoleFormatter(SafeFormatter):
    """The console's format: without `tracebacks`, a record's traceback and stack stay in the log file and the
    line says where."""

    def __init__(self, fmt: str, *, tracebacks: bool, log_file: Path) -> None:
        super().__init__(fmt)
        self.tracebacks = tracebacks
        self.log_file = log_file

    def format(self, record: logging.LogRecord) -> str:
        if self.tracebacks or not (record.exc_info or record.exc_text or record.stack_info):
            return super().format(record)
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return f"{super().format(record)} (traceback in {self.log_file})"
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def _console_filter(verbose: bool) -> Callable[[logging.LogRecord], bool]:
    def keep(record: logging.LogRecord) -> bool:
        if getattr(record, CONSOLE, True) is False:
            return False
        return verbose or record.levelno < logging.ERROR or record.name not in _RUN_LOGGERS

    return keep


def redact(text: str) -> str:
    """`text` redacted as log records are (the secrets `configure_logging` was given): for what a process
    prints itself, e.g. the CLI's `error:` line."""
    return _Configured.redactor.redact(text)


def log_file() -> Path | None:
    """The file `configure_logging` last set up (None before)."""
    return _Configured.log_file


def configure_logging(settings: LoggingSettings, logs_dir: Path, secrets: Iterable[str] = ()) -> Path:
    """Console + rotating `logs_dir/<file_name>`. Idempotent: calling again replaces CTA's handlers and the
    secrets redacted."""
    logs_dir.mkdir(parents=True, exist_ok=True)
    log_file = logs_dir / settings.file_name
    _Configured.redactor = RedactingFilter(secrets)
    _install_record_factory()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(handler)
        handler.close()
    verbose = settings.level == "DEBUG"
    console = logging.StreamHandler()
    console.setFormatter(ConsoleFormatter(_FORMAT, tracebacks=verbose, log_file=log_file))
    console.addFilter(_console_filter(verbose))
    rotating = logging.handlers.RotatingFileHandler(
        log_file, maxBytes=settings.max_bytes, backupCount=settings.backup_count, encoding="utf-8"
    )
    rotating.setFormatter(SafeFormatter(_FORMAT))
    for handler in (console, rotating):
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
    _Configured.log_file = log_file
    return log_file
