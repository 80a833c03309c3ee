"""`cta`: the command line. The root command builds the settings once, configures logging and runs a
command; every failure ends with a one-line reason on stderr and a non-zero exit code. The traceback goes to
the log file (and to the console with -v); the `error:` line says where when it holds more than the reason."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click
import typer

from app.cli import data, ledger, models, ops, trading  # noqa: F401 (each registers its commands)
from app.cli.root import cli
from cta.errors import CTAError

log = logging.getLogger("cta.cli")

__all__ = ["cli", "main", "one_line"]

MAX_ERROR_CHARS = 1_000


def one_line(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """`text` on one line: whitespace runs (newlines included) collapsed, other control characters escaped,
    cut at `limit` characters."""
    from cta.logs import printable

    flat = printable(" ".join(text.split()))
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it is below it."""
    try:
        return os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd().resolve()) else str(path)
    except (OSError, ValueError):
        return str(path)


def fail(error: BaseException, *, unexpected: bool) -> None:
    """Log `error` with its traceback to the log file (the console shows it at -v) and print the one-line
    `error:` (naming the log file when the traceback holds more than the message), then exit 1."""
    from cta.logs import CONSOLE, log_file, redact

    file = log_file()
    if file is not None:  # else logging is not configured yet (the settings failed): Python would print the record
        verbose = logging.getLogger().isEnabledFor(logging.DEBUG)
        log.error("command failed", exc_info=error, extra={CONSOLE: verbose})
    kind = f"unexpected {type(error).__name__}: " if unexpected else ""
    reason = one_line(str(error)) or type(error).__name__
    chained = error.__cause__ is not None or (error.__context__ is not None and not error.__suppress_context__)
    has_details = unexpected or chained
    details = f" (details: {_shown(file)})" if file is not None and has_details else ""
    typer.echo(redact(f"error: {kind}{reason}{details}"), err=True)
    sys.exit(1)


def main() -> None:
    """Console entry point: one-line errors, non-zero exits."""
    try:
        cli(standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except CTAError as e:
        fail(e, unexpected=False)
    except KeyboardInterrupt:
        sys.exit(130)
    except BaseExceptionGroup as group:  # e.g. Ctrl-C inside Prefect's serve task group
        if group.subgroup(KeyboardInterrupt) is None:
            fail(group, unexpected=True)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 (the last resort: any failure is one line, its traceback in the log file)
        fail(e, unexpected=True)
