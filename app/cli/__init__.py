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

__all__ = ["cli", "main", "one_line", "usage_error"]

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


def usage_error(error: Exception) -> None:
    """A usage error (unknown option, bad value, missing argument: exit code 2) as one `error:` line naming the
    command's help; a group called without a command shows its help instead (that is not an error)."""
    if type(error).__name__ == "NoArgsIsHelpError":  # click's and Typer's (vendored click) alike
        getattr(error, "show")()  # noqa: B009 (typed as Exception: both click flavours have show())
        sys.exit(int(getattr(error, "exit_code", 2)))
    from cta.logs import redact

    ctx = getattr(error, "ctx", None)
    message = error.format_message() if hasattr(error, "format_message") else str(error)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    typer.echo(redact(f"error: {one_line(message)}{hint}"), err=True)
    sys.exit(int(getattr(error, "exit_code", 2)))


def main() -> None:
    """Console entry point: one-line errors, non-zero exits. Typer (>= 0.2x) raises its own vendored copies of
    click's exceptions (subclasses of typer.TyperException, plus typer.Exit and typer.Abort), not click's: both
    are handled."""
    try:
        cli(standalone_mode=False)
    except (click.exceptions.Exit, typer.Exit) as e:
        sys.exit(e.exit_code)
    except (click.ClickException, typer.TyperException) as e:
        usage_error(e)
    except (click.exceptions.Abort, typer.Abort):
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
