"""Hostile input for every `cta` command (issue 19, "Done means" 2): junk option and argument values (text that
was not UTF-8, control characters, huge and negative numbers, empty strings, absurd dates, unknown symbols,
paths that escape) through the real entry point (`app.cli.main`) in this process.

Every run must end with exit code 0, 1 or 2; no traceback on screen; a failure is exactly one `error:` line
(log lines aside), never an "unexpected" error (junk input is the user's mistake, and the message says which).

Commands are enumerated from the Typer app, so a new command is fuzzed (or must be listed in SKIPPED) at once.
Skipped, or given only values that fail before anything starts:
- `serve`, `demo`, `up`, `pipeline`, `train`, `features build`, `flows serve`, `flows deploy`: they start servers,
  Prefect flow runs or trainings that run for minutes (their validation is tested where they are);
- `exchange serve`, `flows worker`, `ingest`: only values that are refused before a server, a worker or a flow
  starts (out-of-range numbers, non-numbers; for `ingest` every window ends before it starts);
- `ledger checkpoint --watch` and `ledger witness --every-s`: they loop until stopped, so never passed.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.cli import cli
from cta.config import LoggingSettings
from cta.logs import configure_logging
from tests.conftest import subprocess_env

JUNK = [
    "",
    " ",
    "\x00",
    "\x07bell",
    "line\nbreak",
    "\x1b[2J\x1b[31mred",
    "\u202eRTL",
    "\udcff\udcfe",  # bytes that were not UTF-8 (argv decodes them with surrogateescape)
    "😀",
    "x" * 5_000,
    "-1",
    "-9223372036854775809",
    "99999999999999999999999999",
    "1e309",
    "nan",
    "-inf",
    "0",
    "0x10",
    "9999-99-99",
    "0000-00-00T25:61",
    "-5000-01-01",
    "2262-04-12T00:00:00Z",
    "DOGE/USDT",
    "BTC/",
    "/",
    "../../../../etc/passwd",
    "%s%n{0}",
    "--help",
]
junk = st.sampled_from(JUNK) | st.text(max_size=40)
NOT_AN_INT = st.sampled_from(["abc", "", "1.5", "nan", "\udcff", "1e3", "--"])
STATES = st.sampled_from(["halt", "reduce", "resume"]) | junk

# command path -> a strategy of argument lists that cannot start anything long-running
Args = st.SearchStrategy[list[str]]


def _opts(**options: st.SearchStrategy[str]) -> Args:
    """Any subset of `--name VALUE` pairs (in a random order)."""
    pairs = [st.tuples(st.just(f"--{name.replace('_', '-')}"), values) for name, values in options.items()]
    return st.lists(st.one_of(*pairs), max_size=3).map(lambda items: [part for pair in items for part in pair])


MARKET: Args = st.lists(st.sampled_from(["-s", "-t"]).flatmap(lambda o: st.tuples(st.just(o), junk)), max_size=2).map(
    lambda items: [part for pair in items for part in pair]
)


def _then(*parts: Args) -> Args:
    return st.tuples(*parts).map(lambda lists: [item for part in lists for item in part])


def _one(values: st.SearchStrategy[str]) -> Args:
    return values.map(lambda value: [value])


BAD_PORT = st.sampled_from(["-1", "65536", "99999999999", "abc", ""])
BAD_RATE = st.sampled_from(["-0.5", "1.5", "nan", "inf", "x"])
FUZZED: dict[str, Args] = {
    "ingest": _then(
        MARKET,
        _opts(start=junk),
        st.just(["--end", "1970-01-01T00:00:00Z", "--no-progress"]),  # every window is empty or inverted
    ),
    "validate": MARKET,
    "kill-switch": _then(
        _one(STATES), st.tuples(st.just("--reason"), junk).map(list), _opts(cancel_open=st.just(""))
    ).map(lambda args: [a for a in args if a != ""] if "--cancel-open" in args else args),
    "down": st.just([]),
    "exchange serve": st.one_of(
        st.tuples(st.just("--port"), BAD_PORT).map(list),
        st.tuples(st.sampled_from(["--error-rate", "--timeout-rate", "--drop-rate"]), BAD_RATE).map(list),
        st.tuples(st.just("--latency-ms"), st.sampled_from(["-5", "abc", "1e9"])).map(list),
        st.tuples(st.just("--speed"), st.sampled_from(["-1", "nan", "inf", "x"])).map(list),
    ),
    "lake show": st.just([]),
    "flows worker": st.tuples(st.just("--limit"), st.sampled_from(["0", "-3", "abc", ""])).map(list),
    "features list": st.just([]),
    "config show": st.just([]),
    "models list": MARKET,
    "models show": _then(_one(junk), MARKET),
    "models promote": _then(_one(junk), st.tuples(st.just("--reason"), junk).map(list), MARKET),
    "models rollback": MARKET,
    "report": MARKET,  # --out is a path the user chooses (junk paths would write outside the test's folder)
    "ledger keygen": _then(_one(junk), st.tuples(st.just("--out"), junk).map(list)),
    "ledger checkpoint": _opts(poll_s=junk),
    "ledger prove": _then(_one(junk), _opts(size=junk, to=junk)) | _opts(**{"from": junk, "to": junk, "size": junk}),
    "ledger check-proof": _then(_one(junk), _opts(key=junk)),
    "ledger verify": st.just([]),
    "ledger witness": _opts(url=junk, state=junk),
}
SKIPPED = {
    "serve": "runs the worker until stopped (non-integer --bars: see test_usage_errors_are_one_line)",
    "dashboard": "serves until stopped; without a token it refuses at once (tests/dashboard/test_cli_dashboard.py)",
    "demo": "the whole pipeline and the worker: minutes",
    "up": "starts the Prefect server and the MLflow UI, left running",
    "pipeline": "a Prefect flow of every stage: minutes",
    "train": "a Prefect flow that trains: minutes",
    "features build": "a Prefect flow run (its temporary server alone takes ~20 s)",
    "flows serve": "serves deployments until stopped",
    "flows deploy": "needs a persistent Prefect server",
}


def commands() -> dict[str, Any]:
    """Every leaf command of the Typer app, by its path ("models promote")."""
    found: dict[str, Any] = {}

    def walk(command: Any, path: list[str]) -> None:
        children = getattr(command, "commands", None)
        if children:
            for name, child in children.items():
                walk(child, [*path, name])
        else:
            found[" ".join(path)] = command

    walk(typer.main.get_command(cli), [])
    return found


def test_every_command_is_fuzzed_or_skipped_with_a_reason() -> None:
    assert set(commands()) == set(FUZZED) | set(SKIPPED)
    assert not set(FUZZED) & set(SKIPPED)


# ----- running `cta` in this process -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One directory for every run of the module: settings, logs, databases and stores all under it."""
    root = tmp_path_factory.mktemp("cli-fuzz")
    env = {
        name: value
        for name, value in subprocess_env(
            root,
            CTA_SERVING__DATABASE_URL=f"sqlite:///{root / 'serving.db'}",
            CTA_TRAINING__TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
            CTA_TRAINING__ARTIFACT_ROOT=str(root / "mlruns"),
            CTA_LEDGER__WITNESS_STATE=str(root / "witness.json"),
        ).items()
        if name.startswith("CTA_")
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        patch.chdir(root)
        yield root
    configure_logging(LoggingSettings(level="WARNING"), root / "after")


def run(args: list[str], root: Path) -> tuple[int, str, str]:
    """`cta ARGS` through `app.cli.main`: (exit code, stdout, stderr)."""
    from app.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv
    sys.argv = ["cta", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code: int = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else -1)
    finally:
        sys.argv = saved
        configure_logging(LoggingSettings(level="WARNING"), root / "after")
    return code, out.getvalue(), err.getvalue()


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING)\s")


