"""The ``attnkit`` command.

Every subcommand has ``--help`` (or ``-h``). Bad arguments exit with status 2 and a one-line
reason (set ``ATTNKIT_DEBUG=1`` to see the traceback of an error instead). Ctrl-C or SIGTERM
during training saves a checkpoint, prints the command that resumes it, and exits with 130;
elsewhere SIGTERM stops a command as Ctrl-C does (status 130).
The script's entry point is :mod:`attnkit.__main__`, which chooses the thread settings first.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

# typer vendors click; its public API exports BadParameter, Exit and Abort but not these.
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

from attnkit._extras import missing_extra
from attnkit._version import __version__
from attnkit.checks import NonFiniteError
from attnkit.cli import bench as bench_cli
from attnkit.cli import caption as caption_cli
from attnkit.cli import demo, translate
from attnkit.cli import documents as documents_cli
from attnkit.cli import experiment as experiment_cli
from attnkit.cli import explain as explain_cli
from attnkit.cli import export as export_cli
from attnkit.cli import music as music_cli
from attnkit.cli import speech as speech_cli
from attnkit.distributed import launch
from attnkit.training import TrainingInterrupted, is_main_process

# Plain help (click's formatter): paragraphs are wrapped to the terminal, not in the source,
# and flags show no type. Sub-commands inherit both settings.
app = typer.Typer(
    name="attnkit",
    help="attnkit: the attention mechanism made real, fast and visible.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
train_app = typer.Typer(
    help="Train a model for one application. Checkpoints go to --out; Ctrl-C saves one and "
    "prints the command that resumes. The budget is 10 minutes unless --minutes, --max-steps "
    "or --epochs says otherwise; each command's --help says what its application needs. "
    "--nproc N trains data-parallel on N processes.",
    no_args_is_help=True,
)
app.add_typer(train_app, name="train")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"attnkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """attnkit: the attention mechanism made real, fast and visible."""


demo.register(app)
translate.register(app, train_app)
caption_cli.register(app, train_app)
bench_cli.register(app, train_app)
documents_cli.register(app, train_app)
experiment_cli.register(app, train_app)
export_cli.register(app)
explain_cli.register(app, train_app)
music_cli.register(app, train_app)
speech_cli.register(app, train_app)


def run(argv: list[str] | None = None, command: Any = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status.
    ``command`` replaces the click command built from :data:`app` (tests stub it).

    Bad arguments, bad data and bad files give status 2 and one line ``attnkit: error: ...``
    on stderr; an unexpected failure gives status 1 and one line too (``ATTNKIT_DEBUG=1``
    shows the traceback instead). An interrupted command gives 130 and one line (for a
    training run: where its checkpoint is and the command that resumes it).
    """
    given = list(sys.argv[1:] if argv is None else argv)
    with _terminate_as_interrupt():
        return _run(given, command)


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler, ``kill``) ends a command as Ctrl-C does: as ``KeyboardInterrupt``,
    so work outside training (an index being encoded, a picture being written) saves what it
    can and says how to go on, and the status is 130. Training installs its own handlers
    (:class:`attnkit.training.interrupt.StopSignals`) and restores this one after."""
    if threading.current_thread() is not threading.main_thread():
        yield  # Python lets only the main thread handle signals
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(given: list[str], command: Any) -> int:
    try:
        # ``train ... --nproc N``: re-launched under torchrun (attnkit.distributed.launch).
        argv, status = launch.handle_nproc(given)
        if status is not None:
            return status
        command = typer.main.get_command(app) if command is None else command
        with launch.quiet_unless_rank0():
            result = command.main(args=argv, prog_name="attnkit", standalone_mode=False)
        if result == INTERRUPTED:  # typer turns KeyboardInterrupt into status 130
            typer.echo("attnkit: interrupted", err=True)
        return result if isinstance(result, int) else 0
    except TrainingInterrupted as stop:
        if is_main_process():
            typer.echo(_interrupted_line(stop, given), err=True)
        return INTERRUPTED
    except typer.Exit as stop:
        return stop.exit_code
    except typer.Abort:
        typer.echo("attnkit: aborted", err=True)
        return 1
    except NoArgsIsHelpError as error:
        typer.echo(error.ctx.get_help() if error.ctx is not None else str(error), err=True)
        return 2
    except UsageError as error:
        command = error.ctx.command_path if error.ctx is not None else "attnkit"
        typer.echo(
            f"attnkit: error: {error.format_message()} (see '{command} --help')", err=True
        )
        return 2
    except ClickException as error:
        typer.echo(f"attnkit: error: {_one_line(error)}", err=True)
        return error.exit_code
    except ModuleNotFoundError as error:
        message = missing_extra(error)
        if message is None or os.environ.get("ATTNKIT_DEBUG"):
            raise
        typer.echo(f"attnkit: error: {message}", err=True)
        return 2
    except (ValueError, TypeError, OSError, NonFiniteError) as error:
        if os.environ.get("ATTNKIT_DEBUG"):
            raise
        typer.echo(f"attnkit: error: {_one_line(error)}", err=True)
        return 2
    except Exception as error:  # a bug: still one line, with the way to see more
        if os.environ.get("ATTNKIT_DEBUG"):
            raise
        typer.echo(
            f"attnkit: internal error: {type(error).__name__}: {_one_line(error)} "
            "(run with ATTNKIT_DEBUG=1 for the traceback)",
            err=True,
        )
        return 1


INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename is not None:  # a file the user named
        return f"{error.filename}: {_OS_ERRORS.get(type(error), error.strerror)}"
    return " ".join(str(error).split()) or type(error).__name__


# what a failed read or write of a user's path means (an unwritable or full --out, a file where
# a folder belongs); other OSErrors say their own strerror
_OS_ERRORS = {
    FileExistsError: "exists and is not a folder (a folder is needed here)",
    NotADirectoryError: "a part of this path is a file, not a folder",
    PermissionError: "cannot be written or read here (permission denied)",
}


def resume_command(argv: list[str]) -> str:
    """The command line that continues the training run ``attnkit argv`` started."""
    args = [*argv] if "--resume" in argv else [*argv, "--resume"]
    nproc = os.environ.get(launch.NPROC_ENV)
    if nproc and launch.is_torchrun_worker() and not any(a.startswith("--nproc") for a in args):
        args += ["--nproc", nproc]  # a worker's command line lost it to the launcher
    return shlex.join(["attnkit", *args])


def _interrupted_line(stop: TrainingInterrupted, argv: list[str]) -> str:
    if stop.checkpoint is None:
        return f"attnkit: {stop.signal_name} at step {stop.step}; nothing was saved"
    return (
        f"attnkit: {stop.signal_name} at step {stop.step}; saved {stop.checkpoint}; "
        f"resume with: {resume_command(argv)}"
    )


def main() -> None:
    """Run the command (thread settings are chosen in :mod:`attnkit.__main__`, before this
    module is imported)."""
    sys.exit(run())
