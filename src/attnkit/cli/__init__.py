"""The ``attnkit`` command.

Every subcommand has ``--help``. Bad arguments exit with status 2 and a one-line reason
(set ``ATTNKIT_DEBUG=1`` to see the traceback of an error instead).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

# typer vendors click; its public API exports BadParameter, Exit and Abort but not these.
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

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

app = typer.Typer(
    name="attnkit",
    help="attnkit: the attention mechanism made real, fast and visible.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
train_app = typer.Typer(
    help="Train a model for one application (checkpoints go to --out; --nproc N trains "
    "data-parallel on N processes).",
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
    shows the traceback instead).
    """
    try:
        # ``train ... --nproc N``: re-launched under torchrun (attnkit.distributed.launch).
        argv, status = launch.handle_nproc(sys.argv[1:] if argv is None else argv)
        if status is not None:
            return status
        command = typer.main.get_command(app) if command is None else command
        with launch.quiet_unless_rank0():
            result = command.main(args=argv, prog_name="attnkit", standalone_mode=False)
        return result if isinstance(result, int) else 0
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
    except (ValueError, TypeError, FileNotFoundError, NonFiniteError) as error:
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


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def main() -> None:
    """Entry point of the ``attnkit`` script."""
    sys.exit(run())