def check(args: list[str], code: int, out: str, err: str) -> None:
    shown = f"cta {args!r} -> {code}\nstdout: {out[-1500:]}\nstderr: {err[-1500:]}"
    assert code in (0, 1, 2), shown
    assert "Traceback" not in out + err, shown
    if code == 0:
        return
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, shown
    assert all(line.startswith("error: ") or LOG_LINE.match(line) for line in lines), shown
    assert "unexpected" not in errors[0], shown  # junk input is a user's mistake, said as such
    assert "\x1b" not in err and "\u202e" not in err, shown  # control characters escaped, never sent raw


@pytest.mark.parametrize("command", sorted(FUZZED))
def test_junk_values_never_crash_a_command(command: str, home: Path) -> None:
    @settings(
        max_examples=6 if command.startswith(("models", "ingest", "kill-switch")) else 10,  # < 30 s in all
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(FUZZED[command])
    def fuzz(args: list[str]) -> None:
        full = [*command.split(), *args]
        check(full, *run(full, home))

    fuzz()


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--bars", "abc"],
        ["serve", "--bars", "\udcff"],
        ["serve", "--nope"],
        ["kill-switch"],
        ["kill-switch", "halt"],
        ["models", "promote"],
        ["ledger", "prove", "not-a-number"],
        ["exchange", "serve", "--port", "x"],
        ["--profile", "\x00nope", "config", "show"],
        ["--profile", "../../etc/passwd", "config", "show"],
        ["no-such-command"],
    ],
)
def test_usage_errors_are_one_line(args: list[str], home: Path) -> None:
    """Before: Typer raises its own (vendored) click exceptions, which `main` did not recognise: a usage error
    came out as "error: unexpected NoSuchOption ... (details: ...)" with exit code 1 and a traceback in the log."""
    code, out, err = run(args, home)
    check(args, code, out, err)
    if args[0] != "--profile":
        assert code == 2, err


@pytest.mark.parametrize("bars", ["0", "-1"])
def test_serve_refuses_a_bar_count_below_one_naming_the_field(bars: str, home: Path) -> None:
    """Before: `--bars` replaced the setting without validating it: -1 stopped after the first step, 0 ran forever."""
    code, out, err = run(["serve", "--bars", bars], home)
    check(["serve", "--bars", bars], code, out, err)
    assert code == 1 and "serving.max_bars" in err, err


def test_a_group_without_a_command_shows_its_help(home: Path) -> None:
    code, out, err = run(["ledger"], home)
    assert code == 2 and "Traceback" not in err and "unexpected" not in err
    assert "verify" in out + err


SURROGATE_CASES: list[tuple[list[str], Callable[[str, str], bool]]] = [
    (["kill-switch", "halt", "--reason", "\udcff\udcfe"], lambda out, err: "error:" in err),
    (["models", "show", "\udcff", "-s", "BTC/USDT", "-t", "1h"], lambda out, err: "error:" in err),
]


@pytest.mark.parametrize(("args", "expect"), SURROGATE_CASES)
def test_text_that_was_not_utf8_is_refused_or_escaped_never_a_crash(
    args: list[str], expect: Callable[[str, str], bool], home: Path
) -> None:
    code, out, err = run(args, home)
    check(args, code, out, err)
    assert expect(out, err)
    assert os.environ.get("CTA_SERVING__DATABASE_URL")  # the module's environment is in place
