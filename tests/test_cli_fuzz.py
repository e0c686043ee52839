"""Fuzzing the command line: generated argument lists never crash the parser.

Every leaf command's body is stubbed (nothing trains); what is exercised is parsing and
validating the arguments. Each generated command line must end in a clean outcome: it runs
(the stub), prints help, or fails with status 2 and one line ``attnkit: error: ...``.
"""

from __future__ import annotations

import contextlib
import io

import typer
from hypothesis import given, settings
from hypothesis import strategies as st

from attnkit.cli import app, run


class WouldRun(BaseException):  # not an Exception: run() must let it through
    pass


def stubbed():
    group = typer.main.get_command(app)
    commands, options, paths = [], set(), []

    def walk(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])
        if not getattr(command, "commands", None):

            def stub(**kwargs):
                raise WouldRun

            command.callback = stub
            paths.append(path)
        for param in command.params:
            options.update(param.opts)
        commands.extend(path)

    walk(group, [])
    return group, sorted(set(commands)), sorted(options), paths


GROUP, COMMANDS, OPTIONS, PATHS = stubbed()
VALUES = [
    "0",
    "-1",
    "1",
    "2.5",
    "1e9",
    "nan",
    "",
    "abc",
    "/nonexistent",
    "runs/x",
    "--",
    "num2words:de-en",
    "ü",
    "-",
    "9" * 30,
]
argv = st.tuples(
    st.sampled_from(PATHS),
    st.lists(st.sampled_from(OPTIONS + VALUES + COMMANDS), max_size=6),
).map(lambda t: [*t[0], *t[1]])


@settings(max_examples=400, deadline=None)
@given(argv)
def test_generated_command_lines_end_cleanly(args) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = run(args, command=GROUP)
        except WouldRun:
            return  # the arguments were valid: the command would have run
    assert status in (0, 2), (args, status, err.getvalue())
    if status == 2:
        assert "Traceback" not in err.getvalue()
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        assert lines[-1].startswith("attnkit: error:") or "Usage" in err.getvalue(), (args, lines)
