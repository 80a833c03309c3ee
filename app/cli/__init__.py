"""`cta`: the command line. The root command builds the settings once, configures logging and runs a
command; every failure ends with a one-line reason on stderr and a non-zero exit code."""

from __future__ import annotations

import logging
import sys

import click
import typer

from app.cli import data, models, ops, trading  # noqa: F401 (each registers its commands)
from app.cli.root import cli
from cta.errors import CTAError

log = logging.getLogger("cta.cli")

__all__ = ["cli", "main"]


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
        log.debug("command failed", exc_info=True)
        typer.echo(f"error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except BaseExceptionGroup as group:  # e.g. Ctrl-C inside Prefect's serve task group
        if group.subgroup(KeyboardInterrupt) is None:
            raise
        sys.exit(130)
    except Exception as e:
        log.exception("unexpected failure")
        typer.echo(f"error: unexpected {type(e).__name__}: {e} (traceback in logs/)", err=True)
        sys.exit(1)
