"""Crash-drill harness for the whole worker: `cta serve` with the drill checkpoint installed in the broker.

    python -m tests.serving.drill_serve [--profile P] [--bars N] [--crash-at POINT]

The settings are built by the `cta` root command's own `app.cli.root.entry_point_settings` (the profile and the CTA_*
environment, then the offline environment and logging), `--bars` is `cta serve --bars`, and the worker runs
through `app.serve.serve`, as `cta serve` runs it. With `--crash-at <point>` the broker's checkpoint is
`tests.serving.drill_hook.sigkill_at(point)`: the process SIGKILLs itself at that crash point of its first order.
Without it the run is a plain `cta serve`. The summary table is printed as `cta serve` prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from app.cli import render
from app.cli.root import entry_point_settings, with_serving
from app.serve import serve
from serving.types import CrashPoint, OrderCheckpoint, no_checkpoint
from tests.serving.drill_hook import sigkill_at


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--profile", "-p", default=None, help="config profile (default: CTA_PROFILE or default)")
    parser.add_argument("--bars", type=int, default=None, help="stop after this many candles per market")
    parser.add_argument("--crash-at", choices=[p.value for p in CrashPoint], help="SIGKILL at this crash point")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = entry_point_settings(args.profile)  # as the root command builds them
    if args.bars is not None:
        settings = with_serving(settings, max_bars=args.bars)
    checkpoint: OrderCheckpoint = no_checkpoint
    if args.crash_at is not None:
        checkpoint = sigkill_at(CrashPoint(args.crash_at))
    render.print_serving(asyncio.run(serve(settings, checkpoint=checkpoint)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
