"""The crash drills' order checkpoint: SIGKILL this process at one crash point of the chosen orders.

Installed only by the drill harnesses (`tests.serving.drill_serve` for the whole worker, `tests/serving/drill_driver.py`
for the order path); product code calls the checkpoint and never kills itself.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable

from serving.types import CrashPoint, OrderCheckpoint, OrderRequest

log = logging.getLogger(__name__)


def crash_message(point: CrashPoint) -> str:
    """The line a drill run writes just before it is killed (the drill tests look for it)."""
    return f"drill: SIGKILL at {point.value}"


def sigkill_at(point: CrashPoint, when: Callable[[OrderRequest], bool] | None = None) -> OrderCheckpoint:
    """A checkpoint that SIGKILLs the process at `point` of every order `when` selects (all when None). Answers
    recorded about something other than an order being submitted (request None: a cancellation) never crash."""

    def checkpoint(reached: CrashPoint, request: OrderRequest | None) -> None:
        if request is None or reached is not point or (when is not None and not when(request)):
            return
        log.critical(crash_message(point))
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    return checkpoint
